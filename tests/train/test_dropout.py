"""train/dropout.py: the gap-drawn LoRA dropout has nn.Dropout's distribution and replaces PEFT's dropout layers."""

import math

import pytest
import torch
from torch import nn

from personaguard.train.dropout import GapDropout, dropped_positions, use_gap_dropout


def test_positions_are_sorted_unique_and_in_range():
    g = torch.Generator().manual_seed(0)
    for n, p in [(1, 0.5), (7, 0.3), (1000, 0.05), (50_000, 0.9)]:
        pos = dropped_positions(n, p, g)
        assert pos.dtype == torch.long
        assert bool((pos[1:] > pos[:-1]).all()) and (pos.numel() == 0 or (0 <= int(pos[0]) and int(pos[-1]) < n))


def test_edge_probabilities():
    assert dropped_positions(100, 0.0).numel() == 0
    assert dropped_positions(0, 0.5).numel() == 0
    assert torch.equal(dropped_positions(5, 1.0), torch.arange(5))


@pytest.mark.parametrize("p", [0.05, 0.3])
def test_rate_and_independence_match_bernoulli(p):
    """Over 2M trials the drop rate is p within 5 standard errors, in each half of the range (no drift along it),
    and the runs between drops have the geometric mean 1/p (a clumped or evenly spaced draw would fail)."""
    g = torch.Generator().manual_seed(1)
    n = 2_000_000
    pos = dropped_positions(n, p, g)
    se = math.sqrt(p * (1 - p) / (n / 2))
    for half in ((pos < n // 2).sum(), (pos >= n // 2).sum()):
        assert abs(int(half) / (n / 2) - p) < 5 * se
    gaps = (pos[1:] - pos[:-1]).double()
    assert abs(float(gaps.mean()) - 1 / p) < 5 * math.sqrt((1 - p) / p**2 / gaps.numel())
    # P(gap == 1) = p for a Bernoulli process
    assert abs(float((gaps == 1).double().mean()) - p) < 5 * math.sqrt(p * (1 - p) / gaps.numel())


def test_gap_dropout_scales_kept_and_zeroes_dropped_with_matching_gradient():
    torch.manual_seed(0)
    x = torch.randn(4, 50, 16, requires_grad=True)
    d = GapDropout(0.2).train()
    y = d(x)
    kept = y != 0
    assert torch.allclose(y[kept], x[kept] / 0.8)
    assert 0.1 < 1 - kept.double().mean().item() < 0.3
    y.sum().backward()
    assert torch.equal(x.grad == 0, ~kept) and torch.allclose(x.grad[kept], torch.full_like(x.grad[kept], 1 / 0.8))


def test_gap_dropout_is_identity_in_eval_and_on_non_contiguous_input():
    x = torch.randn(6, 8)
    assert torch.equal(GapDropout(0.5).eval()(x), x)
    xt = x.t()  # not contiguous
    y = GapDropout(0.5).train()(xt)
    assert y.shape == xt.shape and torch.allclose(y[y != 0], xt[y != 0] * 2)


def test_use_gap_dropout_replaces_peft_dropout_only_where_there_is_one(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraConfig(r=4, lora_dropout=0.1, target_modules="all-linear")
    )
    n_layers = sum(1 for m in model.modules() if isinstance(getattr(m, "lora_dropout", None), nn.ModuleDict))
    assert use_gap_dropout(model) == n_layers > 0
    drops = [
        d for m in model.modules() if isinstance(getattr(m, "lora_dropout", None), nn.ModuleDict) for d in m.lora_dropout.values()
    ]
    assert all(isinstance(d, GapDropout) and d.p == 0.1 for d in drops)
    # a model trained with dropout: train mode differs from eval mode, and gradients reach the LoRA factors
    ids = torch.randint(0, model.config.vocab_size, (2, 12))
    for m in model.modules():  # make the LoRA branch matter (B starts at zero)
        if hasattr(m, "lora_B"):
            for b in m.lora_B.values():
                nn.init.normal_(b.weight, std=0.5)
    model.train()
    out = model(input_ids=ids).logits
    model.eval()
    with torch.no_grad():
        again = model(input_ids=ids).logits
    assert not torch.allclose(out.detach(), again)
    out.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_A" in n)

    plain = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraConfig(r=4, lora_dropout=0.0, target_modules="all-linear")
    )
    assert use_gap_dropout(plain) == 0


def test_training_uses_gap_dropout(tiny_model_dir):
    from personaguard.config import TrainConfig
    from personaguard.train.train import lora_for_training

    cfg = TrainConfig(model=tiny_model_dir, data_dir="unused", out_dir="unused", lora_dropout=0.05)
    model, _, _ = lora_for_training(cfg)
    assert any(isinstance(m, GapDropout) for m in model.modules())
    assert not any(isinstance(m, nn.Dropout) and m.p > 0 for m in model.modules())
