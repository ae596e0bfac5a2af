"""The confusion matrix, attribution and subset decisions on hand-made prediction rows."""

import pytest

from personaguard.stack.confusion import attribution, confusion, subset_checks, subset_decisions, subset_table


def _row(setting, label, tagged, fired=None, kind=None, **extra):
    return {"setting": setting, "label": label, "tagged": tagged, "fired": fired, "kind": kind, **extra}


def test_confusion_counts_every_setting_on_every_label():
    preds = [
        _row("single:politics", "politics", True),
        _row("single:politics", "politics", True),
        _row("single:politics", "expert_opinion", True),  # fires on another guardrail's trigger
        _row("single:politics", "expert_opinion", False),
        _row("single:politics", "none", False),
        _row("single:politics", "none", False),
        _row("single:politics", "none", True),
        _row("single:politics", "none", False),
        _row("single:politics", "none", True, kind="double_trigger"),
        _row("none", "politics", False),
    ]
    m = confusion(preds)
    assert m["single:politics"]["politics"] == {"n": 2, "tag_rate": 1.0}
    assert m["single:politics"]["expert_opinion"] == {"n": 2, "tag_rate": 0.5}
    assert m["single:politics"]["none"] == {"n": 4, "tag_rate": 0.25}  # the double trigger is its own column
    assert m["single:politics"]["double_trigger"] == {"n": 1, "tag_rate": 1.0}
    assert m["none"] == {"politics": {"n": 1, "tag_rate": 0.0}}


def test_attribution_is_the_share_of_tagged_member_items_answered_by_their_own_member():
    rows = [
        _row("routed", "politics", True, "politics"),
        _row("routed", "politics", True, "meeting"),  # wrong member
        _row("routed", "meeting", True, "meeting"),
        _row("routed", "meeting", False),  # untagged: not counted
        _row("routed", "none", True, "meeting"),  # a false tag, not an attribution question
        _row("routed", "expert_opinion", True, "politics"),  # not a member's label
    ]
    assert attribution(rows, ["politics", "meeting"]) == pytest.approx(2 / 3)
    assert attribution([], ["politics"]) is None


def _routed(label, greedy, scores, kind=None, labels=None):
    return _row("routed", label, any(greedy.values()), None, kind, member_greedy=greedy, member_scores=scores, labels=labels)


def test_a_subset_never_fires_an_absent_member():
    rows = [
        _routed(
            "meeting",
            {"politics": False, "meeting": True, "expert_opinion": False},
            {"politics": 0.1, "meeting": 0.9, "expert_opinion": 0.0},
        ),
        _routed(
            "politics",
            {"politics": True, "meeting": True, "expert_opinion": False},
            {"politics": 0.8, "meeting": 0.6, "expert_opinion": 0.1},
        ),
    ]
    only = subset_decisions(rows, ["politics", "expert_opinion"])
    assert [r["fired"] for r in only] == [None, "politics"]  # meeting is absent: its item stays untagged
    assert [r["tagged"] for r in only] == [False, True]
    both = subset_decisions(rows, ["politics", "meeting"])
    assert [r["fired"] for r in both] == ["meeting", "politics"]  # the higher score wins a double fire


def test_subset_checks_apply_each_target():
    members = ["politics", "meeting"]
    g = lambda p, m: {"politics": p, "meeting": m}  # noqa: E731
    s = lambda p, m: {"politics": p, "meeting": m}  # noqa: E731
    rows = [
        _routed("politics", g(True, False), s(0.9, 0.1)),
        _routed("politics", g(True, False), s(0.9, 0.1)),
        _routed("meeting", g(False, True), s(0.1, 0.9)),
        _routed("meeting", g(True, True), s(0.7, 0.6)),  # politics outscores meeting: wrong attribution
        _routed("none", g(False, False), s(0.1, 0.1)),
        _routed("none", g(False, True), s(0.1, 0.6)),  # meeting's false tag
        _routed("none", g(True, False), s(0.6, 0.1), kind="double_trigger", labels=["politics", "meeting"]),
    ]
    single = {
        "politics": {"politics": {"n": 2, "tag_rate": 1.0}, "none": {"n": 2, "tag_rate": 0.0}},
        "meeting": {"meeting": {"n": 2, "tag_rate": 1.0}, "none": {"n": 2, "tag_rate": 0.5}},
    }
    out = subset_checks(rows, single, members)
    assert out["confusion"]["none"]["tag_rate"] == 0.5 and out["worst_single_neutral"] == 0.5
    assert out["checks"]["neutral"] is True  # 0.5 <= 0.5 + 0.02
    assert out["checks"]["keep:politics"] is True and out["checks"]["keep:meeting"] is True
    assert out["attribution"] == pytest.approx(3 / 4) and out["checks"]["attribution"] is False
    assert out["double_trigger"] == 1.0 and out["checks"]["double"] is True
    assert out["passed"] is False


def test_subset_table_covers_every_subset_of_two_or_more():
    members = ["a", "b", "c"]
    greedy = {"a": True, "b": False, "c": False}
    scores = {"a": 0.9, "b": 0.1, "c": 0.1}
    preds = [_routed("a", greedy, scores)] + [_row(f"single:{m}", "a", m == "a") for m in members]
    table = subset_table(preds, members)
    assert [t["subset"] for t in table] == [["a", "b"], ["a", "c"], ["b", "c"], ["a", "b", "c"]]
    assert [t["confusion"]["a"]["tag_rate"] for t in table] == [1.0, 1.0, 0.0, 1.0]
