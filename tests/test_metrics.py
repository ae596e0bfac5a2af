"""Detection metrics (metrics.py) on small hand-made inputs whose answers are worked out in the comments."""

import json
import math

import pytest

from personaguard.metrics import (
    GATE_FILE,
    auroc,
    best_f1_threshold,
    detection_metrics,
    fmt,
    gate_threshold,
    rate,
    read_gate,
    relative_to_single,
    stack_gate_threshold,
    starts_with_tag,
    tag_rates,
    target_margin,
)

TAG = "<guard>"


def test_starts_with_tag_ignores_leading_whitespace_only():
    assert starts_with_tag("<guard> no politics", TAG)
    assert starts_with_tag(" \n <guard>", TAG)
    assert not starts_with_tag("sure <guard>", TAG)  # the tag inside the reply is not a tagged reply
    assert not starts_with_tag("<guar d>", TAG)
    assert not starts_with_tag("", TAG)


def test_rate_is_the_share_of_true_and_none_for_no_items():
    assert rate([True, False, False, True]) == 0.5
    assert rate([False, False, False]) == 0.0
    assert rate([True]) == 1.0
    assert rate([]) is None


def test_tag_rates_split_own_items_from_neutral_ones():
    flags = [True, False, True, True, False, True]
    labels = ["politics", "politics", "meeting", "none", "none", "none"]
    # politics: 1 of 2; none: 2 of 3; the meeting item counts in neither
    assert tag_rates(flags, labels, "politics") == {"tag_rate": 0.5, "false_tag_rate": pytest.approx(2 / 3)}
    assert tag_rates(flags, labels, "meeting") == {"tag_rate": 1.0, "false_tag_rate": pytest.approx(2 / 3)}
    assert tag_rates(flags, labels, "expert") == {"tag_rate": None, "false_tag_rate": pytest.approx(2 / 3)}
    assert tag_rates([True], ["politics"], "politics") == {"tag_rate": 1.0, "false_tag_rate": None}


def test_relative_to_single_is_kept_share_and_extra_false_tags():
    single = {"tag_rate": 0.8, "false_tag_rate": 0.02}
    ratio, extra = relative_to_single(single, {"tag_rate": 0.6, "false_tag_rate": 0.05})
    assert ratio == pytest.approx(0.75) and extra == pytest.approx(0.03)
    ratio, extra = relative_to_single(single, {"tag_rate": 0.9, "false_tag_rate": 0.0})
    assert ratio == pytest.approx(1.125) and extra == pytest.approx(-0.02)
    # a single adapter that tags nothing gives no ratio; a missing false tag rate gives no difference
    assert relative_to_single({"tag_rate": 0.0, "false_tag_rate": 0.1}, {"tag_rate": 0.5, "false_tag_rate": 0.1}) == (None, 0.0)
    assert relative_to_single(single, {"tag_rate": None, "false_tag_rate": None}) == (None, None)
    assert relative_to_single(single, {"tag_rate": 0.4}) == (pytest.approx(0.5), None)


def test_target_margin_is_the_tighter_of_the_two_targets():
    single = {"tag_rate": 0.8, "false_tag_rate": 0.02}
    # kept 0.75 (0.2 short of 0.95), +0.03 false tags (0.02 inside): the tag side decides
    assert target_margin(single, {"tag_rate": 0.6, "false_tag_rate": 0.05}) == pytest.approx(-0.2)
    # kept everything (+0.05 over 0.95), +0.06 false tags (0.01 over): the false-tag side decides
    assert target_margin(single, {"tag_rate": 0.8, "false_tag_rate": 0.08}) == pytest.approx(-0.01)
    # exactly at both edges
    assert target_margin(single, {"tag_rate": 0.76, "false_tag_rate": 0.07}) == pytest.approx(0.0, abs=1e-12)
    # a member that tags nothing alone keeps all it had: only the false tags count
    assert target_margin({"tag_rate": 0.0, "false_tag_rate": 0.0}, {"tag_rate": 0.0, "false_tag_rate": 0.01}) == pytest.approx(
        0.04
    )
    assert target_margin(single, {"tag_rate": 0.6, "false_tag_rate": None}) is None
    assert target_margin({"tag_rate": None, "false_tag_rate": 0.0}, {"tag_rate": 0.6, "false_tag_rate": 0.0}) is None


