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

from ..config import DEFAULT_MAX_PROMPT_TOKENS, EvaluateConfig, dump_yaml
from ..errors import PersonaguardError
from ..guardrails import Guardrail, get_guardrail, registry
from ..metrics import detection_metrics, fmt, read_gate
from ..schema import NONE_LABEL, Snapshot, ensure_dir, read_jsonl, write_jsonl_atomic, write_text_atomic
from .predict import gate_rows, group_fields, load_eval_model, predict


@dataclass
class EvalResult:
    out_dir: Path
    metrics: dict  # setting -> metrics dict


def classify(snaps: list[Snapshot], cfg: EvaluateConfig, guardrail, setting: str) -> list[dict]:
    """Detection-only baselines: a classifier decides; 'reply' is the tag or empty, score = P(trigger)."""
    if setting == "embedding":
        from ..schema import Example
        from .baselines import EmbeddingClassifier

        train = read_jsonl(cfg.baseline_train_data, Example)
        clf = EmbeddingClassifier().fit(train, [r.label == guardrail.name for r in train])
        probs, secs = clf.predict_proba(snaps)
        decisions = [p >= 0.5 for p in probs]
    else:
        from .baselines import LlamaGuardClient

        lg = cfg.llama_guard
        client = LlamaGuardClient(lg.base_url, lg.model, lg.api_key_env)
        out = [client.classify(guardrail, s) for s in tqdm(snaps, desc="llama guard", unit="item")]
        decisions, secs = [d for d, _ in out], [t for _, t in out]
        probs = [float(d) for d in decisions]
    return [
        {
            "id": s.id,
            "label": s.label,
            "setting": setting,
            "run": 0,
            "message": s.message,
            "reply": guardrail.tag if d else "",
            "tagged": d,
            "guard_score": p,
            "guard_seconds": t,
            "reply_seconds": t,
            **group_fields(s),
        }
        for s, d, p, t in zip(snaps, decisions, probs, secs)
    ]


def judge_rows(rows: list[dict], snaps: dict[str, Snapshot], guardrail, cfg: EvaluateConfig, out: Path) -> str:
    """Add valid/adheres verdicts to generative rows; returns the judge's name for the report."""
    from .judge import LLMJudge, TagJudge

    if cfg.judge:
        judge = LLMJudge(cfg.judge.base_url, cfg.judge.model, cfg.judge.api_key_env, cache_path=out / "judge_cache.jsonl")
        name = f"LLM ({cfg.judge.model}) + tag"
    else:
        judge, name = TagJudge(), "tag + validity rules (no LLM judge configured)"
    for r in tqdm(rows, desc="judge", unit="reply", disable=not cfg.judge):
        if r["setting"] in ("embedding", "llama_guard") or r["label"] not in (guardrail.name, NONE_LABEL):
            continue
        v = judge.judge(guardrail, snaps[r["id"]], r["reply"], triggering=r["label"] == guardrail.name)
        r.update(valid=v["valid"], adheres=v["adheres"], judge_explanation=v["explanation"])
    return name


def aggregate_runs(per_run: list[dict]) -> dict:
    """Mean of every numeric metric over runs, plus `<key>_std` when there is more than one run."""
    if len(per_run) == 1:
        return per_run[0]
    import statistics

    out = dict(per_run[-1])
    for k, v in per_run[0].items():
        vals = [m[k] for m in per_run if isinstance(m.get(k), (int, float))]
        if isinstance(v, (int, float)) and len(vals) == len(per_run):
            out[k] = statistics.fmean(vals)
            out[f"{k}_std"] = statistics.stdev(vals)
    out["runs"] = len(per_run)
    return out


