"""bench/serve_load.py end to end on the tiny model (the real run uses the embedded SmolLM2)."""

import json

from . import load_bench


def test_serve_load_bench_runs_and_finds_no_crosstalk(tiny_model_dir, tmp_path, monkeypatch, capsys):
    mod = load_bench("serve_load")
    monkeypatch.setenv("PERSONAGUARD_HOME", str(tmp_path / "home"))
    out = tmp_path / "serve_load.json"
    argv = ["--model", tiny_model_dir, "--clients", "4", "--requests", "12", "--max-tokens", "3"]
    rc = mod.main([*argv, "--decision-prompts", "3", "--out", str(out)])
    res = json.loads(out.read_text())
    assert rc == 0 and res["errors"] == [] and res["crosstalk"] == 0 and res["requests"] == 12
    assert 0 < res["fired"] < 12  # the random adapters fire on some requests, so cross-talk would show
    assert res["first_chunk_p50_s"] <= res["full_reply_p50_s"] and res["ratio_1"] > 0
    assert capsys.readouterr().out.rstrip().splitlines()[-1].startswith("guard decision / base first token (one adapter): ")


def test_jobs_mix_sets_and_personas():
    mod = load_bench("serve_load")
    bodies = mod.jobs(36)
    assert {b["model"] for b in bodies} == {"base", "persona:maya", "persona:rex"}
    assert {tuple(b.get("guardrails", ["-"])) for b in bodies} >= {("politics",), (), ("politics", "expert_opinion", "meeting")}
