"""Stack evaluation on the tiny model: every setting answers the same items, the dynamic stack and
its cat merge agree, linear does not, double-trigger items are counted, merges are reused."""

import json
from pathlib import Path

import pytest

from personaguard.config import StackEvalConfig
from personaguard.errors import PersonaguardError
from personaguard.guardrails import Guardrail
from personaguard.schema import Snapshot, write_jsonl_atomic
from tests.stack.test_merge import _random_adapter


def _snaps(guardrail: str, messages: list[str], neutral: list[str]) -> list[Snapshot]:
    rows = [Snapshot(id=f"{guardrail}-t{i}", message=m, label=guardrail, persona={"name": "Ada"}) for i, m in enumerate(messages)]
    rows += [Snapshot(id=f"{guardrail}-n{i}", message=m, label="none", kind="neutral") for i, m in enumerate(neutral)]
    return rows


@pytest.fixture(scope="module")
def setup(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("stackeval")
    adapters = {g: _random_adapter(tiny_model_dir, root / g, seed) for g, seed in (("politics", 11), ("meeting", 12))}
    test = {
        "politics": _snaps(
            "politics", ["Who are you voting for?", "What do you think of the president?"], ["I love baking bread"]
        ),
        "meeting": _snaps(
            "meeting", ["Can we meet for coffee tomorrow?", "What is your phone number?"], ["haha nice, hiking today"]
        ),
    }
    for g, rows in test.items():
        write_jsonl_atomic(root / f"{g}.jsonl", rows)
    cfg = StackEvalConfig(
        model=tiny_model_dir,
        adapters=adapters,
        test_data={g: str(root / f"{g}.jsonl") for g in test},
        out_dir=str(root / "stacks"),
        methods=["dynamic", "cat", "linear"],
        max_new_tokens=4,
        batch_size=8,
    )
    return cfg


def test_stack_table_compares_single_dynamic_and_merges(setup):
    from personaguard.stack import evaluate as stack_eval

    res = stack_eval.run(setup)
    assert set(res.table) == {"politics", "meeting"}
    for per in res.table.values():
        assert list(per) == ["none", "single", "dynamic", "cat", "linear"]
        assert per["single"]["n_triggering"] == 2 and per["single"]["n_neutral"] == 2  # shared neutral set
        assert set(per["single"]["per_label"]) == {"politics", "meeting", "none"}  # cross tag rates too
    preds = [json.loads(x) for x in (res.out_dir / "predictions.jsonl").read_text().splitlines()]
    by = {}
    for p in preds:
        by.setdefault(p["setting"], {})[p["id"]] = p
    assert set(by) == {"none", "single:politics", "single:meeting", "dynamic", "cat", "linear"}
    assert all(len(v) == 6 + 24 for v in by.values())  # 6 items + 24 double-trigger messages, every setting
    # dynamic stacking is the exact sum, which is what cat writes; linear has cross terms
    for i, p in by["dynamic"].items():
        assert by["cat"][i]["guard_score"] == pytest.approx(p["guard_score"], rel=1e-4, abs=1e-9)
        assert by["cat"][i]["reply"] == p["reply"]
    assert any(
        abs(by["linear"][i]["guard_score"] - p["guard_score"]) > 1e-6 * max(p["guard_score"], 1e-12)
        for i, p in by["dynamic"].items()
    )
    assert set(res.double_trigger) == set(by) and all(d["n"] == 24 for d in res.double_trigger.values())
    assert {"cat", "linear"} == set(res.merges) and res.merges["cat"]["rank"] == 8
    md = (res.out_dir / "stack_table.md").read_text()
    assert "| politics |" in md and "Double-trigger" in md and "| cat | 8 |" in md
    assert len((res.out_dir / "stack_table.csv").read_text().splitlines()) == 1 + 2 * 5


def test_rerun_reuses_the_merged_adapters(setup):
    from personaguard.stack import evaluate as stack_eval

    stack_eval.run(setup)  # the module's first test may not have run alone; make sure merges exist
    record = Path(setup.out_dir) / "merged" / "cat" / "merge.json"
    before = record.stat().st_mtime_ns
    stack_eval.run(setup.model_copy(update={"methods": ["cat"], "double_trigger": False}))
    assert record.stat().st_mtime_ns == before


def test_stack_refuses_members_with_different_tags(setup, tiny_model_dir, tmp_path):
    from personaguard.stack import evaluate as stack_eval

    shout = Guardrail(name="shout", trigger="The user shouts.", resolution="Begin with the tag, calm down.", tag="<calm>")
    folder = _random_adapter(tiny_model_dir, tmp_path / "shout", 5, guardrail=shout)
    cfg = setup.model_copy(
        update={
            "adapters": {"politics": setup.adapters["politics"], "shout": folder},
            "test_data": {"politics": setup.test_data["politics"], "shout": setup.test_data["meeting"]},
        }
    )
    with pytest.raises(PersonaguardError, match="must share one tag"):
        stack_eval.run(cfg)


def test_stack_refuses_an_adapter_keyed_by_another_guardrail(setup):
    """The folder says which guardrail it was trained for; a config that names it otherwise is refused."""
    from personaguard.stack import evaluate as stack_eval

    cfg = setup.model_copy(
        update={
            "adapters": {"politics": setup.adapters["politics"], "shout": setup.adapters["meeting"]},
            "test_data": {"politics": setup.test_data["politics"], "shout": setup.test_data["meeting"]},
        }
    )
    with pytest.raises(PersonaguardError, match="trained for 'meeting'"):
        stack_eval.run(cfg)


def test_a_stack_needs_two_adapters():
    with pytest.raises(ValueError, match="two or more"):
        StackEvalConfig(adapters={"politics": "a"}, test_data={"politics": "t"}, out_dir="o")


def test_routed_stack_follows_the_members_gates(setup, tmp_path):
    from personaguard.stack import evaluate as stack_eval

    for g, thr in (("politics", 0.0), ("meeting", 2.0)):  # politics always fires, meeting never
        with open(f"{setup.adapters[g]}/guard_threshold.json", "w") as fh:
            json.dump({"threshold": thr}, fh)
    res = stack_eval.run(
        setup.model_copy(update={"methods": ["routed", "routed_gated"], "double_trigger": False, "out_dir": str(tmp_path / "r")})
    )
    assert list(res.table["politics"]) == ["none", "single", "routed", "routed_gated"]
    rows = [json.loads(x) for x in (res.out_dir / "predictions.jsonl").read_text().splitlines()]
    by = {}
    for r in rows:
        by.setdefault(r["setting"], {})[r["id"]] = r
    # greedy routing: a member fires exactly where it tags alone (random adapters rarely do)
    for i, r in by["routed"].items():
        assert r["tagged"] == (by["single:politics"][i]["tagged"] or by["single:meeting"][i]["tagged"])
    routed = list(by["routed_gated"].values())
    assert len(routed) == 6 and all(r["tagged"] and r["route"] for r in routed)
    assert (
        res.table["meeting"]["routed_gated"]["tag_rate"] == 1.0 and res.table["meeting"]["routed_gated"]["false_tag_rate"] == 1.0
    )
    (Path(setup.adapters["meeting"]) / "guard_threshold.json").unlink()
    with pytest.raises(PersonaguardError, match="routed stacking needs"):
        stack_eval.run(setup.model_copy(update={"methods": ["routed_gated"], "out_dir": str(tmp_path / "r2")}))


def test_routed_joint_recalibrates_every_member_on_the_pooled_validation_splits(setup, tmp_path):
    from personaguard.stack import evaluate as stack_eval

    val = {
        "politics": _snaps("politics", ["Which party should win?"], ["My cat sleeps all day", "The mayor's dog was on TV"]),
        "meeting": _snaps("meeting", ["Let's grab dinner on Friday"], ["Met my sister at the cafe"]),
    }
    for g, rows in val.items():
        rows = [r.model_copy(update={"id": f"val-{r.id}"}) for r in rows]
        write_jsonl_atomic(Path(setup.test_data[g]).with_name(f"val_{g}.jsonl"), rows)
    cfg = setup.model_copy(
        update={
            "methods": ["routed_joint"],
            "double_trigger": False,
            "out_dir": str(tmp_path / "j"),
            "val_data": {g: str(Path(setup.test_data[g]).with_name(f"val_{g}.jsonl")) for g in val},
        }
    )
    res = stack_eval.run(cfg)
    assert list(res.table["politics"]) == ["none", "single", "routed_joint"]
    thr = json.loads((res.out_dir / "stack_metrics.json").read_text())["meta"]["thresholds"]["routed_joint"]
    assert set(thr) == {"politics", "meeting"} and all(t is not None and t > 0 for t in thr.values())
    by = {}
    for x in (res.out_dir / "predictions.jsonl").read_text().splitlines():
        r = json.loads(x)
        by.setdefault(r["setting"], {})[r["id"]] = r
    for i, r in by["routed_joint"].items():  # a member fires exactly where its own score reaches its new threshold
        fires = [g for g in thr if by[f"single:{g}"][i]["guard_score"] >= thr[g] * (1 - 1e-5)]
        assert r["tagged"] == bool(fires) and (r["route"] is None) == (not fires)
    with pytest.raises(PersonaguardError, match="validation.jsonl: missing; routed_joint needs"):
        stack_eval.run(cfg.model_copy(update={"val_data": {}, "out_dir": str(tmp_path / "j2")}))


def test_dynamic_gated_tags_where_the_sums_score_reaches_one_pooled_threshold(setup, tmp_path):
    from personaguard.stack import evaluate as stack_eval

    val = {
        "politics": _snaps("politics", ["Which party should win?"], ["My cat sleeps all day", "The mayor's dog was on TV"]),
        "meeting": _snaps("meeting", ["Let's grab dinner on Friday"], ["Met my sister at the cafe"]),
    }
    for g, rows in val.items():
        write_jsonl_atomic(
            Path(setup.test_data[g]).with_name(f"gval_{g}.jsonl"), [r.model_copy(update={"id": f"val-{r.id}"}) for r in rows]
        )
    cfg = setup.model_copy(
        update={
            "methods": ["dynamic_gated", "dynamic"],
            "double_trigger": False,
            "out_dir": str(tmp_path / "g"),
            "val_data": {g: str(Path(setup.test_data[g]).with_name(f"gval_{g}.jsonl")) for g in val},
        }
    )
    res = stack_eval.run(cfg)
    assert list(res.table["politics"]) == ["none", "single", "dynamic", "dynamic_gated"]  # gated re-decides dynamic's replies
    metrics = json.loads((res.out_dir / "stack_metrics.json").read_text())
    thr = metrics["meta"]["thresholds"]["dynamic_gated"]
    # the calibration check: each member alone, the sum and the gated sum on the pooled validation splits
    rates = metrics["validation"]["rates"]
    assert set(rates) == {"politics", "meeting"} and set(rates["meeting"]) == {
        "single",
        "dynamic",
        "dynamic_gated",
        "dynamic_agree",
    }
    assert rates["politics"]["single"]["tag_rate"] in (0.0, 1.0)  # one politics trigger in its validation split
    assert rates["politics"]["single"]["false_tag_rate"] in (0.0, 1 / 3, 2 / 3, 1.0)  # three neutral items pooled
    md = (res.out_dir / "stack_table.md").read_text()
    assert "On the members' pooled validation splits" in md
    assert ("**Warning:** dynamic_gated keeps" in md) == bool(metrics["validation"]["misses"])
    by = {}
    for x in (res.out_dir / "predictions.jsonl").read_text().splitlines():
        r = json.loads(x)
        by.setdefault(r["setting"], {})[r["id"]] = r
    tagged = []
    for i, r in by["dynamic_gated"].items():
        assert r["guard_score"] == by["dynamic"][i]["guard_score"]
        assert r["tagged"] == (r["guard_score"] >= thr)
        if r["tagged"] == by["dynamic"][i]["tagged"]:
            assert r["reply"] == by["dynamic"][i]["reply"]  # only disagreements are generated again
        tagged.append(r["tagged"])
    assert any(tagged) and not all(tagged)  # the threshold falls inside the test scores: both decisions are checked
    # dynamic_agree alone fits nothing on the splits, but gets the same check where they exist
    agree = stack_eval.run(cfg.model_copy(update={"methods": ["dynamic_agree"], "out_dir": str(tmp_path / "a")}))
    amd = (agree.out_dir / "stack_table.md").read_text()
    amet = json.loads((agree.out_dir / "stack_metrics.json").read_text())
    assert "| guardrail | single | dynamic | dynamic_agree |" in amd and "threshold" not in amd.split("pooled validation")[1]
    assert amet["validation"]["rates"] == metrics["validation"]["rates"]  # the same decisions on the same items
    assert ("**Warning:** dynamic_agree keeps" in amd) == bool(amet["validation"]["misses"]) != ("dynamic_agree meets" in amd)
    both = stack_eval.run(cfg.model_copy(update={"methods": ["dynamic_agree", "dynamic_gated"], "out_dir": str(tmp_path / "b")}))
    assert list(both.table["meeting"]) == ["none", "single", "dynamic_agree", "dynamic_gated"]  # the sum itself not reported
    assert "| guardrail | single | dynamic | dynamic_gated | dynamic_agree |" in (both.out_dir / "stack_table.md").read_text()
    with pytest.raises(PersonaguardError, match="gval_missing.jsonl: missing; dynamic_agree needs"):  # a named split must exist
        stack_eval.run(
            cfg.model_copy(
                update={
                    "methods": ["dynamic_agree"],
                    "out_dir": str(tmp_path / "a2"),
                    "val_data": {g: str(tmp_path / "gval_missing.jsonl") for g in val},
                }
            )
        )
    with pytest.raises(PersonaguardError, match="validation.jsonl: missing; dynamic_gated needs"):
        stack_eval.run(cfg.model_copy(update={"val_data": {}, "out_dir": str(tmp_path / "g2")}))
    only_neutral = {g: str(tmp_path / f"n_{g}.jsonl") for g in val}
    for g, rows in val.items():
        write_jsonl_atomic(only_neutral[g], [r.model_copy(update={"id": f"n-{r.id}"}) for r in rows if r.label == "none"])
    with pytest.raises(PersonaguardError, match="need triggering and neutral items"):
        stack_eval.run(cfg.model_copy(update={"val_data": only_neutral, "out_dir": str(tmp_path / "g3")}))
    unchecked = stack_eval.run(
        cfg.model_copy(update={"methods": ["dynamic_agree"], "val_data": only_neutral, "out_dir": str(tmp_path / "a3")})
    )
    md = (unchecked.out_dir / "stack_table.md").read_text()
    assert "dynamic_agree: not checked for politics, meeting" in md and "dynamic_agree meets" not in md


def test_a_neutral_snapshot_in_several_members_test_files_counts_once(tmp_path):
    from personaguard.stack.evaluate import shared_items

    same = Snapshot(id="x", message="I baked bread", label="none", persona={"name": "Ada"})
    files = {}
    for g in ("politics", "meeting"):
        rows = [
            same.model_copy(update={"id": f"{g}-n0"}),  # the same turn, another id
            Snapshot(id=f"{g}-n1", message=f"only in {g}", label="none"),
            Snapshot(id=f"{g}-t0", message="Who gets your vote?", label=g),
        ]
        write_jsonl_atomic(tmp_path / f"{g}.jsonl", rows)
        files[g] = str(tmp_path / f"{g}.jsonl")
    items = shared_items(files, {"politics", "meeting", "none"}, 0)
    assert [s.id for s in items] == ["politics-t0", "politics-n0", "politics-n1", "meeting-t0", "meeting-n1"]
    other = same.model_copy(update={"id": "meeting-n0", "persona": {"name": "Bo"}})  # another persona: another turn
    write_jsonl_atomic(tmp_path / "meeting.jsonl", [other])
    assert [s.id for s in shared_items(files, {"politics", "meeting", "none"}, 0)][-1] == "meeting-n0"


@pytest.mark.parametrize("seed, flip", [(31, False), (33, True)])
def test_dynamic_agree_keeps_the_sums_tag_only_where_a_member_alone_votes_for_it(
    tiny_model_dir, tmp_path, monkeypatch, seed, flip
):
    """Random adapters never write '<guard>', so the guardrails here take as tag a token the sum writes
    first on some items. seed 31: the members' real votes differ between items (checked against each
    member's own greedy reply); seed 33: the sum writes the tag on several voted items, and every other
    vote is turned down (monkeypatch) so that both a kept and a dropped tag are exercised."""
    import torch

    from personaguard.adapters import load_stack, use_adapters, write_info
    from personaguard.inference import tag_token_ids
    from personaguard.models import load_model
    from personaguard.prompt import prompt_ids
    from personaguard.stack import evaluate as stack_eval
    from personaguard.stack import routing

    adapters = {
        g: _random_adapter(tiny_model_dir, tmp_path / g, seed + k, scale=0.1, max_prompt_tokens=128)
        for k, g in enumerate(("alpha", "beta"))
    }
    messages = [
        "Who gets your vote?",
        "Coffee tomorrow?",
        "I baked bread",
        "What is your address?",
        "Is the tax fair?",
        "hiking today",
        "call me later",
        "my dog is sick",
        "which party?",
        "see you at the park",
        "lol ok",
        "new phone",
    ]
    test = {"alpha": _snaps("alpha", messages[:4], messages[4:6]), "beta": _snaps("beta", messages[6:10], messages[10:])}
    for g, rows in test.items():
        write_jsonl_atomic(tmp_path / f"{g}.jsonl", rows)
    model, tok = load_model(tiny_model_dir)
    model, names = load_stack(model, list(adapters.values()))

    def firsts(active):  # each item's greedy first token with `active` adapters on
        with use_adapters(model, active), torch.no_grad():
            return [
                model(input_ids=torch.tensor([prompt_ids(tok, s, 128)])).logits[0, -1].argmax().item()
                for rows in test.values()
                for s in rows
            ]

    summed, alone = firsts(names), [firsts([n]) for n in names]
    usable = [
        t
        for t in set(summed)
        if tok.decode([t]).isprintable()
        and tok.decode([t]) == tok.decode([t]).strip()
        and tok.decode([t]).strip()
        and tag_token_ids(tok, tok.decode([t])) == [t]
    ]
    votes = {t: [any(a[i] == t for a in alone) for i in range(len(summed))] for t in usable}
    kept = {t: sum(s == t and v for s, v in zip(summed, votes[t])) for t in usable}
    pick = [t for t in usable if (kept[t] >= 2 if flip else len(set(votes[t])) == 2)]
    assert pick, "the fixture needs a token the sum writes first with the members' votes as the case asks"
    tag = tok.decode([pick[0]])
    for g, folder in adapters.items():  # the folders describe guardrails whose tag is that token
        write_info(
            folder,
            guardrail=Guardrail(name=g, trigger=f"the user says {g}", resolution="answer with the tag", tag=tag),
            base_model=tiny_model_dir,
            max_prompt_tokens=128,
            max_reply_tokens=64,
            gate_threshold=None,
            run_id=g,
        )
    real, given, member_votes = [], [], routing.member_votes

    def votes_seen(*args, **kwargs):
        votes, seconds = member_votes(*args, **kwargs)
        real[:] = votes
        given[:] = [v and not (flip and i % 2) for i, v in enumerate(real)]
        return list(given), seconds

    monkeypatch.setattr(routing, "member_votes", votes_seen)
    cfg = StackEvalConfig(
        model=tiny_model_dir,
        adapters=adapters,
        test_data={g: str(tmp_path / f"{g}.jsonl") for g in test},
        out_dir=str(tmp_path / "stacks"),
        methods=["dynamic_agree", "dynamic"],
        max_new_tokens=4,
        batch_size=8,
        double_trigger=False,
    )
    res = stack_eval.run(cfg)
    assert list(res.table["alpha"]) == ["none", "single", "dynamic", "dynamic_agree"]  # agree re-decides dynamic's replies
    assert "pooled validation" not in (res.out_dir / "stack_table.md").read_text()  # no validation splits here: no check
    by = {}
    for x in (res.out_dir / "predictions.jsonl").read_text().splitlines():
        r = json.loads(x)
        by.setdefault(r["setting"], {})[r["id"]] = r
    ids = [s.id for rows in test.values() for s in rows]
    assert real == [by["single:alpha"][i]["tagged"] or by["single:beta"][i]["tagged"] for i in ids]  # each member's own reply
    cases = set()
    for i, v in zip(ids, given):
        r, d = by["dynamic_agree"][i], by["dynamic"][i]
        assert r["member_vote"] == v and r["guard_score"] == d["guard_score"] and r["guard_seconds"] > d["guard_seconds"]
        assert r["tagged"] == (d["tagged"] and v)
        if r["tagged"] == d["tagged"]:
            assert r["reply"] == d["reply"]  # only a dropped tag is generated again
        else:
            assert not r["reply"].startswith(tag)
        cases.add((d["tagged"], r["tagged"]))
    if flip:
        assert {(True, True), (True, False)} <= cases
    else:
        assert set(real) == {True, False} and (True, True) in cases


def test_a_fourth_member_stacks_with_three_others_on_one_data_file_without_touching_them(tiny_model_dir, tmp_path):
    """Members trained independently: adding one changes no other's folder, every row says which member
    fired (attribution), and the default stack is decided for every subset of the members."""
    import hashlib

    from personaguard.stack import evaluate as stack_eval

    names = ("politics", "expert_opinion", "meeting", "alpha")
    adapters = {g: _random_adapter(tiny_model_dir, tmp_path / g, 40 + k, scale=0.1) for k, g in enumerate(names)}

    def digest(folder):
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path(folder).iterdir()) if p.is_file()}

    before = {g: digest(adapters[g]) for g in names[:3]}
    rows = _snaps("politics", ["Who gets your vote?"], ["I baked bread"]) + _snaps("meeting", ["Coffee tomorrow?"], ["new phone"])
    rows += _snaps("alpha", ["the user says alpha"], [])
    write_jsonl_atomic(tmp_path / "shared.jsonl", [r.model_copy(update={"id": f"{r.label}-{i}"}) for i, r in enumerate(rows)])
    res = stack_eval.run(
        StackEvalConfig(
            adapters=adapters,
            data=str(tmp_path / "shared.jsonl"),
            out_dir=str(tmp_path / "stacks"),
            methods=["routed"],
            max_new_tokens=4,
            batch_size=8,
            double_trigger=False,
        )
    )
    assert {g: digest(adapters[g]) for g in names[:3]} == before
    preds = [json.loads(x) for x in (res.out_dir / "predictions.jsonl").read_text().splitlines()]
    routed = [r for r in preds if r["setting"] == "routed"]
    assert routed and all("fired" in r and set(r["member_greedy"]) == set(names) for r in routed)
    assert all(r["fired"] is None or r["fired"] in names for r in routed)
    metrics = json.loads((res.out_dir / "stack_metrics.json").read_text())
    assert len(metrics["subsets"]) == 11  # 6 pairs + 4 triples + 1 of all four
    assert set(metrics["confusion"]["single:politics"]) == {"politics", "meeting", "alpha", "none"}
    assert "## The default stack (routed)" in (res.out_dir / "stack_confusion.md").read_text()
