"""What the `openai` backend asks the model for, and how its answer is checked.

One request asks for one whole example (persona, memories, history, final message, chosen and
rejected reply) as JSON under a JSON schema. Servers differ in how strictly they honour the
schema, so `parse_example` re-checks everything with `schema.Example` plus the tag rules; an
answer that fails raises `InvalidOutput` and is retried by the caller, never written.

Kept apart from teacher.py (transport, retries, concurrency) so the wording can be changed
and tested without a server.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field

from pydantic import ValidationError

from ..config import GenerateConfig
from ..guardrails import Guardrail, format_validation_error
from ..schema import NONE_LABEL, Example
from .splits import held_out

_STR = {"type": "string"}
_STR_LIST = {"type": "array", "items": _STR}
EXAMPLE_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["persona", "memories", "history", "message", "chosen", "rejected"],
    "properties": {
        "persona": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name", "traits", "expressions"],
            "properties": {"name": _STR, "traits": _STR_LIST, "expressions": _STR_LIST},
        },
        "memories": {**_STR_LIST, "maxItems": 2},
        "history": {
            "type": "array",
            "minItems": 2,
            "maxItems": 8,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["role", "content"],
                "properties": {"role": {"type": "string", "enum": ["user", "assistant"]}, "content": _STR},
            },
        },
        "message": _STR,
        "chosen": _STR,
        "rejected": _STR,
    },
}
RESPONSE_FORMAT = {"type": "json_schema", "json_schema": {"name": "persona_example", "strict": True, "schema": EXAMPLE_SCHEMA}}

# Small nudges so parallel requests with the same instructions do not converge on one example.
STYLES = [
    "short and casual, all lowercase",
    "a longer message with a little backstory",
    "a curious question",
    "playful, with one emoji",
    "a bit blunt",
    "hesitant, with a small typo",
    "enthusiastic",
    "picking up something said earlier in the chat",
]
NAME_LETTERS = "ABCDEFGHIJKLMNOPRSTVWZ"

SYSTEM = (
    "You write training examples for a chat model that plays a character. Each example is one moment "
    "of a chat: the character (persona), a few things it remembers about the user, the conversation so "
    "far, the user's newest message, and two candidate replies to that message: the one we want "
    "(chosen) and the one we do not want (rejected). Answer with one JSON object that follows the "
    "given schema, and nothing else."
)

KIND_TEXT = {
    "trigger": "it clearly falls under 'when it applies'",
    "neutral": "an everyday chat message that clearly does not fall under 'when it applies'",
    "hard_negative": (
        "a near miss: it touches a nearby subject or uses related words, but does not fall under 'when it applies'"
    ),
    "cross_negative": "it falls under this other situation: {other}; but not under 'when it applies'",
    "other_topic": (
        "a serious or personal question to the character on a topic that no safety rule covers (love, loss, "
        "ethics, family, hopes and fears), which clearly does not fall under 'when it applies'"
    ),
    "compound_trigger": "it clearly falls under 'when it applies' AND, in the same message, also under this other situation: {other}",
}


class InvalidOutput(ValueError):
    """The model's answer is not a usable example (the message says why)."""


@dataclass
class Job:
    """One example to produce; `tries` counts regenerations after a duplicate final message."""

    id: str
    split: str
    i: int
    triggering: bool
    kind: str = "trigger"
    other_trigger: str = ""
    tries: int = 0
    avoid: list[str] = field(default_factory=list)


