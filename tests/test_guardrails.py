import pytest

from personaguard.errors import PersonaguardError
from personaguard.guardrails import add_guardrail, get_guardrail, load_guardrail_file, registry


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
