"""Diversity report of the offline pools (writes the tables of docs/data.md to stdout).

    .venv/bin/python bench/data_diversity.py

distinct-n = unique n-grams / all n-grams over the final messages; max similarity = for each
held-out (test-side) message, the highest TF-IDF cosine to any train-side message of the same pool
(1.0 would be a verbatim repeat); share of questions and mean length, because neutral and
triggering messages that differ in these let an adapter learn "long question -> tag" instead of its
trigger (docs/research-log.md, generalisation); counts per phrasing style.
"""

from __future__ import annotations

from collections import Counter

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics.pairwise import cosine_similarity

from personaguard.data.pools import is_test_item, load_pools

STYLES = ["direct", "indirect", "polite", "slang", "misspelt", "multi_sentence", "topic_drift", "short", "continuation", "hard"]


def distinct(texts: list[str], n: int) -> float:
    grams = [tuple(t.lower().split()[i : i + n]) for t in texts for i in range(max(0, len(t.split()) - n + 1))]
    return len(set(grams)) / max(1, len(grams))


def max_sim(texts: list[str]) -> tuple[float, float, int, int]:
    train = [t for t in texts if not is_test_item(t)]
    test = [t for t in texts if is_test_item(t)]
    vec = TfidfVectorizer(ngram_range=(1, 2)).fit(train + test)
    sims = cosine_similarity(vec.transform(test), vec.transform(train)).max(axis=1)
    return float(sims.mean()), float(sims.max()), len(train), len(test)


def main() -> None:
    p = load_pools()
    pools = {f"trigger:{g}": [m["text"] for m in t.messages] for g, t in p.triggers.items()}
    pools["neutral"] = [x["text"] for x in p.neutral]
    pools.update({f"hard:{g}": [x["text"] for x in v] for g, v in p.hard.items()})
    print("| pool | messages | distinct-1 | distinct-2 | train / test | mean max-sim test→train | max | questions | mean chars |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, texts in pools.items():
        mean, mx, ntr, nte = max_sim(texts)
        q = sum("?" in t for t in texts) / len(texts)
        chars = sum(len(t) for t in texts) / len(texts)
        print(
            f"| {name} | {len(texts)} | {distinct(texts, 1):.3f} | {distinct(texts, 2):.3f} | {ntr} / {nte} | {mean:.3f} | {mx:.3f} "
            f"| {q:.0%} | {chars:.0f} |"
        )
    print()
    print("| pool | " + " | ".join(STYLES) + " |")
    print("|---|" + "---|" * len(STYLES))
    styled = {f"trigger:{g}": t.messages for g, t in p.triggers.items()}
    styled["neutral"] = p.neutral
    styled.update({f"hard:{g}": v for g, v in p.hard.items()})
    for name, items in styled.items():
        c = Counter(x.get("style", "?") for x in items)
        print(f"| {name} | " + " | ".join(str(c.get(s, 0)) for s in STYLES) + " |")
    print()
    print(
        f"personas {len(p.personas)}, memories {len(p.memories)}, histories {len(p.histories)} "
        f"(lengths {dict(sorted(Counter(len(h) for h in p.histories).items()))})"
    )


if __name__ == "__main__":
    main()
