"""Cost curves: training time against the number of examples and against the prompt (history) length, and
evaluation time against the number of items, with one plot; do they grow linearly?

    .venv/bin/python bench/cost_curves.py                                   # embedded SmolLM2, CPU
    python bench/cost_curves.py --device cuda --precision bf16 --sizes 320 640 1280 2560 5120

Training uses our ORPO trainer with the quickstart's settings (`bench/train_throughput.py`'s pairs and trainer):
one epoch over N quickstart-style politics pairs for each N in `--sizes`, then a fixed number of pairs with every
prompt stretched to each length in `--prompt-lengths`. Evaluation is the guard decision (`inference.guard_pass`,
batches of 16) on the first K snapshots of `real-chats-v1` for each K in `--items`. Every point is the wall time
of the whole call in this process (model loaded once, warm-up first). A curve is called linear when the cost per
unit (pair, prompt token, item) at its largest point is within 25 % of the cost per unit at its smallest.

Writes a JSON result and a PNG; the last line printed is the largest / smallest cost-per-unit ratio of each curve.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_throughput as tt  # noqa: E402  (bench/ is not a package)

LINEAR = 1.25


def train_seconds(args, model, tok, cfg, device, n: int, prompt_tokens: int) -> float:
    """Wall seconds of one epoch over n pairs (prompts stretched to prompt_tokens when > 0)."""
    args.pairs, args.prompt_tokens = n, prompt_tokens
    feats = tt.pairs(args, tok, cfg)
    steps = max(n // cfg.batch_size, 1)
    trainer = tt.ours_trainer(cfg, model, tok, feats, tempfile.mkdtemp(prefix="pg-cost-"), steps, device, [])
    t0 = time.perf_counter()
    trainer.train()
    return time.perf_counter() - t0


def eval_seconds(model, tok, snaps, k: int, batch_size: int) -> float:
    from personaguard.inference import guard_pass
    from personaguard.prompt import prompt_ids

    prompts = [prompt_ids(tok, s, 224) for s in snaps[:k]]
    t0 = time.perf_counter()
    guard_pass(model, tok, prompts, "<guard>", batch_size=batch_size)
    return time.perf_counter() - t0


def per_unit_ratio(points: list[tuple[float, float]]) -> float:
    """Cost per unit at the largest x over cost per unit at the smallest (1.0 = exactly linear through 0)."""
    (x0, y0), (x1, y1) = min(points), max(points)
    return (y1 / x1) / (y0 / x0)


def plot(curves: dict[str, dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.4))
    for ax, (name, c) in zip(axes, curves.items()):
        xs, ys = zip(*sorted(c["points"]))
        ax.plot(xs, ys, "o-", label="measured")
        x0, y0 = min(c["points"])
        ax.plot([0, max(xs)], [0, y0 / x0 * max(xs)], "--", color="grey", label="linear from the smallest point")
        ax.set_xlabel(c["unit"])
        ax.set_ylabel("seconds")
        ax.set_title(f"{name} ({c['ratio']:.2f}x per unit)")
        ax.set_xlim(left=0)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="embedded:smollm2-135m-instruct")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128, 256], help="pairs per training run")
    ap.add_argument("--prompt-lengths", type=int, nargs="+", default=[112, 224, 448, 896])
    ap.add_argument("--length-pairs", type=int, default=32, help="pairs per run of the prompt-length curve")
    ap.add_argument("--items", type=int, nargs="+", default=[30, 60, 120, 240])
    ap.add_argument("--data", default="real-chats-v1")
    ap.add_argument("--out", default="bench/results/cost_curves.json")
    ap.add_argument("--plot", default="docs/img/cost_curves.png")
    args = ap.parse_args(argv)
    args.reply_tokens, args.batch_size, args.prompt_tokens, args.pairs = 0, 0, 0, 0
    from personaguard.data.eval_sets import resolve_data
    from personaguard.schema import read_jsonl, write_text_atomic
    from personaguard.train.train import lora_for_training

    snaps = read_jsonl(resolve_data(args.data))
    if max(args.items) > len(snaps):
        ap.error(f"--items: {args.data} has only {len(snaps)} snapshots")
    cfg = tt.quickstart_train_config(args)
    model, tok, device = lora_for_training(cfg)
    train_seconds(args, model, tok, cfg, device, cfg.batch_size * 2, 0)  # warm-up
    curves: dict[str, dict] = {
        "training vs examples": {"unit": "pairs (one epoch)", "points": []},
        "training vs prompt length": {"unit": f"prompt tokens ({args.length_pairs} pairs)", "points": []},
        "evaluation vs items": {"unit": f"items ({args.data}, guard decision)", "points": []},
    }
    for n in args.sizes:
        curves["training vs examples"]["points"].append((n, train_seconds(args, model, tok, cfg, device, n, 0)))
    for p in args.prompt_lengths:
        secs = train_seconds(args, model, tok, cfg, device, args.length_pairs, p)
        curves["training vs prompt length"]["points"].append((p, secs))
    model.eval()
    eval_seconds(model, tok, snaps, 16, 16)  # warm-up
    for k in args.items:
        curves["evaluation vs items"]["points"].append((k, eval_seconds(model, tok, snaps, k, 16)))
    for name, c in curves.items():
        c["ratio"] = per_unit_ratio(c["points"])
        c["linear"] = c["ratio"] <= LINEAR
        print(f"{name}: " + ", ".join(f"{x:g} -> {y:.1f} s" for x, y in c["points"]) + f"; per unit {c['ratio']:.2f}x")
    plot(curves, Path(args.plot))
    write_text_atomic(args.out, json.dumps({"args": vars(args), "device": device, "curves": curves}, indent=1))
    print(f"plot: {args.plot}; result: {args.out}")
    print("cost per unit, largest / smallest point: " + ", ".join(f"{n} {c['ratio']:.2f}x" for n, c in curves.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
