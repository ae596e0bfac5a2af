"""Routed stacking: every member adapter scores the prompt alone, the one that fires writes the reply.

Usage:
    from personaguard.stack.routing import gate_thresholds, routed_replies
    model, names = stack.load_stack(model, dirs)
    out = routed_replies(model, tok, prompts, dict(zip(names, gate_thresholds(dirs))), "<guard>", max_new_tokens=40)

Why not only the sum (`stack.activate(model, names)`): each adapter is trained to say "no tag" on
everything but its own trigger, so it learns a negative bias on the tag's first token. In a dynamic
stack (or its exact cat merge) those biases add up: measured on three SmolLM2 adapters (docs/
research-log.md "Stacking"), the summed stack tagged as little as 0 % of the triggering messages that
each member alone tagged 90+ % of. Routing keeps every member's own decision instead:

1. each member alone makes its own decision in one teacher-forced pass over prompt + tag: either
   greedy (the tag's first token is its most likely first token, what the adapter alone would do)
   or gated (its guard score P(reply starts with the tag) reaches the member's calibrated threshold,
   guard_threshold.json, saved at training time), or jointly gated (`joint_thresholds`: the threshold
   recalibrated on the validation splits of ALL members pooled, see there);
2. if one or more members fire, the one furthest above its threshold (greedy: the highest score)
   writes the reply, starting with the tag (its resolution, e.g. the meeting one, not a mix of all
   three);
3. if none fires, the base model writes the reply with the tag banned: neutral turns are answered
   exactly as without any guardrail.

So a stack tags what any member alone would tag (by construction), and its false tags are the union
of the members' false tags. The cost is one extra prompt pass per member (the guard passes), not a
second model and not a regenerated reply.

`stack_calibration` is the gate of the summed (dynamic) stack itself: one threshold on the guard score
with all members active, calibrated on all members' validation splits pooled. Jointly trained members
(train/joint.py) sum well, but the sum's own greedy decision drifts from the singles' operating point
(it tags more, or fewer, triggers and neutral turns than each member alone); the calibrated threshold
puts the stack back at the point that best meets the stacking target on the validation splits (each member's
tags kept, few extra false tags), without a guard pass per member at request time.

`member_votes` is the vote of `dynamic_agree` (stack/evaluate.py): the sum writes every reply, but begins it
with the tag only where the sum would (greedy) AND at least one member alone would too. Each of the
two misses false tags the other makes: a member's own near-miss mistake is not tagged unless the sum
makes it as well (the union of the members' mistakes is what a sum or a routed stack of three pays
over each member alone), and the sum's own mistakes, where no member alone fires, are not tagged at
all. Recomputed on the saved test decisions of 26 runs (docs/research-log.md, "The sum and a member
must agree"), it met the stacking target in 13 of them against 6 for the gated sum and 4 for the plain
sum, with no threshold to calibrate; what it cannot mend is a sum that loses a member's tags (it only
drops tags). The cost is one guard pass per member (a prompt pass each, no generation), as routing's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from ..adapters import use_adapters
from ..errors import PersonaguardError
from ..inference import GuardPass, guard_pass, replies_with_tag_decided
from ..metrics import (
    GATE_FILE,
    TARGET_FALSE,
    TARGET_KEEP,
    gate_threshold,
    read_gate,
    relative_to_single,
    stack_gate_threshold,
    tag_rates,
    target_margin,
)
from ..schema import NONE_LABEL


@dataclass
class Routed:
    reply: str
    route: str | None  # the member that wrote a tagged reply; None = the base model answered
    scores: dict[str, float]  # each member's guard score
    guard_seconds: float  # all guard passes, per item
    reply_seconds: float
    greedy: dict[str, bool] = field(default_factory=dict)  # each member's own greedy decision (the tag first)


def gate_thresholds(adapter_dirs: list[str | Path]) -> list[float]:
    """Each adapter's gate threshold (guard_threshold.json, written by `train` from its validation split)."""
    out = []
    for d in adapter_dirs:
        thr = read_gate(d)
        if thr is None:
            raise PersonaguardError(
                f"{Path(d) / GATE_FILE}: missing; routed stacking needs each member's gate threshold "
                "(train with a validation split, which writes it)"
            )
        out.append(thr)
    return out


