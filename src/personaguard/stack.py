"""Several guardrail adapters at once: stacked at run time (dynamic) or merged into one adapter.

Usage:
    from personaguard.stack import activate, load_stack, merge, no_adapter, use_adapters
    model, names = load_stack("embedded:smollm2-135m-instruct", ["runs/q/adapters/politics", "runs/q/adapters/meeting"])
    activate(model, ["politics"])          # per request: no reload, no merge
    activate(model, names)                 # both: their LoRA updates add up exactly
    with no_adapter(model): ...            # the base model
    merge(["runs/q/adapters/politics", "runs/q/adapters/meeting"], "cat", None, "runs/q/adapters/politics_meeting")

Why dynamic stacking is exact: a LoRA layer computes `W x + sum_i s_i B_i A_i x` over its active
adapters, which is the same as one adapter whose delta is `sum_i s_i B_i A_i`. That sum is what the
`cat` merge writes to disk (rank r1 + r2 + ...), so a dynamic stack and its cat merge give the same
logits; the other merge methods approximate it with a smaller or sparser adapter (METHOD_HELP).

The active set is state of the model object: a server that changes it per request must hold one lock
around `activate` + forward/generate.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import PersonaguardError

if TYPE_CHECKING:
    from peft import PeftModel

    from .models import LoadOptions

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


def adapter_name(adapter_dir: str | Path) -> str:
    """The folder's name, made a valid PEFT adapter name (PEFT keys modules by it: no '.')."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", Path(adapter_dir).resolve().name)


def _read_config(adapter_dir: str | Path) -> dict:
    path = Path(adapter_dir) / "adapter_config.json"
    if not path.is_file():
        raise PersonaguardError(f"{adapter_dir}: no adapter_config.json (expected a PEFT adapter folder)")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise PersonaguardError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(cfg, dict) or cfg.get("peft_type") != "LORA":
        kind = cfg.get("peft_type") if isinstance(cfg, dict) else None
        raise PersonaguardError(f"{adapter_dir}: peft_type is {kind!r}; only LoRA adapters can be stacked")
    return cfg


def _names(adapter_dirs: Sequence[str | Path]) -> list[str]:
    names = [adapter_name(d) for d in adapter_dirs]
    for i, n in enumerate(names):
        if n in names[:i]:
            first = adapter_dirs[names.index(n)]
            raise PersonaguardError(f"adapters {first} and {adapter_dirs[i]} share the name '{n}'; rename one folder")
    return names


def load_stack(
    model_name_or_model, adapter_dirs: Sequence[str | Path], opts: LoadOptions | None = None
) -> tuple[PeftModel, list[str]]:
    """Load LoRA adapters onto one base model, each named after its folder; all are active on return.

    `model_name_or_model` is a model name/path (loaded with models.load_model and `opts`; load the
    tokenizer with models.load_tokenizer) or an already loaded model, which PEFT modifies in place; a
    PeftModel gets the adapters added. The model is put in eval mode with adapter weights frozen.
    """
    from peft import PeftModel

    if not adapter_dirs:
        raise PersonaguardError("load_stack: give at least one adapter folder")
    names = _names(adapter_dirs)
    for d in adapter_dirs:
        _read_config(d)
    model = model_name_or_model
    if isinstance(model, str):
        from .models import load_model

        model, _ = load_model(model, opts)
    for d, name in zip(adapter_dirs, names):
        if not isinstance(model, PeftModel):
            model = PeftModel.from_pretrained(model, str(d), adapter_name=name)
        elif name in model.peft_config:
            raise PersonaguardError(f"{d}: an adapter named '{name}' is already loaded; rename the folder")
        else:
            model.load_adapter(str(d), adapter_name=name)
    model.eval()  # dropout off: stacked outputs must be deterministic sums
    activate(model, names)
    return model, names


def activate(model: PeftModel, names: Sequence[str]) -> None:
    """Make exactly `names` the active adapters (an empty list = base model).

    No weights move: PEFT flips flags on every LoRA layer (~25 ms for SmolLM2-135M with three
    all-linear adapters on a busy CPU; it scales with the number of layers, not their width).

    PEFT's enable/set_adapter mark active adapters trainable (requires_grad=True; peft issue #3447),
    which makes autograd record every forward not run under no_grad. We pass inference_mode=True last,
    so adapter weights stay frozen whatever was called before.
    """
    names = list(names)
    unknown = [n for n in names if n not in model.peft_config]
    if unknown:
        raise PersonaguardError(f"unknown adapter(s) {unknown}; loaded: {sorted(model.peft_config)}")
    if not names:
        model.base_model.disable_adapter_layers()  # also sets requires_grad=False on every adapter
        return
    if _disabled(model):  # enabling walks every module and re-marks the old set trainable; only when needed
        model.base_model.enable_adapter_layers()
    if "inference_mode" in inspect.signature(model.base_model.set_adapter).parameters:
        model.base_model.set_adapter(names, inference_mode=True)
    else:  # older PEFT: no inference_mode argument
        model.base_model.set_adapter(names)
        for n, p in model.named_parameters():
            if "lora_" in n:
                p.requires_grad_(False)


def _disabled(model: PeftModel) -> bool:
    from peft.tuners.tuners_utils import BaseTunerLayer

    layer = next((m for m in model.modules() if isinstance(m, BaseTunerLayer)), None)
    return layer is None or layer.disable_adapters


def active_adapters(model: PeftModel) -> list[str]:
    """Names of the adapters that currently contribute to the output ([] when disabled)."""
    return [] if _disabled(model) else list(model.base_model.active_adapters)


@contextmanager
def use_adapters(model: PeftModel, names: Sequence[str]) -> Iterator[PeftModel]:
    """Activate `names` inside the block, then restore the previous active set."""
    before = active_adapters(model)
    activate(model, names)
    try:
        yield model
    finally:
        activate(model, before)


def no_adapter(model: PeftModel):
    """The base model inside the block. Unlike PeftModel.disable_adapter(), leaves adapters frozen after."""
    return use_adapters(model, [])


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
    configs = [_read_config(d) for d in adapter_dirs]
    for d, cfg in zip(adapter_dirs, configs):
        if cfg.get("use_dora"):
            raise PersonaguardError(f"{d}: DoRA adapters cannot be merged (their magnitude vectors do not add up)")
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

    from .models import LoadOptions

    out = Path(out_dir)
    if out.exists():
        raise PersonaguardError(f"{out} already exists; merge never overwrites, choose a new out_dir")
    configs, weights = _check_merge_args(adapter_dirs, method, weights, density, svd_rank)
    names = _names(adapter_dirs)
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
            names, weights, merged, combination_type=method, svd_rank=svd_rank, density=density,
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
            "method": method, "weights": weights, "density": density,
            "svd_rank": (svd_rank or max(c["r"] for c in configs)) if method == "svd" else None,
            "seed": seed, "sources": [str(Path(d).resolve()) for d in adapter_dirs], "names": names,
            "rank": merged_cfg.r, "base_model": base, "guardrails": copied, "peft_version": peft.__version__,
            "merge_seconds": round(merge_seconds, 3), "seconds": round(time.perf_counter() - t0, 3),
        }
        (folder / "merge.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
        if out.exists():  # created while we worked; rename would silently replace an empty folder
            raise PersonaguardError(f"{out} already exists; merge never overwrites, choose a new out_dir")
        os.rename(folder, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {**record, "out_dir": str(out)}

