"""bench/train_throughput.py end to end on the tiny model (the real run uses the embedded SmolLM2)."""

import json

from . import load_bench


def _bench():
    return load_bench("train_throughput")


def test_trl_rows_hold_our_ids_with_the_prompt_masked():
    row = _bench().trl_row({"prompt_ids": [5, 6, 7], "chosen_ids": [8, 9], "rejected_ids": [10]})
    assert row["chosen_input_ids"] == [5, 6, 7, 8, 9] and row["chosen_labels"] == [-100, -100, -100, 8, 9]
    assert row["rejected_input_ids"] == [5, 6, 7, 10] and row["rejected_labels"] == [-100, -100, -100, 10]
    assert row["prompt_input_ids"] == [5, 6, 7] and row["chosen_attention_mask"] == [1] * 5


def test_bench_trains_both_trainers_and_their_shared_terms_agree(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PERSONAGUARD_HOME", str(tmp_path / "home"))
    out = tmp_path / "tt.json"
    rc = _bench().main(["--model", tiny_model_dir, "--pairs", "16", "--steps", "2", "--out", str(out)])
    res = json.loads(out.read_text())
    assert rc == 0 and [r["trainer"] for r in res["runs"]] == ["ours", "trl", "ours"]
    assert all(r["pairs_per_s"] > 0 and r["timed_steps"] == 1 and r["peak_rss_gib"] > 0 for r in res["runs"])
    # the same weights on the same token ids: what both trainers define alike must agree
    assert res["first_batch"]["max_abs_diff"] < 1e-3
    assert set(res["first_batch"]["terms"]) == {"chosen_logp", "rejected_logp", "log_odds", "or_loss"}
    last = capsys.readouterr().out.rstrip().splitlines()[-1]
    assert last == f"pairs/s ours / TRL ORPOTrainer: {res['ratio']:.2f}x"
