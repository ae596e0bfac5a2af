"""An adapter folder (what it says about itself), and adapters loaded on a model at run time.

Usage:
    from personaguard.adapters import activate, load_stack, no_adapter, use_adapters
    model, names = load_stack("embedded:smollm2-135m-instruct", ["runs/q/adapters/politics", "runs/q/adapters/meeting"])
    activate(model, ["politics"])          # per request: no reload, no merge
    activate(model, names)                 # both: their LoRA updates add up exactly
    with no_adapter(model): ...            # the base model

Why dynamic stacking is exact: a LoRA layer computes `W x + sum_i s_i B_i A_i x` over its active
adapters, which is the same as one adapter whose delta is `sum_i s_i B_i A_i` (what the `cat` merge
writes to disk), so a dynamic stack and its cat merge give the same logits.

The active set is state of the model object: a server that changes it per request must hold one lock
around `activate` + forward/generate.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import PersonaguardError
from .guardrails import Guardrail

if TYPE_CHECKING:
    from peft import PeftModel

    from .models import LoadOptions


def adapter_name(adapter_dir: str | Path) -> str:
    """The folder's name, made a valid PEFT adapter name (PEFT keys modules by it: no '.')."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", Path(adapter_dir).resolve().name)


def read_peft_config(adapter_dir: str | Path) -> dict:
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


def adapter_names(adapter_dirs: Sequence[str | Path]) -> list[str]:
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
    names = adapter_names(adapter_dirs)
    for d in adapter_dirs:
        read_peft_config(d)
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


# --- what an adapter folder says about itself -------------------------------------------------------

INFO_FILE = "personaguard.json"  # written by `train` next to the PEFT files
_CHECKPOINT = re.compile(r"^checkpoint-\d+$")


@dataclass(frozen=True)
class AdapterInfo:
    """What every later stage needs to use an adapter the way it was trained.

    `base_model` is the model as the training config named it (embedded name, HF id or path), not
    the local cache path PEFT records, so the folder still says what to load on another machine."""

    folder: Path
    guardrail: Guardrail
    base_model: str
    max_prompt_tokens: int
    max_reply_tokens: int
    gate_threshold: float | None
    run_id: str | None


def write_info(
    out_dir: str | Path,
    *,
    guardrail: Guardrail,
    base_model: str,
    max_prompt_tokens: int,
    max_reply_tokens: int,
    gate_threshold: float | None,
    run_id: str,
) -> Path:
    """Record the adapter's description in `out_dir/personaguard.json` (atomically)."""
    from . import __version__
    from .schema import write_text_atomic

    path = Path(out_dir) / INFO_FILE
    write_text_atomic(
        path,
        json.dumps(
            {
                "format": 1,
                "guardrail": guardrail.model_dump(mode="json"),
                "base_model": base_model,
                "max_prompt_tokens": max_prompt_tokens,
                "max_reply_tokens": max_reply_tokens,
                "gate_threshold": gate_threshold,
                "run_id": run_id,
                "personaguard_version": __version__,
            },
            indent=2,
        ),
    )
    return path


def read_info(adapter_dir: str | Path) -> AdapterInfo:
    """The adapter's description; a checkpoint-N folder is described by its training folder.

    Folders trained before `personaguard.json` existed are read from the files training wrote then
    (config.yaml, guardrail.yaml, guard_threshold.json)."""
    import yaml

    from .metrics import read_gate

    folder = Path(adapter_dir)
    read_peft_config(folder)
    home = folder.parent if _CHECKPOINT.match(folder.name) and not (folder / INFO_FILE).is_file() else folder
    info_path = home / INFO_FILE
    if info_path.is_file():
        try:
            raw = json.loads(info_path.read_text(encoding="utf-8"))
            return AdapterInfo(
                folder,
                Guardrail.model_validate(raw["guardrail"]),
                raw["base_model"],
                int(raw["max_prompt_tokens"]),
                int(raw["max_reply_tokens"]),
                raw.get("gate_threshold"),
                raw.get("run_id"),
            )
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise PersonaguardError(
                f"{info_path}: not a valid adapter description ({exc}); retrain or restore the file"
            ) from None
    cfg_path, g_path = home / "config.yaml", home / "guardrail.yaml"
    if not (cfg_path.is_file() and g_path.is_file()):
        raise PersonaguardError(
            f"{home}: no {INFO_FILE} (nor config.yaml + guardrail.yaml); this PEFT folder was not "
            "trained by personaguard, so its guardrail and base model are unknown"
        )
    from .config import TrainConfig

    cfg = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {}
    defaults = TrainConfig.model_fields
    guardrail = Guardrail.model_validate(yaml.safe_load(g_path.read_text(encoding="utf-8")))
    return AdapterInfo(
        folder,
        guardrail,
        cfg.get("model") or defaults["model"].default,
        int(cfg.get("max_prompt_tokens", defaults["max_prompt_tokens"].default)),
        int(cfg.get("max_reply_tokens", defaults["max_reply_tokens"].default)),
        read_gate(home),
        None,
    )
