"""bench/cost_curves.py on the tiny model: three curves, their per-unit ratios, a JSON result and a plot."""

import json

import pytest

from . import load_bench


def test_per_unit_ratio_is_one_for_a_line_through_zero_and_grows_with_curvature():
    ratio = load_bench("cost_curves").per_unit_ratio
    assert ratio([(10, 2.0), (40, 8.0), (20, 4.0)]) == pytest.approx(1.0)
    assert ratio([(10, 1.0), (20, 4.0)]) == pytest.approx(2.0)  # quadratic: twice the cost per unit at twice the size


def test_bench_measures_three_curves_and_draws_them(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PERSONAGUARD_HOME", str(tmp_path / "home"))
    out, png = tmp_path / "c.json", tmp_path / "c.png"
    argv = ["--model", tiny_model_dir, "--sizes", "8", "16", "--prompt-lengths", "32", "64", "--length-pairs", "8"]
    rc = load_bench("cost_curves").main([*argv, "--items", "4", "8", "--out", str(out), "--plot", str(png)])
    res = json.loads(out.read_text())
    assert rc == 0 and png.stat().st_size > 1000
    curves = res["curves"]
    assert [len(c["points"]) for c in curves.values()] == [2, 2, 2]
    assert all(y > 0 for c in curves.values() for _, y in c["points"]) and all(c["ratio"] > 0 for c in curves.values())
    assert capsys.readouterr().out.rstrip().splitlines()[-1].startswith("cost per unit, largest / smallest point: ")
