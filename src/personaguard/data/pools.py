"""The curated offline pools (package data, see pools/SPEC.md) and their train/test partition.

Every pool item goes to the train or the test side by a stable hash of its text, independent of
the seed, so test snapshots are built only from items (messages, personas, histories, memories)
that no training example uses, whatever seeds different runs pick.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

from ..errors import PersonaguardError
from .splits import TEST_SHARE, held_out, is_test_item  # noqa: F401 (re-exported)
from .teacher_prompts import normalise_message


@dataclass
class TriggerPool:
    messages: list[dict]
    engaging_replies: list[str]
    decline_lines: list[str]
    redirects: list[str]


@dataclass
class Pools:
    personas: list[dict]
    memories: list[str]
    histories: list[list[dict]]
    neutral: list[dict]
    hard: dict[str, list[dict]]
    triggers: dict[str, TriggerPool] = field(default_factory=dict)
    fillers: dict[str, list[str]] = field(default_factory=dict)  # "lead"/"tail" lines of multi-message turns
    other_topics: list[dict] = field(default_factory=list)  # serious topics no guardrail covers (other_topics.json)

    def side(self, test: bool) -> Pools:
        """The pools restricted to one side of the train/test partition."""
        keep = lambda items, key: [x for x in items if is_test_item(key(x)) == test]  # noqa: E731
        return Pools(
            personas=keep(self.personas, lambda p: json.dumps(p, sort_keys=True)),
            memories=keep(self.memories, str),
            histories=keep(self.histories, lambda h: h[0]["content"] + h[-1]["content"]),
            neutral=keep(self.neutral, lambda x: x["text"]),
            hard={g: keep(v, lambda x: x["text"]) for g, v in self.hard.items()},
            triggers={
                g: TriggerPool(keep(t.messages, lambda x: x["text"]), t.engaging_replies, t.decline_lines, t.redirects)
                for g, t in self.triggers.items()
            },
            fillers={k: keep(v, str) for k, v in self.fillers.items()},
            other_topics=keep(self.other_topics, lambda x: x["text"]),
        )


def _read(name: str):
    path = resources.files("personaguard.data") / "pools" / name
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PersonaguardError(f"package data pools/{name} is missing (broken install?)") from None


def _json_files(folder: str) -> dict[str, object]:
    root = resources.files("personaguard.data") / "pools" / folder
    if not root.is_dir():
        return {}
    return {
        e.name[:-5]: json.loads(e.read_text(encoding="utf-8"))
        for e in sorted(root.iterdir(), key=lambda p: p.name)
        if e.name.endswith(".json")
    }


def add_contrast(triggers: dict[str, TriggerPool], hard: dict[str, list[dict]], contrast: dict[str, dict]) -> None:
    """Fold minimal pairs (pools/contrast/<guardrail>.json) into the trigger and hard-negative pools.

    A pair is a triggering message and a neutral one of the same sentence shape ("what do you think
    about the new tax bill?" / "... the new spider-man movie?"). Real chats are full of opinion
    questions, plans and places that are not triggers; with only the topic telling the two apart,
    the adapter cannot learn "question -> tag" or "mentions a place -> tag" as a shortcut."""
    for g, raw in contrast.items():
        if g not in triggers:
            raise PersonaguardError(f"pools/contrast/{g}.json: no pools/triggers/{g}.json for guardrail '{g}'")
        seen = {normalise_message(m["text"]) for m in triggers[g].messages}
        for p in raw["pairs"]:
            meta = {k: p[k] for k in ("style", "topic", "domain") if k in p}
            if normalise_message(p["trigger"]) not in seen:  # a few pairs reuse a plain trigger as their half
                triggers[g].messages.append({"text": p["trigger"], **meta, "contrast": True})
            hard.setdefault(g, []).append({"text": p["neutral"], "reply": p["reply"], "style": p["style"], "contrast": True})


@lru_cache(maxsize=1)
def generic_replies() -> dict[str, list[str]]:
    return {k: v for k, v in _read("generic.json").items() if not k.startswith("_")}


def user_pool(g, test: bool) -> tuple[TriggerPool, list[dict]]:
    """Trigger pool and near-miss negatives for a guardrail defined only in YAML (its examples).

    The held-out examples form the test side alone; near-misses are split by text hash like every
    pool item. Replies come from the guardrail file (`replies`) or the generic pool."""
    generic = generic_replies()
    test_ex = held_out(g.examples)
    messages = [{"text": t, "style": "user_example"} for t in g.examples if (t in test_ex) == test]
    near = [x for x in g.near_misses if is_test_item(x) == test]
    replies = generic["neutral_replies"]
    hard = [{"text": t, "reply": replies[i % len(replies)], "style": "user_near_miss"} for i, t in enumerate(near)]
    pool = TriggerPool(messages, generic["engaging_replies"], g.replies or generic["decline_lines"], generic["redirects"])
    return pool, hard


@lru_cache(maxsize=1)
def load_pools() -> Pools:
    neutral = _read("neutral.json")
    triggers = {g: TriggerPool(**raw) for g, raw in _json_files("triggers").items()}
    hard = {g: list(v) for g, v in neutral["hard"].items()}
    add_contrast(triggers, hard, _json_files("contrast"))
    return Pools(
        personas=_read("personas.json"),
        memories=_read("memories.json"),
        histories=_read("histories.json"),
        neutral=neutral["pairs"],
        hard=hard,
        triggers=triggers,
        fillers={k: v for k, v in _read("fillers.json").items() if not k.startswith("_")},
        other_topics=_read("other_topics.json")["messages"],
    )
