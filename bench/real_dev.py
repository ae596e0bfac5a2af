"""Guardrails on real conversations: every adapter and the default stack on every label, over seeds.

    python bench/real_dev.py                                  # 3 seeds, built-ins + configs/guardrails/religion.yaml
    python bench/real_dev.py --seeds 0 1 2 --guardrails politics expert_opinion meeting --out bench/results/real_dev.json
    python bench/real_dev.py --skip-train --run-root runs/real_dev   # evaluate adapters trained earlier
    python bench/real_dev.py --average --seeds 0 1 2                # the mean of those seeds' adapters, evaluated once

For each seed it trains one adapter per guardrail with the given config (each alone, data and
training seeded; the three built-ins and one guardrail defined only in YAML, `religion`, whose data the
offline backend builds from the file's examples), evaluates each on the packaged real-chat sets (`real-chats-v1`, and `real-religion-v1` for the
religion guardrail's own trigger and near-misses; evaluation only)
together with the embedding-classifier baseline trained on the same synthetic data, then evaluates the
default stack (`routed`) of all the adapters on the same sets, every subset of two or more members
decided from the same passes. It prints the full confusion (each adapter or stack x every label) and
the pass/fail of the targets; the last line is the count of targets met. The result goes to a JSON file.

Single-adapter targets: own trigger >= 0.95, neutral <= 0.03, each other guardrail's trigger <= 0.05,
F1 above the embedding baseline's on the same items. Stack targets: stack/confusion.py.
The embedding baseline needs `pip install -e '.[baselines]'`; without it its rows say "not run".
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

OWN, NEUTRAL, OTHER = 0.95, 0.03, 0.05
DATA = ("real-chats-v1", "real-religion-v1")  # the second judges the YAML-only guardrail `religion`


def merge_labels(per_set: dict[str, dict]) -> dict:
    """{set: {label: x}} -> one row: labels of the first set keep their names, a later set's label
    that is already there gets "@set" ("none@real-religion-v1"), so no rate is averaged across sets."""
    out: dict = {}
    for i, (name, row) in enumerate(per_set.items()):
        for lab, v in row.items():
            out[lab if i == 0 or lab not in out else f"{lab}@{name}"] = v
    return out


def single_checks(per_label: dict, guardrail: str, f1: float | None, baseline_f1: float | None) -> dict:
    """The single-adapter targets on one adapter's real-chat confusion row."""
    own = per_label.get(guardrail, {}).get("tag_rate")
    neutral = {lab: v["tag_rate"] for lab, v in per_label.items() if lab.split("@")[0] == "none"}
    others = {lab: v["tag_rate"] for lab, v in per_label.items() if lab != guardrail and lab not in neutral}
    return {
        "own": None if own is None else own >= OWN,
        **{"neutral" + lab.removeprefix("none"): None if rate is None else rate <= NEUTRAL for lab, rate in neutral.items()},
        **{f"other:{lab}": rate <= OTHER for lab, rate in others.items() if rate is not None},
        "f1_over_embedding": None if f1 is None or baseline_f1 is None else f1 > baseline_f1,
    }


def train_and_evaluate(args, seed: int, run_dir: Path | None = None) -> Path:
    from personaguard import pipeline
    from personaguard.config import PipelineConfig, load_config

    run_dir = run_dir or Path(args.run_root) / f"seed{seed}"
    # a seed average has no gate of its own (train/average.py), and the embedding baseline is the seeds' business
    settings = ["adapter"] if args.average else ["adapter", "adapter_gated"] + (["embedding"] if args.embedding else [])
    sets = [
        f"guardrails=[{','.join(args.guardrails)}]",
        f"run_dir={run_dir}",
        f"generate.seed={seed}",
        f"train.seed={seed}",
        f"extra_eval_data=[{','.join(DATA)}]",
        f"guardrails_dir={args.guardrails_dir}",
        f"evaluate.settings=[{','.join(settings)}]",
        *args.set,
    ]
    cfg = load_config(PipelineConfig, args.config, sets)
    start = 2 if args.skip_generate else 1
    pipeline.run(cfg, start_step=3 if args.skip_train or args.average else start, end_step=3, source=args.config)
    return run_dir


