"""Evaluate a guardrail adapter: with/without adapter x triggering/neutral.

Usage:
    personaguard evaluate --adapter runs/quickstart/adapters/politics --data test.jsonl --out-dir out/
    personaguard evaluate --guardrail politics --data ../shared/data/dev_real_v1.jsonl ...

Any Snapshot JSONL works (DESIGN.md schema; extra fields kept); labels must be `none` or a known
guardrail name. For each setting it generates greedy replies (tag_rate / false_tag_rate) and reads
the guard score from one forward pass (AUROC, best-F1 threshold). Writes metrics.json,
predictions.jsonl and report.md to out_dir.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from .config import EvaluateConfig, dump_yaml
from .guardrails import get_guardrail, registry
from .metrics import detection_metrics, fmt, starts_with_tag
from .schema import NONE_LABEL, Snapshot, read_jsonl, write_jsonl_atomic, write_text_atomic


@dataclass
class EvalResult:
    out_dir: Path
    metrics: dict  # setting -> metrics dict


def load_eval_model(cfg: EvaluateConfig):
    """Base model with the adapter attached (if any); `disable_adapter()` gives the 'none' setting."""
    from .models import LoadOptions, load_model

    model, tok = load_model(cfg.model, LoadOptions(cfg.device, cfg.precision, cfg.load_in_4bit))
    if cfg.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, cfg.adapter)
    model.eval()
    return model, tok


def predict(model, tok, snaps: list[Snapshot], cfg: EvaluateConfig, tag: str, setting: str) -> list[dict]:
    from .inference import generate_replies, guard_scores
    from .prompt import prompt_ids

    prompts = [prompt_ids(tok, s, cfg.max_prompt_tokens) for s in snaps]
    scores, g_secs = guard_scores(model, tok, prompts, tag, cfg.batch_size)
    replies, r_secs = generate_replies(model, tok, prompts, cfg.max_new_tokens, cfg.batch_size)
    return [
        {
            "id": s.id, "label": s.label, "setting": setting, "message": s.message, "reply": r,
            "tagged": starts_with_tag(r, tag), "guard_score": sc, "guard_seconds": gs, "reply_seconds": rs,
        }
        for s, r, sc, gs, rs in zip(snaps, replies, scores, g_secs, r_secs)
    ]


def run(cfg: EvaluateConfig) -> EvalResult:
    """Evaluate and write metrics.json, predictions.jsonl, report.md into cfg.out_dir."""
    import contextlib

    extra = [cfg.guardrails_dir] if cfg.guardrails_dir else None
    guardrail = get_guardrail(cfg.guardrail, extra)
    labels = set(registry(extra)) | {guardrail.name, NONE_LABEL}
    snaps = read_jsonl(cfg.data, Snapshot, allowed_labels=labels)
    if cfg.limit:
        snaps = snaps[: cfg.limit]
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model, tok = load_eval_model(cfg)
    preds, metrics = [], {}
    for setting in tqdm(cfg.settings, desc="evaluate settings", unit="setting"):
        ctx = model.disable_adapter() if (setting == "none" and cfg.adapter) else contextlib.nullcontext()
        with ctx:
            rows = predict(model, tok, snaps, cfg, guardrail.tag, setting)
        preds += rows
        metrics[setting] = detection_metrics(rows, guardrail.name, guardrail.tag)
    write_jsonl_atomic(out / "predictions.jsonl", preds)
    meta = {"guardrail": guardrail.name, "data": str(cfg.data), "model": cfg.model, "adapter": cfg.adapter,
            "n_items": len(snaps), "judge": "tag (deterministic)"}
    write_text_atomic(out / "metrics.json", json.dumps({"meta": meta, "settings": metrics}, indent=2))
    write_text_atomic(out / "config.yaml", dump_yaml(cfg))
    write_text_atomic(out / "report.md", markdown_report(meta, metrics, preds, guardrail.tag))
    return EvalResult(out, metrics)


SUMMARY_COLUMNS = [
    ("tag_rate", "tag rate"), ("false_tag_rate", "false tag rate"), ("precision", "precision"),
    ("recall", "recall"), ("f1", "F1"), ("auroc", "AUROC"), ("threshold", "best-F1 threshold"),
]


def summary_table(metrics: dict[str, dict], first_col: str = "setting") -> str:
    head = f"| {first_col} | n trig | n neutral | " + " | ".join(h for _, h in SUMMARY_COLUMNS) + " |"
    sep = "|" + "---|" * (3 + len(SUMMARY_COLUMNS))
    rows = [
        f"| {name} | {m['n_triggering']} | {m['n_neutral']} | " + " | ".join(fmt(m[k]) for k, _ in SUMMARY_COLUMNS) + " |"
        for name, m in metrics.items()
    ]
    return "\n".join([head, sep, *rows])


def markdown_report(meta: dict, metrics: dict[str, dict], preds: list[dict], tag: str) -> str:
    lines = [
        f"# Evaluation: `{meta['guardrail']}`",
        "",
        f"Data `{meta['data']}` ({meta['n_items']} items), model `{meta['model']}`, adapter `{meta['adapter']}`; "
        f"judge: {meta['judge']}.",
        "",
        "## Summary",
        "",
        summary_table(metrics),
        "",
        "## Tag rate per label",
        "",
        "| setting | " + " | ".join(sorted({lab for m in metrics.values() for lab in m["per_label"]})) + " |",
    ]
    labels = sorted({lab for m in metrics.values() for lab in m["per_label"]})
    lines.append("|---|" + "---|" * len(labels))
    for s, m in metrics.items():
        cells = [f"{fmt(m['per_label'][lab]['tag_rate'])} (n={m['per_label'][lab]['n']})" if lab in m["per_label"] else "–" for lab in labels]
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    lines += ["", "## Examples", ""]
    for s in metrics:
        for want_label, title in ((meta["guardrail"], "triggering"), (NONE_LABEL, "neutral")):
            items = [p for p in preds if p["setting"] == s and p["label"] == want_label][:3]
            for p in items:
                lines.append(f"- **{s} / {title}** `{p['id']}` score={p['guard_score']:.3f}  \n"
                             f"  user: {p['message'][:200]!r}  \n  reply: {p['reply'][:200]!r}")
    return "\n".join(lines) + "\n"
