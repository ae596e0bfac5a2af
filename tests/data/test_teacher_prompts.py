"""The checks an LLM answer must pass before it becomes a row (no server needed)."""

from __future__ import annotations

import json

import pytest

from personaguard.config import GenerateConfig
from personaguard.data.teacher_prompts import InvalidOutput, Job, build_messages, normalise_message, parse_example
from personaguard.guardrails import get_guardrail

G = get_guardrail("politics")
PERSONA = {"name": "Ann", "traits": ["kind"], "expressions": ["oh my"]}
HISTORY = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hey!"}]
GOOD = {
    "persona": PERSONA,
    "memories": ["likes tea"],
    "history": HISTORY,
    "message": "who do you vote for?",
    "chosen": "<guard> I keep out of politics, how was your tea?",
    "rejected": "Definitely the greens!",
}
FIXED = (
    {"name": "Zoe", "traits": ["calm"], "expressions": ["hm"]},
    [{"role": "user", "content": "yo"}, {"role": "assistant", "content": "yo!"}],
)


def _parse(answer: dict | str, triggering: bool = True, variation: str = "vary_all"):
    content = answer if isinstance(answer, str) else json.dumps(answer)
    return parse_example(content, G, GenerateConfig(variation=variation), Job("x-train-00001", "train", 1, triggering), *FIXED)


def test_good_answer_becomes_an_example_without_extra_fields():
    ex = _parse({**GOOD, "label": "none", "junk": 1, "persona": {**PERSONA, "age": 3}})
    assert ex.label == "politics" and ex.kind == "trigger" and ex.id == "x-train-00001"
    dumped = ex.model_dump()
    assert "junk" not in dumped and "age" not in dumped["persona"]


@pytest.mark.parametrize(
    "answer,triggering,needle",
    [
        ("{oops", True, "not JSON"),
        ("", True, "empty"),
        ({**GOOD, "chosen": "I keep out of politics"}, True, "must begin with <guard>"),
        ({**GOOD, "chosen": "<guard>   "}, True, "must begin with <guard>"),
        ({**GOOD, "rejected": "sure <guard>"}, True, "must not contain"),
        ({**GOOD, "chosen": "Nice!", "rejected": "No."}, False, "rejected must begin"),
        ({**GOOD, "message": "<guard> hi"}, True, "only in chosen/rejected"),
        ({**GOOD, "memories": ["a", "b", "c"]}, True, "at most 2"),
        ({**GOOD, "history": HISTORY[::-1]}, True, "history[0].role must be 'user'"),
        ({**GOOD, "history": HISTORY * 5}, True, "2 to 8"),
        ({**GOOD, "persona": {"name": "", "traits": [], "expressions": []}}, True, "name and traits"),
    ],
)
def test_bad_answers_are_invalid(answer, triggering, needle):
    with pytest.raises(InvalidOutput, match=needle.replace("[", r"\[")):
        _parse(answer, triggering)


@pytest.mark.parametrize("variation", ["fixed_character", "semi_fixed", "fixed_history"])
def test_fixed_parts_are_put_back_verbatim(variation):
    ex = _parse(GOOD, variation=variation).model_dump()
    if variation == "fixed_history":
        assert ex["history"] == FIXED[1] and ex["persona"]["name"] == "Ann"
    else:
        assert (ex["persona"]["name"], ex["persona"]["traits"]) == ("Zoe", ["calm"])
        assert ex["persona"]["expressions"] == (["hm"] if variation == "fixed_character" else ["oh my"])


def test_prompt_names_kind_tag_and_fixed_persona():
    cfg = GenerateConfig(variation="fixed_character")
    text = build_messages(G, cfg, Job("x", "train", 1, False, kind="hard_negative"), *FIXED)[-1]["content"]
    assert "Example kind: hard_negative" in text and "<guard>" in text and '"Zoe"' in text and G.trigger in text


def test_normalised_messages():
    assert normalise_message("  Don't you THINK, so?!  ") == normalise_message("dont you think so") == "dont you think so"
    assert normalise_message("hi,there") == normalise_message("hi there")
