"""`personaguard` command line: thin shims over each stage's `run(config)`.

Every command takes `--config FILE.yaml` and `--set key=value` overrides; problems (bad config,
bad data, usage errors) print one `error: ...` line and exit with status 2, an interrupt exits 130;
`--debug` anywhere on the line shows the traceback and library warnings instead. Heavy libraries
load only inside commands, so `personaguard --help` does not import torch.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer

from .errors import PersonaguardError

START_HERE = """Behavioural guardrails for persona LLMs as LoRA adapters.

Start here: `personaguard pipeline --config configs/quickstart.yaml` trains and evaluates the
politics guardrail on the embedded model and writes runs/quickstart/report.html. Every command
takes --config FILE.yaml and --set key=value; `personaguard config show STAGE` lists a stage's
fields. Add --debug to see tracebacks."""

app = typer.Typer(no_args_is_help=True, add_completion=False, help=START_HERE)
config_app = typer.Typer(no_args_is_help=True, help="Show the fields of each stage's config, or write the reference page.")
app.add_typer(config_app, name="config")
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
    if (res.run_dir / "report.html").is_file():
        typer.echo(f"report: {res.run_dir / 'report.html'}")


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
    from .config import GenerateConfig, load_config
    from .data import generate as generate_mod

    over = _overrides(
        set_,
        guardrail=guardrail,
        n=n,
        variation=variation,
        seed=seed,
        out_dir=out_dir,
        backend=backend,
        base_url=base_url,
        llm_model=llm_model,
        api_key_env=api_key_env,
    )
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
    resume: bool = typer.Option(False, "--resume", help="Continue this training from its newest checkpoint."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier training's files in the output folder."),
):
    """Train one LoRA adapter with ORPO (writes a PEFT adapter folder + metrics.csv)."""
    from .config import TrainConfig, load_config
    from .train import train as train_mod

    over = _overrides(set_, data_dir=data_dir, out_dir=out_dir, guardrail=guardrail, model=model)
    if resume:
        over.append("resume=true")
    if overwrite:
        over.append("overwrite=true")
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
    from .config import JointTrainConfig, load_config
    from .train import joint as joint_mod

    cfg = load_config(JointTrainConfig, config, set_)
    for res in joint_mod.run(cfg, str(config or "config")):
        typer.echo(f"adapter saved to {res.adapter_dir} ({res.steps} joint steps, {res.seconds:.0f}s)")


@app.command()
def evaluate(
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
    data: Optional[str] = typer.Option(None, help="Snapshot JSONL file, or a packaged set: real-chats-v1, adversarial, ..."),
    adapter: Optional[str] = typer.Option(None, help="Adapter folder; it supplies the guardrail, base model and prompt length."),
    guardrail: Optional[str] = typer.Option(None, help="Guardrail whose label is triggering (needed without --adapter)."),
    model: Optional[str] = typer.Option(None, help="Base model (default: the adapter's)."),
    out_dir: Optional[str] = typer.Option(None, help="Output folder."),
    limit: Optional[int] = typer.Option(None, help="Evaluate at most N items."),
    checkpoints: Optional[str] = typer.Option(
        None, help="Also evaluate checkpoints: 'all' or steps like 25,50 (a curve per step)."
    ),
):
    """Evaluate with/without adapter on any Snapshot JSONL; writes metrics.json, predictions.jsonl, report.md."""
    from .config import EvaluateConfig, load_config
    from .evaluate import evaluate as evaluate_mod

    over = _overrides(
        set_,
        data=data,
        adapter=adapter,
        guardrail=guardrail,
        model=model,
        out_dir=out_dir,
        limit=limit,
        checkpoints=f"[{checkpoints}]" if checkpoints else None,
    )
    given = {s.split("=", 1)[0].strip() for s in over}
    if adapter is None and "adapter" not in given and "settings" not in given and config is None:
        over.insert(0, "settings=[none]")  # without an adapter only the base model can answer; explicit settings win
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

    try:
        w = [float(x) for x in weights.split(",")] if weights else None
    except ValueError:
        raise PersonaguardError(f"--weights {weights!r}: expected numbers separated by commas, e.g. 1,0.5") from None
    info = merge_fn(adapters, method, w, out, density, svd_rank=svd_rank)
    typer.echo(f"merged {len(adapters)} adapters with {method} into {out} in {info['seconds']:.1f}s")


def _stack_help() -> str:
    from .config import STACK_METHOD_HELP  # pydantic and yaml only, no torch

    methods = "\n".join(f"  {k}: {v}" for k, v in STACK_METHOD_HELP.items())
    return (
        "Evaluate guardrails stacked: no adapter, each single and every method on one shared item set.\n\n"
        "Members go in the YAML (`adapters:` guardrail -> adapter folder, `test_data:` guardrail -> test JSONL); "
        "`pipeline` with a `stack:` section fills them in.\n\nMethods (`methods:` in the YAML):\n\n\b\n" + methods
    )


@app.command(help=_stack_help())
def stack(
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
    out_dir: Optional[str] = typer.Option(None, help="Output folder (merged adapters, stack_metrics.json, stack_table.md/csv)."),
):
    from .config import StackEvalConfig, load_config
    from .stack import evaluate as stack_eval

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
def serve(
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
    adapters_dir: Optional[str] = typer.Option(
        None, help="Folder of trained guardrail adapters (e.g. runs/quickstart/adapters)."
    ),
    upstream: Optional[str] = typer.Option(
        None, help="Route to this OpenAI-compatible server, which serves the adapters as LoRA models (e.g. vLLM)."
    ),
    host: Optional[str] = typer.Option(None, help="Address to listen on."),
    port: Optional[int] = typer.Option(None, help="Port to listen on."),
):
    """Serve personas with their guardrails: an OpenAI-compatible API and a playground at http://HOST:PORT/.

    POST /v1/chat/completions takes the extra fields persona, memories and guardrails; model is the base model, a guardrail adapter's name, or persona:NAME from personas_dir. Set the environment variable named by token_env to require a bearer token. Fields: `personaguard config show serve`."""
    from .config import ServeConfig, load_config

    cfg = load_config(ServeConfig, config, _overrides(set_, adapters_dir=adapters_dir, host=host, port=port, upstream=upstream))
    import uvicorn

    from .serve.app import create_app

    server = create_app(cfg)
    engine = server.state.engine
    personas = ", ".join(f"persona:{p}" for p in server.state.personas) or "none"
    typer.echo(f"model {engine.model_id}; guardrails {', '.join(engine.guardrails)}; personas {personas}")
    if os.environ.get(cfg.token_env):
        typer.echo(f"bearer token required on /v1/* (from ${cfg.token_env})")
    typer.echo(f"playground: http://{cfg.host}:{cfg.port}/   API: http://{cfg.host}:{cfg.port}/v1")
    uvicorn.run(server, host=cfg.host, port=cfg.port, log_level="info")


