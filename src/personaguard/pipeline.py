"""Run generate -> train -> evaluate for every guardrail of a config, then print a summary.

Usage:
    personaguard pipeline --config configs/quickstart.yaml [--start-step 2 --end-step 3]
    personaguard pipeline --config configs/paper-cpu.yaml     # + variations and stacking

Steps: 1 generate, 2 train, 3 evaluate (test split + `extra_eval_data`; then the variation table and,
with `stack:`, the stacked guardrails), 4 plots + report.html/md. Each step reads what the previous
one wrote under `run_dir`, so a run can be continued from any step.

A *unit* is one adapter: a guardrail with its main variation (folder `<guardrail>`) or with an extra
variation from `variations:` (folder `<guardrail>_<variation>`), which is also evaluated on the main
variation's test split -- the paper's question is how well a narrow data set generalises to the full one.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from .config import (
    EvaluateConfig,
    GenerateConfig,
    JointTrainConfig,
    PipelineConfig,
    StackEvalConfig,
    TrainConfig,
    build,
    dump_yaml,
)
from .data import generate
from .errors import PersonaguardError
from .evaluate import evaluate
from .evaluate.evaluate import summary_table
from .metrics import fmt
from .schema import write_csv_atomic, write_text_atomic
from .train import train

STEPS = {1: "generate", 2: "train", 3: "evaluate", 4: "report"}
VARIATION_KEYS = ("tag_rate", "false_tag_rate", "auroc")


@dataclass
class Unit:
    name: str  # folder name under adapters/ and eval/
    guardrail: str
    gen: GenerateConfig
    train: TrainConfig
    evals: list[EvaluateConfig]


@dataclass
class PipelineResult:
    run_dir: Path
    metrics: dict[str, dict] = field(default_factory=dict)  # "unit / data / setting" -> metrics
    seconds: dict[str, float] = field(default_factory=dict)


def _unit(cfg: PipelineConfig, guardrail: str, source: str, variation: str | None = None, main_test: Path | None = None) -> Unit:
    run_dir, stem = Path(cfg.run_dir), Path(guardrail).stem
    gen_fields = {
        **cfg.generate.model_dump(),
        "guardrails_dir": cfg.guardrails_dir,
        "guardrail": guardrail,
        "out_dir": str(run_dir / "data"),
    }
    if variation:
        gen_fields["variation"] = variation
    if cfg.joint_training:
        gen_fields["cross_negative_share"] = 0.0  # joint training turns the members' triggers into each other's negatives
        gen_fields["compound_trigger_share"] = 0.0  # ...so a row holding two members' triggers would be a negative for one
    g = build(GenerateConfig, gen_fields, f"{source} (generate)")
    name = f"{stem}_{variation}" if variation else stem
    data_dir = run_dir / "data" / f"{stem}_{g.variation}"
    adapter = run_dir / "adapters" / name
    t = build(
        TrainConfig,
        {
            **cfg.train.model_dump(),
            "guardrails_dir": cfg.guardrails_dir,
            "model": cfg.model,
            "guardrail": guardrail,
            "data_dir": str(data_dir),
            "out_dir": str(adapter),
        },
        f"{source} (train)",
    )
    datasets = [("test", data_dir / "test.jsonl")]
    if main_test is not None:
        datasets.append((f"test_{main_test.parent.name.removeprefix(stem + '_')}", main_test))
    datasets += [(Path(d).stem, Path(d)) for d in cfg.extra_eval_data]
    evals = []
    for data_name, data in datasets:
        defaults = {"guardrails_dir": cfg.guardrails_dir}  # the prompt length comes from the adapter folder
        if "embedding" in cfg.evaluate.settings:
            defaults["baseline_train_data"] = str(data_dir / "train.jsonl")  # the adapter's own training data
        evals.append(
            build(
                EvaluateConfig,
                {
                    **defaults,
                    **cfg.evaluate.model_dump(),
                    "model": cfg.model,
                    "adapter": str(adapter),
                    "guardrail": guardrail,
                    "data": str(data),
                    "out_dir": str(run_dir / "eval" / name / data_name),
                },
                f"{source} (evaluate)",
            )
        )
    return Unit(name, guardrail, g, t, evals)


def units(cfg: PipelineConfig, source: str = "config") -> list[Unit]:
    """Every adapter the config asks for: the main one per guardrail, then its extra variations."""
    out = []
    for guardrail in cfg.guardrails:
        main = _unit(cfg, guardrail, source)
        out.append(main)
        main_test = Path(main.train.data_dir) / "test.jsonl"
        out += [_unit(cfg, guardrail, source, v, main_test) for v in cfg.variations.get(guardrail, []) if v != main.gen.variation]
    return out


def stage_configs(cfg: PipelineConfig, guardrail: str, source: str = "config"):
    """The three stage configs of one guardrail's main adapter, paths filled in under run_dir."""
    u = _unit(cfg, guardrail, source)
    return u.gen, u.train, u.evals


