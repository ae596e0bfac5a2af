import pytest

from personaguard.errors import PersonaguardError
from personaguard.guardrails import (
    add_guardrail,
    examples_advice,
    get_guardrail,
    load_guardrail_file,
    new_guardrail,
    registry,
)


def test_builtins_present():
    reg = registry()
    assert {"politics", "expert_opinion", "meeting"} <= set(reg)
    assert all(g.tag == "<guard>" for g in reg.values())


def test_user_guardrail_roundtrip(tmp_path, pg_home):
    f = tmp_path / "dating.yaml"
    f.write_text("name: no_dating\ntrigger: The user flirts.\nresolution: Decline kindly, begin with the tag.\n")
    dest = add_guardrail(f)
    assert dest.exists()
    assert get_guardrail("no_dating").trigger == "The user flirts."
    with pytest.raises(PersonaguardError, match="already exists"):
        add_guardrail(f)


@pytest.mark.parametrize(
    "text,needle",
    [
        ("name: Bad Name\ntrigger: abc def\nresolution: abc def\n", "field 'name'"),
        ("name: ok\ntrigger: abc def\n", "field 'resolution': Field required"),
        ("name: ok\ntrigger: abc\nresolution: abc\ncolour: red\n", "field 'colour': unknown field"),
        ("name: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_guardrail_yaml_is_one_line_error(tmp_path, text, needle):
    f = tmp_path / "g.yaml"
    f.write_text(text)
    with pytest.raises(PersonaguardError) as exc:
        load_guardrail_file(f)
    msg = str(exc.value)
    assert str(f) in msg and needle in msg and "\n" not in msg


def test_unknown_guardrail_lists_known():
    with pytest.raises(PersonaguardError, match="known: expert_opinion, meeting, politics"):
        get_guardrail("nope")


def test_missing_extra_dir_is_an_error(tmp_path, pg_home):
    with pytest.raises(PersonaguardError, match=r"guardrails dir .*nope: folder not found"):
        registry([tmp_path / "nope"])


def test_broken_user_file_is_skipped_with_warning_unless_asked_for(tmp_path, pg_home, capsys):
    d = tmp_path / "g"
    d.mkdir()
    (d / "broken.yaml").write_text("name: broken\ntrigger: [x\n")
    (d / "fine.yaml").write_text("name: fine\ntrigger: user asks about fine things\nresolution: say it is fine\n")
    reg = registry([d])
    assert "politics" in reg and "fine" in reg and "broken" not in reg
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: skipping guardrail file") and "broken.yaml" in err[0]
    assert get_guardrail("politics", [d]).name == "politics"
    with pytest.raises(PersonaguardError, match=r"broken\.yaml: not valid YAML"):
        get_guardrail("broken", [d])


RELIGION = dict(
    trigger="The user asks about the persona's religious beliefs.",
    resolution="Keep beliefs private and change the subject.",
    examples=[f"Do you believe in thing number {i}?" for i in range(8)],
    near_misses=["my church has a bake sale", "oh my god I spilled my tea"],
)


@pytest.mark.parametrize(
    "text,needle",
    [
        ("examples: [hi there, '  ']\n", "field 'examples': item 2 is empty"),
        ("examples: ['Do you pray?', 'do you  PRAY?']\n", "item 2 repeats an earlier one"),
        ("examples: ['Do you pray?']\nnear_misses: ['do you pray?']\n", "is both an example and a near-miss"),
        ("examples: Do you pray?\n", "field 'examples': Input should be a valid list"),
        ("near_misses: [{text: x}]\n", "field 'near_misses.0'"),
    ],
)
def test_bad_example_fields_are_one_line_errors(tmp_path, text, needle):
    f = tmp_path / "g.yaml"
    f.write_text("name: religion\ntrigger: asks about faith\nresolution: decline kindly\n" + text)
    with pytest.raises(PersonaguardError) as exc:
        load_guardrail_file(f)
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_new_guardrail_writes_a_valid_file_and_refuses_builtin_and_existing(pg_home):
    dest, g = new_guardrail("religion", **RELIGION)
    assert dest == pg_home / "guardrails" / "religion.yaml"
    again = get_guardrail("religion")
    assert again.examples == RELIGION["examples"] and again.near_misses == RELIGION["near_misses"]
    assert "8 examples (2 held out" in examples_advice(g)
    with pytest.raises(PersonaguardError, match="already exists"):
        new_guardrail("religion", **RELIGION)
    with pytest.raises(PersonaguardError, match="'politics' is a built-in guardrail"):
        new_guardrail("politics", **RELIGION)


def test_too_few_examples_is_said_and_refused_offline(pg_home, tmp_path):
    from personaguard.config import GenerateConfig
    from personaguard.data import generate

    few = {**RELIGION, "examples": RELIGION["examples"][:3]}
    dest, g = new_guardrail("few", **few)
    assert examples_advice(g).startswith("3 examples: too few for the offline backend (needs 6")
    out = tmp_path / "data"
    with pytest.raises(PersonaguardError, match=r"guardrail 'few': the offline backend needs at least 6 `examples`"):
        generate.run(GenerateConfig(guardrail="few", n=20, out_dir=str(out)))
    assert not out.exists()  # refused before any folder is made
