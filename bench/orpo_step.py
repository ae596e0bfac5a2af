"""Benchmark: one ORPO training step, shared-prefix packing vs. the usual two sequences per pair.

    .venv/bin/python bench/orpo_step.py [--model embedded:smollm2-135m-instruct] [--pairs 8] [--steps 3]
    .venv/bin/python bench/orpo_step.py --top-layers 15    # shared-prefix step, LoRA in all layers vs the top 15

Both variants compute the same loss (tests/test_orpo.py checks the log-probs match); the baseline
runs prompt+chosen and prompt+rejected as separate right-padded rows (what TRL's ORPOTrainer does).
Prints seconds per step for each, measured side by side in one process, and their ratio. With
--top-layers N it instead compares the shared-prefix step with LoRA in every layer against LoRA in
the last N layers only (train.lora_top_layers), where the backward pass stops below those layers.
"""

from __future__ import annotations

import argparse
import time

import torch


def two_sequence_forward(model, feats, pad_id, orpo_lambda):
    from personaguard.train.orpo import orpo_loss

    rows = [f["prompt_ids"] + f["chosen_ids"] for f in feats] + [f["prompt_ids"] + f["rejected_ids"] for f in feats]
    L = max(len(r) for r in rows)
    ids = torch.full((len(rows), L), pad_id)
    att = torch.zeros((len(rows), L), dtype=torch.long)
    for b, r in enumerate(rows):
        ids[b, : len(r)] = torch.tensor(r)
        att[b, : len(r)] = 1
    logits = model(input_ids=ids.to(model.device), attention_mask=att.to(model.device), use_cache=False).logits
    logps = []
    for b, f in enumerate(feats * 2):
        reply = f["chosen_ids"] if b < len(feats) else f["rejected_ids"]
        P = len(f["prompt_ids"])
        lp = torch.log_softmax(logits[b, P - 1 : P - 1 + len(reply)].float(), -1)
        logps.append(lp[torch.arange(len(reply)), torch.tensor(reply, device=lp.device)].mean())
    logps = torch.stack(logps)
    return orpo_loss(logps[: len(feats)], logps[len(feats) :], orpo_lambda)


def main() -> None:
    from personaguard.config import GenerateConfig, TrainConfig
    from personaguard.data.generate import OfflineGenerator
    from personaguard.data.pools import load_pools
    from personaguard.guardrails import get_guardrail
    from personaguard.models import EMBEDDED, load_model
    from personaguard.train.orpo import pack_pairs, packed_forward
    from personaguard.train.train import _lora_model, tokenize_examples

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=EMBEDDED)
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--top-layers", type=int, default=0, help="Compare all-layer LoRA with LoRA in the last N layers.")
    a = ap.parse_args()
    if a.top_layers:
        return compare_top_layers(a)

    from personaguard.models import LoadOptions

    model, tok = load_model(a.model, LoadOptions(a.device, a.precision))
    tcfg = TrainConfig(data_dir=".", out_dir=".", max_prompt_tokens=512, max_reply_tokens=64)
    model = _lora_model(model, tcfg).train()
    gen = OfflineGenerator(get_guardrail("politics"), GenerateConfig(), load_pools(), "train")
    examples = [gen.example(i, i % 2 == 0) for i in range(a.pairs)]
    feats = tokenize_examples(examples, tok, tcfg)
    P = sum(len(f["prompt_ids"]) for f in feats) / len(feats)
    R = sum(len(f["chosen_ids"]) + len(f["rejected_ids"]) for f in feats) / len(feats)
    print(f"model={a.model} device={model.device} pairs={a.pairs} mean prompt tokens={P:.0f} mean reply tokens (c+r)={R:.0f}")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    dev = model.device

    def step_packed():
        batch = {k: v.to(dev) for k, v in pack_pairs(feats, tok.pad_token_id).items()}
        return packed_forward(model, batch, 0.1)["loss"]

    def step_two():
        return two_sequence_forward(model, feats, tok.pad_token_id, 0.1)["loss"]

    results = {}
    for name, fn in (("two_sequences", step_two), ("shared_prefix", step_packed), ("two_sequences_again", step_two)):
        fn().backward()
        opt.zero_grad()  # warm-up
        if dev.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        for _ in range(a.steps):
            fn().backward()
            opt.step()
            opt.zero_grad()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        results[name] = (time.perf_counter() - t0) / a.steps
        mem = f" peak_mem={torch.cuda.max_memory_allocated() / 2**30:.2f}GiB" if dev.type == "cuda" else ""
        print(f"{name:>20}: {results[name]:.3f} s/step{mem}")
    base = (results["two_sequences"] + results["two_sequences_again"]) / 2
    print(f"speed-up shared_prefix vs two_sequences: {base / results['shared_prefix']:.2f}x")


def compare_top_layers(a) -> None:
    """Shared-prefix step time, LoRA in every layer vs in the last N (fresh model each, same pairs)."""
    from personaguard.config import GenerateConfig, TrainConfig
    from personaguard.data.generate import OfflineGenerator
    from personaguard.data.pools import load_pools
    from personaguard.guardrails import get_guardrail
    from personaguard.models import LoadOptions, load_model
    from personaguard.train.orpo import pack_pairs, packed_forward
    from personaguard.train.train import _lora_model, tokenize_examples

    gen = OfflineGenerator(get_guardrail("politics"), GenerateConfig(), load_pools(), "train")
    examples = [gen.example(i, i % 2 == 0) for i in range(a.pairs)]
    results = {}
    for name, top in (("all_layers", 0), (f"top_{a.top_layers}", a.top_layers), ("all_layers_again", 0)):
        model, tok = load_model(a.model, LoadOptions(a.device, a.precision))
        tcfg = TrainConfig(data_dir=".", out_dir=".", max_prompt_tokens=224, max_reply_tokens=48, lora_top_layers=top)
        model = _lora_model(model, tcfg).train()
        batch = {k: v.to(model.device) for k, v in pack_pairs(tokenize_examples(examples, tok, tcfg), tok.pad_token_id).items()}
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        packed_forward(model, batch, 0.1)["loss"].backward()
        opt.zero_grad()  # warm-up
        t0 = time.perf_counter()
        for _ in range(a.steps):
            packed_forward(model, batch, 0.1)["loss"].backward()
            opt.step()
            opt.zero_grad()
        results[name] = (time.perf_counter() - t0) / a.steps
        print(f"{name:>20}: {results[name]:.3f} s/step (tokens per step {batch['input_ids'].numel()})")
    base = (results["all_layers"] + results["all_layers_again"]) / 2
    print(f"speed-up top_{a.top_layers} vs all layers: {base / results[f'top_{a.top_layers}']:.2f}x")


if __name__ == "__main__":
    main()