def joint_thresholds(
    model,
    tokenizer,
    members: dict[str, str],
    snaps: list,
    max_prompt_tokens: int,
    tag: str,
    batch_size: int = 16,
) -> dict[str, float | None]:
    """Each member's gate recalibrated for the stack: adapter name -> threshold (None: greedy, no positives).

    `members` maps each guardrail to its adapter name on `model`; `snaps` are the members' validation
    splits pooled. A member's own gate (guard_threshold.json) was calibrated against its own neutral
    turns only, but in a stack it faces every member's neutral turns, including the others' near-misses
    (a gym question for the medical rail, a cafe anecdote for the meeting one), and the stack's false
    tags are the union of the members'. So each member is recalibrated with the same rule
    (metrics.gate_threshold) on its own triggering items against ALL pooled neutral items. Other
    guardrails' triggering items are left out: the stack tags them anyway (their own member fires)."""
    from ..prompt import prompt_ids

    prompts = [prompt_ids(tokenizer, s, max_prompt_tokens) for s in snaps]
    labels = [s.label for s in snaps]
    passes = alone_passes(model, tokenizer, prompts, list(members.values()), tag, batch_size)
    return {name: joint_gate(passes[name].scores, labels, guardrail) for guardrail, name in members.items()}


def joint_gate(scores: list[float], labels: list[str], guardrail: str) -> float | None:
    """One member's stack threshold from its guard scores on pooled items: own triggers vs all neutral ones."""
    own = [x for x, lab in zip(scores, labels) if lab == guardrail]
    return gate_threshold(own, [x for x, lab in zip(scores, labels) if lab == NONE_LABEL]) if own else None


@dataclass
class StackCalibration:
    threshold: float | None  # the summed stack's gate; None when the pooled splits hold no triggering or no neutral item
    # guardrail -> "single" / "dynamic" / "dynamic_gated" / "dynamic_agree" -> {"tag_rate", "false_tag_rate"} on the pooled splits
    validation: dict[str, dict[str, dict[str, float | None]]]

    def misses(self, setting: str = "dynamic_gated") -> list[str]:
        """One line per member for which `setting` misses the target on the calibration items."""
        out = []
        for g, per in self.validation.items():
            single, stacked = per["single"], per[setting]
            margin = target_margin(single, stacked)
            if margin is not None and margin < -1e-9:  # exactly at the edge counts as met
                ratio, extra = relative_to_single(single, stacked)
                keep = 1.0 if ratio is None else ratio
                out.append(
                    f"{setting} keeps {keep:.3f} of {g}'s tags at {extra:+.3f} false tags on the validation splits "
                    f"(target >= {TARGET_KEEP} at <= +{TARGET_FALSE})"
                )
        return out


def stack_calibration(
    model,
    tokenizer,
    members: dict[str, str],
    snaps: list,
    max_prompt_tokens: int,
    tag: str,
    batch_size: int = 16,
) -> StackCalibration:
    """The gate of the adapters in `members` (guardrail -> adapter name) active together, and a check of it.

    `snaps` are the members' validation splits pooled: every member's triggering items are positives
    (the stack must tag them all) and the neutral items negatives. The threshold is the one that meets the
    stacking target (>= 0.95 of each member's own tags at <= +0.05 false tags, each member alone judged
    greedily on the same items) with the widest margin (metrics.stack_gate_threshold). The check puts each
    member alone (greedy), the plain sum (greedy), the gated sum and dynamic_agree's decision (the sum and
    at least one member alone) side by side on the same items, so a
    stack for which no threshold meets the target is visible before its test figures, from the data it
    was calibrated on. Costs one guard pass per member."""
    from ..prompt import prompt_ids

    prompts = [prompt_ids(tokenizer, s, max_prompt_tokens) for s in snaps]
    with use_adapters(model, list(members.values())):
        summed = guard_pass(model, tokenizer, prompts, tag, batch_size)
    labels = [s.label for s in snaps]
    passes = alone_passes(model, tokenizer, prompts, list(members.values()), tag, batch_size)
    alone = {g: passes[name].greedy for g, name in members.items()}
    thr = stack_gate_threshold(summed.scores, labels, alone)
    gated = [thr is not None and x >= thr for x in summed.scores]
    agree = [s and any(a[i] for a in alone.values()) for i, s in enumerate(summed.greedy)]  # dynamic_agree's decision
    validation = {
        g: {
            "single": tag_rates(alone[g], labels, g),
            "dynamic": tag_rates(summed.greedy, labels, g),
            "dynamic_gated": tag_rates(gated, labels, g),
            "dynamic_agree": tag_rates(agree, labels, g),
        }
        for g in members
    }
    return StackCalibration(thr, validation)


