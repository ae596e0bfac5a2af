"""Which side of the train/test partition a piece of text falls on.

Every pool item, and every example a user writes in a guardrail file, goes to the train or the test
side by a stable hash of its text, independent of the seed: test snapshots are built only from items
that no training example uses, whatever seeds different runs pick, and adding an item moves at most
itself between the sides.
"""

from __future__ import annotations

import hashlib

from ..guardrails import HELD_OUT_SHARE

TEST_SHARE = 0.2  # of pool items


def _hash(text: str) -> str:
    return hashlib.sha1(" ".join(text.lower().split()).encode("utf-8")).hexdigest()


def is_test_item(text: str, share: float = TEST_SHARE) -> bool:
    h = int(hashlib.sha1(text.strip().lower().encode("utf-8")).hexdigest()[:8], 16)
    return (h % 10_000) < share * 10_000


def held_out(texts: list[str], share: float = HELD_OUT_SHARE) -> set[str]:
    """The user examples kept for the test split: the `share` with the lowest text hash (at least one).

    By rank rather than threshold, so a dozen examples hold out exactly a quarter, never none or all."""
    if len(texts) < 2:
        return set()
    n = max(1, round(len(texts) * share))
    return set(sorted(texts, key=_hash)[:n])
