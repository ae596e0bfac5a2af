"""Plots of a hand-made run folder (report/plots.py): every plot is written as a real PNG, and what each draws
(read back from the matplotlib figure before it is closed) is the data of the folder."""

import csv
import json

import pytest

from personaguard.metrics import TARGET_FALSE, TARGET_KEEP
from personaguard.report import plots as plot

PNG = b"\x89PNG\r\n\x1a\n"


def _write_csv(path, fieldnames, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fieldnames)
        w.writeheader()
        w.writerows(rows)


def _preds(guardrail: str, scores: dict[str, tuple[list[float], list[float]]]) -> list[dict]:
    """Prediction rows: per setting, the guard scores of its triggering and of its neutral items."""
    rows = []
    for setting, (pos, neg) in scores.items():
        for i, s in enumerate(pos):
            rows.append({"id": f"p{i}", "setting": setting, "label": guardrail, "guard_score": s, "reply": "<guard> x"})
        for i, s in enumerate(neg):
            rows.append({"id": f"n{i}", "setting": setting, "label": "none", "guard_score": s, "reply": "sure"})
    return rows


POLITICS_SCORES = {"adapter": ([0.9, 0.7, 0.4], [0.5, 0.2, 0.1, 0.05]), "none": ([0.3, 0.2, 0.1], [0.3, 0.25, 0.1, 0.0])}
MEETING_SCORES = {"adapter": ([0.8, 0.6], [0.7, 0.1, 0.05])}


@pytest.fixture
def run_dir(tmp_path):
    """Two training runs (one jointly trained pair), two eval folders (one a variation named apart from its
    guardrail), a checkpoint curve and a stack table."""
    train_rows = [{"step": s, "loss": 3 - 0.3 * s, "nll": 2.5 - 0.3 * s, "or_loss": 0.7 - 0.1 * s} for s in range(1, 6)]
    train_rows.append({"step": 5, "eval_loss": 1.5, "eval_nll": 1.2, "eval_or_loss": 0.3})
    fields = ["step", "loss", "nll", "or_loss", "eval_loss", "eval_nll", "eval_or_loss"]
    _write_csv(tmp_path / "adapters" / "politics" / "metrics.csv", fields, train_rows)
    for name in ("meeting", "expert_opinion"):  # a joint run leaves the same metrics.csv in each member
        _write_csv(tmp_path / "adapters" / name / "metrics.csv", fields, train_rows)
    _write_csv(tmp_path / "adapters" / "politics_alone" / "metrics.csv", ["step", "loss"], [{"step": 1, "loss": 2.0}])

    pol = tmp_path / "eval" / "politics" / "test"
    pol.mkdir(parents=True)
    (pol / "metrics.json").write_text(
        json.dumps(
            {
                "meta": {"guardrail": "politics"},
                "settings": {
                    "none": {"tag_rate": 0.0, "false_tag_rate": 0.0},
                    "adapter": {"tag_rate": 0.9, "tag_rate_std": 0.05, "false_tag_rate": 0.1, "false_tag_rate_std": 0.02},
                },
            }
        )
    )
    (pol / "predictions.jsonl").write_text("\n".join(json.dumps(r) for r in _preds("politics", POLITICS_SCORES)) + "\n\n")
    _write_csv(
        pol / "checkpoints.csv",
        ["step", "tag_rate", "false_tag_rate", "auroc"],
        [
            {"step": 1, "tag_rate": 0.2, "false_tag_rate": 0.1, "auroc": ""},
            {"step": 2, "tag_rate": 0.6, "false_tag_rate": 0.05, "auroc": 0.8},
            {"step": 3, "tag_rate": 0.9, "false_tag_rate": 0.02, "auroc": 0.95},
        ],
    )

    var = tmp_path / "eval" / "meeting_var" / "test"  # a variation: the guardrail is named in metrics.json only
    var.mkdir(parents=True)
    (var / "metrics.json").write_text(
        json.dumps({"meta": {"guardrail": "meeting"}, "settings": {"adapter": {"tag_rate": None, "false_tag_rate": 0.3}}})
    )
    (var / "predictions.jsonl").write_text("\n".join(json.dumps(r) for r in _preds("meeting", MEETING_SCORES)) + "\n")

    (tmp_path / "stacks").mkdir()
    (tmp_path / "stacks" / "stack_metrics.json").write_text(
        json.dumps(
            {
                "table": {
                    "politics": {
                        "single": {"tag_rate": 0.8, "false_tag_rate": 0.02},
                        "dynamic": {"tag_rate": 0.6, "false_tag_rate": 0.1},
                    },
                    "meeting": {
                        "single": {"tag_rate": 0.5, "false_tag_rate": 0.0},
                        "dynamic": {"tag_rate": None, "false_tag_rate": 0.04},
                        "cat_merge": {"tag_rate": 0.3, "false_tag_rate": 0.01},
                    },
                }
            }
        )
    )
    return tmp_path