@app.command("export-vllm")
def export_vllm(
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
    adapters_dir: Optional[str] = typer.Option(None, help="Folder of trained guardrail adapters."),
):
    """Check that vLLM can load every adapter of the folder and print the `vllm serve` command that serves them as LoRA modules under the same names."""
    from .config import ServeConfig, load_config
    from .serve.vllm import vllm_command

    typer.echo(vllm_command(load_config(ServeConfig, config, _overrides(set_, adapters_dir=adapters_dir))))


@app.command()
def chat(
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
    server: Optional[str] = typer.Option(None, help="URL of a running `personaguard serve` (default: load the model here)."),
    persona: Optional[str] = typer.Option(None, "--persona", "-p", help="A persona of the registry by name (persona:NAME)."),
    persona_file: Optional[Path] = typer.Option(
        None, help="A persona YAML file (name, traits, expressions, memories, guardrails)."
    ),
    guardrail: Optional[list[str]] = typer.Option(
        None, "--guardrail", "-g", help="A guardrail to wear (repeatable; default: the persona's)."
    ),
    no_guardrails: bool = typer.Option(False, "--no-guardrails", help="Wear no guardrail (the base model as it is)."),
    max_tokens: int = typer.Option(96, min=1, help="Longest reply in tokens."),
):
    """Chat with a persona in the terminal; each reply shows whether and which guardrail fired.

    Local by default (the serve config's adapters_dir and personas_dir), or against --server URL."""
    from .config import ServeConfig, load_config
    from .serve.chat import ChatSetup, chat_loop, local_backend, server_backend
    from .serve.personas import check_name, load_persona_file

    if persona and persona_file:
        raise PersonaguardError("chat: give --persona or --persona-file, not both")
    setup = ChatSetup(persona_name=check_name("persona", persona) if persona else None, max_tokens=max_tokens)
    if persona_file:
        setup.persona = load_persona_file(persona_file)
    setup.guardrails = [] if no_guardrails else (list(guardrail) if guardrail else None)
    cfg = load_config(ServeConfig, config, _overrides(set_))
    if server:
        send = server_backend(server, cfg.token_env)
    else:
        from .serve.engine import make_engine
        from .serve.personas import load_personas

        engine = make_engine(cfg)
        send = local_backend(engine, load_personas(cfg.personas_dir), engine.model_id)
    name = persona or (setup.persona.name if setup.persona else "persona")
    chat_loop(send, setup, name)


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


