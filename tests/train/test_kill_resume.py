"""Kill safety of training: SIGKILL at random points, then `--resume`, ends where an uninterrupted run ends."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from personaguard.schema import write_jsonl_atomic

from .test_train import make_examples

STEPS = 6


def _train(tiny_model_dir: str, data: Path, out: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "personaguard.cli", "train", "--data-dir", str(data), "--out-dir", str(out)]
    cmd += ["--model", tiny_model_dir, "--set", f"max_steps={STEPS}", "--set", "save_steps=1", "--set", "batch_size=4"]
    cmd += ["--set", "logging_steps=1", "--set", "lr=0.01", "--set", "seed=3", *extra]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(folder / "adapter_model.safetensors")


def test_sigkill_at_random_points_then_resume_equals_an_uninterrupted_run(tiny_model_dir, tmp_path):
    data = tmp_path / "data"
    write_jsonl_atomic(data / "train.jsonl", make_examples(24))
    write_jsonl_atomic(data / "validation.jsonl", make_examples(4))
    ref = _train(tiny_model_dir, data, tmp_path / "ref")
    assert ref.wait(600) == 0, ref.stderr.read().decode()[-2000:]

    out = tmp_path / "killed"
    rng = random.Random(int(os.environ.get("PG_KILL_SEED", "7")))
    kills = 0
    for attempt in range(6):
        proc = _train(tiny_model_dir, data, out, *(["--resume"] if attempt else []))
        # kill at a random moment once this attempt has made progress (a new checkpoint), or let it finish
        start = len(list(out.glob("checkpoint-*"))) if out.exists() else 0
        deadline = time.monotonic() + 600
        while proc.poll() is None and time.monotonic() < deadline:
            if len(list(out.glob("checkpoint-*"))) > start:
                time.sleep(rng.uniform(0.0, 1.5))
                if proc.poll() is None and attempt < 2:
                    proc.send_signal(signal.SIGKILL)
                    kills += 1
                break
            time.sleep(0.05)
        rc = proc.wait(600)
        if rc == 0:
            break
        assert rc == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    assert kills >= 1 and rc == 0
    a, b = _weights(tmp_path / "ref"), _weights(out)
    assert set(a) == set(b)
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a), max(float((a[k] - b[k]).abs().max()) for k in a)
