"""Routed stacking: each member decides alone, the firing member (or the base model) writes the reply."""

import json

import pytest

from personaguard.errors import PersonaguardError
from personaguard.stack.routing import gate_thresholds, route, routed_replies
from tests.stack.test_merge import _random_adapter

TAG = "<guard>"


def test_route_picks_the_member_furthest_above_its_threshold():
    thr = {"politics": 0.2, "meeting": 0.01}
    assert route({"politics": 0.1, "meeting": 0.005}, thr) is None
    assert route({"politics": 0.3, "meeting": 0.005}, thr) == "politics"
    # relative to the thresholds, not the raw score: 0.02 is 2x meeting's, 0.3 only 1.5x politics'
    assert route({"politics": 0.3, "meeting": 0.02}, thr) == "meeting"


@pytest.fixture(scope="module")
def stack(tiny_model_dir, tmp_path_factory):
    from personaguard.adapters import load_stack
    from personaguard.models import load_model
    from personaguard.prompt import prompt_ids
    from personaguard.schema import Snapshot

    root = tmp_path_factory.mktemp("routing")
    dirs = [_random_adapter(tiny_model_dir, root / g, seed) for g, seed in (("politics", 21), ("meeting", 22))]
    model, tok = load_model(tiny_model_dir)
    model, names = load_stack(model, dirs)
    snaps = [Snapshot(id=str(i), message=m) for i, m in enumerate(["Who gets your vote?", "Coffee tomorrow?", "I baked bread"])]
    prompts = [prompt_ids(tok, s, 128) for s in snaps]
    return model, tok, names, dirs, prompts


def test_routed_scores_are_each_members_alone_and_the_chosen_member_writes(stack):
    from personaguard.adapters import active_adapters, use_adapters
    from personaguard.inference import generate_replies, guard_scores, tag_token_ids

    model, tok, names, _, prompts = stack
    pol, meet = names
    before = active_adapters(model)
    out = routed_replies(model, tok, prompts, {pol: 0.0, meet: 2.0}, TAG, max_new_tokens=8, batch_size=2)
    assert active_adapters(model) == before  # the active set is restored
    for m in names:
        with use_adapters(model, [m]):
            alone, _ = guard_scores(model, tok, prompts, TAG)
        assert [o.scores[m] for o in out] == pytest.approx(alone, rel=1e-5, abs=1e-12)
    # politics always fires (threshold 0), meeting never (a probability is never >= 2)
    assert [o.route for o in out] == [pol] * 3
    with use_adapters(model, [pol]):
        tag_ids = tag_token_ids(tok, TAG)
        cont, _ = generate_replies(model, tok, [p + tag_ids for p in prompts], 8 - len(tag_ids))
    assert [o.reply for o in out] == [f"{TAG} {c}".strip() for c in cont]


def test_when_no_member_fires_the_base_model_answers_without_the_tag(stack):
    from personaguard.adapters import no_adapter
    from personaguard.inference import generate_replies, tag_token_ids

    model, tok, names, _, prompts = stack
    out = routed_replies(model, tok, prompts, {n: 2.0 for n in names}, TAG, max_new_tokens=6)
    assert all(o.route is None and not o.reply.startswith(TAG) for o in out)
    with no_adapter(model):
        base, _ = generate_replies(model, tok, prompts, 6, begin_suppress=tag_token_ids(tok, TAG)[:1])
    assert [o.reply for o in out] == base


def test_gate_thresholds_are_read_from_each_adapter(stack, tmp_path):
    _, _, _, dirs, _ = stack
    (tmp_path / "x").mkdir()
    for d, t in zip(dirs, (0.25, 0.5)):
        with open(f"{d}/guard_threshold.json", "w") as fh:
            json.dump({"threshold": t}, fh)
    assert gate_thresholds(dirs) == [0.25, 0.5]
    with pytest.raises(PersonaguardError, match="guard_threshold.json: missing"):
        gate_thresholds([tmp_path / "x"])


