"""The curated offline pools (package data, see pools/SPEC.md) and their train/test partition.

Every pool item goes to the train or the test side by a stable hash of its text, independent of
the seed, so test snapshots are built only from items (messages, personas, histories, memories)
that no training example uses, whatever seeds different runs pick.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

from .errors import PersonaguardError

TEST_SHARE = 0.2


def is_test_item(text: str, share: float = TEST_SHARE) -> bool:
    h = int(hashlib.sha1(text.strip().lower().encode("utf-8")).hexdigest()[:8], 16)
    return (h % 10_000) < share * 10_000


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

    def side(self, test: bool) -> "Pools":
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
        )


def _read(name: str):
    path = resources.files("personaguard") / "pools" / name
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PersonaguardError(f"package data pools/{name} is missing (broken install?)") from None


@lru_cache(maxsize=1)
def load_pools() -> Pools:
    neutral = _read("neutral.json")
    triggers = {}
    folder = resources.files("personaguard") / "pools" / "triggers"
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".json"):
            raw = json.loads(entry.read_text(encoding="utf-8"))
            triggers[entry.name[:-5]] = TriggerPool(**raw)
    return Pools(
        personas=_read("personas.json"),
        memories=_read("memories.json"),
        histories=_read("histories.json"),
        neutral=neutral["pairs"],
        hard=neutral["hard"],
        triggers=triggers,
        fillers={k: v for k, v in _read("fillers.json").items() if not k.startswith("_")},
    )