@pytest.fixture
def drawn(monkeypatch):
    """The figures the plot functions close, kept open to be read back (closed at the end of the test)."""
    import matplotlib.pyplot as plt

    figs, close = [], plt.close
    monkeypatch.setattr(plot.plt, "close", figs.append)
    yield figs
    for f in figs:
        close(f)


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG and data[12:16] == b"IHDR", path
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_run_writes_every_plot_as_a_non_empty_png(run_dir):
    import matplotlib.image as mpimg

    paths = plot.run(run_dir)
    assert [p.name for p in paths] == [
        "training_curves.png",
        "checkpoint_curves.png",
        "detection_bars.png",
        "stacking_bars.png",
        "scores_meeting_var_test.png",
        "scores_politics_test.png",
    ]
    assert {p.name for p in (run_dir / "plots").iterdir()} == {p.name for p in paths}
    for p in paths:
        assert p.parent == run_dir / "plots" and p.stat().st_size > 5000
        w, h = _png_size(p)
        assert w > 300 and h > 200, (p.name, w, h)
        pixels = mpimg.imread(p)
        assert pixels.shape[:2] == (h, w) and pixels[..., :3].std() > 0.01, p.name  # drawn on, not a blank canvas
    # the scores plot has one panel more (ROC) than the folder has settings
    assert (
        _png_size(run_dir / "plots" / "scores_politics_test.png")[0]
        > _png_size(run_dir / "plots" / "scores_meeting_var_test.png")[0]
    )


def test_a_run_folder_without_results_gets_no_plots(tmp_path):
    (tmp_path / "eval").mkdir()  # a run folder whose stages wrote nothing yet (a folder with neither is refused)
    assert plot.run(tmp_path) == []
    assert list((tmp_path / "plots").iterdir()) == []


def test_floats_keep_the_steps_that_have_the_value():
    rows = [
        {"step": "1", "loss": "2.5"},
        {"step": "2", "loss": ""},
        {"step": "3"},
        {"step": "4", "loss": None},
        {"step": "5", "loss": "0"},
    ]
    assert plot._floats(rows, "loss") == ([1.0, 5.0], [2.5, 0.0])
    assert plot._floats(rows, "nll") == ([], [])


def test_eval_guardrail_is_read_from_metrics_json_else_the_folder_name(tmp_path):
    d = tmp_path / "eval" / "politics_fixed" / "test"
    d.mkdir(parents=True)
    assert plot.eval_guardrail(d) == "politics_fixed"  # no metrics.json
    (d / "metrics.json").write_text("{not json")
    assert plot.eval_guardrail(d) == "politics_fixed"
    (d / "metrics.json").write_text(json.dumps({"meta": {}}))
    assert plot.eval_guardrail(d) == "politics_fixed"
    (d / "metrics.json").write_text(json.dumps({"meta": {"guardrail": "politics"}}))
    assert plot.eval_guardrail(d) == "politics"


