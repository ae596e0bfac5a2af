"""Run report: one self-contained report.html (plots embedded as base64) and report.md.

Usage:
    personaguard report runs/quickstart     # also run by `pipeline` at the end

Collects summary.json / eval metrics written by the other stages and the plots from plots.py.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from ..evaluate.evaluate import SUMMARY_COLUMNS, cell
from ..schema import write_text_atomic
from .plots import eval_guardrail

# evaluate's summary columns, with the latencies in place of the best-F1 threshold
COLUMNS = [c for c in SUMMARY_COLUMNS if c[0] != "threshold"] + [
    ("latency_guard_s", "guard s/item"),
    ("latency_reply_s", "reply s/item"),
]


def collect(run_dir: Path) -> dict[str, dict]:
    """'adapter / data / setting' -> metrics, from every eval folder of the run (adapter = guardrail or guardrail_variation)."""
    rows = {}
    for mfile in sorted(run_dir.glob("eval/*/*/metrics.json")):
        data = json.loads(mfile.read_text(encoding="utf-8"))
        for setting, m in data["settings"].items():
            rows[f"{mfile.parent.parent.name} / {mfile.parent.name} / {setting}"] = m
    return rows


def _examples(run_dir: Path, limit: int = 5) -> list[tuple[str, list[dict]]]:
    out = []
    for pfile in sorted(run_dir.glob("eval/*/*/predictions.jsonl")):
        guardrail = eval_guardrail(pfile.parent)
        preds = [json.loads(x) for x in pfile.read_text(encoding="utf-8").splitlines() if x.strip()]
        for setting in sorted({p["setting"] for p in preds}):
            for title, want in (("triggering", True), ("neutral", False)):
                items = [p for p in preds if p["setting"] == setting and (p["label"] == guardrail) == want]
                good = [p for p in items if p["tagged"] == want][: (limit + 1) // 2]
                bad = [p for p in items if p["tagged"] != want][: limit - len(good)]
                if good or bad:
                    # the adapter's folder name (= the summary's rows), not the guardrail: variations share it
                    out.append((f"{pfile.parent.parent.name} / {pfile.parent.name} / {setting} / {title}", good + bad))
    return out


# Tables written by other stages, shown in the report when the run has them.
SECTION_FILES = (
    ("Dataset variations", "variations.md"),
    ("Stacked guardrails", "stacks/stack_table.md"),
    ("Stacks on every label", "stacks/stack_confusion.md"),
)


def confusion_markdown(rows: dict[str, dict]) -> str:
    """Every evaluated adapter/setting's tag rate on every label of its data: the full confusion, so a
    guardrail that fires on another guardrail's topic shows up outside its own column."""
    labels = sorted({lab for m in rows.values() for lab in m.get("per_label", {})}, key=lambda x: (x == "none", x))
    if not labels:
        return ""
    lines = ["| adapter / data / setting | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for key, m in rows.items():
        pl = m.get("per_label", {})
        lines.append(f"| {key} | " + " | ".join(cell(pl[lab], "tag_rate") if lab in pl else "–" for lab in labels) + " |")
    return "\n".join(lines)


def _sections(run_dir: Path) -> list[tuple[str, str]]:
    """(title, markdown body without its H1) of every section file the run has."""
    out = []
    for title, rel in SECTION_FILES:
        path = run_dir / rel
        if path.is_file():
            body = "\n".join(x for x in path.read_text(encoding="utf-8").splitlines() if not x.startswith("# "))
            out.append((title, body.strip()))
    return out


def _md_to_html(body: str) -> str:
    """Just enough Markdown for the section files: pipe tables and paragraphs."""
    e = html.escape
    parts, table = [], []
    for line in body.splitlines() + [""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(set(c) <= set("-: ") for c in cells):
                tag = "th" if not table else "td"
                table.append("<tr>" + "".join(f"<{tag}>{e(c)}</{tag}>" for c in cells) + "</tr>")
            continue
        if table:
            parts.append("<table>" + "".join(table) + "</table>")
            table = []
        if line.strip():
            parts.append(f"<p>{e(line)}</p>")
    return "".join(parts)


def markdown(run_dir: Path, rows: dict[str, dict], plots: list[Path]) -> str:
    lines = [
        f"# personaguard report — `{run_dir.name}`",
        "",
        "## Summary",
        "",
        "| adapter / data / setting | " + " | ".join(h for _, h in COLUMNS) + " |",
        "|---|" + "---|" * len(COLUMNS),
    ]
    lines += [f"| {k} | " + " | ".join(cell(m, c) for c, _ in COLUMNS) + " |" for k, m in rows.items()]
    matrix = confusion_markdown(rows)
    if matrix:
        lines += ["", "## Tag rate on every label", "", matrix]
    for title, body in _sections(run_dir):
        lines += ["", f"## {title}", "", body]
    lines += ["", "## Plots", ""] + [f"![{p.stem}](plots/{p.name})" for p in plots]
    lines += ["", "## Examples", ""]
    for title, items in _examples(run_dir):
        lines.append(f"### {title}")
        for p in items:
            ok = "✓" if (p["tagged"] == (title.endswith("triggering"))) else "✗"
            lines.append(f"- {ok} user: {p['message'][:200]!r} → reply: {p['reply'][:200]!r}")
        lines.append("")
    cfg = run_dir / "pipeline_config.yaml"
    if cfg.exists():
        lines += ["## Config", "", "```yaml", cfg.read_text(encoding="utf-8").rstrip(), "```"]
    return "\n".join(lines) + "\n"


def html_page(run_dir: Path, rows: dict[str, dict], plots: list[Path]) -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for _, h in COLUMNS)
    body = "".join(
        f"<tr><td>{e(k)}</td>" + "".join(f"<td>{e(cell(m, c))}</td>" for c, _ in COLUMNS) + "</tr>" for k, m in rows.items()
    )
    imgs = "".join(
        f'<figure><img alt="{e(p.stem)}" src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">'
        f"<figcaption>{e(p.stem)}</figcaption></figure>"
        for p in plots
    )
    ex = ""
    for title, items in _examples(run_dir):
        lis = "".join(
            f"<li class='{'ok' if p['tagged'] == title.endswith('triggering') else 'bad'}'><b>user:</b> {e(p['message'][:300])}"
            f"<br><b>reply:</b> {e(p['reply'][:300])}</li>"
            for p in items
        )
        ex += f"<h3>{e(title)}</h3><ul>{lis}</ul>"
    cfg = run_dir / "pipeline_config.yaml"
    cfg_html = f"<h2>Config</h2><pre>{e(cfg.read_text(encoding='utf-8'))}</pre>" if cfg.exists() else ""
    style = (
        "body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px}img{max-width:100%}"
        "li.ok{color:#155724}li.bad{color:#721c24}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>personaguard report {e(run_dir.name)}</title>"
        f"<style>{style}</style></head><body><h1>personaguard report — {e(run_dir.name)}</h1>"
        f"<h2>Summary</h2><table id='summary'><tr><th>adapter / data / setting</th>{head}</tr>{body}</table>"
        + (f"<h2>Tag rate on every label</h2><div id='confusion'>{_md_to_html(confusion_markdown(rows))}</div>" if rows else "")
        + "".join(f"<h2>{e(t)}</h2>{_md_to_html(b)}" for t, b in _sections(run_dir))
        + f"<h2>Plots</h2>{imgs}<h2>Examples</h2>{ex}{cfg_html}</body></html>"
    )


def run(run_dir: str | Path) -> tuple[Path, Path]:
    """Plot, then write report.md and report.html into the run folder."""
    from . import plots as plot

    run_dir = plot.check_run_dir(run_dir)
    plots = plot.run(run_dir)
    rows = collect(run_dir)
    md, page = run_dir / "report.md", run_dir / "report.html"
    write_text_atomic(md, markdown(run_dir, rows, plots))
    write_text_atomic(page, html_page(run_dir, rows, plots))
    return md, page