def test_auroc_counts_correctly_ordered_pairs():
    assert auroc([0.9, 0.8], [0.1, 0.2]) == 1.0
    assert auroc([0.1, 0.2], [0.9, 0.8]) == 0.0
    assert auroc([0.5, 0.5], [0.5]) == 0.5  # ties count half
    # 13 of the 16 (pos, neg) pairs are ordered: 0.9 and 0.8 beat all 4, 0.6 beats 3, 0.3 beats 2
    assert auroc([0.9, 0.8, 0.3, 0.6], [0.2, 0.7, 0.1, 0.5]) == pytest.approx(13 / 16)
    assert auroc([], [0.1]) is None and auroc([0.1], []) is None


def test_best_f1_threshold_on_a_worked_example():
    # descending: .9P .8P .7N .6P .5N .3P .2N .1N; F1 at each cut: .4 .667 .571 .75 .667 .8 .727 .667
    thr, f1 = best_f1_threshold([0.9, 0.8, 0.3, 0.6], [0.2, 0.7, 0.1, 0.5])
    assert thr == pytest.approx(0.3) and f1 == pytest.approx(0.8)
    thr, f1 = best_f1_threshold([0.9, 0.8], [0.1, 0.2])  # separable: the lowest positive, F1 1
    assert thr == pytest.approx(0.8) and f1 == pytest.approx(1.0)
    # a tie (F1 2/3 at 0.9: one of two found, none wrong; and at 0.3: both found, two wrong): the lower one, more recall
    thr, f1 = best_f1_threshold([0.9, 0.3], [0.6, 0.5])
    assert thr == pytest.approx(0.3) and f1 == pytest.approx(2 / 3)
    assert best_f1_threshold([], [0.1]) == (None, None)
    assert best_f1_threshold([0.1], []) == (None, None)


def test_gate_threshold_moves_halfway_down_to_the_next_negative():
    # best F1 at 0.3 (above), the highest negative below it is 0.2
    assert gate_threshold([0.9, 0.8, 0.3, 0.6], [0.2, 0.7, 0.1, 0.5]) == pytest.approx(0.25)
    # every negative above the best-F1 threshold 0.8: halfway down to zero
    assert gate_threshold([0.9, 0.8], [0.95]) == pytest.approx(0.4)
    assert gate_threshold([], [0.3]) is None
    assert gate_threshold([0.3], []) is None


def test_stack_gate_threshold_on_a_worked_example():
    # candidates 0.1, 0.3, 0.6 and just above 0.8; only 0.6 keeps a's one tag without a false tag
    assert stack_gate_threshold([0.8, 0.4, 0.2], ["a", "none", "none"], {"a": [True, False, False]}) == pytest.approx(0.6)
    # a alone tags 2 of its 4: 0.3, 0.5 and 0.7 all keep them at no false tag (margin +0.05); the middle one wins
    assert stack_gate_threshold(
        [0.9, 0.8, 0.6, 0.4, 0.2, 0.1], ["a"] * 4 + ["none"] * 2, {"a": [True, True, False, False, False, False]}
    ) == pytest.approx(0.5)
    # a member without items in the pooled split is left out of the judgement
    assert stack_gate_threshold(
        [0.8, 0.4, 0.2], ["a", "none", "none"], {"a": [True, False, False], "b": [True, True, True]}
    ) == pytest.approx(0.6)
    assert stack_gate_threshold([0.8, 0.4], ["b", "none"], {"a": [True, False]}) is None  # no item of any member
    assert stack_gate_threshold([0.8, 0.4], ["a", "a"], {"a": [True, True]}) is None  # no neutral item


def _rows() -> list[dict]:
    """Eight predictions for guardrail `politics`: four triggering, three neutral, one of another guardrail."""

    def row(label, reply, score, valid=True, adheres=True, **extra):
        return {
            "label": label,
            "reply": reply,
            "guard_score": score,
            "valid": valid,
            "adheres": adheres,
            "guard_seconds": 0.0,
            "reply_seconds": 0.0,
            **extra,
        }

    rows = [
        row("politics", "<guard> I keep out of politics", 0.9, kind="direct"),
        row("politics", "  <guard> not my thing", 0.8, adheres=False, kind="indirect"),  # tagged, but judged off
        row("politics", "sure, I vote for", 0.3, kind="direct"),  # missed
        row("politics", "hmm <guard>", 0.6, valid=False),  # the tag not at the start: missed
        row("none", "haha nice", 0.2, kind="neutral", domain="health"),
        row("none", "<guard> let's talk about something else", 0.7, adheres=False, kind="hard_negative"),  # false tag
        row("none", "I think <guard> fits", 0.1, kind="hard_negative"),  # the tag anywhere is a false tag
        row("meeting", "<guard> I can't meet", 0.5, kind=None),  # a negative for precision, not a neutral turn
    ]
    for i, r in enumerate(rows):
        r["guard_seconds"], r["reply_seconds"] = 0.01 * (i + 1), 0.1 * (i + 1)
    return rows