def _mains(plan: list[Unit]) -> dict[str, Unit]:
    return {u.guardrail: u for u in plan if u.name == Path(u.guardrail).stem}


def aware_trainings(cfg: PipelineConfig, plan: list[Unit]) -> dict[str, TrainConfig]:
    """Stack-aware retraining as a chain: member k trains again on top of the chain's members 1..k-1.

    The first member keeps its own adapter; each later one is trained with the earlier chain members
    frozen and active, on its own training data plus theirs, so that it sees every member's triggers
    and near-misses inside the stack it joins (this union-data version is not yet measured on the real
    model). Measured on SmolLM2 (docs/research-log.md, "Stacking three guardrails" and run V2): retraining
    every member on top of the *original* others fails (each learns to offset adapters that are then
    replaced; the sum never tags), and a chain trained on each member's own data only over-fires
    (the last member never saw the earlier members' neutral turns)."""
    if cfg.stack is None or not cfg.stack_aware_training:
        return {}
    mains = list(_mains(plan).items())
    chain, data, out = [mains[0][1].train.out_dir], [mains[0][1].train.data_dir], {}
    for g, u in mains[1:]:
        t = u.train.model_copy(
            update={
                "out_dir": str(Path(u.train.out_dir).with_name(f"{Path(u.train.out_dir).name}_stack_aware")),
                "frozen_adapters": list(chain),
                "extra_data_dirs": list(data),
                "resume": False,
            }
        )
        out[g] = t
        chain.append(t.out_dir)
        data.append(u.train.data_dir)
    return out


def joint_config(cfg: PipelineConfig, plan: list[Unit], source: str = "config") -> JointTrainConfig | None:
    """With `joint_training`: the guardrails' main adapters trained together (train/joint.py), run folder `joint/`."""
    if not cfg.joint_training:
        return None
    mains = _mains(plan)
    return build(
        JointTrainConfig,
        {
            **cfg.joint.model_dump(),
            "members": {u.guardrail: {"data_dir": u.train.data_dir, "out_dir": u.train.out_dir} for u in mains.values()},
            "out_dir": str(Path(cfg.run_dir) / "joint"),
            "train": cfg.train.model_dump(),
            "model": cfg.model,
            "guardrails_dir": cfg.guardrails_dir,
        },
        f"{source} (joint training)",
    )


def stack_config(cfg: PipelineConfig, plan: list[Unit], source: str = "config") -> StackEvalConfig | None:
    if cfg.stack is None:
        return None
    mains = _mains(plan)
    trained = aware_trainings(cfg, plan)
    aware = {g: (trained[g].out_dir if g in trained else u.train.out_dir) for g, u in mains.items()} if trained else {}
    return build(
        StackEvalConfig,
        {
            "guardrails_dir": cfg.guardrails_dir,
            **cfg.evaluate.model_dump(
                include={"max_new_tokens", "batch_size", "device", "precision", "load_in_4bit"}, exclude_unset=True
            ),
            **cfg.stack.model_dump(exclude_unset=True),
            "model": cfg.model,
            "adapters": {g: u.train.out_dir for g, u in mains.items()},
            "test_data": {g: str(Path(u.train.data_dir) / "test.jsonl") for g, u in mains.items()},
            "out_dir": str(Path(cfg.run_dir) / "stacks"),
            **({"aware_adapters": aware} if aware else {}),
        },
        f"{source} (stack)",
    )