def resolve(cfg: EvaluateConfig) -> tuple[EvaluateConfig, Guardrail]:
    """`cfg` with the model, prompt length and data path filled in, and the guardrail to evaluate.

    With an adapter these come from its folder (adapters.read_info): evaluating an adapter at another
    prompt length or on another base than it was trained with measures something else, so a value
    given that contradicts the folder is refused rather than silently used."""
    from ..adapters import read_info
    from ..data.eval_sets import resolve_data
    from ..models import EMBEDDED, same_model

    extra = [cfg.guardrails_dir] if cfg.guardrails_dir else None
    fill: dict = {"data": str(resolve_data(cfg.data))}
    if cfg.adapter:
        info = read_info(cfg.adapter)
        guardrail = info.guardrail
        if cfg.guardrail and get_guardrail(cfg.guardrail, extra).name != guardrail.name:
            raise PersonaguardError(
                f"guardrail {cfg.guardrail!r} contradicts the adapter {cfg.adapter}, trained for "
                f"{guardrail.name!r}; drop --guardrail (the adapter's is used)"
            )
        if cfg.model and not same_model(cfg.model, info.base_model):
            raise PersonaguardError(
                f"model {cfg.model!r} contradicts the adapter {cfg.adapter}, trained on "
                f"{info.base_model!r}; drop --model (the adapter's is used)"
            )
        if cfg.max_prompt_tokens and cfg.max_prompt_tokens != info.max_prompt_tokens:
            raise PersonaguardError(
                f"max_prompt_tokens {cfg.max_prompt_tokens} contradicts the adapter {cfg.adapter}, "
                f"trained at {info.max_prompt_tokens}; drop it (the adapter's is used)"
            )
        fill.update(model=cfg.model or info.base_model, max_prompt_tokens=info.max_prompt_tokens, guardrail=guardrail.name)
    else:
        if not cfg.guardrail:
            raise PersonaguardError(
                "evaluate: no adapter and no guardrail; give --guardrail NAME (whose label counts as triggering) or --adapter DIR"
            )
        guardrail = get_guardrail(cfg.guardrail, extra)
        fill.update(model=cfg.model or EMBEDDED, max_prompt_tokens=cfg.max_prompt_tokens or DEFAULT_MAX_PROMPT_TOKENS)
    return cfg.model_copy(update=fill), guardrail


def run(cfg: EvaluateConfig) -> EvalResult:
    """Evaluate and write metrics.json, predictions.jsonl, report.md into cfg.out_dir."""
    import contextlib

    cfg, guardrail = resolve(cfg)
    extra = [cfg.guardrails_dir] if cfg.guardrails_dir else None
    labels = set(registry(extra)) | {guardrail.name, NONE_LABEL}
    snaps = read_jsonl(cfg.data, Snapshot, allowed_labels=labels)
    if not snaps:
        raise PersonaguardError(f"{cfg.data}: no items (the data file is empty); give a Snapshot JSONL with at least one line")
    if cfg.limit:
        snaps = snaps[: cfg.limit]
    if cfg.checkpoints:  # a missing checkpoint must stop us now, not after the whole evaluation
        from .checkpoints import checkpoint_dirs

        checkpoint_dirs(cfg.adapter, cfg.checkpoints)
    if Path(cfg.model).expanduser().exists():  # a local folder without config.json fails now, not after out_dir exists
        from ..models import resolve_model

        resolve_model(cfg.model)
    out = ensure_dir(cfg.out_dir, "out_dir")
    generative = [s for s in cfg.settings if s in ("none", "adapter", "system_prompt")]
    gate = read_gate(cfg.adapter) if ("adapter_gated" in cfg.settings and cfg.adapter) else None
    dec = cfg.decoding()
    if generative or cfg.checkpoints:
        from ..models import LoadOptions

        model, tok = load_eval_model(cfg.model, cfg.adapter, LoadOptions(cfg.device, cfg.precision, cfg.load_in_4bit))
    else:
        model, tok = None, None
    by_id = {s.id: s for s in snaps}
    preds, metrics, judge_name = [], {}, "tag"
    ordered = sorted(cfg.settings, key=lambda s: s == "adapter_gated")  # the gate reuses the adapter's replies
    for setting in tqdm(ordered, desc="evaluate settings", unit="setting"):
        if setting == "adapter_gated":
            if gate is None:
                continue  # reported in meta: no threshold saved with this adapter
            rows = gate_rows(
                [p for p in preds if p["setting"] == "adapter" and p["run"] == 0], model, tok, snaps, dec, guardrail, gate
            )
            judge_rows(rows, by_id, guardrail, cfg, out)
            preds += rows
            metrics[setting] = detection_metrics(rows, guardrail.name, guardrail.tag)
            metrics[setting]["gate_threshold"] = gate
            continue
        if setting not in generative:
            rows = classify(snaps, cfg, guardrail, setting)
            preds += rows
            metrics[setting] = detection_metrics(rows, guardrail.name, guardrail.tag)
            continue
        use_adapter = setting == "adapter"
        ctx = model.disable_adapter() if (cfg.adapter and not use_adapter) else contextlib.nullcontext()
        per_run = []
        with ctx:
            for r in range(cfg.runs):
                rows = predict(model, tok, snaps, dec, guardrail, setting, r)
                judge_name = judge_rows(rows, by_id, guardrail, cfg, out)
                preds += rows
                per_run.append(detection_metrics(rows, guardrail.name, guardrail.tag))
        metrics[setting] = aggregate_runs(per_run)
    curve = None
    if cfg.checkpoints:
        from .checkpoints import evaluate_checkpoints

        curve = evaluate_checkpoints(model, tok, snaps, dec, cfg.adapter, cfg.checkpoints, guardrail, out)
    write_jsonl_atomic(out / "predictions.jsonl", preds)
    meta = {
        "guardrail": guardrail.name,
        "data": str(cfg.data),
        "model": cfg.model,
        "adapter": cfg.adapter,
        "n_items": len(snaps),
        "runs": cfg.runs,
        "judge": judge_name,
        "checkpoint_steps": [c["step"] for c in curve] if curve else None,
    }
    write_text_atomic(out / "metrics.json", json.dumps({"meta": meta, "settings": metrics}, indent=2))
    write_text_atomic(out / "config.yaml", dump_yaml(cfg))
    write_text_atomic(out / "report.md", markdown_report(meta, metrics, preds, guardrail.tag, curve))
    return EvalResult(out, metrics)


