"""Several guardrail adapters merged into one new PEFT adapter folder (the paper's comparison rows).

Usage:
    from personaguard.stack.merge import merge
    merge(["runs/q/adapters/politics", "runs/q/adapters/meeting"], "cat", None, "runs/q/adapters/politics_meeting")

A dynamic stack (all members active at once, `personaguard.adapters`) computes the exact sum of the
members' deltas; `cat` writes that sum to disk (rank r1 + r2 + ...), so both give the same logits. The
other methods approximate it with a smaller or sparser adapter (METHOD_HELP).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..adapters import adapter_names, load_stack, read_peft_config
from ..errors import PersonaguardError

if TYPE_CHECKING:
    from ..models import LoadOptions

# One line each, for `personaguard merge --help`. Exactness is about the summed delta sum_i w_i s_i B_i A_i.
METHOD_HELP: dict[str, str] = {
    "cat": "exact: concatenates A and B, so the delta is exactly the weighted sum; rank = sum of the ranks",
    "linear": "approximate: averages A and B separately, so cross terms B_i A_j appear; needs equal ranks",
    "svd": "truncated SVD of the exact summed delta to --svd-rank (default: largest rank); exact if >= summed rank",
    "ties": "approximate: trims A and B to --density, elects signs, averages agreeing entries; equal ranks",
    "dare_ties": "approximate: randomly drops A/B entries (keeps --density, rescales), then TIES sign election",
    "dare_linear": "approximate: randomly drops A/B entries (keeps --density, rescales), then linear",
}
_NEEDS_DENSITY = {"ties", "dare_ties", "dare_linear"}
_NEEDS_EQUAL_RANKS = {"linear", "ties", "dare_ties", "dare_linear"}  # these combine A and B elementwise


def _base_model(adapter_dir, peft_cfg: dict) -> str | None:
    """The portable base model id (personaguard.json), else the path PEFT recorded."""
    from ..adapters import read_info

    try:
        return read_info(adapter_dir).base_model
    except PersonaguardError:  # a PEFT folder not trained by personaguard
        return peft_cfg.get("base_model_name_or_path")


def _check_same_base(adapter_dirs, configs: list[dict]) -> None:
    """Deltas trained on different base models do not add up to anything meaningful."""
    from ..models import same_model

    bases = [_base_model(d, c) for d, c in zip(adapter_dirs, configs)]
    for d, b in zip(adapter_dirs[1:], bases[1:]):
        if bases[0] and b and not same_model(bases[0], b):
            raise PersonaguardError(
                f"merge: {adapter_dirs[0]} was trained on {bases[0]!r} but {d} on {b!r}; "
                "only adapters of one base model can be merged"
            )


def _check_merge_args(adapter_dirs, method, weights, density, svd_rank) -> tuple[list[dict], list[float]]:
    if method not in METHOD_HELP:
        raise PersonaguardError(f"merge method '{method}' is not one of {', '.join(METHOD_HELP)}")
    if len(adapter_dirs) < 2:
        raise PersonaguardError("merge needs at least two adapter folders")
    weights = [1.0] * len(adapter_dirs) if weights is None else [float(w) for w in weights]
    if len(weights) != len(adapter_dirs):
        raise PersonaguardError(f"merge: {len(weights)} weights for {len(adapter_dirs)} adapters; give one per adapter")
    if method in _NEEDS_DENSITY and (density is None or not 0 < density <= 1):
        raise PersonaguardError(f"merge method '{method}' needs density in (0, 1], e.g. density=0.5")
    if method not in _NEEDS_DENSITY and density is not None:
        raise PersonaguardError(f"density is used only by {', '.join(sorted(_NEEDS_DENSITY))}; drop it for '{method}'")
    if svd_rank is not None and (method != "svd" or svd_rank < 1):
        raise PersonaguardError("svd_rank must be a positive integer and is used only by method 'svd'")
    configs = [read_peft_config(d) for d in adapter_dirs]
    for d, cfg in zip(adapter_dirs, configs):
        if cfg.get("use_dora"):
            raise PersonaguardError(f"{d}: DoRA adapters cannot be merged (their magnitude vectors do not add up)")
    _check_same_base(adapter_dirs, configs)
    if method in _NEEDS_EQUAL_RANKS:
        ranks = {str(d): max([cfg["r"], *(cfg.get("rank_pattern") or {}).values()]) for d, cfg in zip(adapter_dirs, configs)}
        if len(set(ranks.values())) > 1:
            raise PersonaguardError(f"merge method '{method}' needs equal LoRA ranks, got {ranks}; use cat or svd")
    return configs, weights


def merge(
    adapter_dirs: Sequence[str | Path],
    method: str,
    weights: Sequence[float] | None,
    out_dir: str | Path,
    density: float | None = None,
    *,
    svd_rank: int | None = None,
    model: str | None = None,
    opts: LoadOptions | None = None,
    seed: int = 0,
) -> dict:
    """Merge LoRA adapters into one new PEFT adapter folder with PEFT's `add_weighted_adapter`.

    `weights` default to 1.0 each. The base model defaults to the first adapter's
    `base_model_name_or_path`; it is loaded on CPU in fp32 unless `opts` says otherwise, because the
    merged factors take the base layer's dtype. `seed` fixes DARE's random drops. The folder holds only
    the merged adapter under PEFT's default name (`PeftModel.from_pretrained(base, out_dir)` loads it),
    `merge.json` (what was merged and how) and `guardrails/<name>.yaml` copied from the members.
    Refuses an existing out_dir; writes to a temp folder and renames, so a failed merge leaves nothing.
    """
    import peft
    import torch

    from ..models import LoadOptions

    out = Path(out_dir)
    if out.exists():
        raise PersonaguardError(f"{out} already exists; merge never overwrites, choose a new out_dir")
    configs, weights = _check_merge_args(adapter_dirs, method, weights, density, svd_rank)
    names = adapter_names(adapter_dirs)
    base = model or configs[0].get("base_model_name_or_path")
    if not base:
        raise PersonaguardError(f"{adapter_dirs[0]}: adapter_config.json names no base model; pass model=")
    t0 = time.perf_counter()
    peft_model, _ = load_stack(base, adapter_dirs, opts or LoadOptions(device="cpu", precision="fp32"))
    merged = "merged"
    while merged in names:
        merged += "_"
    t1 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        peft_model.base_model.add_weighted_adapter(
            names,
            weights,
            merged,
            combination_type=method,
            svd_rank=svd_rank,
            density=density,
            svd_full_matrices=False,  # same top singular vectors, far less work on big layers
        )
    merge_seconds = time.perf_counter() - t1
    merged_cfg = peft_model.peft_config[merged]
    # PEFT sets lora_alpha = r so the merged factors get scale 1, but copies use_rslora from the first
    # member, which would scale by sqrt(r) instead; the merged factors already carry every scale.
    merged_cfg.use_rslora = False

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        peft_model.save_pretrained(str(tmp), selected_adapters=[merged])  # lands in tmp/<merged>/
        folder = tmp / merged
        (folder / "guardrails").mkdir()
        copied = []
        for d, name in zip(adapter_dirs, names):
            if (Path(d) / "guardrail.yaml").is_file():
                shutil.copy2(Path(d) / "guardrail.yaml", folder / "guardrails" / f"{name}.yaml")
                copied.append(name)
        record = {
            "method": method,
            "weights": weights,
            "density": density,
            "svd_rank": (svd_rank or max(c["r"] for c in configs)) if method == "svd" else None,
            "seed": seed,
            "sources": [str(Path(d).resolve()) for d in adapter_dirs],
            "names": names,
            "rank": merged_cfg.r,
            "base_model": base,
            "guardrails": copied,
            "peft_version": peft.__version__,
            "merge_seconds": round(merge_seconds, 3),
            "seconds": round(time.perf_counter() - t0, 3),
        }
        (folder / "merge.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
        if out.exists():  # created while we worked; rename would silently replace an empty folder
            raise PersonaguardError(f"{out} already exists; merge never overwrites, choose a new out_dir")
        os.rename(folder, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {**record, "out_dir": str(out)}