def test_predictions_skip_blank_lines_and_a_missing_file(tmp_path):
    assert plot._predictions(tmp_path) == []
    (tmp_path / "predictions.jsonl").write_text('{"a": 1}\n\n  \n{"a": 2}\n')
    assert plot._predictions(tmp_path) == [{"a": 1}, {"a": 2}]


def test_training_curves_draw_each_run_once_with_its_validation_points(run_dir, drawn):
    assert set(plot.training_runs(run_dir)) == {"expert_opinion + meeting + politics (joint)", "politics_alone"}
    assert plot.training_curves(run_dir, run_dir) == run_dir / "training_curves.png"
    (fig,) = drawn
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["ORPO loss", "NLL (chosen)", "odds-ratio loss"]
    for ax, key, val in zip(axes, ("loss", "nll", "or_loss"), (1.5, 1.2, 0.3)):
        lines = {ln.get_label(): ln for ln in ax.get_lines()}
        joint = lines["expert_opinion + meeting + politics (joint)"]
        assert list(joint.get_xdata()) == [1, 2, 3, 4, 5]
        start = {"loss": 3, "nll": 2.5, "or_loss": 0.7}[key]
        step = {"loss": 0.3, "nll": 0.3, "or_loss": 0.1}[key]
        assert list(joint.get_ydata()) == pytest.approx([start - step * s for s in range(1, 6)])
        point = lines["expert_opinion + meeting + politics (joint) (validation)"]
        assert list(point.get_xdata()) == [5] and list(point.get_ydata()) == pytest.approx([val])
        assert point.get_marker() == "o" and point.get_linestyle() == "None" and point.get_color() == joint.get_color()
        alone = lines["politics_alone"]
        assert (list(alone.get_xdata()), list(alone.get_ydata())) == (([1], [2.0]) if key == "loss" else ([], []))
        assert "politics_alone (validation)" not in lines  # no validation rows, no points
    assert plot.training_curves(run_dir / "nothing", run_dir) is None


def test_detection_bars_are_each_settings_rates_with_their_spread(run_dir, drawn):
    from matplotlib.container import BarContainer

    plot.detection_bars(run_dir, run_dir)
    (fig,) = drawn
    (ax,) = [a for a in fig.axes if a.get_yticklabels()]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["meeting_var / test / adapter", "politics / test / none", "politics / test / adapter"]
    bars = {c.get_label(): c for c in ax.containers if isinstance(c, BarContainer)}
    assert set(bars) == {"tag rate", "false tag rate"}
    assert [b.get_width() for b in bars["tag rate"]] == pytest.approx([0.0, 0.0, 0.9])  # a missing rate is drawn as 0
    assert [b.get_width() for b in bars["false tag rate"]] == pytest.approx([0.3, 0.0, 0.1])
    # bar k of a row sits on that row's tick, tag rate above false tag rate
    for i, (tag, false) in enumerate(zip(bars["tag rate"], bars["false tag rate"])):
        assert tag.get_y() + tag.get_height() == pytest.approx(i) == false.get_y()
    # error bars: +-std around the value, none where no std was given
    spans = [seg[:, 0] for seg in bars["tag rate"].errorbar.lines[2][0].get_segments()]
    assert [tuple(s) for s in spans] == [pytest.approx((0, 0)), pytest.approx((0, 0)), pytest.approx((0.85, 0.95))]
    spans = [seg[:, 0] for seg in bars["false tag rate"].errorbar.lines[2][0].get_segments()]
    assert tuple(spans[2]) == pytest.approx((0.08, 0.12))
    assert ax.get_ylim()[0] > ax.get_ylim()[1]  # inverted: the first row on top
    assert plot.detection_bars(run_dir / "nothing", run_dir) is None


