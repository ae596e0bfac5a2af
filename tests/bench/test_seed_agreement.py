"""bench/seed_agreement.py on hand-made prediction files: AND / OR per label, item by item."""

import json

from . import load_bench


def _write(run, data, rows):
    path = run / "eval" / "meeting" / data / "predictions.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text("".join(json.dumps({"setting": "adapter", **r}) + "\n" for r in rows))


def test_agreement_counts_items_both_or_either_seed_tagged(tmp_path, capsys):
    bench = load_bench("seed_agreement")
    a = [("1", "meeting", True), ("2", "meeting", True), ("3", "none", True), ("4", "none", False), ("5", "none", False)]
    b = [("1", "meeting", True), ("2", "meeting", False), ("3", "none", False), ("4", "none", True), ("5", "none", False)]
    for run, rows in (("s0", a), ("s1", b)):
        _write(tmp_path / run, "real", [{"id": i, "label": lab, "tagged": t, "message": f"m{i}"} for i, lab, t in rows])
    # a row of another setting must not count
    with (tmp_path / "s1" / "eval" / "meeting" / "real" / "predictions.jsonl").open("a") as f:
        f.write(json.dumps({"id": "2", "label": "meeting", "setting": "adapter_gated", "tagged": True}) + "\n")
    out = tmp_path / "agree.json"
    rc = bench.main(
        ["--runs", str(tmp_path / "s0"), str(tmp_path / "s1"), "--guardrail", "meeting", "--data", "real", "--out", str(out)]
    )
    assert rc == 0
    res = json.loads(out.read_text())["result"]["real"]
    assert res["meeting"] == {"seed 0": 1.0, "seed 1": 0.5, "and": 0.5, "or": 1.0, "n": 2}
    assert res["none"]["and"] == 0.0 and res["none"]["or"] == 2 / 3 and res["none"]["seed 1"] == 1 / 3
    assert capsys.readouterr().out.rstrip().endswith("real: 0.000")


def test_missing_predictions_is_one_clear_line(tmp_path, capsys):
    bench = load_bench("seed_agreement")
    assert bench.main(["--runs", str(tmp_path / "a"), str(tmp_path / "b"), "--guardrail", "meeting"]) == 2
    assert "--runs: no predictions at" in capsys.readouterr().err


def test_runs_whose_ids_name_different_items_are_refused(tmp_path, capsys):
    bench = load_bench("seed_agreement")
    for run, msg in (("s0", "hello"), ("s1", "bye")):
        _write(tmp_path / run, "test", [{"id": "t-0", "label": "none", "tagged": False, "message": msg}])
    args = ["--runs", str(tmp_path / "s0"), str(tmp_path / "s1"), "--guardrail", "meeting", "--data", "test"]
    assert bench.main([*args, "--out", str(tmp_path / "x.json")]) == 2
    assert "--data test: the runs' items differ" in capsys.readouterr().err