def alone_passes(model, tokenizer, prompts: list[list[int]], members: list[str], tag: str, batch_size: int = 16) -> dict:
    """Each adapter named in `members` (all loaded on `model`) as if active alone: its guard pass over `prompts`.
    The active set is restored.

    Several members run as ONE pass over rows (prompt, member), each row under its member's adapter (PEFT's
    mixed-adapter batch, as the server decides), `batch_size` prompts with all their members per forward:
    no adapter switch per member, and on a GPU a member's rows cost little more than the prompt's."""
    if len(members) == 1:
        with use_adapters(model, members):
            return {members[0]: guard_pass(model, tokenizer, prompts, tag, batch_size)}
    k = len(members)
    # a prompt's k rows have one length, so the length-sorted batches of k * batch_size rows keep them together
    rows = [p for p in prompts for _ in members]
    with use_adapters(model, members):
        g = guard_pass(model, tokenizer, rows, tag, k * batch_size, row_adapters=[m for _ in prompts for m in members])
    return {
        m: GuardPass(g.scores[j::k], g.greedy[j::k], g.seconds[j::k], g.first_logps[j::k])  # seconds: the member's share
        for j, m in enumerate(members)
    }


def member_votes(
    model,
    tokenizer,
    prompts: list[list[int]],
    members: list[str],
    tag: str,
    batch_size: int = 16,
) -> tuple[list[bool], list[float]]:
    """Per prompt: whether at least one of the adapters named in `members` (all loaded on `model`), active
    alone, would begin its greedy reply with the tag, and the seconds its guard passes took. One guard
    pass per member; the active set is restored."""
    passes = list(alone_passes(model, tokenizer, prompts, members, tag, batch_size).values())
    return [any(p.greedy[i] for p in passes) for i in range(len(prompts))], [
        sum(p.seconds[i] for p in passes) for i in range(len(prompts))
    ]


def route(scores: dict[str, float], thresholds: dict[str, float | None], greedy: dict[str, bool] | None = None) -> str | None:
    """The firing member furthest above its threshold (score / threshold), or None when none fires.

    A member with threshold None fires when greedy decoding would tag (`greedy[m]`), as it does alone."""

    def fires(m: str) -> bool:
        return bool(greedy and greedy[m]) if thresholds[m] is None else scores[m] >= thresholds[m]

    fired = {m: scores[m] / max(thresholds[m] or 1.0, 1e-12) for m in scores if fires(m)}
    return max(fired, key=fired.get) if fired else None


def routed_replies(
    model,
    tokenizer,
    prompts: list[list[int]],
    thresholds: dict[str, float | None],
    tag: str,
    max_new_tokens: int = 40,
    batch_size: int = 16,
) -> list[Routed]:
    """Replies of the routed stack of the adapters named in `thresholds` (all loaded on `model`).

    thresholds[m] = None: member m fires when its greedy reply would begin with the tag (the plain
    adapter's own decision); a number: when its guard score reaches it (gated decoding's decision)."""
    t0 = time.perf_counter()
    passes = alone_passes(model, tokenizer, prompts, list(thresholds), tag, batch_size)
    g_sec = (time.perf_counter() - t0) / max(len(prompts), 1)
    per_item = [{m: passes[m].scores[i] for m in thresholds} for i in range(len(prompts))]
    routes = [route(per_item[i], thresholds, {m: passes[m].greedy[i] for m in thresholds}) for i in range(len(prompts))]
    replies, r_secs = [""] * len(prompts), [0.0] * len(prompts)
    for m in [*thresholds, None]:
        idx = [i for i, r in enumerate(routes) if r == m]
        if not idx:
            continue
        # the member that fired writes after the tag; with none, the base model answers without it
        with use_adapters(model, [m] if m else []):
            texts, secs = replies_with_tag_decided(
                model, tokenizer, [prompts[i] for i in idx], tag, m is not None, max_new_tokens, batch_size
            )
        for i, t, s in zip(idx, texts, secs):
            replies[i], r_secs[i] = t, s
    greedy = [{m: passes[m].greedy[i] for m in thresholds} for i in range(len(prompts))]
    return [Routed(r, rt, s, g_sec, rs, gr) for r, rt, s, rs, gr in zip(replies, routes, per_item, r_secs, greedy)]
