"""Seed averaging: the written adapter's update is exactly the members' mean (from the saved factors, as
the merge tests do), PEFT loads it to the same logits as its own weighted `cat` merge, and bad inputs
are refused without leaving a folder behind."""

import json
from pathlib import Path

import pytest
import torch

from personaguard.errors import PersonaguardError
from personaguard.guardrails import Guardrail
from personaguard.train.average import average
from tests.stack.test_merge import _random_adapter, factors

MEETING = Guardrail(name="meeting", trigger="the trigger", resolution="the resolution")


def _seeds(tiny_model_dir, root, n=3, **kw):
    return [_random_adapter(tiny_model_dir, root / f"meeting_{s}", 10 + s, guardrail=MEETING, **kw) for s in range(n)]


@pytest.mark.parametrize("use_rslora", [False, True])
def test_average_delta_is_the_members_mean(tiny_model_dir, tmp_path, use_rslora):
    members = _seeds(tiny_model_dir, tmp_path, use_rslora=use_rslora)
    cfg_path = Path(members[1]) / "adapter_config.json"  # PEFT writes target_modules from a set: any order
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "target_modules": sorted(cfg["target_modules"], reverse=True)}))
    res = average(members, tmp_path / "avg")
    got, s = factors(res.out_dir)
    assert res.rank == 12 and s == 1.0
    for module, (a, b) in got.items():
        want = torch.zeros_like(b @ a)
        for m in members:
            fa, fs = factors(m)
            ma, mb = fa[module]
            want += fs * (mb @ ma) / len(members)
        torch.testing.assert_close(s * (b @ a), want, rtol=1e-5, atol=1e-6)


def test_average_loads_like_peft_weighted_cat(tiny_model_dir, tmp_path):
    from personaguard.adapters import load_stack, read_info
    from personaguard.models import LoadOptions
    from personaguard.stack.merge import merge

    members = _seeds(tiny_model_dir, tmp_path)
    ours = average(members, tmp_path / "avg").out_dir
    theirs = merge(members, "cat", [1 / 3] * 3, tmp_path / "cat", model=tiny_model_dir)["out_dir"]
    ids = torch.tensor([[1, 5, 9, 13, 17, 21]])
    logits = []
    for folder in (ours, theirs):
        model, _ = load_stack(tiny_model_dir, [folder], LoadOptions(device="cpu", precision="fp32"))
        with torch.no_grad():
            logits.append(model(input_ids=ids).logits)
    torch.testing.assert_close(logits[0], logits[1], rtol=1e-5, atol=1e-5)
    info = read_info(ours)  # a personaguard adapter folder: every later stage can use it
    assert info.guardrail.name == "meeting" and info.gate_threshold is None


def test_average_refuses_bad_inputs(tiny_model_dir, tmp_path):
    members = _seeds(tiny_model_dir, tmp_path, n=2)
    other = _random_adapter(tiny_model_dir, tmp_path / "politics", 3)
    wide = _random_adapter(tiny_model_dir, tmp_path / "meeting_wide", 4, r=8, guardrail=MEETING)
    with pytest.raises(PersonaguardError, match="at least two"):
        average(members[:1], tmp_path / "x")
    with pytest.raises(PersonaguardError, match="guardrail 'meeting' but .* is 'politics'"):
        average([members[0], other], tmp_path / "x")
    with pytest.raises(PersonaguardError, match=r"field\(s\) \['r'"):
        average([members[0], wide], tmp_path / "x")
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob(".x.*"))
    (tmp_path / "taken").mkdir()
    with pytest.raises(PersonaguardError, match="already exists"):
        average(members, tmp_path / "taken")