def averaged_run(args) -> Path:
    """A run folder whose adapters are the means of the seeds' adapters (train/average.py), built once.
    Its data folder is the first seed's: the synthetic test splits hold only pool items that no seed's
    training split has (pools are split by a hash of the text, whatever the seed)."""
    from personaguard.train.average import average

    root = Path(args.run_root)
    run_dir = root / ("avg" + "-".join(map(str, args.seeds)))
    for g in args.guardrails:
        if not (run_dir / "adapters" / g).exists():
            average([root / f"seed{s}" / "adapters" / g for s in args.seeds], run_dir / "adapters" / g)
    if not (run_dir / "data").exists():
        (run_dir / "data").symlink_to((root / f"seed{args.seeds[0]}" / "data").resolve(), target_is_directory=True)
    return run_dir


def stack(args, run_dir: Path) -> dict:
    """The default stack of all the adapters on each real-chat set: {set: stack_metrics}."""
    from personaguard.config import StackEvalConfig, build
    from personaguard.stack import evaluate as stack_eval

    adapters = {g: str(run_dir / "adapters" / g) for g in args.guardrails}
    out = {}
    for data in DATA:
        cfg = build(
            StackEvalConfig,
            {
                "adapters": adapters,
                "data": data,
                "out_dir": str(run_dir / "stacks_real" / data),
                "methods": ["routed"],
                "per_guardrail": args.per_label,
                "guardrails_dir": args.guardrails_dir,
                **{k.split("=", 1)[0].removeprefix("evaluate."): v for k, v in _stack_overrides(args).items()},
            },
            "bench/real_dev.py (stack)",
        )
        stack_eval.run(cfg)
        out[data] = json.loads((run_dir / "stacks_real" / data / "stack_metrics.json").read_text(encoding="utf-8"))
    return out


def _stack_overrides(args) -> dict:
    """evaluate.precision / batch_size / device given with --set also apply to the stack evaluation."""
    import yaml

    out = {}
    for s in args.set:
        key, _, raw = s.partition("=")
        if key in ("evaluate.precision", "evaluate.batch_size", "evaluate.device"):
            out[key] = yaml.safe_load(raw)
    return out


def seed_result(args, run_dir: Path, stacked: dict) -> dict:
    """Each adapter's confusion row over both sets (merge_labels), F1 on the set that holds its own
    trigger, and the stack's rows and subsets on each set."""
    singles = {}
    for g in args.guardrails:
        per_set = {
            d: json.loads((run_dir / "eval" / g / d / "metrics.json").read_text(encoding="utf-8"))["settings"] for d in DATA
        }
        home = next((d for d in DATA if any(g in m["per_label"] for m in per_set[d].values())), DATA[0])
        emb = per_set[home].get("embedding", {}).get("f1")
        singles[g] = {}
        for setting in per_set[DATA[0]]:
            per_label = merge_labels({d: per_set[d][setting]["per_label"] for d in DATA if setting in per_set[d]})
            f1 = per_set[home].get(setting, {}).get("f1")
            singles[g][setting] = {
                "per_label": {lab: v["tag_rate"] for lab, v in per_label.items()},
                "f1": f1,
                "f1_on": home,
                "checks": single_checks(per_label, g, f1, emb) if setting != "embedding" else {},
            }
    return {
        "singles": singles,
        "stack_confusion": {
            d: {s: {lab: v["tag_rate"] for lab, v in per.items()} for s, per in m["confusion"].items()}
            for d, m in stacked.items()
        },
        "subsets": [{**t, "data": d} for d, m in stacked.items() for t in m["subsets"]],
        "guard_cost": {d: m["guard_cost"] for d, m in stacked.items()},
    }


