"""The 4-bit GPU path: our ORPO trainer on a bitsandbytes NF4 base beside the same run on the bf16 base, and the
4-bit-trained adapter loaded onto the bf16 base (the way a QLoRA adapter is served).

    python bench/qlora.py --shape llama-8b --steps 200 --prompt-tokens 870 --reply-tokens 150 --batch-size 2
    python bench/qlora.py --shape llama-1b --steps 300                 # GPU: 4-bit and bf16 side by side
    python bench/qlora.py --model PATH --modes bf16 --device cpu --precision fp32 --steps 3   # CPU: all but the 4-bit load

Each mode trains in its own process (for its peak GPU memory), with the settings `train.load_in_4bit: true`
gives a user (`configs/paper.yaml`): NF4 weights, bf16 compute, PEFT's `prepare_model_for_kbit_training`.
Both train on the same quickstart-style pairs (`bench/train_throughput.py`'s, optionally stretched to persona
lengths), same LoRA, batch size and optimiser. Every logged loss must be finite. The saved adapter of the
last mode is then loaded onto the unquantised base in a fresh process: every saved LoRA tensor must load,
the logits must be finite and must differ from the base model's (the adapter takes effect).

Writes a JSON result; the last line printed is the 4-bit / bf16 ratio of pairs/s and of peak GPU memory.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_throughput as tt  # noqa: E402  (bench/ is not a package; the sibling holds the shared pair builder)

REPO = tt.REPO


def train_mode(args) -> dict:
    """Train `args.steps` steps on the base loaded as `args.worker` ('4bit' or 'bf16'); save the adapter."""
    args.load_in_4bit = args.worker == "4bit"
    cfg = tt.quickstart_train_config(args)
    from personaguard.train.train import lora_for_training

    model, tok, device = lora_for_training(cfg)
    feats = tt.pairs(args, tok, cfg)
    clock = tt._Clock()
    tmp = tempfile.mkdtemp(prefix="pg-qlora-")
    trainer = tt.ours_trainer(cfg, model, tok, feats, tmp, args.steps, device, [clock.callback], logging_steps=1)
    timing = tt.train_timed(trainer, cfg, feats, device, clock)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    adapter = Path(args.adapter_dir) / args.worker
    model.save_pretrained(str(adapter))
    return {
        "mode": args.worker,
        **timing,
        "steps": timing["timed_steps"] + 1,
        "losses": losses,
        "all_losses_finite": bool(losses) and all(math.isfinite(x) for x in losses),
        "adapter": str(adapter),
    }


def load_check(args) -> dict:
    """The adapter in `args.adapter` on the unquantised base: every tensor loads, logits finite and changed."""
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file

    from personaguard.models import LoadOptions, load_model

    base, tok = load_model(args.model, LoadOptions(args.device, args.precision))
    ids = tok("Do you think the election was stolen?", return_tensors="pt").input_ids.to(base.device)
    with torch.no_grad():
        before = base(ids).logits.float()
    model = PeftModel.from_pretrained(base, args.adapter)
    saved = load_file(str(Path(args.adapter) / "adapter_model.safetensors"))
    loaded = {n for n, _ in model.named_parameters() if "lora_" in n}
    missing = [k for k in saved if not any(n.startswith(k.removesuffix(".weight")) for n in loaded)]
    with torch.no_grad():
        after = model(ids).logits.float()
    return {
        "saved_tensors": len(saved),
        "missing_tensors": len(missing),
        "logits_finite": bool(torch.isfinite(after).all()),
        "max_logit_change": float((after - before).abs().max()),
    }


def _spawn(args, worker: str, extra: list[str]) -> dict:
    return tt._spawn(args, worker, __file__, ("--adapter-dir", args.adapter_dir, *extra))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="embedded:smollm2-135m-instruct")
    ap.add_argument("--shape", choices=sorted(tt.SHAPES), help="random bf16 weights of this architecture instead of --model")
    ap.add_argument("--shape-dir", default="runs/bench_shapes")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--precision", default="bf16", help="compute dtype (4-bit: the NF4 compute dtype)")
    ap.add_argument("--modes", nargs="+", choices=["bf16", "4bit"], default=["bf16", "4bit"])
    ap.add_argument("--pairs", type=int, default=256)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--prompt-tokens", type=int, default=0)
    ap.add_argument("--reply-tokens", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=0)
    ap.add_argument("--adapter-dir", default="", help="where the adapters are saved (default: a temporary folder)")
    ap.add_argument("--out", default="bench/results/qlora.json")
    ap.add_argument("--worker", choices=["bf16", "4bit", "load"], help=argparse.SUPPRESS)
    ap.add_argument("--adapter", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.steps < 2:
        ap.error("--steps: at least 2 (the first optimiser step is warm-up)")
    if not args.worker and "4bit" in args.modes and not args.device.startswith("cuda"):
        ap.error("--modes 4bit needs --device cuda (bitsandbytes); on CPU use --modes bf16")
    from personaguard.schema import write_text_atomic

    if args.shape:
        args.model = tt.random_model(args.shape, args.device, Path(args.shape_dir))
    if args.worker == "load":
        print(json.dumps(load_check(args)))
        return 0
    if args.worker:
        print(json.dumps(train_mode(args)))
        return 0

    args.adapter_dir = args.adapter_dir or tempfile.mkdtemp(prefix="pg-qlora-adapters-")
    runs = {m: _spawn(args, m, []) for m in args.modes}
    last = args.modes[-1]
    check = _spawn(args, "load", ["--adapter", runs[last]["adapter"]])
    for r in runs.values():
        gpu = f", peak GPU {r['peak_gpu_gib']:.1f} GiB" if r["peak_gpu_gib"] is not None else ""
        print(
            f"{r['mode']:>5}: {r['steps']} steps, {r['pairs_per_s']:.3f} pairs/s, {r['reply_tokens_per_s']:.1f} reply tokens/s"
            f"{gpu}, loss {r['losses'][0]:.3f} -> {r['losses'][-1]:.3f}, all finite: {r['all_losses_finite']}"
        )
    print(
        f"{last} adapter on the unquantised base: {check['saved_tensors'] - check['missing_tensors']}/{check['saved_tensors']}"
        f" tensors loaded, logits finite: {check['logits_finite']}, max logit change {check['max_logit_change']:.3f}"
    )
    ok = all(r["all_losses_finite"] for r in runs.values()) and check["missing_tensors"] == 0 and check["logits_finite"]
    result = {
        "args": {k: v for k, v in vars(args).items() if k not in ("worker", "adapter")},
        "runs": runs,
        "load": check,
        "ok": ok,
    }
    if {"bf16", "4bit"} <= set(runs):
        b, q = runs["bf16"], runs["4bit"]
        result["ratio_pairs_per_s"] = q["pairs_per_s"] / b["pairs_per_s"]
        result["ratio_peak_gpu"] = q["peak_gpu_gib"] / b["peak_gpu_gib"] if b["peak_gpu_gib"] else None
    write_text_atomic(args.out, json.dumps(result, indent=1))
    if "ratio_pairs_per_s" in result:
        print(f"4-bit / bf16: pairs/s {result['ratio_pairs_per_s']:.2f}x, peak GPU {result['ratio_peak_gpu']:.2f}x; ok: {ok}")
    else:
        print(f"ok: {ok}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
