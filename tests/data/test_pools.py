"""The packaged offline pools: sizes the data issue asks for, clean labels, and the contrast pairs."""

from __future__ import annotations

import pytest

from personaguard.data.pools import TriggerPool, add_contrast, load_pools
from personaguard.data.teacher_prompts import normalise_message as norm
from personaguard.errors import PersonaguardError

STYLES = {"direct", "indirect", "polite", "slang", "misspelt", "multi_sentence", "topic_drift"}


def test_pool_sizes():
    p = load_pools()
    assert len(p.personas) >= 300 and len(p.memories) >= 500 and len(p.histories) >= 300
    for g, t in p.triggers.items():
        assert len(t.messages) >= 300, g
        assert len(p.neutral) + len(p.hard[g]) >= 300, g


def test_no_message_is_both_trigger_and_neutral_for_a_guardrail():
    p = load_pools()
    neutral = {norm(x["text"]) for x in p.neutral}
    for g, t in p.triggers.items():
        trig = [norm(m["text"]) for m in t.messages]
        assert len(trig) == len(set(trig)), f"{g}: repeated trigger messages"
        both = set(trig) & (neutral | {norm(x["text"]) for x in p.hard[g]})
        assert not both, f"{g}: {sorted(both)[:3]}"


def test_contrast_pairs_are_folded_in_with_styles_and_clean_replies():
    p = load_pools()
    for g in ("politics", "expert_opinion", "meeting"):
        trig = [m for m in p.triggers[g].messages if m.get("contrast")]
        hard = [x for x in p.hard[g] if x.get("contrast")]
        assert len(hard) >= 150 and len(trig) >= len(hard) - 5, g
        assert {m["style"] for m in trig} <= STYLES and all(m.get("topic") for m in trig)
        assert all("<guard>" not in x["reply"] and x["reply"].strip() for x in hard)
        # most pairs are questions on both sides: the form alone must not tell them apart
        q = lambda items: sum("?" in x["text"] for x in items) / len(items)  # noqa: E731
        assert q(trig) >= 0.45 and q(hard) >= 0.45 and abs(q(trig) - q(hard)) < 0.15, g


def test_contrast_for_an_unknown_guardrail_is_refused():
    triggers = {"politics": TriggerPool([], [], [], [])}
    with pytest.raises(PersonaguardError, match="contrast/cooking.json"):
        add_contrast(triggers, {}, {"cooking": {"pairs": []}})
    hard: dict = {}
    add_contrast(
        triggers,
        hard,
        {"politics": {"pairs": [{"trigger": "t?", "neutral": "n?", "reply": "r", "style": "direct", "topic": "x"}]}},
    )
    assert triggers["politics"].messages[0]["text"] == "t?" and hard["politics"][0]["reply"] == "r"