@guardrails_app.command("new")
def guardrails_new(
    name: str = typer.Argument(..., help="Name: lowercase letters, digits and '_' (e.g. no_religion)."),
    trigger: Optional[str] = typer.Option(None, help="When it fires, in a sentence (asked for when omitted)."),
    resolution: Optional[str] = typer.Option(None, help="How the persona answers then (asked for when omitted)."),
    example: Optional[list[str]] = typer.Option(None, "--example", "-e", help="A message that must trigger it (repeatable)."),
    near_miss: Optional[list[str]] = typer.Option(
        None, "--near-miss", "-n", help="A similar message that must not (repeatable)."
    ),
    out: Optional[Path] = typer.Option(None, "--out", help="Write here instead of the user guardrail folder."),
):
    """Scaffold a guardrail file: trigger, resolution, examples and near-misses; validates it and says
    whether the examples are enough to train offline. Without --example (on a terminal) it asks for
    examples one per line, an empty line ending the list."""
    from .guardrails import examples_advice, new_guardrail

    interactive = sys.stdin.isatty()
    if trigger is None:
        if not interactive:
            raise PersonaguardError("guardrails new: --trigger is required (no terminal to ask on)")
        trigger = typer.prompt("Trigger (when should it fire?)")
    if resolution is None:
        if not interactive:
            raise PersonaguardError("guardrails new: --resolution is required (no terminal to ask on)")
        resolution = typer.prompt("Resolution (how should the persona answer?)")
    examples, near = list(example or []), list(near_miss or [])
    if not examples and interactive:
        examples = _ask_lines("Messages that must trigger it, as users would write them (empty line ends)")
        near = near or _ask_lines("Similar messages that must NOT trigger it (empty line ends)")
    dest, g = new_guardrail(name, trigger, resolution, examples, near, out)
    typer.echo(f"wrote {dest}")
    typer.echo(examples_advice(g))
    dir_hint = f" --set guardrails_dir={dest.parent}" if out else ""
    typer.echo(
        f"train and evaluate it: personaguard pipeline --config configs/quickstart.yaml --set 'guardrails=[{g.name}]'"
        f"{dir_hint} --set run_dir=runs/{g.name}"
    )


def _ask_lines(title: str) -> list[str]:
    typer.echo(title + ":")
    lines = []
    while line := typer.prompt("", default="", show_default=False, prompt_suffix="> ").strip():
        lines.append(line)
    return lines


@config_app.command("show")
def config_show(stage: str = typer.Argument(..., help="pipeline | generate | train | train-joint | evaluate | stack | serve")):
    """Print every field of STAGE's config with its default and description."""
    from .config import STAGE_CONFIGS, fields_table

    if stage not in STAGE_CONFIGS:
        raise PersonaguardError(f"config show: unknown stage {stage!r}; choose one of {', '.join(STAGE_CONFIGS)}")
    typer.echo(fields_table(STAGE_CONFIGS[stage]))


@config_app.command("docs")
def config_docs(out: Optional[Path] = typer.Option(None, "--out", help="Write here (default: print).")):
    """The configuration reference (docs/configuration.md), generated from the field descriptions."""
    from .config import configuration_markdown
    from .schema import write_text_atomic

    page = configuration_markdown()
    if out is None:
        typer.echo(page, nl=False)
    else:
        write_text_atomic(out, page)
        typer.echo(f"wrote {out}")


def _click_classes(name: str) -> tuple[type, ...]:
    """The exception class `name` from click and from typer's bundled copy (typer >= 0.12 may raise either)."""
    import importlib

    found = []
    for mod in ("click.exceptions", "typer._click.exceptions", "typer.exceptions"):
        try:
            cls = getattr(importlib.import_module(mod), name, None)
        except ImportError:  # typer versions that use click itself have no bundled copy
            cls = None
        if isinstance(cls, type):
            found.append(cls)
    return tuple(found)


def _quiet_libraries() -> None:
    """Library FutureWarnings and deprecation notes are for us, not for a user running a command."""
    import warnings

    for category in (FutureWarning, DeprecationWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


INTERRUPTED = (
    "interrupted: files written so far are kept; run the same command again to continue "
    "(generate resumes where it stopped; train continues with --resume)"
)


def main() -> None:
    debug = "--debug" in sys.argv[1:]
    if debug:
        sys.argv.remove("--debug")
    else:
        _quiet_libraries()
    try:
        # without standalone mode typer returns an exit code instead of exiting: 130 after Ctrl-C
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            if code == 130:
                typer.echo(INTERRUPTED, err=True)
            sys.exit(code)
    except PersonaguardError as exc:
        if debug:
            raise
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        if debug:
            raise
        typer.echo(
            "interrupted: files written so far are kept; run the same command again to continue "
            "(generate resumes where it stopped; train continues with --resume)",
            err=True,
        )
        sys.exit(130)
    except typer.Exit as exc:  # --help and friends
        sys.exit(exc.exit_code)
    except Exception as exc:
        if isinstance(exc, _click_classes("Abort")):  # click turns Ctrl-C into Abort
            typer.echo(INTERRUPTED, err=True)
            sys.exit(130)
        if isinstance(exc, _click_classes("Exit")):
            sys.exit(exc.exit_code)
        if isinstance(exc, _click_classes("NoArgsIsHelpError")):
            sys.exit(2)  # the help was printed already
        if isinstance(exc, _click_classes("ClickException")) and not debug:
            ctx = getattr(exc, "ctx", None)
            where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            typer.echo(f"error: {exc.format_message()}{where}", err=True)
            sys.exit(2 if isinstance(exc, _click_classes("UsageError")) else exc.exit_code)
        raise


if __name__ == "__main__":
    main()