def print_seed(seed: int | str, res: dict) -> tuple[int, int]:
    met = total = 0
    print(f"\n## seed {seed}\n")
    labels = sorted(
        {lab for g in res["singles"].values() for m in g.values() for lab in m["per_label"]}, key=lambda x: (x == "none", x)
    )
    print("| adapter / setting | " + " | ".join(labels) + " | F1 | targets |")
    print("|" + "---|" * (len(labels) + 3))
    for g, per in res["singles"].items():
        for setting, m in per.items():
            checks = m["checks"]
            missed = [k for k, v in checks.items() if v is False]
            cells = " | ".join(f"{m['per_label'].get(lab):.3f}" if m["per_label"].get(lab) is not None else "–" for lab in labels)
            verdict = "" if setting == "embedding" else ("met" if not missed else "missed: " + ", ".join(missed))
            f1 = f"{m['f1']:.3f}" if m["f1"] is not None else "–"
            print(f"| {g} / {setting} | {cells} | {f1} | {verdict} |")
            if setting == "adapter":
                total += 1
                met += not missed and all(v is not None for k, v in checks.items() if k != "f1_over_embedding")
    print("\nDefault stack (routed) on every subset:\n")
    for t in res["subsets"]:
        missed = [k for k, v in t["checks"].items() if v is False]
        cells = ", ".join(f"{lab} {v['tag_rate']:.3f}" for lab, v in t["confusion"].items() if v["tag_rate"] is not None)
        print(
            f"- {t['data']}: {'+'.join(t['subset'])}: {cells}; attribution {t['attribution']}; "
            + ("met" if t["passed"] else "missed: " + ", ".join(missed))
        )
        total += 1
        met += t["passed"]
    print(f"\nguard decision cost (stack / one member): {res['guard_cost']}")
    return met, total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--guardrails", nargs="+", default=["politics", "expert_opinion", "meeting", "religion"])
    ap.add_argument("--guardrails-dir", default="configs/guardrails", help="folder of user guardrail YAML files")
    ap.add_argument(
        "--config", default="configs/quickstart.yaml", help="pipeline config whose generate/train/evaluate sections are used"
    )
    ap.add_argument("--run-root", default="runs/real_dev")
    ap.add_argument("--set", action="append", default=[], help="pipeline override, e.g. train.precision=fp32 (repeatable)")
    ap.add_argument("--skip-train", action="store_true", help="evaluate adapters already in --run-root")
    ap.add_argument("--skip-generate", action="store_true", help="train on data already in --run-root")
    ap.add_argument("--no-stack", action="store_true")
    ap.add_argument("--per-label", type=int, default=0, help="stack: at most this many items per label (0 = all; for smoke runs)")
    ap.add_argument("--out", default="bench/results/real_dev.json")
    ap.add_argument("--no-embedding", action="store_true", help="skip the embedding baseline")
    ap.add_argument(
        "--average",
        action="store_true",
        help="evaluate the mean of the --seeds' adapters (trained earlier in --run-root) as one more row, not each seed",
    )
    args = ap.parse_args(argv)
    args.embedding = not args.no_embedding and importlib.util.find_spec("sentence_transformers") is not None
    if not args.embedding and not args.no_embedding:
        print("embedding baseline: not run (sentence-transformers is not installed; pip install -e '.[baselines]')")
    results, met, total = {}, 0, 0
    t0 = time.perf_counter()
    # (name of the result row, seed of the config, run folder); an average is evaluated under its first seed's config
    if args.average:
        avg = averaged_run(args)
        runs = [(avg.name, args.seeds[0], avg)]
    else:
        runs = [(s, s, None) for s in args.seeds]
    for name, seed, run_dir in runs:
        run_dir = train_and_evaluate(args, seed, run_dir)
        stacked = {} if args.no_stack else stack(args, run_dir)
        results[name] = seed_result(args, run_dir, stacked)
        m, t = print_seed(name, results[name])
        met, total = met + m, total + t
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "args": {k: v for k, v in vars(args).items()},
                "seconds": round(time.perf_counter() - t0, 1),
                "seeds": results,
                "met": met,
                "total": total,
            },
            indent=2,
        ),
        encoding="utf-8",
    )
    print(f"\nresult: {out}")
    print(f"targets met: {met} of {total}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
