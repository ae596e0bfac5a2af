"""Training throughput: personaguard's ORPO trainer against TRL's `trl.experimental.orpo.ORPOTrainer`.

    .venv/bin/python bench/train_throughput.py                      # embedded SmolLM2, CPU, quickstart data
    .venv/bin/python bench/train_throughput.py --steps 6 --pairs 96  # longer timing window
    python bench/train_throughput.py --shape llama-1b --device cuda --precision bf16 --prompt-tokens 870 --reply-tokens 150

`--shape` trains a randomly initialised model of a real architecture's shape (Llama-3.2-1B, Llama-3.1-8B) with the
embedded model's tokenizer, so a GPU box without weights measures what a user pays per pair at that size;
`--prompt-tokens` / `--reply-tokens` stretch every pair to about that length (its own tokens repeated), as long
persona histories are (about 85 % of a pair is prompt). Quality is not the question there, only time and memory.

Both trainers get the same quickstart-style pairs as the same token ids (TRL's `tokenize_row` is
replaced by one that hands over our ids, so neither side is timed on a different tokenisation), the same
model, LoRA config (dropout 0: TRL switches dropout off), batch size, max lengths, dtype, optimiser
(AdamW, constant lr, no warm-up), no evaluation, no checkpoints. Each trainer runs in its own process
(for its peak RSS), in the order ours, TRL, ours, so drift on a shared machine shows as a gap between
the two runs of ours. Timing starts after the first optimiser step (warm-up) and ends after the last.

TRL's settings, the best found for this machine: its default padding collator (pads each batch to its
longest pair, no fixed-length padding), `disable_dropout`, gradient checkpointing off (ORPOConfig's default
is on, which trades speed for memory; both sides run without it), `dataloader_num_workers=0` (workers only add
process overhead for pre-tokenised rows), torch's default intra-op threads. Its NLL term covers prompt and
reply tokens (TRL's documented choice); ours covers reply tokens only (the ORPO paper's L_SFT on the
chosen reply), so the total losses differ by definition. The first-step check therefore compares what both
define the same way on the same batch: mean per-token log-probabilities of chosen and rejected replies
the log odds and the odds-ratio loss (to 1e-3).

Writes a JSON result; the last line printed is ours / TRL pairs per second.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


# The decoder shapes of the published configs (hidden, intermediate, layers, heads, kv heads); vocab is the tokenizer's.
SHAPES = {
    "llama-1b": (2048, 8192, 16, 32, 8),  # Llama-3.2-1B
    "llama-8b": (4096, 14336, 32, 32, 8),  # Llama-3.1-8B
}


def random_model(shape: str, device: str, root: Path, tokenizer: str = "embedded:smollm2-135m-instruct") -> str:
    """A model folder of `shape` with random bf16 weights and the embedded tokenizer (built once, then reused).

    Initialised on the GPU when there is one: an 8B model's default init on CPU takes minutes."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from personaguard.models import resolve_model

    out = root / shape
    if (out / "config.json").is_file():
        return str(out)
    tok = AutoTokenizer.from_pretrained(resolve_model(tokenizer))
    hidden, inter, layers, heads, kv = SHAPES[shape]
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        max_position_embeddings=4096,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.bos_token_id,
        tie_word_embeddings=False,
        torch_dtype="bfloat16",
    )
    torch.manual_seed(0)
    with torch.device("cuda" if device.startswith("cuda") else "cpu"):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    tmp = root / f".{shape}.tmp"
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    tmp.rename(out)
    return str(out)


