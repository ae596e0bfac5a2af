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
    # TRL's ORPOConfig checkpoints gradients by default; the comparison runs both without
    assert [r["gradient_checkpointing"] for r in res["runs"]] == [False, False, False]
    # the same weights on the same token ids: what both trainers define alike must agree
    assert res["first_batch"]["max_abs_diff"] < 1e-3
    assert set(res["first_batch"]["terms"]) == {"chosen_logp", "rejected_logp", "log_odds", "or_loss"}
    last = capsys.readouterr().out.rstrip().splitlines()[-1]
    assert last == f"pairs/s ours / TRL ORPOTrainer: {res['ratio']:.2f}x"


def test_stretch_repeats_a_sequence_to_length():
    stretch = _bench().stretch
    assert stretch([1, 2, 3], 7) == [1, 2, 3, 1, 2, 3, 1]
    assert stretch([1, 2, 3], 2) == [1, 2]
    assert stretch([1, 2, 3], 0) == [1, 2, 3] and stretch([], 5) == []


def test_random_model_of_a_shape_is_built_once(tiny_model_dir, tmp_path, monkeypatch):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    bench = _bench()
    monkeypatch.setitem(bench.SHAPES, "mini", (32, 64, 2, 4, 2))
    path = bench.random_model("mini", "cpu", tmp_path, tokenizer=tiny_model_dir)
    cfg = AutoConfig.from_pretrained(path)
    assert (cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, cfg.num_key_value_heads) == (32, 64, 2, 2)
    assert AutoModelForCausalLM.from_pretrained(path).dtype == torch.bfloat16
    mtime = (tmp_path / "mini" / "config.json").stat().st_mtime
    assert bench.random_model("mini", "cpu", tmp_path, tokenizer=tiny_model_dir) == path
    assert (tmp_path / "mini" / "config.json").stat().st_mtime == mtime and not list(tmp_path.glob(".*tmp"))


def test_long_pairs_are_stretched_for_both_trainers(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("PERSONAGUARD_HOME", str(tmp_path / "home"))
    out = tmp_path / "tt.json"
    args = ["--model", tiny_model_dir, "--pairs", "8", "--steps", "2", "--out", str(out)]
    rc = _bench().main([*args, "--prompt-tokens", "80", "--reply-tokens", "12", "--batch-size", "4"])
    res = json.loads(out.read_text())
    assert rc == 0 and all(r["pair_tokens"] == 80 + 2 * 12 and r["peak_gpu_gib"] is None for r in res["runs"])
    assert res["first_batch"]["max_abs_diff"] < 1e-3