def run(cfg: PipelineConfig, start_step: int = 1, end_step: int = 4, source: str = "config") -> PipelineResult:
    if not (1 <= start_step <= end_step <= max(STEPS)):
        raise PersonaguardError(f"--start-step/--end-step must satisfy 1 <= start <= end <= {max(STEPS)}")
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / "pipeline_config.yaml", dump_yaml(cfg))
    result = PipelineResult(run_dir)
    plan = units(cfg, source)  # validate everything first
    stack_cfg = stack_config(cfg, plan, source)
    joint_cfg = joint_config(cfg, plan, source)
    mains = {u.name for u in _mains(plan).values()}
    steps = range(start_step, min(end_step, 3) + 1)
    # joint training needs every member's data first, so then the steps run one after the other for all units
    order = [(s, u) for s in steps for u in plan] if joint_cfg else [(s, u) for u in plan for s in steps]
    for step, u in order:
        t0 = time.perf_counter()
        if step == 1:
            generate.run(u.gen)  # a variation shared by two units is generated once (resume skips done ids)
        elif step == 2 and joint_cfg and u.name in mains:
            if "joint:train" in result.seconds:
                continue
            from .train import joint as train_joint

            train_joint.run(joint_cfg, f"{source} (joint training)")
            result.seconds["joint:train"] = round(time.perf_counter() - t0, 1)
            continue
        elif step == 2:
            train.run(u.train)
        else:
            for e in u.evals:
                res = evaluate.run(e)
                for setting, m in res.metrics.items():
                    result.metrics[f"{u.name} / {Path(e.out_dir).name} / {setting}"] = m
        result.seconds[f"{u.name}:{STEPS[step]}"] = round(time.perf_counter() - t0, 1)
    if start_step <= 2 <= end_step:
        for g, t in aware_trainings(cfg, plan).items():
            t0 = time.perf_counter()
            train.run(t)
            result.seconds[f"{Path(g).stem}_stack_aware:train"] = round(time.perf_counter() - t0, 1)
    if start_step <= 3 <= end_step:
        if cfg.variations:
            write_variation_table(run_dir, plan)
        if stack_cfg is not None:
            from .stack import evaluate as stack_eval

            t0 = time.perf_counter()
            stack_eval.run(stack_cfg)
            result.seconds["stack"] = round(time.perf_counter() - t0, 1)
    if end_step >= 4:
        from .report import report

        t0 = time.perf_counter()
        report.run(run_dir)
        result.seconds["report"] = round(time.perf_counter() - t0, 1)
    if result.metrics:
        table = summary_table(result.metrics, "adapter / data / setting")
        write_text_atomic(run_dir / "summary.md", f"# Pipeline summary\n\n{table}\n\nStage seconds: {result.seconds}\n")
        write_text_atomic(run_dir / "summary.json", json.dumps({"metrics": result.metrics, "seconds": result.seconds}, indent=2))
    return result


def write_variation_table(run_dir: Path, plan: list[Unit]) -> None:
    """variations.csv/.md: each adapter (setting `adapter`) on its own test split and on the main one's."""
    rows = []
    for u in plan:
        own = {Path(e.out_dir).name: Path(e.out_dir) / "metrics.json" for e in u.evals}
        main_key = next((k for k in own if k.startswith("test_")), "test")
        cells = {}
        for label, key in (("own", "test"), ("main", main_key)):
            path = own.get(key)
            if path and path.is_file():
                m = json.loads(path.read_text(encoding="utf-8"))["settings"].get("adapter", {})
                cells.update({f"{label}_{k}": m.get(k) for k in VARIATION_KEYS})
        rows.append({"guardrail": Path(u.guardrail).stem, "variation": u.gen.variation, "adapter": u.name, **cells})
    cols = ["guardrail", "variation", "adapter"] + [f"{s}_{k}" for s in ("own", "main") for k in VARIATION_KEYS]
    write_csv_atomic(run_dir / "variations.csv", rows, cols)
    lines = [
        "# Dataset variations",
        "",
        "Adapter (greedy) on its own variation's test split and on the main variation's test split: "
        "tag rate / false tag rate / AUROC.",
        "",
        "| guardrail | variation | own test | main test |",
        "|---|---|---|---|",
    ]
    for r in rows:
        own = " / ".join(fmt(r.get(f"own_{k}")) for k in VARIATION_KEYS)
        main = " / ".join(fmt(r.get(f"main_{k}")) for k in VARIATION_KEYS) if r["adapter"] != r["guardrail"] else "(same)"
        lines.append(f"| {r['guardrail']} | {r['variation']} | {own} | {main} |")
    write_text_atomic(run_dir / "variations.md", "\n".join(lines) + "\n")