def test_roc_and_histograms_score_the_eval_folders_guardrail(run_dir, drawn):
    from sklearn.metrics import roc_curve

    paths = plot.roc_and_histograms(run_dir, run_dir)
    assert [p.name for p in paths] == ["scores_meeting_var_test.png", "scores_politics_test.png"]
    for fig, scores in zip(drawn, (MEETING_SCORES, POLITICS_SCORES)):
        roc, *hists = fig.axes
        assert len(hists) == len(scores)
        lines = {ln.get_label(): ln for ln in roc.get_lines() if not ln.get_label().startswith("_")}
        assert set(lines) == set(scores)  # positives are the guardrail metrics.json names, for the variation too
        for setting, (pos, neg) in scores.items():
            fpr, tpr, _ = roc_curve([1] * len(pos) + [0] * len(neg), pos + neg)
            assert list(lines[setting].get_xdata()) == pytest.approx(list(fpr))
            assert list(lines[setting].get_ydata()) == pytest.approx(list(tpr))
        for ax, setting in zip(hists, sorted(scores)):
            assert ax.get_title() == f"guard score, {setting}"
            pos, neg = scores[setting]
            by_name = {c[0].get_label(): sum(p.get_height() for p in c) for c in ax.containers}  # hist labels its first bar
            assert by_name == {"triggering": len(pos), "not triggering": len(neg)}


def test_checkpoint_curves_skip_steps_without_a_value(run_dir, drawn):
    plot.checkpoint_curves(run_dir, run_dir)
    (fig,) = drawn
    want = {
        "tag_rate": ([1, 2, 3], [0.2, 0.6, 0.9]),
        "false_tag_rate": ([1, 2, 3], [0.1, 0.05, 0.02]),
        "auroc": ([2, 3], [0.8, 0.95]),
    }
    for ax, key in zip(fig.axes, ("tag_rate", "false_tag_rate", "auroc")):
        (line,) = ax.get_lines()
        assert line.get_label() == "politics/test"
        assert list(line.get_xdata()) == want[key][0] and list(line.get_ydata()) == pytest.approx(want[key][1])
        assert ax.get_ylim() == pytest.approx((-0.03, 1.03))
    assert plot.checkpoint_curves(run_dir / "nothing", run_dir) is None


def test_stacking_bars_draw_the_target_from_the_single_adapter(run_dir, drawn):
    from matplotlib.collections import LineCollection
    from matplotlib.container import BarContainer

    plot.stacking_bars(run_dir, run_dir)
    (fig,) = drawn
    tag_ax, false_ax = fig.axes
    for ax, key in ((tag_ax, "tag_rate"), (false_ax, "false_tag_rate")):
        assert [t.get_text() for t in ax.get_xticklabels()] == ["politics", "meeting"]
        bars = {c.get_label(): [b.get_height() for b in c] for c in ax.containers if isinstance(c, BarContainer)}
        table = {
            "politics": {"single": (0.8, 0.02), "dynamic": (0.6, 0.1), "cat_merge": (0.0, 0.0)},
            "meeting": {"single": (0.5, 0.0), "dynamic": (0.0, 0.04), "cat_merge": (0.3, 0.01)},
        }  # missing: 0
        k = 0 if key == "tag_rate" else 1
        assert bars == {
            s: pytest.approx([table[g][s][k] for g in ("politics", "meeting")]) for s in ("single", "dynamic", "cat_merge")
        }
        segments = [seg for c in ax.collections if isinstance(c, LineCollection) for seg in c.get_segments()]
        ys = [seg[0][1] for seg in segments]
        if key == "tag_rate":  # keep 0.95 of the single adapter's tags
            assert ys == pytest.approx([0.8 * TARGET_KEEP, 0.5 * TARGET_KEEP])
        else:  # at most 0.05 more false tags
            assert ys == pytest.approx([0.02 + TARGET_FALSE, 0.0 + TARGET_FALSE])
        xs = [(seg[0][0], seg[1][0]) for seg in segments]
        assert xs == [pytest.approx((-0.45, 0.45)), pytest.approx((0.55, 1.45))]  # over its own guardrail's group
    assert plot.stacking_bars(run_dir / "nothing", run_dir) is None