def test_greedy_decision_is_what_the_member_alone_generates_first(stack):
    """Use as 'tag' the token the politics adapter greedily writes first on a prompt where the meeting adapter
    greedily writes another one: greedy routing must then fire politics there (and meeting not), and its reply
    must equal politics' own greedy reply. The same with the roles swapped routes to meeting."""
    import torch

    from personaguard.adapters import use_adapters
    from personaguard.inference import generate_replies, guard_pass, tag_token_ids

    model, tok, names, _, prompts = stack
    pol, meet = names

    def first_tokens(name):  # each prompt's greedy first token with `name` alone, and its greedy reply
        with use_adapters(model, [name]), torch.no_grad():
            firsts = [model(torch.tensor([p])).logits[0, -1].argmax().item() for p in prompts]
            return firsts, generate_replies(model, tok, prompts, 6)[0]

    (pol_first, pol_alone), (meet_first, meet_alone) = first_tokens(pol), first_tokens(meet)
    disagree = [k for k, (a, b) in enumerate(zip(pol_first, meet_first)) if a != b]
    assert disagree, (pol_first, meet_first)  # the seeds give the members different first tokens
    i = disagree[0]
    for name, other, first, alone in ((pol, meet, pol_first[i], pol_alone[i]), (meet, pol, meet_first[i], meet_alone[i])):
        tag = tok.decode([first])
        assert tag_token_ids(tok, tag) == [first]
        with use_adapters(model, [name]):
            assert guard_pass(model, tok, prompts, tag).greedy[i]
        with use_adapters(model, [other]):
            assert not guard_pass(model, tok, prompts, tag).greedy[i]
        out = routed_replies(model, tok, prompts, {pol: None, meet: None}, tag, max_new_tokens=6)
        assert out[i].route == name
        assert out[i].reply.startswith(tag) and out[i].reply.replace(" ", "") == alone.replace(" ", "")


def test_joint_thresholds_calibrate_each_member_on_every_members_neutral_items(stack):
    from personaguard.adapters import use_adapters
    from personaguard.inference import guard_scores
    from personaguard.metrics import gate_threshold
    from personaguard.prompt import prompt_ids
    from personaguard.schema import Snapshot
    from personaguard.stack.routing import joint_thresholds

    model, tok, names, _, _ = stack
    pol, meet = names
    snaps = [
        Snapshot(id="p0", message="Who gets your vote?", label="politics"),
        Snapshot(id="p1", message="Thoughts on the new tax law?", label="politics"),
        Snapshot(id="m0", message="Coffee tomorrow at noon?", label="meeting"),
        Snapshot(id="n0", message="I baked bread", label="none"),
        Snapshot(id="n1", message="The gym was packed today", label="none"),
        Snapshot(id="n2", message="We watched a film about a mayor", label="none"),
    ]
    thr = joint_thresholds(model, tok, {"politics": pol, "meeting": meet}, snaps, 128, TAG, batch_size=4)
    prompts = [prompt_ids(tok, s, 128) for s in snaps]
    for g, name in (("politics", pol), ("meeting", meet)):
        with use_adapters(model, [name]):
            sc, _ = guard_scores(model, tok, prompts, TAG)
        own = [x for x, s in zip(sc, snaps) if s.label == g]
        neutral = [x for x, s in zip(sc, snaps) if s.label == "none"]  # the other guardrail's triggers are not negatives
        assert thr[name] == pytest.approx(gate_threshold(own, neutral), rel=1e-5)
    assert joint_thresholds(model, tok, {"politics": pol}, snaps[2:], 128, TAG) == {pol: None}  # no positives: greedy


