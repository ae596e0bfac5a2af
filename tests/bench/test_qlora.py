"""bench/qlora.py on the tiny model on CPU: the train-save-reload path without the 4-bit load (the GPU run adds it)."""

import json

import pytest

from . import load_bench


def test_trains_saves_and_reloads_the_adapter_on_cpu(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PERSONAGUARD_HOME", str(tmp_path / "home"))
    out = tmp_path / "q.json"
    argv = ["--model", tiny_model_dir, "--device", "cpu", "--precision", "fp32", "--modes", "bf16"]
    rc = load_bench("qlora").main(
        [*argv, "--pairs", "8", "--steps", "3", "--adapter-dir", str(tmp_path / "a"), "--out", str(out)]
    )
    res = json.loads(out.read_text())
    run = res["runs"]["bf16"]
    assert rc == 0 and res["ok"] and run["all_losses_finite"] and run["steps"] == 3 and run["peak_gpu_gib"] is None
    assert (tmp_path / "a" / "bf16" / "adapter_config.json").is_file()
    assert res["load"]["saved_tensors"] > 0 and res["load"]["missing_tensors"] == 0
    # the trained adapter moves the logits of the base it is loaded onto
    assert res["load"]["logits_finite"] and res["load"]["max_logit_change"] > 0
    assert capsys.readouterr().out.rstrip().splitlines()[-1] == "ok: True"


def test_4bit_on_cpu_is_refused_with_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        load_bench("qlora").main(["--device", "cpu", "--modes", "4bit"])
    assert exc.value.code == 2 and "--modes 4bit needs --device cuda" in capsys.readouterr().err
