"""Run generate -> train -> evaluate for every guardrail of a config, then print a summary.

Usage:
    personaguard pipeline --config configs/quickstart.yaml [--start-step 2 --end-step 3]

Steps: 1 generate, 2 train, 3 evaluate (test split + `extra_eval_data`), 4 plots + report.html/md. Each step reads what the
previous one wrote under `run_dir`, so a run can be continued from any step.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import evaluate, generate, train
from .config import EvaluateConfig, GenerateConfig, PipelineConfig, TrainConfig, build, dump_yaml
from .errors import PersonaguardError
from .evaluate import summary_table
from .schema import write_text_atomic

STEPS = {1: "generate", 2: "train", 3: "evaluate", 4: "report"}


@dataclass
class PipelineResult:
    run_dir: Path
    metrics: dict[str, dict] = field(default_factory=dict)  # "guardrail / data / setting" -> metrics
    seconds: dict[str, float] = field(default_factory=dict)


def stage_configs(cfg: PipelineConfig, guardrail: str, source: str = "config"):
    """The three stage configs for one guardrail, paths filled in under run_dir."""
    run_dir = Path(cfg.run_dir)
    g = build(GenerateConfig, {"guardrails_dir": cfg.guardrails_dir, **cfg.generate, "guardrail": guardrail,
                               "out_dir": str(run_dir / "data")}, f"{source} (generate)")
    data_dir = run_dir / "data" / f"{Path(guardrail).stem}_{g.variation}"
    adapter = run_dir / "adapters" / Path(guardrail).stem
    t = build(TrainConfig, {"guardrails_dir": cfg.guardrails_dir, **cfg.train, "model": cfg.model, "guardrail": guardrail,
                            "data_dir": str(data_dir), "out_dir": str(adapter)}, f"{source} (train)")
    evals = []
    for data in [str(data_dir / "test.jsonl"), *cfg.extra_eval_data]:
        name = "test" if data.endswith("test.jsonl") and Path(data).parent == data_dir else Path(data).stem
        defaults = {"guardrails_dir": cfg.guardrails_dir, "max_prompt_tokens": t.max_prompt_tokens}
        if "embedding" in cfg.evaluate.get("settings", []):
            defaults["baseline_train_data"] = str(data_dir / "train.jsonl")  # the adapter's own training data
        evals.append(build(EvaluateConfig, {**defaults, **cfg.evaluate, "model": cfg.model,
                                            "adapter": str(adapter), "guardrail": guardrail, "data": data,
                                            "out_dir": str(run_dir / "eval" / Path(guardrail).stem / name)},
                           f"{source} (evaluate)"))
    return g, t, evals


def run(cfg: PipelineConfig, start_step: int = 1, end_step: int = 4, source: str = "config") -> PipelineResult:
    if not (1 <= start_step <= end_step <= max(STEPS)):
        raise PersonaguardError(f"--start-step/--end-step must satisfy 1 <= start <= end <= {max(STEPS)}")
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / "pipeline_config.yaml", dump_yaml(cfg))
    result = PipelineResult(run_dir)
    plans = [(name, *stage_configs(cfg, name, source)) for name in cfg.guardrails]  # validate everything first
    for name, g, t, evals in plans:
        for step in range(start_step, min(end_step, 3) + 1):
            t0 = time.perf_counter()
            if step == 1:
                generate.run(g)
            elif step == 2:
                train.run(t)
            else:
                for e in evals:
                    res = evaluate.run(e)
                    for setting, m in res.metrics.items():
                        result.metrics[f"{Path(name).stem} / {Path(e.out_dir).name} / {setting}"] = m
            result.seconds[f"{Path(name).stem}:{STEPS[step]}"] = round(time.perf_counter() - t0, 1)
    if end_step >= 4:
        from . import report

        t0 = time.perf_counter()
        report.run(run_dir)
        result.seconds["report"] = round(time.perf_counter() - t0, 1)
    if result.metrics:
        table = summary_table(result.metrics, "guardrail / data / setting")
        write_text_atomic(run_dir / "summary.md", f"# Pipeline summary\n\n{table}\n\nStage seconds: {result.seconds}\n")
        write_text_atomic(run_dir / "summary.json", json.dumps({"metrics": result.metrics, "seconds": result.seconds}, indent=2))
    return result
