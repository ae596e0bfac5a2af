"""One adapter that is the exact mean of several trainings of the same guardrail (a seed average).

Usage:
    from personaguard.train.average import average
    average(["runs/s0/adapters/meeting", "runs/s1/adapters/meeting", "runs/s2/adapters/meeting"], "runs/avg/adapters/meeting")

Why: on real chats the false tags of one guardrail's adapter change a lot from one training seed to the
next (meeting on neutral turns: 0.05 to 0.15 over three seeds, docs/research-log.md), which says that much
of each adapter's error is its own draw of data and initialisation rather than the guardrail. The mean of
the seeds' weight updates averages those draws away, the way a "model soup" averages fine-tunes of one
base model, at the inference cost of one adapter of k times the rank.

How: a LoRA layer's update is s * B @ A (s = lora_alpha / r, or / sqrt(r) with rsLoRA). The mean over k
members is exactly [B_1 s_1/k | ... | B_k s_k/k] @ [A_1; ...; A_k], so the folder holds the members' factors
concatenated along the rank, each B pre-scaled, and an adapter_config.json with rank k*r and
lora_alpha = rank (scale 1). This is what PEFT's `add_weighted_adapter(combination_type="cat")` computes;
we write the tensors directly because that route loads the base model (minutes for an 8B model; this takes
well under a second) and drops the personaguard description every later stage reads.

The gate threshold of a member does not hold for the mean; the folder records none (greedy decisions,
the default, need none).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..adapters import AdapterInfo, read_info, read_peft_config, write_info
from ..errors import PersonaguardError

WEIGHTS = "adapter_model.safetensors"
# files of the first member that do not describe the mean (everything else, tokenizer included, is copied)
_NOT_COPIED = {
    WEIGHTS,
    "adapter_config.json",
    "personaguard.json",
    "train_result.json",
    "run.json",
    "metrics.csv",
    "guard_threshold.json",
}
# adapter_config.json fields that must agree for the mean to be one LoRA of the same shape
_SAME = ("target_modules", "r", "lora_alpha", "use_rslora", "rank_pattern", "alpha_pattern", "modules_to_save", "bias")


@dataclass(frozen=True)
class AverageResult:
    out_dir: Path
    members: list[str]
    rank: int


def _scale(cfg: dict, module_key: str) -> tuple[int, float]:
    """(rank, scale) of one LoRA module, honouring rank_pattern / alpha_pattern the way PEFT matches
    them (pattern key is a suffix of the module's name)."""

    def pick(pattern: dict, default):
        for key, value in (pattern or {}).items():
            if module_key == key or module_key.endswith("." + key):
                return value
        return default

    r = int(pick(cfg.get("rank_pattern"), cfg["r"]))
    alpha = float(pick(cfg.get("alpha_pattern"), cfg["lora_alpha"]))
    return r, alpha / (math.sqrt(r) if cfg.get("use_rslora") else r)


def _comparable(value):
    """PEFT saves target_modules from a set, so two trainings of one config list them in different orders."""
    return sorted(value) if isinstance(value, list) else value


def _check(adapter_dirs: Sequence[Path]) -> tuple[list[dict], list[AdapterInfo]]:
    if len(adapter_dirs) < 2:
        raise PersonaguardError("average needs at least two adapter folders of the same guardrail")
    infos = [read_info(d) for d in adapter_dirs]
    configs = [read_peft_config(d) for d in adapter_dirs]
    first = infos[0]
    for d, info, cfg in zip(adapter_dirs, infos, configs):
        if cfg.get("use_dora"):
            raise PersonaguardError(f"{d}: DoRA adapters cannot be averaged (their magnitude vectors do not add up)")
        if info.guardrail.name != first.guardrail.name:
            raise PersonaguardError(
                f"average: {adapter_dirs[0]} is guardrail '{first.guardrail.name}' but {d} is '{info.guardrail.name}'; "
                "average trainings of one guardrail (use `personaguard stack` to combine guardrails)"
            )
        if (info.max_prompt_tokens, info.max_reply_tokens) != (first.max_prompt_tokens, first.max_reply_tokens):
            raise PersonaguardError(
                f"average: {d} was trained with other max_prompt_tokens / max_reply_tokens than {adapter_dirs[0]}"
            )
        if info.base_model != first.base_model:
            raise PersonaguardError(
                f"average: {adapter_dirs[0]} was trained on {first.base_model!r} but {d} on {info.base_model!r}"
            )
        diff = [k for k in _SAME if _comparable(cfg.get(k)) != _comparable(configs[0].get(k))]
        if diff:
            raise PersonaguardError(f"average: {d} differs from {adapter_dirs[0]} in adapter_config.json field(s) {diff}")
        if not (Path(d) / WEIGHTS).is_file():
            raise PersonaguardError(f"{d}: no {WEIGHTS} (expected a saved PEFT adapter)")
    return configs, infos


def average(adapter_dirs: Sequence[str | Path], out_dir: str | Path) -> AverageResult:
    """Write the exact mean of the members' LoRA updates as one personaguard adapter folder.

    Refuses an existing out_dir and writes to a temporary folder first, so a failure leaves nothing."""
    import torch
    from safetensors.torch import load_file, save_file

    dirs = [Path(d) for d in adapter_dirs]
    out = Path(out_dir)
    if out.exists():
        raise PersonaguardError(f"{out} already exists; average never overwrites, choose a new out_dir")
    configs, infos = _check(dirs)
    info = infos[0]
    k = len(dirs)
    tensors = [load_file(str(d / WEIGHTS)) for d in dirs]
    keys = sorted(tensors[0])
    for d, t in zip(dirs[1:], tensors[1:]):
        if sorted(t) != keys:
            raise PersonaguardError(f"average: {d} holds other LoRA modules than {dirs[0]}")
    merged: dict[str, torch.Tensor] = {}
    ranks: dict[str, int] = {}
    for key in keys:
        if ".lora_A." in key:
            merged[key] = torch.cat([t[key] for t in tensors], dim=0)
        elif ".lora_B." in key:
            module = key.split(".lora_B.")[0].removeprefix("base_model.model.")
            parts = []
            for cfg, t in zip(configs, tensors):
                r, s = _scale(cfg, module)
                if t[key].shape[1] != r:
                    raise PersonaguardError(f"average: {key} has rank {t[key].shape[1]}, adapter_config.json says {r}")
                parts.append(t[key].float() * (s / k))
            merged[key] = torch.cat(parts, dim=1).to(tensors[0][key].dtype)
            ranks[module] = merged[key].shape[1]
        else:
            raise PersonaguardError(
                f"average: {dirs[0]} holds {key}, which is not a LoRA factor; only plain LoRA adapters average"
            )
    rank = max(ranks.values())
    cfg = dict(configs[0])
    pattern = {m: r for m, r in ranks.items() if r != rank}
    cfg.update(r=rank, lora_alpha=rank, use_rslora=False, rank_pattern=pattern, alpha_pattern=dict(pattern))

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        save_file({k_: v.contiguous() for k_, v in merged.items()}, str(tmp / WEIGHTS), metadata={"format": "pt"})
        (tmp / "adapter_config.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")
        for src in dirs[0].iterdir():
            if src.is_file() and src.name not in _NOT_COPIED:
                shutil.copy2(src, tmp / src.name)
        write_info(
            tmp,
            guardrail=info.guardrail,
            base_model=info.base_model,
            max_prompt_tokens=info.max_prompt_tokens,
            max_reply_tokens=info.max_reply_tokens,
            gate_threshold=None,
            run_id="average-" + "-".join(str(i.run_id) for i in infos),
        )
        (tmp / "average.json").write_text(
            json.dumps({"members": [str(d.resolve()) for d in dirs], "rank": rank}, indent=2), encoding="utf-8"
        )
        if out.exists():
            raise PersonaguardError(f"{out} already exists; average never overwrites, choose a new out_dir")
        os.rename(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return AverageResult(out, [str(d) for d in dirs], rank)
