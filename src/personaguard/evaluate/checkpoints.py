"""Evaluate the checkpoints of a training run: detection metrics per step, as a curve.

Usage:
    personaguard evaluate --adapter runs/quickstart/adapters/politics --data test.jsonl --out-dir out/ --checkpoints all
    personaguard evaluate ... --checkpoints 25,50          # only these steps

Why: the final adapter is not always the best one (a late epoch can start tagging neutral turns),
and a curve of tag rate / false tag rate / AUROC per step shows where training should stop. Every
`checkpoint-N` folder the Trainer wrote is a PEFT adapter; they are loaded onto ONE base model next
to each other (stack.load_stack) and switched with `activate`, so the base is loaded once.
Writes `checkpoints.json` and `checkpoints.csv` to the evaluation folder; report/plots.py draws the curve.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..errors import PersonaguardError
from ..inference import Decoding
from ..schema import write_csv_atomic, write_text_atomic

CURVE_COLUMNS = [
    "step",
    "checkpoint",
    "tag_rate",
    "false_tag_rate",
    "precision",
    "recall",
    "f1",
    "auroc",
    "mean_guard_score_triggering",
    "mean_guard_score_neutral",
]


def checkpoint_dirs(adapter_dir: str | Path, which: list[str]) -> list[tuple[int, Path]]:
    """(step, folder) for the requested checkpoints, by step; `which` is ["all"] or step numbers."""
    root = Path(adapter_dir)
    found = {}
    for d in root.glob("checkpoint-*"):
        m = re.fullmatch(r"checkpoint-(\d+)", d.name)
        if m and (d / "adapter_config.json").is_file():
            found[int(m.group(1))] = d
    if which == ["all"]:
        if not found:
            raise PersonaguardError(f"{root}: no checkpoint-N folders with an adapter_config.json (train with save_steps)")
        return sorted(found.items())
    steps = []
    for w in which:
        if not str(w).isdigit():
            raise PersonaguardError(f"checkpoints: {w!r} is not a step number; use 'all' or numbers like 25,50")
        if int(w) not in found:
            raise PersonaguardError(f"checkpoints: {root}/checkpoint-{w} not found; present: {sorted(found) or 'none'}")
        steps.append(int(w))
    return [(s, found[s]) for s in sorted(set(steps))]


def evaluate_checkpoints(
    model, tok, snaps, dec: Decoding, adapter_dir: str, which: list[str], guardrail, out: Path
) -> list[dict]:
    """Adds each checkpoint to `model` (a PeftModel), evaluates it greedily, writes the curve files."""
    from ..adapters import activate, active_adapters, load_stack
    from ..metrics import detection_metrics
    from .predict import predict

    ckpts = checkpoint_dirs(adapter_dir, which)
    before = active_adapters(model)
    model, names = load_stack(model, [d for _, d in ckpts])
    curve = []
    try:
        for (step, d), name in zip(ckpts, names):
            activate(model, [name])
            rows = predict(model, tok, snaps, dec, guardrail, "adapter")
            m = detection_metrics(rows, guardrail.name, guardrail.tag)
            curve.append({"step": step, "checkpoint": str(d), **{k: m.get(k) for k in CURVE_COLUMNS[2:]}})
    finally:
        activate(model, before)
    write_text_atomic(out / "checkpoints.json", json.dumps(curve, indent=2))
    write_csv_atomic(out / "checkpoints.csv", curve, CURVE_COLUMNS)
    return curve