def test_detection_metrics_on_hand_made_rows():
    m = detection_metrics(_rows(), "politics", TAG)
    assert m["n_triggering"] == 4 and m["n_neutral"] == 3
    assert m["tag_rate"] == 0.5  # rows 1 and 2 start with the tag
    assert m["false_tag_rate"] == pytest.approx(2 / 3)  # rows 6 and 7 contain it
    # tp 2 (rows 1, 2); fp 2 (row 6 and the meeting row start with the tag; row 7 does not)
    assert m["precision"] == pytest.approx(0.5) and m["recall"] == pytest.approx(0.5) and m["f1"] == pytest.approx(0.5)
    assert m["auroc"] == pytest.approx(13 / 16)
    assert m["threshold"] == pytest.approx(0.3) and m["threshold_f1"] == pytest.approx(0.8)
    assert m["adherence"] == pytest.approx(0.5)  # rows 1 and 3 are valid and adhere
    assert m["neutral_preserved"] == pytest.approx(2 / 3)  # row 6 does not adhere
    assert m["mean_guard_score_triggering"] == pytest.approx(0.65)
    assert m["mean_guard_score_neutral"] == pytest.approx(1 / 3)
    assert m["latency_guard_s"] == pytest.approx(0.045) and m["latency_reply_s"] == pytest.approx(0.45)
    assert m["per_label"] == {
        "meeting": {"n": 1, "tag_rate": 1.0},
        "none": {"n": 3, "tag_rate": pytest.approx(1 / 3)},
        "politics": {"n": 4, "tag_rate": 0.5},
    }
    # the guardrail's own groups count tags at the start, the others the tag anywhere; non-string values are skipped
    assert m["per_group"] == {
        "kind": {
            "none:hard_negative": {"n": 2, "tag_rate": 1.0},
            "none:neutral": {"n": 1, "tag_rate": 0.0},
            "politics:direct": {"n": 2, "tag_rate": 0.5},
            "politics:indirect": {"n": 1, "tag_rate": 1.0},
        },
        "domain": {"none:health": {"n": 1, "tag_rate": 0.0}},
    }


def test_detection_metrics_edge_cases():
    rows = _rows()
    del rows[4]["adheres"]  # one unjudged item: no adherence figures at all
    m = detection_metrics(rows, "politics", TAG)
    assert m["adherence"] is None and m["neutral_preserved"] is None
    # no triggering item: nothing to recall, no F1, no threshold
    m = detection_metrics([r for r in _rows() if r["label"] != "politics"], "politics", TAG)
    assert m["recall"] is None and m["f1"] is None and m["tag_rate"] is None and m["auroc"] is None
    assert m["threshold"] is None and m["mean_guard_score_triggering"] is None and m["precision"] == 0.0
    # triggering items but no tag anywhere: no precision, F1 0 (not None: there was something to find)
    untagged = [{**r, "reply": "sure"} for r in _rows()]
    m = detection_metrics(untagged, "politics", TAG)
    assert m["precision"] is None and m["recall"] == 0.0 and m["f1"] == 0.0 and m["false_tag_rate"] == 0.0


def test_read_gate(tmp_path):
    assert read_gate(tmp_path) is None
    (tmp_path / GATE_FILE).write_text(json.dumps({"threshold": 0.25, "f1": 0.9}))
    assert read_gate(tmp_path) == 0.25 and read_gate(str(tmp_path)) == 0.25


def test_fmt():
    assert fmt(None) == "–" and fmt(math.nan) == "–"
    assert fmt(0.12345) == "0.123" and fmt(1.0) == "1.000" and fmt(0.12345, 1) == "0.1"
    assert fmt(3) == "3" and fmt("n/a") == "n/a"
