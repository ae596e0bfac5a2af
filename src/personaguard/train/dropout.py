"""LoRA dropout that draws only the dropped positions: the same mask distribution as torch's, cheaper on a CPU.

Usage:
    model = get_peft_model(base, lora_config)
    use_gap_dropout(model)        # every LoRA layer's nn.Dropout becomes a GapDropout with the same p

Why our own: PEFT puts an `nn.Dropout` on the input of every LoRA layer (210 of them in SmolLM2 with all linear
layers adapted). On a CPU torch draws one random number per element for it, and in the quickstart's training step
(2 cores, batch of 8 packed pairs) those draws (`aten::bernoulli_`) took 18 % of the step in torch's profiler. With
the small p a LoRA dropout uses (0.05), almost every element is kept, so we draw the dropped positions instead: in a
sequence of independent Bernoulli(p) trials the gaps between successes are geometric, so about p * n random numbers
give the same mask as n would. Kept elements are scaled by 1 / (1 - p) as in `nn.Dropout`. Only the random stream
differs from torch's, not the distribution. On a GPU torch's fused dropout is already cheap, so tensors that are not
on the CPU go through it unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def dropped_positions(n: int, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Sorted int64 positions in [0, n) that a Bernoulli(p) trial per position drops (each independently).

    The gap to the next dropped position is Geometric(p) on {1, 2, ...}: G = floor(log V / log(1 - p)) + 1 with
    V uniform on (0, 1], since P(G > k) = P(V <= (1 - p)^k) = (1 - p)^k."""
    if n <= 0 or p <= 0:
        return torch.empty(0, dtype=torch.long)
    if p >= 1:
        return torch.arange(n)
    log_keep = math.log1p(-p)
    chunks, last = [], -1
    while True:
        # enough draws to pass n with high probability (mean n*p, six standard deviations more); else draw again
        m = int(n * p + 6.0 * math.sqrt(n * p * (1.0 - p)) + 16)
        v = 1.0 - torch.rand(m, dtype=torch.float64, generator=generator)  # in (0, 1]
        gaps = torch.floor(torch.log(v) / log_keep).long() + 1
        pos = last + torch.cumsum(gaps, 0)
        chunks.append(pos[pos < n])
        if int(pos[-1]) >= n:
            return torch.cat(chunks)
        last = int(pos[-1])


class GapDropout(nn.Module):
    """`nn.Dropout(p)` whose mask is built from `dropped_positions` on the CPU (same distribution, fewer draws)."""

    def __init__(self, p: float):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, True)
        out = (x * (1.0 / (1.0 - self.p))).contiguous()  # no mask tensor: the dropped positions are zeroed in place
        return out.view(-1).index_fill_(0, dropped_positions(x.numel(), self.p), 0.0).view(x.shape)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def use_gap_dropout(model: nn.Module) -> int:
    """Swap every LoRA layer's `nn.Dropout` (PEFT's `lora_dropout[adapter]`) for a GapDropout of the same p.
    Returns how many were swapped (layers without dropout hold `nn.Identity` and are left alone)."""
    swapped = 0
    for module in model.modules():
        drops = getattr(module, "lora_dropout", None)
        if not isinstance(drops, nn.ModuleDict):
            continue
        for name, d in list(drops.items()):
            if isinstance(d, nn.Dropout) and d.p > 0:
                drops[name] = GapDropout(d.p)
                swapped += 1
    return swapped