def test_stack_calibration_gates_the_sum_on_every_members_triggers_and_checks_it_against_each_member(stack):
    from personaguard.adapters import use_adapters
    from personaguard.inference import guard_pass
    from personaguard.metrics import stack_gate_threshold
    from personaguard.prompt import prompt_ids
    from personaguard.schema import Snapshot
    from personaguard.stack.routing import stack_calibration

    model, tok, names, _, _ = stack
    pol, meet = names
    snaps = [
        Snapshot(id="p0", message="Who gets your vote?", label="politics"),
        Snapshot(id="m0", message="Coffee tomorrow at noon?", label="meeting"),
        Snapshot(id="n0", message="I baked bread", label="none"),
        Snapshot(id="n1", message="The gym was packed today", label="none"),
    ]
    cal = stack_calibration(model, tok, {"politics": pol, "meeting": meet}, snaps, 128, TAG, batch_size=4)
    prompts = [prompt_ids(tok, s, 128) for s in snaps]
    with use_adapters(model, names):  # the summed stack's scores, not any member's alone
        summed = guard_pass(model, tok, prompts, TAG)
    with use_adapters(model, [pol]):
        alone = guard_pass(model, tok, prompts, TAG)
    with use_adapters(model, [meet]):
        meet_alone = guard_pass(model, tok, prompts, TAG)
    labels = [s.label for s in snaps]
    want = stack_gate_threshold(summed.scores, labels, {"politics": alone.greedy, "meeting": meet_alone.greedy})
    assert cal.threshold == pytest.approx(want, rel=1e-5)
    assert stack_gate_threshold(alone.scores, labels, {"politics": alone.greedy, "meeting": meet_alone.greedy}) != pytest.approx(
        cal.threshold, rel=1e-3
    )
    # the check: politics alone (greedy) on its own trigger and the neutral items, the sum greedy and gated
    v = cal.validation["politics"]
    assert v["single"] == {"tag_rate": float(alone.greedy[0]), "false_tag_rate": (alone.greedy[2] + alone.greedy[3]) / 2}
    assert v["dynamic"] == {"tag_rate": float(summed.greedy[0]), "false_tag_rate": (summed.greedy[2] + summed.greedy[3]) / 2}
    gated = [x >= cal.threshold for x in summed.scores]
    assert v["dynamic_gated"] == {"tag_rate": float(gated[0]), "false_tag_rate": (gated[2] + gated[3]) / 2}
    agree = [s and (a or m) for s, a, m in zip(summed.greedy, alone.greedy, meet_alone.greedy)]  # the sum and a member
    assert v["dynamic_agree"] == {"tag_rate": float(agree[0]), "false_tag_rate": (agree[2] + agree[3]) / 2}
    assert stack_calibration(model, tok, {"politics": pol, "meeting": meet}, snaps[2:], 128, TAG).threshold is None


def test_stack_gate_meets_the_target_where_best_f1_does_not():
    from personaguard.metrics import gate_threshold, stack_gate_threshold, tag_rates, target_margin

    labels = ["a"] * 4 + ["b"] * 4 + ["none"] * 10
    scores = [0.9, 0.8, 0.7, 0.6, 0.85, 0.75, 0.62, 0.5, 0.58, 0.3, 0.1, 0.09, 0.08, 0.05, 0.04, 0.03, 0.02, 0.01]
    # a alone tags its 4 items and one neutral turn; b alone tags 2 of its 4 and no neutral turn
    alone = {"a": [True] * 4 + [False] * 4 + [True] + [False] * 9, "b": [False] * 4 + [True, True, False, False] + [False] * 10}

    def margin(t):
        flags = [x >= t for x in scores]
        return min(target_margin(tag_rates(alone[g], labels, g), tag_rates(flags, labels, g)) for g in alone)

    f1 = gate_threshold(
        [x for x, lab in zip(scores, labels) if lab != "none"], [x for x, lab in zip(scores, labels) if lab == "none"]
    )
    assert margin(f1) < 0  # best F1 (0.4) takes b's 0.5 and with it the neutral 0.58: +0.1 false tags against b alone
    t = stack_gate_threshold(scores, labels, alone)
    assert t == pytest.approx(0.59)  # the only gap that keeps every a item and no neutral one
    assert margin(t) == pytest.approx(max(margin(i / 1000) for i in range(1001)))
    # a alone tags one of its three items: 0.25, 0.5 and 0.75 all keep it at no false tag; the middle one wins
    assert stack_gate_threshold(
        [0.9, 0.6, 0.4, 0.1], ["a", "a", "a", "none"], {"a": [True, False, False, False]}
    ) == pytest.approx(0.5)
    assert stack_gate_threshold([0.3, 0.2], ["none", "none"], {"a": [False, False]}) is None  # no triggering item
    assert stack_gate_threshold([0.9, 0.4], ["a", "a"], {"a": [True, True]}) is None  # no neutral item to judge false tags on
    # a member that tags none of its items alone has nothing to lose, and the neutral turn scores highest: tag nothing
    assert stack_gate_threshold([0.5, 0.9], ["a", "none"], {"a": [False, False]}) > 0.9


