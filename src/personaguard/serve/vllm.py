"""`personaguard export-vllm`: the `vllm serve` command line that serves the same adapters at scale,
after checking that every adapter folder is one vLLM can load.

Why only a command line: vLLM serves LoRA modules natively (`--enable-lora --lora-modules
name=path`, batching requests with different adapters in one forward pass), under the same model
names as `personaguard serve`, so a client asking for model "politics" gets the politics adapter
from either. What vLLM does not do is personaguard's routing; `personaguard serve --upstream URL`
puts it in front (serve/upstream.py). vLLM cannot run on this project's CPU machines or CI, so the
command is checked by tests, not run there."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from ..adapters import read_info, read_peft_config
from ..config import ServeConfig
from ..errors import PersonaguardError
from ..models import resolve_model
from .engine import discover_adapters

# --max-lora-rank takes one of these (vLLM's LoRAConfig); the smallest that fits every adapter is used
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
# the projections vLLM's LoRA layers wrap in Llama-style decoders; embeddings and lm_head need extra vocab support
VLLM_TARGETS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "qkv_proj", "gate_up_proj"}


def vllm_problems(folder: str | Path) -> list[str]:
    """What in this adapter folder vLLM would refuse to load ([] = none)."""
    folder = Path(folder)
    cfg = read_peft_config(folder)
    problems = []
    r = cfg.get("r")
    if not isinstance(r, int) or not 1 <= r <= max(VLLM_LORA_RANKS):
        problems.append(f"rank r={r!r} (vLLM takes 1-{max(VLLM_LORA_RANKS)})")
    if "lora_alpha" not in cfg:
        problems.append("no lora_alpha in adapter_config.json")
    targets = cfg.get("target_modules")
    targets = {targets} if isinstance(targets, str) else set(targets or [])
    if not targets:
        problems.append("no target_modules in adapter_config.json")
    elif targets - VLLM_TARGETS:
        problems.append(f"target_modules {sorted(targets - VLLM_TARGETS)} are not LoRA layers vLLM serves")
    if cfg.get("use_dora"):
        problems.append("DoRA adapters (use_dora) are not supported by vLLM")
    if cfg.get("modules_to_save"):
        problems.append(f"modules_to_save {cfg['modules_to_save']} (fully trained modules) are not supported by vLLM")
    if cfg.get("bias", "none") != "none":
        problems.append(f"bias={cfg['bias']!r} (vLLM loads LoRA weights only; train with bias none)")
    if not (folder / "adapter_model.safetensors").is_file():
        problems.append("no adapter_model.safetensors")
    else:
        header = _safetensors_names(folder / "adapter_model.safetensors")
        odd = [n for n in header if "lora_A" not in n and "lora_B" not in n]
        if odd:
            problems.append(f"weights other than LoRA A/B in adapter_model.safetensors: {odd[:3]}")
    return problems


def _safetensors_names(path: Path) -> list[str]:
    """Tensor names from a safetensors header (8-byte length, then JSON), without loading weights."""
    with path.open("rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(n))
    return [k for k in header if k != "__metadata__"]


def vllm_command(cfg: ServeConfig) -> str:
    """The `vllm serve` line for every adapter of `cfg.adapters_dir`; a one-line error listing what
    vLLM would refuse, per folder, if anything."""
    folders = discover_adapters(cfg.adapters_dir)
    bad = {n: p for n, f in folders.items() if (p := vllm_problems(f))}
    if bad:
        raise PersonaguardError("vLLM cannot load: " + "; ".join(f"{folders[n]}: {', '.join(p)}" for n, p in bad.items()))
    infos = {n: read_info(p) for n, p in folders.items()}
    base = cfg.model or sorted({i.base_model for i in infos.values()})[0]
    rank = max(int(read_peft_config(p)["r"]) for p in folders.values())
    rank = next(r for r in VLLM_LORA_RANKS if r >= rank)
    parts = ["vllm", "serve", resolve_model(base), "--served-model-name", cfg.served_model_name or base]
    parts += ["--host", cfg.host, "--port", str(cfg.port), "--enable-lora", "--max-lora-rank", str(rank)]
    parts += ["--max-loras", str(len(folders)), "--lora-modules"]
    parts += [f"{n}={p.resolve()}" for n, p in folders.items()]
    parts += ["--max-model-len", str(max(i.max_prompt_tokens + i.max_reply_tokens for i in infos.values()))]
    return " ".join(shlex.quote(x) for x in parts)
