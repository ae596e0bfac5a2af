"""bench/guard_latency.py end to end on the tiny model (the real run uses the embedded SmolLM2)."""

import json

from . import load_bench


def test_guard_latency_bench_times_every_variant(tiny_model_dir, tmp_path, monkeypatch, capsys):
    mod = load_bench("guard_latency")
    monkeypatch.setenv("PERSONAGUARD_HOME", str(tmp_path / "home"))
    out = tmp_path / "gl.json"
    argv = ["--model", tiny_model_dir, "--data", "real-chats-v1", "--n", "4", "--members", "2", "3"]
    rc = mod.main([*argv, "--reply-tokens", "4", "--turns", "2", "--out", str(out)])
    res = json.loads(out.read_text())
    assert rc == 0 and set(res["median_s"]) == {"base", "decision_1", "decision_1_switched", "decision_2", "decision_3"}
    assert all(v > 0 for v in res["median_s"].values()) and res["turn_vs_two_pass"] > 0
    assert 1 <= res["mean_reply_tokens"] <= 4
    last = capsys.readouterr().out.rstrip().splitlines()[-1]
    assert last == f"guard decision (one adapter) / base first token: {res['decision_1_vs_base']:.2f}x"
