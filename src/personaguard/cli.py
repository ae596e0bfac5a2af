"""`personaguard` command line: thin shims over each stage's `run(config)`.

Every command takes `--config FILE.yaml` and `--set key=value` overrides; problems print one
`error: ...` line and exit with status 2. Heavy libraries load only inside commands.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from .errors import PersonaguardError

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Behavioural guardrails for persona LLMs as LoRA adapters.")
guardrails_app = typer.Typer(no_args_is_help=True, help="List, show and add guardrail definitions.")
app.add_typer(guardrails_app, name="guardrails")

ConfigOpt = typer.Option(None, "--config", "-c", help="YAML config file.")
SetOpt = typer.Option(None, "--set", help="Override a config field: key=value (repeatable; dotted keys for sections).")


def _overrides(sets: Optional[list[str]], **fields) -> list[str]:
    return list(sets or []) + [f"{k}={v}" for k, v in fields.items() if v is not None]


@app.command()
def pipeline(
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
    start_step: int = typer.Option(1, help="First step: 1 generate, 2 train, 3 evaluate, 4 report."),
    end_step: int = typer.Option(4, help="Last step."),
):
    """Run generate -> train -> evaluate for every guardrail in the config and print the summary."""
    from . import pipeline as pipeline_mod
    from .config import PipelineConfig, load_config

    cfg = load_config(PipelineConfig, config, set_)
    res = pipeline_mod.run(cfg, start_step, end_step, source=str(config or "config"))
    if res.metrics:
        typer.echo((res.run_dir / "summary.md").read_text(encoding="utf-8"))
    typer.echo(f"run folder: {res.run_dir}")


@app.command()
def generate(
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
    guardrail: Optional[str] = typer.Option(None, help="Guardrail name or YAML path."),
    n: Optional[int] = typer.Option(None, help="Total examples (train+validation+test)."),
    variation: Optional[str] = typer.Option(None, help="vary_all | fixed_character | fixed_history | semi_fixed"),
    seed: Optional[int] = typer.Option(None, help="Random seed."),
    out_dir: Optional[str] = typer.Option(None, help="Output folder."),
    backend: Optional[str] = typer.Option(None, help="offline (packaged pools) | openai (any OpenAI-compatible endpoint)."),
    base_url: Optional[str] = typer.Option(None, help="openai backend: endpoint base URL."),
    llm_model: Optional[str] = typer.Option(None, help="openai backend: model name."),
    api_key_env: Optional[str] = typer.Option(None, help="openai backend: env var holding the API key."),
):
    """Generate synthetic preference data (resumable JSONL + train/validation/test split)."""
    from .data import generate as generate_mod
    from .config import GenerateConfig, load_config

    over = _overrides(set_, guardrail=guardrail, n=n, variation=variation, seed=seed, out_dir=out_dir, backend=backend,
                      base_url=base_url, llm_model=llm_model, api_key_env=api_key_env)
    cfg = load_config(GenerateConfig, config, over)
    res = generate_mod.run(cfg)
    typer.echo(f"{res.data_dir}: {res.counts}")
    if getattr(res, "missing", 0):
        typer.echo(f"incomplete: {res.missing} examples missing ({res.skipped} skipped); run the same command again to continue")


@app.command()
def train(
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
    data_dir: Optional[str] = typer.Option(None, help="Folder with train.jsonl/validation.jsonl."),
    out_dir: Optional[str] = typer.Option(None, help="Adapter output folder."),
    guardrail: Optional[str] = typer.Option(None, help="Guardrail name or YAML path."),
    model: Optional[str] = typer.Option(None, help="Base model (embedded name, folder or HF id)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the newest checkpoint."),
):
    """Train one LoRA adapter with ORPO (writes a PEFT adapter folder + metrics.csv)."""
    from .train import train as train_mod
    from .config import TrainConfig, load_config

    over = _overrides(set_, data_dir=data_dir, out_dir=out_dir, guardrail=guardrail, model=model)
    if resume:
        over.append("resume=true")
    cfg = load_config(TrainConfig, config, over)
    res = train_mod.run(cfg)
    typer.echo(f"adapter saved to {res.adapter_dir} ({res.steps} steps, {res.seconds:.0f}s)")


@app.command("train-joint")
def train_joint(
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
):
    """Train several guardrail adapters together for stacking: each step a random subset is active, and a
    row whose guardrail is off is answered without the tag. Config: members (guardrail -> data_dir,
    out_dir), out_dir (the joint run), train (shared TrainConfig fields)."""
    from .train import joint as joint_mod
    from .config import JointTrainConfig, load_config

    cfg = load_config(JointTrainConfig, config, set_)
    for res in joint_mod.run(cfg, str(config or "config")):
        typer.echo(f"adapter saved to {res.adapter_dir} ({res.steps} joint steps, {res.seconds:.0f}s)")


@app.command()
def evaluate(
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
    data: Optional[str] = typer.Option(None, help="Snapshot JSONL file."),
    adapter: Optional[str] = typer.Option(None, help="PEFT adapter folder."),
    guardrail: Optional[str] = typer.Option(None, help="Guardrail whose label is triggering."),
    model: Optional[str] = typer.Option(None, help="Base model."),
    out_dir: Optional[str] = typer.Option(None, help="Output folder."),
    limit: Optional[int] = typer.Option(None, help="Evaluate at most N items."),
    checkpoints: Optional[str] = typer.Option(None, help="Also evaluate checkpoints: 'all' or steps like 25,50 (a curve per step)."),
):
    """Evaluate with/without adapter on any Snapshot JSONL; writes metrics.json, predictions.jsonl, report.md."""
    from .evaluate import evaluate as evaluate_mod
    from .config import EvaluateConfig, load_config

    over = _overrides(set_, data=data, adapter=adapter, guardrail=guardrail, model=model, out_dir=out_dir, limit=limit,
                      checkpoints=f"[{checkpoints}]" if checkpoints else None)
    if adapter is None and not any(s.startswith("adapter=") for s in over) and config is None:
        over.append("settings=[none]")
    cfg = load_config(EvaluateConfig, config, over)
    res = evaluate_mod.run(cfg)
    typer.echo((res.out_dir / "report.md").read_text(encoding="utf-8").split("## Tag rate")[0])


def _merge_help() -> str:
    # METHOD_HELP lives in stack/merge.py, which imports torch/peft lazily, so reading it here is cheap.
    from .stack.merge import METHOD_HELP

    return "Merge method. " + "; ".join(f"{k} = {v}" for k, v in METHOD_HELP.items())


@app.command()
def merge(
    adapters: list[str] = typer.Argument(..., help="Two or more PEFT adapter folders."),
    method: str = typer.Option("cat", "--method", help=_merge_help()),
    weights: Optional[str] = typer.Option(None, help="Comma-separated weights, one per adapter (default 1.0 each)."),
    density: Optional[float] = typer.Option(None, help="ties/dare_*: share of weights kept (0-1]."),
    svd_rank: Optional[int] = typer.Option(None, help="svd: rank of the merged adapter (default: the largest member rank)."),
    out: str = typer.Option(..., "--out", help="New adapter folder; an existing name is refused."),
):
    """Merge guardrail adapters into one new PEFT adapter (records method, weights, sources, time)."""
    from .stack.merge import merge as merge_fn

    w = [float(x) for x in weights.split(",")] if weights else None
    info = merge_fn(adapters, method, w, out, density, svd_rank=svd_rank)
    typer.echo(f"merged {len(adapters)} adapters with {method} into {out} in {info['seconds']:.1f}s")


@app.command()
def stack(
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
    out_dir: Optional[str] = typer.Option(None, help="Output folder (merged adapters, stack_metrics.json, stack_table.md/csv)."),
):
    """Evaluate guardrails stacked: none / each single / dynamic / merges on one shared item set.

    Give members as `--set adapters={politics: DIR, meeting: DIR} --set test_data={politics: FILE, meeting: FILE}`
    or in the YAML; `pipeline` with a `stack:` section fills them in.
    """
    from .stack import evaluate as stack_eval
    from .config import StackEvalConfig, load_config

    cfg = load_config(StackEvalConfig, config, _overrides(set_, out_dir=out_dir))
    res = stack_eval.run(cfg)
    typer.echo((res.out_dir / "stack_table.md").read_text(encoding="utf-8"))


@app.command()
def plot(run_dir: Path = typer.Argument(..., help="A pipeline run folder.")):
    """Write PNG plots (training curves, detection bars, ROC, score histograms) into RUN_DIR/plots."""
    from .report import plots as plot_mod

    for p in plot_mod.run(run_dir):
        typer.echo(str(p))


@app.command()
def report(run_dir: Path = typer.Argument(..., help="A pipeline run folder.")):
    """Plot, then write RUN_DIR/report.md and a self-contained RUN_DIR/report.html."""
    from .report import report as report_mod

    md, page = report_mod.run(run_dir)
    typer.echo(f"{md}\n{page}")


@app.command()
def models():
    """List the models usable without a download."""
    from .models import list_models

    for row in list_models():
        typer.echo(f"{row['name']}\t{row['status']}\t{row['source']}")


@guardrails_app.command("list")
def guardrails_list(dir_: Optional[str] = typer.Option(None, "--dir", help="Extra folder of guardrail YAML files.")):
    """Known guardrails (built-in and user)."""
    from .guardrails import registry

    for name, g in registry([dir_] if dir_ else None).items():
        typer.echo(f"{name}\t{g.trigger[:90]}")


@guardrails_app.command("show")
def guardrails_show(name: str, dir_: Optional[str] = typer.Option(None, "--dir", help="Extra folder of guardrail YAML files.")):
    """Print one guardrail definition as YAML."""
    from .config import dump_yaml
    from .guardrails import get_guardrail

    typer.echo(dump_yaml(get_guardrail(name, [dir_] if dir_ else None)))


@guardrails_app.command("add")
def guardrails_add(file: Path):
    """Validate a guardrail YAML (name, trigger, resolution[, tag]) and add it to the user folder."""
    from .guardrails import add_guardrail

    typer.echo(f"added {add_guardrail(file)}")


def main() -> None:
    try:
        app(standalone_mode=False)
    except PersonaguardError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except typer.Exit as exc:  # --help and friends
        sys.exit(exc.exit_code)
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            sys.exit(1)
        raise


if __name__ == "__main__":
    main()