def stretch(ids: list[int], n: int) -> list[int]:
    """`ids` repeated up to length n (cut to n): a longer sequence of the same tokens."""
    return (ids * (n // max(len(ids), 1) + 1))[:n] if n and ids else ids


def quickstart_train_config(args):
    """The quickstart's training settings, with the knobs both trainers share made explicit."""
    import yaml

    from personaguard.config import TrainConfig

    q = yaml.safe_load((REPO / "configs" / "quickstart.yaml").read_text(encoding="utf-8"))["train"]
    return TrainConfig(
        data_dir=".",
        out_dir=".",
        model=args.model,
        device=args.device,
        precision=args.precision,
        batch_size=args.batch_size or q["batch_size"],
        lr=q["lr"],
        max_prompt_tokens=args.prompt_tokens or q["max_prompt_tokens"],
        max_reply_tokens=args.reply_tokens or q["max_reply_tokens"],
        lora_dropout=0.0,
        decision_token_weight=1.0,  # plain ORPO: what TRL computes
        neutral_loss="orpo",
        warmup_ratio=0.0,
        seed=0,
        load_in_4bit=getattr(args, "load_in_4bit", False),
    )


def pairs(args, tok, cfg):
    """Quickstart-style politics pairs (40 % triggering, like configs/quickstart.yaml), tokenised our way."""
    from personaguard.config import GenerateConfig
    from personaguard.data.generate import OfflineGenerator
    from personaguard.data.pools import load_pools
    from personaguard.guardrails import get_guardrail
    from personaguard.train.train import tokenize_examples

    gen = OfflineGenerator(get_guardrail("politics"), GenerateConfig(trigger_share=0.4), load_pools(), "train")
    examples = [gen.example(i, i % 5 < 2) for i in range(args.pairs)]
    feats = tokenize_examples(examples, tok, cfg)
    for f in feats:
        f["prompt_ids"] = stretch(f["prompt_ids"], args.prompt_tokens)
        for side in ("chosen_ids", "rejected_ids"):
            f[side] = stretch(f[side], args.reply_tokens)
        f["length"] = len(f["prompt_ids"]) + len(f["chosen_ids"]) + len(f["rejected_ids"])
    return feats


def trl_row(f: dict) -> dict:
    """One pair in the layout TRL's collator expects, from our token ids (labels -100 on the prompt)."""
    out = {"prompt_input_ids": f["prompt_ids"], "prompt_attention_mask": [1] * len(f["prompt_ids"])}
    for side in ("chosen", "rejected"):
        ids = f["prompt_ids"] + f[f"{side}_ids"]
        out[f"{side}_input_ids"] = ids
        out[f"{side}_attention_mask"] = [1] * len(ids)
        out[f"{side}_labels"] = [-100] * len(f["prompt_ids"]) + f[f"{side}_ids"]
    return out


class _Clock:
    """Trainer callback: wall time at the end of every optimiser step."""

    def __init__(self):
        from transformers import TrainerCallback

        clock = self

        class CB(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                clock.times.append(time.perf_counter())

        self.times: list[float] = []
        self.callback = CB()


def _common_args(cfg, out_dir: str, steps: int, device: str) -> dict:
    return dict(
        output_dir=out_dir,
        per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        max_steps=steps,
        optim="adamw_torch",
        save_strategy="no",
        eval_strategy="no",
        logging_steps=10_000,
        report_to="none",
        disable_tqdm=True,
        use_cpu=device == "cpu",
        bf16=device.startswith("cuda") and cfg.precision in ("auto", "bf16"),
        remove_unused_columns=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=False,
        # TRL's ORPOConfig turns it on by default (TrainingArguments does not): both off, so neither side pays
        # the recomputation and the comparison is of the training step itself
        gradient_checkpointing=False,
        seed=0,
    )


def worker(args) -> dict:
    """Train `args.steps` steps with one trainer in this process; return its figures."""
    import tempfile

    from personaguard.train.train import lora_for_training

    cfg = quickstart_train_config(args)
    model, tok, device = lora_for_training(cfg)
    feats = pairs(args, tok, cfg)
    clock = _Clock()
    tmp = tempfile.mkdtemp(prefix="pg-throughput-")
    if args.worker == "ours":
        trainer = ours_trainer(cfg, model, tok, feats, tmp, args.steps, device, [clock.callback])
    else:
        trainer = _trl_trainer(cfg, model, tok, feats, tmp, args.steps, device, [clock.callback])
    return {
        "trainer": args.worker,
        **train_timed(trainer, cfg, feats, device, clock),
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "gradient_checkpointing": bool(trainer.args.gradient_checkpointing),
    }


def train_timed(trainer, cfg, feats: list[dict], device: str, clock: _Clock) -> dict:
    """Train with `trainer` (whose callbacks include `clock`); the figures every throughput bench reports.

    Timing starts after the first optimiser step (warm-up) and ends after the last; the pairs counted are
    those of the timed steps (the sampler order is the same seed for every trainer)."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    steps = len(clock.times)
    if steps < 2:
        raise SystemExit(f"only {steps} optimiser step(s) ran: --steps must be at least 2 (the first is warm-up)")
    seconds = clock.times[-1] - clock.times[0]
    n = (steps - 1) * cfg.batch_size
    reply_tokens = sum(len(f["chosen_ids"]) + len(f["rejected_ids"]) for f in feats) / len(feats) * n
    return {
        "device": device,
        "timed_steps": steps - 1,
        "seconds": seconds,
        "pairs_per_s": n / seconds,
        "reply_tokens_per_s": reply_tokens / seconds,
        "peak_gpu_gib": _peak_gpu_gib(device),
        "pair_tokens": sum(f["length"] for f in feats) / len(feats),
    }


def ours_trainer(cfg, model, tok, feats, out_dir, steps, device, callbacks, **overrides):
    """Our ORPO trainer (plain ORPO: decision token weight 1, no neutral anchor) on `feats` for `steps` steps."""
    from transformers import TrainingArguments

    from personaguard.train.train import _make_trainer_classes, as_dataset

    ORPOTrainer, _, collate, _ = _make_trainer_classes()
    targs = TrainingArguments(**{**_common_args(cfg, out_dir, steps, device), **overrides}, label_names=["c_tgt"])
    return ORPOTrainer(
        model=model,
        args=targs,
        train_dataset=as_dataset(feats),
        data_collator=collate(tok.pad_token_id),
        callbacks=callbacks,
        orpo_lambda=cfg.orpo_lambda,
        decision_token_weight=1.0,
        neutral_loss="orpo",
    )


def _peak_gpu_gib(device: str) -> float | None:
    if not device.startswith("cuda"):
        return None
    import torch

    return torch.cuda.max_memory_allocated() / 2**30


def _trl_trainer(cfg, model, tok, feats, out_dir, steps, device, callbacks):
    import datasets
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    class SameIdsORPOTrainer(ORPOTrainer):
        """TRL's trainer on our token ids: only `tokenize_row` differs, training is TRL's own."""

        def tokenize_row(self, feature, model=None):
            return trl_row(feature)

    rows = [{"prompt": "p", "chosen": "c", "rejected": "r", **f} for f in feats]
    targs = ORPOConfig(
        **_common_args(cfg, out_dir, steps, device),
        beta=cfg.orpo_lambda,
        max_length=cfg.max_prompt_tokens + cfg.max_reply_tokens + 2,
        disable_dropout=True,
    )
    trainer = SameIdsORPOTrainer(
        model=model,
        args=targs,
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=tok,
        callbacks=callbacks,
    )
    keep = {k for k in trl_row(feats[0])}
    trainer.train_dataset = trainer.train_dataset.remove_columns([c for c in trainer.train_dataset.column_names if c not in keep])
    return trainer


def first_step_terms(args) -> dict:
    """Both trainers' loss terms on the same first batch with the same weights (one process)."""
    import torch

    from personaguard.train.orpo import pack_pairs, packed_forward
    from personaguard.train.train import lora_for_training

    cfg = quickstart_train_config(args)
    model, tok, device = lora_for_training(cfg)
    feats = pairs(args, tok, cfg)[: cfg.batch_size]
    trl = _trl_trainer(cfg, model, tok, feats, "/tmp/pg-throughput-loss", 1, device, [])
    model.eval()
    with torch.no_grad():
        batch = trl.data_collator([trl_row(f) for f in feats])
        trl_loss, m = trl.get_batch_loss_metrics(model, batch)
        ours = packed_forward(
            model, {k: v.to(model.device) for k, v in pack_pairs(feats, tok.pad_token_id).items()}, cfg.orpo_lambda
        )
    pairs_ = {
        "chosen_logp": (float(ours["chosen_logp"]), m["logps/chosen"]),
        "rejected_logp": (float(ours["rejected_logp"]), m["logps/rejected"]),
        "log_odds": (float(ours["log_odds"]), m["log_odds_chosen"]),
        "or_loss": (float(ours["or_loss"]), -m["log_odds_ratio"]),  # TRL logs log-sigmoid(log odds), the OR loss negated
    }
    return {
        "terms": {k: {"ours": a, "trl": b, "abs_diff": abs(a - b)} for k, (a, b) in pairs_.items()},
        "max_abs_diff": max(abs(a - b) for a, b in pairs_.values()),
        "ours_loss": float(ours["loss"]),  # NLL over reply tokens + lambda * OR
        "trl_loss": float(trl_loss),  # NLL over prompt and reply tokens + beta * OR
    }


def _spawn(args, which: str, script: str = __file__, extra: tuple[str, ...] = ()) -> dict:
    """Run `script --worker which` with the shared pair/trainer flags in a fresh process; its last stdout line (JSON)."""
    cmd = [sys.executable, script, "--worker", which, "--model", args.model, "--device", args.device]
    cmd += ["--precision", args.precision, "--pairs", str(args.pairs), "--steps", str(args.steps)]
    cmd += ["--prompt-tokens", str(args.prompt_tokens), "--reply-tokens", str(args.reply_tokens)]
    cmd += ["--batch-size", str(args.batch_size), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"the {which} worker failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="embedded:smollm2-135m-instruct")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--pairs", type=int, default=64, help="pairs generated; steps cycle through them")
    ap.add_argument("--steps", type=int, default=5, help="optimiser steps per run (the first is warm-up)")
    ap.add_argument("--shape", choices=sorted(SHAPES), help="random weights of this architecture instead of --model")
    ap.add_argument("--shape-dir", default="runs/bench_shapes", help="where --shape models are built (once)")
    ap.add_argument("--prompt-tokens", type=int, default=0, help="stretch every prompt to N tokens (0 = as generated)")
    ap.add_argument("--reply-tokens", type=int, default=0, help="stretch every reply to N tokens (0 = as generated)")
    ap.add_argument("--batch-size", type=int, default=0, help="pairs per step (0 = the quickstart's)")
    ap.add_argument("--out", default="bench/results/train_throughput.json")
    ap.add_argument("--worker", choices=["ours", "trl", "terms"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    from personaguard.schema import write_text_atomic

    if args.shape:
        args.model = random_model(args.shape, args.device, Path(args.shape_dir))
    if args.worker == "terms":
        print(json.dumps(first_step_terms(args)))
        return 0
    if args.worker:
        print(json.dumps(worker(args)))
        return 0

    terms = _spawn(args, "terms")
    for k, v in terms["terms"].items():
        print(f"first batch {k:>14}: ours {v['ours']:.6f}  TRL {v['trl']:.6f}  |diff| {v['abs_diff']:.2e}")
    runs = [_spawn(args, w) for w in ("ours", "trl", "ours")]
    for r in runs:
        print(
            f"{r['trainer']:>5}: {r['pairs_per_s']:.3f} pairs/s, {r['reply_tokens_per_s']:.1f} reply tokens/s, "
            f"peak RSS {r['peak_rss_gib']:.2f} GiB"
            + (f", peak GPU {r['peak_gpu_gib']:.1f} GiB" if r.get("peak_gpu_gib") is not None else "")
            + f" ({r['timed_steps']} timed steps, {r['seconds']:.1f} s, {r['device']}, {r['pair_tokens']:.0f} tokens/pair)"
        )
    ours = (runs[0]["pairs_per_s"] + runs[2]["pairs_per_s"]) / 2
    ratio = ours / runs[1]["pairs_per_s"]
    result = {"args": {k: v for k, v in vars(args).items() if k != "worker"}, "first_batch": terms, "runs": runs, "ratio": ratio}
    write_text_atomic(args.out, json.dumps(result, indent=1))
    print(f"pairs/s ours / TRL ORPOTrainer: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
