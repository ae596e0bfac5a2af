"""bench/real_dev.py runs end to end on the tiny model (the real run trains SmolLM2; see its docstring)."""

import json
from pathlib import Path

from . import load_bench


def _bench():
    return load_bench("real_dev")


def test_single_checks_apply_each_target():
    bench = _bench()
    row = {
        "politics": {"tag_rate": 0.975},
        "expert_opinion": {"tag_rate": 0.1},
        "meeting": {"tag_rate": 0.0},
        "none": {"tag_rate": 0.02},
    }
    checks = bench.single_checks(row, "politics", 0.8, 0.78)
    assert checks == {
        "own": True,
        "neutral": True,
        "other:expert_opinion": False,
        "other:meeting": True,
        "f1_over_embedding": True,
    }
    assert bench.single_checks(row, "politics", 0.7, 0.78)["f1_over_embedding"] is False


def test_merge_labels_keeps_each_sets_rates_apart():
    bench = _bench()
    merged = bench.merge_labels({"a": {"politics": 1, "none": 2}, "b": {"religion": 3, "none": 4}})
    assert merged == {"politics": 1, "none": 2, "religion": 3, "none@b": 4}
    checks = bench.single_checks(
        {"religion": {"tag_rate": 1.0}, "none": {"tag_rate": 0.0}, "none@b": {"tag_rate": 0.1}}, "religion", None, None
    )
    assert checks == {"own": True, "neutral": True, "neutral@b": False, "f1_over_embedding": None}


def test_real_dev_bench_runs_on_the_tiny_model(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PERSONAGUARD_HOME", str(tmp_path / "home"))
    bench = _bench()
    out = tmp_path / "real_dev.json"
    rc = bench.main(
        [
            "--seeds",
            "0",
            "1",
            "--guardrails",
            "politics",
            "meeting",
            "--run-root",
            str(tmp_path / "runs"),
            "--out",
            str(out),
            "--per-label",
            "4",
            "--no-embedding",
            "--set",
            f"model={tiny_model_dir}",
            "--set",
            "generate.n=40",
            "--set",
            "train.max_steps=1",
            "--set",
            "train.batch_size=4",
            "--set",
            "train.max_prompt_tokens=96",
            "--set",
            "evaluate.max_new_tokens=4",
            "--set",
            "evaluate.limit=12",
            "--set",
            "evaluate.batch_size=8",
        ]
    )
    assert rc == 0
    res = json.loads(out.read_text())
    assert set(res["seeds"]) == {"0", "1"}
    seed = res["seeds"]["0"]
    assert set(seed["singles"]) == {"politics", "meeting"}
    assert "adapter" in seed["singles"]["politics"] and "own" in seed["singles"]["politics"]["adapter"]["checks"]
    assert [(t["data"], t["subset"]) for t in seed["subsets"]] == [(d, ["politics", "meeting"]) for d in bench.DATA]
    assert "none@real-religion-v1" in seed["singles"]["politics"]["adapter"]["per_label"]
    assert "neutral@real-religion-v1" in seed["singles"]["politics"]["adapter"]["checks"]
    printed = capsys.readouterr().out
    assert "| politics / adapter |" in printed and printed.rstrip().splitlines()[-1].startswith("targets met: ")

    # the mean of both seeds' adapters, evaluated as one more row from the same run folders
    avg_out = tmp_path / "avg.json"
    common = ["--guardrails", "politics", "meeting", "--run-root", str(tmp_path / "runs"), "--per-label", "4", "--no-embedding"]
    tiny = ["--set", f"model={tiny_model_dir}", "--set", "evaluate.max_new_tokens=4", "--set", "evaluate.limit=12"]
    assert bench.main(["--average", "--seeds", "0", "1", *common, *tiny, "--out", str(avg_out)]) == 0
    avg = json.loads(avg_out.read_text())["seeds"]
    assert set(avg) == {"avg0-1"} and set(avg["avg0-1"]["singles"]["meeting"]) == {"adapter"}
    members = json.loads((tmp_path / "runs" / "avg0-1" / "adapters" / "meeting" / "average.json").read_text())["members"]
    assert [Path(m).parent.parent.name for m in members] == ["seed0", "seed1"]
    assert len(avg["avg0-1"]["subsets"]) == len(bench.DATA)