def test_a_stack_that_loses_a_members_tags_or_adds_false_tags_is_flagged():
    from personaguard.stack.routing import StackCalibration

    def cal(tag, false):
        return StackCalibration(
            0.5,
            {
                "meeting": {
                    "single": {"tag_rate": 0.9, "false_tag_rate": 0.05},
                    "dynamic": {"tag_rate": 0.9, "false_tag_rate": 0.05},
                    "dynamic_gated": {"tag_rate": tag, "false_tag_rate": false},
                }
            },
        )

    assert cal(0.9 * 0.95, 0.10).misses() == []  # exactly at the target: kept 0.95, +0.05
    (line,) = cal(0.8, 0.05).misses()
    assert "keeps 0.889 of meeting's tags at +0.000" in line
    assert cal(0.9, 0.11).misses() != [] and cal(0.9, 0.11).misses("dynamic") == []


def test_guard_pass_first_logps_are_the_tags_first_token_log_prob(stack):
    """first_logps = log P(tag's first token | prompt), read off the same pass as the (whole-tag) score."""
    import math

    import torch

    from personaguard.adapters import use_adapters
    from personaguard.inference import guard_pass, tag_token_ids

    model, tok, names, _, prompts = stack
    first = tag_token_ids(tok, TAG)[0]
    with use_adapters(model, [names[0]]):
        g = guard_pass(model, tok, prompts, TAG, batch_size=2)
        for p, lp, score in zip(prompts, g.first_logps, g.scores):
            with torch.no_grad():
                ref = torch.log_softmax(model(torch.tensor([p])).logits[0, -1].float(), -1)[first].item()
            assert lp == pytest.approx(ref, abs=1e-4)
            assert math.log(score) <= lp + 1e-6  # the whole tag is no likelier than its first token


def test_alone_passes_of_several_members_are_one_mixed_batch_equal_to_each_member_alone(stack, monkeypatch):
    from personaguard import inference
    from personaguard.adapters import active_adapters, use_adapters
    from personaguard.stack import routing

    model, tok, names, _, prompts = stack
    calls = []
    real = routing.guard_pass
    monkeypatch.setattr(routing, "guard_pass", lambda *a, **k: calls.append(k.get("row_adapters")) or real(*a, **k))
    before = active_adapters(model)
    got = routing.alone_passes(model, tok, prompts, names, TAG, batch_size=2)
    assert active_adapters(model) == before
    assert calls == [[m for _ in prompts for m in names]]  # one pass, a row per (prompt, member)
    for m in names:
        with use_adapters(model, [m]):
            alone = inference.guard_pass(model, tok, prompts, TAG)
        assert got[m].scores == pytest.approx(alone.scores, rel=1e-5, abs=1e-12)
        assert got[m].greedy == alone.greedy
        assert got[m].first_logps == pytest.approx(alone.first_logps, rel=1e-5, abs=1e-6)
