"""Surface variants of a user-written message: casing, typos, a framing line, trailing punctuation.

A guardrail defined in YAML comes with a dozen examples, not the hundreds of pool messages the
built-ins have. Training on the same dozen strings teaches the adapter those strings; real users
type the same request lowercased, misspelt, wrapped in "ok random question" or left without its
question mark. Each variant is a pure function of the rng, so the offline backend stays
deterministic per (seed, split, i).
"""

from __future__ import annotations

import random
import re

LEADS = [
    "ok random question",
    "can i ask you something?",
    "be honest with me",
    "hey so",
    "sorry if this is weird but",
    "quick one:",
    "been meaning to ask",
    "serious question now",
]
TAILS = ["lol", "just curious", "haha", "??", "be honest", "if you don't mind me asking", "🙂"]
_WORD = re.compile(r"[A-Za-z]{4,}")


def typo(text: str, rng: random.Random) -> str:
    """Swap two neighbouring letters or drop one, in one word of four letters or more."""
    words = list(_WORD.finditer(text))
    if not words:
        return text
    m = rng.choice(words)
    w = m.group()
    j = rng.randrange(1, len(w) - 1)
    w2 = w[:j] + w[j + 1 :] if rng.random() < 0.5 else w[: j - 1] + w[j] + w[j - 1] + w[j + 1 :]
    return text[: m.start()] + w2 + text[m.end() :]


def vary(text: str, rng: random.Random) -> str:
    """One variant of `text`; the original about a third of the time."""
    r = rng.random()
    if r < 0.35:
        return text
    out = text
    if rng.random() < 0.5:
        out = out.lower()
    if rng.random() < 0.35:
        out = out.rstrip("?.!")
    if rng.random() < 0.3:
        out = typo(out, rng)
    if rng.random() < 0.25:
        lead = rng.choice(LEADS)
        out = f"{lead}\n{out}" if rng.random() < 0.5 else f"{lead} {out[:1].lower()}{out[1:]}"
    elif rng.random() < 0.2:
        out = f"{out} {rng.choice(TAILS)}"
    return out