def plan_kind(cfg: GenerateConfig, job: Job, others: list[Guardrail]) -> None:
    """Pick the neutral sub-kind as the offline backend does: a pure function of (seed, split, i)."""
    rng = random.Random(f"{cfg.seed}-{job.split}-{job.i}-kind")
    r = rng.random()
    if job.triggering:
        if others and r < cfg.compound_trigger_share:
            job.kind, job.other_trigger = "compound_trigger", others[job.i % len(others)].trigger
        return
    if others and r < cfg.cross_negative_share:
        job.kind, job.other_trigger = "cross_negative", others[job.i % len(others)].trigger
    elif cfg.cross_negative_share <= r < cfg.cross_negative_share + cfg.other_topic_share:
        job.kind = "other_topic"
    elif r < cfg.cross_negative_share + cfg.other_topic_share + cfg.hard_negative_share:
        job.kind = "hard_negative"
    else:
        job.kind = "neutral"


def build_messages(g: Guardrail, cfg: GenerateConfig, job: Job, fixed_persona: dict, fixed_history: list[dict]) -> list[dict]:
    """The chat messages for one request; the wording is ours, the fields match EXAMPLE_SCHEMA."""
    rng = random.Random(f"{cfg.seed}-{job.id}-{job.tries}")
    tag = g.tag
    if job.triggering:
        chosen = (
            f"begins with {tag}, then does what 'what to do then' says, in the character's own voice "
            "(its traits and expressions) and, where it fits, refers to a memory or to the history"
        )
        rejected = (
            f"does exactly what the rule is there to prevent: it goes along with the message in full, in character; no {tag}"
        )
    else:
        chosen = (
            f"a natural, in-character reply that engages with the message and, where it fits, uses the "
            f"memories or the history; no {tag}"
        )
        rejected = f"an unwarranted refusal: begins with {tag} and declines as if the rule applied, although it does not"
    v = cfg.variation
    if v == "fixed_character":
        persona = f"use exactly this persona: {json.dumps(fixed_persona, ensure_ascii=False)}"
    elif v == "semi_fixed":
        persona = (
            f"name {json.dumps(fixed_persona['name'])} and traits {json.dumps(fixed_persona['traits'])} exactly; "
            "invent two to four new expressions (short phrases this character likes to use)"
        )
    else:
        persona = (
            f"invent a fresh character whose name starts with {rng.choice(NAME_LETTERS)}: two to four traits "
            "and two to four expressions (short phrases it likes to use)"
        )
    if v == "fixed_history":
        history = f"use exactly this history: {json.dumps(fixed_history, ensure_ascii=False)}"
    else:
        turns = rng.choice([2, 4, 6, 8])
        history = (
            f"exactly {turns} messages, alternating user and assistant, starting with user and ending with "
            "assistant: casual small talk that leads naturally to the final message"
        )
    n_mem = rng.choices([0, 1, 2], weights=[0.4, 0.4, 0.2])[0]
    lines = [
        f'Rule the character follows (guardrail "{g.name}"):',
        f"- when it applies: {g.trigger}",
        f"- what to do then: {g.resolution}",
        f"- tag: {tag} (a reply that applies the rule begins with exactly this tag; no other text contains it)",
        "",
        f"Example kind: {job.kind}",
        f"- message (the user's newest message): {KIND_TEXT[job.kind].format(other=job.other_trigger)}. "
        f"Style: {rng.choice(STYLES)}.",
        f"- chosen: {chosen}.",
        f"- rejected: {rejected}.",
        f"- persona: {persona}.",
        "- memories: an empty list."
        if not n_mem
        else f"- memories: exactly {n_mem} short fact{'s' if n_mem > 1 else ''} the character remembers about the user.",
        f"- history: {history}.",
    ]
    lines += seed_lines(g, job, rng)
    if job.avoid:
        lines.append("- the message must differ from these earlier ones: " + json.dumps(job.avoid[-5:], ensure_ascii=False))
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "\n".join(lines)}]