SUMMARY_COLUMNS = [
    ("tag_rate", "tag rate"),
    ("false_tag_rate", "false tag rate"),
    ("adherence", "adherence"),
    ("neutral_preserved", "neutral preserved"),
    ("precision", "precision"),
    ("recall", "recall"),
    ("f1", "F1"),
    ("auroc", "AUROC"),
    ("threshold", "best-F1 threshold"),
]


def cell(m: dict, key: str) -> str:
    val, std = m.get(key), m.get(f"{key}_std")
    return f"{fmt(val)} ± {fmt(std)}" if std is not None else fmt(val)


def summary_table(metrics: dict[str, dict], first_col: str = "setting") -> str:
    head = f"| {first_col} | n trig | n neutral | " + " | ".join(h for _, h in SUMMARY_COLUMNS) + " |"
    sep = "|" + "---|" * (3 + len(SUMMARY_COLUMNS))
    rows = [
        f"| {name} | {m['n_triggering']} | {m['n_neutral']} | " + " | ".join(cell(m, k) for k, _ in SUMMARY_COLUMNS) + " |"
        for name, m in metrics.items()
    ]
    return "\n".join([head, sep, *rows])


def markdown_report(meta: dict, metrics: dict[str, dict], preds: list[dict], tag: str, curve: list[dict] | None = None) -> str:
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
        cells = [
            f"{fmt(m['per_label'][lab]['tag_rate'])} (n={m['per_label'][lab]['n']})" if lab in m["per_label"] else "–"
            for lab in labels
        ]
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    groups = sorted({(key, g) for m in metrics.values() for key, d in m.get("per_group", {}).items() for g in d})
    if groups:
        lines += [
            "",
            "## Tag rate per group",
            "",
            "Own-label groups count replies that begin with the tag; other groups count the tag anywhere (false tags).",
            "",
            "| setting | " + " | ".join(f"{k}={g}" for k, g in groups) + " |",
            "|---|" + "---|" * len(groups),
        ]
        for s, m in metrics.items():
            pg = m.get("per_group", {})
            cells = [f"{fmt(pg[k][g]['tag_rate'])} (n={pg[k][g]['n']})" if g in pg.get(k, {}) else "–" for k, g in groups]
            lines.append(f"| {s} | " + " | ".join(cells) + " |")
    if curve:
        lines += [
            "",
            "## Checkpoints (adapter, greedy)",
            "",
            "| step | tag rate | false tag rate | F1 | AUROC |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {c['step']} | {fmt(c['tag_rate'])} | {fmt(c['false_tag_rate'])} | {fmt(c['f1'])} | {fmt(c['auroc'])} |"
            for c in curve
        ]
    lines += ["", "## Examples", ""]
    for s in metrics:
        for want_label, title in ((meta["guardrail"], "triggering"), (NONE_LABEL, "neutral")):
            items = [p for p in preds if p["setting"] == s and p["label"] == want_label][:3]
            for p in items:
                lines.append(
                    f"- **{s} / {title}** `{p['id']}` score={p['guard_score']:.3f}  \n"
                    f"  user: {p['message'][:200]!r}  \n  reply: {p['reply'][:200]!r}"
                )
    return "\n".join(lines) + "\n"
