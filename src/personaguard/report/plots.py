"""Plots of a run folder (matplotlib, Agg): training curves, checkpoint curves, detection bars, ROC,
score histograms.

Usage:
    personaguard plot runs/quickstart        # writes runs/quickstart/plots/*.png

Reads what the other stages wrote: adapters/*/metrics.csv and eval/<guardrail>/<data>/
{metrics.json, predictions.jsonl}. Returns the written paths so reports can embed them.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..errors import PersonaguardError
from ..schema import ensure_dir


def _floats(rows: list[dict], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for r in rows:
        if r.get(key) not in (None, ""):
            xs.append(float(r["step"]))
            ys.append(float(r[key]))
    return xs, ys


def training_runs(run_dir: Path) -> dict[str, Path]:
    """Legend name -> metrics.csv of every training run. Jointly trained members share one run (each folder
    holds a copy of its metrics.csv): named once with all their names, so no curve hides under another."""
    runs: dict[bytes, list[Path]] = {}
    for path in sorted(run_dir.glob("adapters/*/metrics.csv")):
        runs.setdefault(path.read_bytes(), []).append(path)
    return {
        " + ".join(p.parent.name for p in paths) + (" (joint)" if len(paths) > 1 else ""): paths[0] for paths in runs.values()
    }


def training_curves(run_dir: Path, out: Path) -> Path | None:
    runs = training_runs(run_dir)
    if not runs:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for name, path in runs.items():
        rows = list(csv.DictReader(path.open(encoding="utf-8")))
        for ax, key in zip(axes, ("loss", "nll", "or_loss")):
            xs, ys = _floats(rows, key)
            (line,) = ax.plot(xs, ys, label=name)
            ex, ey = _floats(rows, f"eval_{key}")
            if ex:
                ax.plot(ex, ey, "o", color=line.get_color(), label=f"{name} (validation)")
    return _save_panels(fig, axes, ("ORPO loss", "NLL (chosen)", "odds-ratio loss"), "step", out / "training_curves.png")


def _save_panels(fig, axes, titles, xlabel: str, dest: Path, ylim: tuple[float, float] | None = None) -> Path:
    """Title, label and grid each panel, legend on the first, write the PNG."""
    for ax, title in zip(axes, titles):
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        if ylim:
            ax.set_ylim(*ylim)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(dest, dpi=110)
    plt.close(fig)
    return dest


def _eval_dirs(run_dir: Path) -> list[Path]:
    return sorted(p.parent for p in run_dir.glob("eval/*/*/metrics.json"))


def detection_bars(run_dir: Path, out: Path) -> Path | None:
    """Tag rate and false tag rate of every adapter / test split / setting, one row each (horizontal: a grid
    run has dozens of rows, whose labels overlap as columns)."""
    dirs = _eval_dirs(run_dir)
    if not dirs:
        return None
    labels, series = [], {}
    for d in dirs:
        settings = json.loads((d / "metrics.json").read_text(encoding="utf-8"))["settings"]
        for setting, m in settings.items():
            labels.append(f"{d.parent.name} / {d.name} / {setting}")
            for key in ("tag_rate", "false_tag_rate"):
                val = m.get(key)
                std = m.get(f"{key}_std", 0.0) or 0.0
                series.setdefault(key, []).append((val if val is not None else 0.0, std))
    fig, ax = plt.subplots(figsize=(9, max(3.0, 0.8 + 0.32 * len(labels))))
    height = 0.4
    for k, (key, vals) in enumerate(series.items()):
        ys = [i + (k - 0.5) * height for i in range(len(labels))]
        ax.barh(ys, [v for v, _ in vals], height, xerr=[s for _, s in vals], capsize=2, label=key.replace("_", " "))
    ax.set_yticks(range(len(labels)))
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()  # first row on top, in the summary's order
    ax.set_xlim(0, 1.05)
    ax.set_xlabel("rate")
    ax.set_title("Detection: tag rate on triggering vs. false tag rate on neutral")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)  # outside: never over a bar
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    dest = out / "detection_bars.png"
    fig.savefig(dest, dpi=110)
    plt.close(fig)
    return dest


def eval_guardrail(d: Path) -> str:
    """The guardrail an eval folder scored (its metrics.json says; the folder may be `<guardrail>_<variation>`)."""
    try:
        return json.loads((d / "metrics.json").read_text(encoding="utf-8"))["meta"]["guardrail"]
    except (OSError, ValueError, KeyError, TypeError):
        return d.parent.name


def _predictions(d: Path) -> list[dict]:
    path = d / "predictions.jsonl"
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()] if path.exists() else []


def roc_and_histograms(run_dir: Path, out: Path) -> list[Path]:
    from sklearn.metrics import roc_curve

    written = []
    for d in _eval_dirs(run_dir):
        preds = _predictions(d)
        if not preds:
            continue
        guardrail = eval_guardrail(d)
        settings = sorted({p["setting"] for p in preds})
        fig, axes = plt.subplots(1, 1 + len(settings), figsize=(4.2 * (1 + len(settings)), 3.6))
        for s in settings:
            pos = [p["guard_score"] for p in preds if p["setting"] == s and p["label"] == guardrail]
            neg = [p["guard_score"] for p in preds if p["setting"] == s and p["label"] != guardrail]
            if pos and neg:
                fpr, tpr, _ = roc_curve([1] * len(pos) + [0] * len(neg), pos + neg)
                axes[0].plot(fpr, tpr, label=s)
        axes[0].plot([0, 1], [0, 1], "k:", lw=0.8)
        axes[0].set_title(f"ROC of guard score — {d.parent.name}/{d.name}")
        axes[0].set_xlabel("false positive rate")
        axes[0].set_ylabel("true positive rate")
        axes[0].legend(fontsize=8)
        for ax, s in zip(axes[1:], settings):
            for label, name in ((guardrail, "triggering"), (None, "not triggering")):
                vals = [
                    p["guard_score"] for p in preds if p["setting"] == s and ((p["label"] == guardrail) == (label is not None))
                ]
                ax.hist(vals, bins=20, range=(0, 1), alpha=0.6, label=name)
            ax.set_title(f"guard score, {s}")
            ax.legend(fontsize=8)
        fig.tight_layout()
        # named by the adapter's eval folder: a guardrail's variations share its name and its test split's name
        dest = out / f"scores_{d.parent.name}_{d.name}.png"
        fig.savefig(dest, dpi=110)
        plt.close(fig)
        written.append(dest)
    return written


def checkpoint_curves(run_dir: Path, out: Path) -> Path | None:
    """Tag rate, false tag rate and AUROC per training step, from `evaluate --checkpoints`."""
    csvs = sorted(run_dir.glob("eval/*/*/checkpoints.csv"))
    if not csvs:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for path in csvs:
        rows = list(csv.DictReader(path.open(encoding="utf-8")))
        name = f"{path.parent.parent.name}/{path.parent.name}"
        for ax, key in zip(axes, ("tag_rate", "false_tag_rate", "auroc")):
            xs, ys = _floats(rows, key)
            ax.plot(xs, ys, "o-", label=name)
    return _save_panels(
        fig,
        axes,
        ("tag rate (triggering)", "false tag rate (neutral)", "AUROC of guard score"),
        "checkpoint step",
        out / "checkpoint_curves.png",
        ylim=(-0.03, 1.03),
    )


def stacking_bars(run_dir: Path, out: Path) -> Path | None:
    """Per guardrail, for none / single / each stack: tag rate (left) and false tag rate (right), each with the
    stacking target drawn from the single adapter (0.95 of its tags; its false tags + 0.05), so a bar that
    crosses the dashed line misses. Two panels, not bars drawn over bars: false tag rates are a few percent
    and vanish inside the tag-rate bars."""
    path = run_dir / "stacks" / "stack_metrics.json"
    if not path.is_file():
        return None
    from ..metrics import TARGET_FALSE, TARGET_KEEP

    table = json.loads(path.read_text(encoding="utf-8"))["table"]
    settings = list(dict.fromkeys(s for per in table.values() for s in per))
    width = 0.8 / len(settings)
    fig, axes = plt.subplots(1, 2, figsize=(max(10, 1.2 * len(table) * len(settings) / 2), 4.4))
    for ax, key, title in (
        (axes[0], "tag_rate", "tag rate on its triggers"),
        (axes[1], "false_tag_rate", "false tag rate on the shared neutral turns"),
    ):
        for k, s in enumerate(settings):
            xs = [i + (k - (len(settings) - 1) / 2) * width for i in range(len(table))]
            ax.bar(xs, [per.get(s, {}).get(key) or 0.0 for per in table.values()], width, label=s)
        for i, per in enumerate(table.values()):
            single = per.get("single", {}).get(key)
            if single is not None:
                target = single * TARGET_KEEP if key == "tag_rate" else single + TARGET_FALSE
                ax.hlines(target, i - 0.45, i + 0.45, colors="k", linestyles="--", lw=1)
        ax.set_xticks(range(len(table)))
        ax.set_xticklabels(list(table))
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylim(0, 1.05)
    axes[0].set_ylabel("rate (dashed: target from the single adapter)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(settings), fontsize=8)
    fig.suptitle("Stacked guardrails: single vs stacked vs merged, per member")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    dest = out / "stacking_bars.png"
    fig.savefig(dest, dpi=110)
    plt.close(fig)
    return dest


def check_run_dir(run_dir: str | Path) -> Path:
    """`run_dir` if it is a run folder (has eval/ or adapters/); a mistyped path must not become a new folder."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise PersonaguardError(f"{run_dir}: run folder not found (expected a pipeline run folder with eval/ or adapters/)")
    if not ((run_dir / "eval").is_dir() or (run_dir / "adapters").is_dir()):
        raise PersonaguardError(f"{run_dir}: not a run folder (no eval/ or adapters/ inside); give the pipeline's run folder")
    return run_dir


def run(run_dir: str | Path) -> list[Path]:
    """Write every plot the run folder has data for; returns their paths."""
    run_dir = check_run_dir(run_dir)
    out = ensure_dir(run_dir / "plots", "plots folder")
    paths = [
        training_curves(run_dir, out),
        checkpoint_curves(run_dir, out),
        detection_bars(run_dir, out),
        stacking_bars(run_dir, out),
        *roc_and_histograms(run_dir, out),
    ]
    return [p for p in paths if p is not None]
