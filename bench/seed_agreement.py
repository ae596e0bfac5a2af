"""Do two trainings of one guardrail make the same mistakes? Tag rates per label of each seed's adapter,
of both agreeing (AND) and of either (OR), from the predictions `evaluate` wrote.

    .venv/bin/python bench/seed_agreement.py --runs runs/real_dev/seed0 runs/real_dev/seed1 --guardrail meeting \
        [--data real-chats-v1 real-religion-v1 test] [--out bench/results/seed_agreement.json]

Reads RUN/eval/GUARDRAIL/DATA/predictions.jsonl of each run (bench/real_dev.py leaves them there) and compares
the greedy `adapter` rows item by item. Why: on real chats meeting's false tags change a lot between seeds; if
each seed's false tags fall on different turns, a guardrail that fires only where two independently trained
adapters agree keeps the trigger and drops most false tags, at two rows per decision (one mixed-adapter pass,
as a stack decides) and twice the training. The mean of their weights does not do this (docs/research-log.md,
"Seed averaging"). Prints one table; the last line is the AND rule's neutral false tag rate.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def tagged_by_id(path: Path, setting: str = "adapter") -> dict[str, tuple[str, bool, str]]:
    """{item id: (label, tagged, message)} of one predictions file's rows of `setting` (first run of each item)."""
    out: dict[str, tuple[str, bool, str]] = {}
    with path.open(encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            if r["setting"] == setting and r["id"] not in out:
                out[r["id"]] = (r["label"], bool(r["tagged"]), r.get("message", ""))
    return out


def same_items(runs: list[dict[str, tuple[str, bool, str]]]) -> bool:
    """Whether every id the runs share names the same message: synthetic test splits are drawn per seed, so
    their positional ids name different items in each run, and only a fixed set (the real chats) compares."""
    return all(r[i][2] == runs[0][i][2] for r in runs[1:] for i in runs[0] if i in r)


def agreement(runs: list[dict[str, tuple[str, bool, str]]]) -> dict[str, dict[str, float]]:
    """{label: {"seed i": rate, "and": rate, "or": rate, "n": items}} over the items every run predicted."""
    ids = [i for i in runs[0] if all(i in r for r in runs[1:])]
    labels = sorted({runs[0][i][0] for i in ids}, key=lambda lab: (lab == "none", lab))
    out = {}
    for lab in labels:
        items = [i for i in ids if runs[0][i][0] == lab]
        flags = [[r[i][1] for r in runs] for i in items]
        n = len(items)
        out[lab] = {
            **{f"seed {k}": sum(f[k] for f in flags) / n for k in range(len(runs))},
            "and": sum(all(f) for f in flags) / n,
            "or": sum(any(f) for f in flags) / n,
            "n": n,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", nargs="+", required=True, help="two or more run folders (each with eval/GUARDRAIL/DATA/)")
    ap.add_argument("--guardrail", required=True)
    ap.add_argument("--data", nargs="+", default=["real-chats-v1", "real-religion-v1"])
    ap.add_argument("--out", default="bench/results/seed_agreement.json")
    a = ap.parse_args(argv)
    if len(a.runs) < 2:
        ap.error("--runs: give two or more run folders")
    result = {}
    for data in a.data:
        files = [Path(r) / "eval" / a.guardrail / data / "predictions.jsonl" for r in a.runs]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            print(f"--runs: no predictions at {', '.join(missing)} (run bench/real_dev.py or evaluate first)", file=sys.stderr)
            return 2
        runs = [tagged_by_id(f) for f in files]
        if not same_items(runs):
            print(
                f"--data {data}: the runs' items differ under the same ids (a per-seed split); use a fixed set", file=sys.stderr
            )
            return 2
        result[data] = agreement(runs)
    print("| data | label | n | " + " | ".join(f"seed {k}" for k in range(len(a.runs))) + " | AND | OR |")
    print("|---|---|---|" + "---|" * (len(a.runs) + 2))
    for data, rows in result.items():
        for lab, r in rows.items():
            seeds = " | ".join(f"{r[f'seed {k}']:.3f}" for k in range(len(a.runs)))
            print(f"| {data} | {lab} | {r['n']} | {seeds} | {r['and']:.3f} | {r['or']:.3f} |")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"runs": a.runs, "guardrail": a.guardrail, "result": result}, indent=2), encoding="utf-8")
    first = result[a.data[0]]
    print(f"AND rule, neutral false tags on {a.data[0]}: {first['none']['and']:.3f}" if "none" in first else "no neutral items")
    return 0


if __name__ == "__main__":
    sys.exit(main())
