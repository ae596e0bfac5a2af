"""Plots and reports from a hand-made run folder (no model needed)."""

import csv
import json
import re

import pytest

from personaguard.report import plots as plot
from personaguard.report import report
from tests.browser import headless


@pytest.fixture
def run_dir(tmp_path):
    ad = tmp_path / "adapters" / "politics"
    ad.mkdir(parents=True)
    with (ad / "metrics.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["step", "loss", "nll", "or_loss", "eval_loss", "eval_nll", "eval_or_loss"])
        w.writeheader()
        for s in range(1, 6):
            w.writerow({"step": s, "loss": 3 - s * 0.3, "nll": 2.5 - s * 0.3, "or_loss": 0.7 - s * 0.1})
        w.writerow({"step": 5, "eval_loss": 1.5, "eval_nll": 1.2, "eval_or_loss": 0.3})
    ev = tmp_path / "eval" / "politics" / "test"
    ev.mkdir(parents=True)
    preds = []
    for setting, hit in (("none", False), ("adapter", True)):
        for i in range(6):
            trig = i < 3
            tagged = hit and trig
            preds.append(
                {
                    "id": f"i{i}",
                    "label": "politics" if trig else "none",
                    "setting": setting,
                    "message": f"msg {i}",
                    "reply": ("<guard> no politics" if tagged else "sure <b>thing</b>"),
                    "tagged": tagged,
                    "guard_score": (0.9 if tagged else 0.1) + i * 0.01,
                }
            )
    (ev / "predictions.jsonl").write_text("\n".join(json.dumps(p) for p in preds) + "\n")
    settings = {
        "none": {"tag_rate": 0.0, "false_tag_rate": 0.0, "auroc": 0.5},
        "adapter": {"tag_rate": 1.0, "tag_rate_std": 0.05, "false_tag_rate": 0.0, "auroc": 1.0},
    }
    (ev / "metrics.json").write_text(json.dumps({"meta": {}, "settings": settings}))
    return tmp_path


def test_plots_are_written(run_dir):
    paths = plot.run(run_dir)
    names = {p.name for p in paths}
    assert {"training_curves.png", "detection_bars.png", "scores_politics_test.png"} <= names
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000 for p in paths)


def test_a_variation_gets_its_own_plots_and_examples(run_dir):
    """Variations of one guardrail share its name and the test split's name: nothing may be overwritten or merged."""
    import shutil

    var = run_dir / "eval" / "politics_fixed_character" / "test"
    shutil.copytree(run_dir / "eval" / "politics" / "test", var)
    (var / "metrics.json").write_text(json.dumps({"meta": {"guardrail": "politics"}, "settings": {}}))
    names = {p.name for p in plot.run(run_dir)}
    assert {"scores_politics_test.png", "scores_politics_fixed_character_test.png"} <= names
    md = report.run(run_dir)[0].read_text()
    assert "### politics / test / adapter / triggering" in md
    assert "### politics_fixed_character / test / adapter / triggering" in md


def test_jointly_trained_members_are_one_training_curve(run_dir):
    import shutil

    for name in ("meeting", "expert_opinion"):  # joint training leaves a copy of the joint run's metrics.csv in each
        shutil.copytree(run_dir / "adapters" / "politics", run_dir / "adapters" / name)
    alone = run_dir / "adapters" / "politics_semi_fixed"
    alone.mkdir()
    (alone / "metrics.csv").write_text("step,loss\n1,2.0\n")
    assert set(plot.training_runs(run_dir)) == {"expert_opinion + meeting + politics (joint)", "politics_semi_fixed"}


def test_report_html_is_self_contained_and_escaped(run_dir):
    md, page = report.run(run_dir)
    text = page.read_text()
    assert text.count("data:image/png;base64,") >= 3 and 'src="plots/' not in text
    assert "politics / test / adapter" in text and "1.000 ± 0.050" in text
    assert "sure &lt;b&gt;thing&lt;/b&gt;" in text and "<b>thing</b>" not in text
    mdt = md.read_text()
    assert "![training_curves](plots/training_curves.png)" in mdt and "| politics / test / none |" in mdt


def test_report_renders_in_headless_chromium(run_dir, tmp_path):
    """Open report.html in a real browser: tables laid out, every embedded plot decoded, screenshot saved."""
    import subprocess

    _, page = report.run(run_dir)
    # a probe script, added to a copy of the page, writes what the browser laid out into the title
    probe = (
        "<script>window.addEventListener('load',()=>{const imgs=[...document.images];"
        "document.title='probe imgs='+imgs.length+' decoded='+imgs.filter(i=>i.naturalWidth>0).length"
        "+' rows='+document.querySelectorAll('#summary tr').length"
        "+' height='+document.querySelector('#summary').getBoundingClientRect().height;});</script>"
    )
    probed = tmp_path / "probed.html"
    probed.write_text(page.read_text().replace("</body>", probe + "</body>"))
    flags = headless(tmp_path / "profile")
    dom = subprocess.run([*flags, "--dump-dom", probed.as_uri()], capture_output=True, text=True, timeout=120).stdout
    m = re.search(r"<title>probe imgs=(\d+) decoded=(\d+) rows=(\d+) height=([\d.]+)</title>", dom)
    assert m, dom[:500]
    imgs, decoded, rows, height = int(m[1]), int(m[2]), int(m[3]), float(m[4])
    assert imgs >= 3 and decoded == imgs  # every plot is an embedded PNG the browser could decode
    assert rows == 3 and height > 40  # header + two settings, laid out with real height
    shot = tmp_path / "report.png"
    subprocess.run([*flags, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    print(f"screenshot: {shot}")


def test_the_report_shows_every_settings_tag_rate_on_every_label(run_dir):
    """The full confusion: a politics adapter that also tags expert questions is visible in the report."""
    mfile = run_dir / "eval" / "politics" / "test" / "metrics.json"
    data = json.loads(mfile.read_text())
    data["settings"]["adapter"]["per_label"] = {
        "politics": {"n": 3, "tag_rate": 1.0},
        "expert_opinion": {"n": 4, "tag_rate": 0.75},
        "none": {"n": 3, "tag_rate": 0.0},
    }
    mfile.write_text(json.dumps(data))
    md_path, html_path = report.run(run_dir)
    md = md_path.read_text()
    assert "## Tag rate on every label" in md
    assert "| adapter / data / setting | expert_opinion | politics | none |" in md
    assert "| politics / test / adapter | 0.750 | 1.000 | 0.000 |" in md
    page = html_path.read_text()
    confusion = page[page.index("<div id='confusion'>") :]
    assert "<td>0.750</td>" in confusion.split("</div>")[0]


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_plot_and_report_refuse_a_folder_that_is_not_a_run(tmp_path, make):
    from personaguard.errors import PersonaguardError

    d = tmp_path / "runz"
    if make == "empty":
        d.mkdir()
    needle = "run folder not found" if make == "missing" else "not a run folder"
    for fn in (plot.run, report.run):
        with pytest.raises(PersonaguardError, match=needle):
            fn(d)
    assert sorted(p.name for p in tmp_path.iterdir()) == ([] if make == "missing" else ["runz"])
    assert make == "missing" or list(d.iterdir()) == []
