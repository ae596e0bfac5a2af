"""The `vllm serve` command line that serves the same adapters at scale.

Why only a command line: vLLM serves LoRA modules natively (`--enable-lora --lora-modules
name=path`, batching requests with different adapters in one forward pass), under the same
model names as `personaguard serve`; a client that asks for model "politics" gets the politics
adapter from either. What vLLM does not do is personaguard's routing: with one adapter per
request the guard decision is the reply's first token (the tag), not a `guard` field, and several
guardrails per request or personas need `personaguard serve`. vLLM cannot run on this project's
CPU machines or CI, so this is the documented path, not a tested backend."""

from __future__ import annotations

import shlex

from ..adapters import read_info, read_peft_config
from ..config import ServeConfig
from ..models import resolve_model
from .engine import discover_adapters

VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


def vllm_command(cfg: ServeConfig) -> str:
    folders = discover_adapters(cfg.adapters_dir)
    infos = {n: read_info(p) for n, p in folders.items()}
    base = cfg.model or sorted({i.base_model for i in infos.values()})[0]
    rank = max(int(read_peft_config(p).get("r", 8)) for p in folders.values())
    rank = next((r for r in VLLM_LORA_RANKS if r >= rank), rank)  # vLLM accepts only these values
    parts = ["vllm", "serve", resolve_model(base), "--served-model-name", cfg.served_model_name or base]
    parts += ["--host", cfg.host, "--port", str(cfg.port), "--enable-lora", "--max-lora-rank", str(rank)]
    parts += ["--max-loras", str(len(folders)), "--lora-modules"]
    parts += [f"{n}={p.resolve()}" for n, p in folders.items()]
    parts += ["--max-model-len", str(max(i.max_prompt_tokens + i.max_reply_tokens for i in infos.values()))]
    return " ".join(shlex.quote(x) for x in parts)