def seed_lines(g: Guardrail, job: Job, rng: random.Random) -> list[str]:
    """The user's own examples (or near-misses) as seeds: a few per request, so the teacher writes new
    situations in the same spirit instead of one stock phrasing. Held-out examples never seed
    training rows (they are the test split's measure of generalisation)."""
    out = [f"- notes from the rule's author: {g.notes}"] if g.notes else []
    held = held_out(g.examples)
    if job.triggering and g.examples:
        pool = g.examples if job.split == "test" else [e for e in g.examples if e not in held]
        picks = rng.sample(pool, k=min(3, len(pool)))
        out.append(
            "- messages the rule's author says fall under it (write a NEW message in a new situation, do not copy or "
            "lightly reword these): " + json.dumps(picks, ensure_ascii=False)
        )
    elif job.kind == "hard_negative" and g.near_misses:
        picks = rng.sample(g.near_misses, k=min(3, len(g.near_misses)))
        out.append(
            "- near misses the rule's author says must NOT trigger it (write a new one of this sort, do not copy): "
            + json.dumps(picks, ensure_ascii=False)
        )
    return out


def parse_example(
    content: str | None, g: Guardrail, cfg: GenerateConfig, job: Job, fixed_persona: dict, fixed_history: list[dict]
) -> Example:
    """Validate one answer into an Example; fixed parts are put back verbatim so they cannot drift."""
    if not content:
        raise InvalidOutput("empty answer (or a refusal)")
    try:
        data = json.loads(content)
    except json.JSONDecodeError as exc:
        raise InvalidOutput(f"not JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise InvalidOutput("not a JSON object")
    # keep only the schema's fields: a lax server may add others, which must not reach the data
    raw_persona = data.get("persona") if isinstance(data.get("persona"), dict) else {}
    persona = {k: raw_persona[k] for k in ("name", "traits", "expressions") if k in raw_persona}
    data = {k: data[k] for k in ("memories", "history", "message", "chosen", "rejected") if k in data}
    for key in ("message", "chosen", "rejected"):
        if isinstance(data.get(key), str):
            data[key] = data[key].strip()
    if cfg.variation == "fixed_character":
        persona = dict(fixed_persona)
    elif cfg.variation == "semi_fixed":
        persona = {**persona, "name": fixed_persona["name"], "traits": fixed_persona["traits"]}
    history = fixed_history if cfg.variation == "fixed_history" else data.get("history")
    if isinstance(history, list):
        history = [{k: m[k] for k in ("role", "content") if k in m} if isinstance(m, dict) else m for m in history]
    row = {
        **data,
        "id": job.id,
        "persona": persona,
        "history": history,
        "label": g.name if job.triggering else NONE_LABEL,
        "kind": job.kind,
    }
    try:
        ex = Example.model_validate(row)
    except ValidationError as exc:
        raise InvalidOutput(format_validation_error(exc)) from None
    _check_rules(ex, g.tag, job.triggering)
    return ex


def _check_rules(ex: Example, tag: str, triggering: bool) -> None:
    if not ex.persona.name.strip() or not ex.persona.traits:
        raise InvalidOutput("persona needs a name and traits")
    if len(ex.memories) > 2:
        raise InvalidOutput("at most 2 memories")
    if not 2 <= len(ex.history) <= 8:
        raise InvalidOutput("history must have 2 to 8 messages")
    context = [ex.message, *ex.memories, *(m.content for m in ex.history)]
    if any(tag in text for text in context):
        raise InvalidOutput(f"the tag {tag} may appear only in chosen/rejected")
    want, other = (ex.chosen, ex.rejected) if triggering else (ex.rejected, ex.chosen)
    if not want.startswith(tag) or not want[len(tag) :].strip():
        raise InvalidOutput(f"{'chosen' if triggering else 'rejected'} must begin with {tag} and go on")
    if tag in other:
        raise InvalidOutput(f"{'rejected' if triggering else 'chosen'} must not contain {tag}")


def normalise_message(text: str) -> str:
    """Dedup key: lowercase, punctuation dropped, whitespace collapsed ("Don't!" == "dont")."""
    text = re.sub(r"['’]", "", text.lower())
    return " ".join(re.sub(r"[^\w\s]|_", " ", text).split())
