"""Batched inference shared by evaluation and serving: greedy replies and the guard score.

guard_score = P(reply starts with the tag | prompt), read off ONE teacher-forced forward pass over
prompt + tag tokens (no generation), so it can serve as a cheap classifier with a threshold.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Decoding:
    """How prompts are cut and replies produced: the part of a stage config that prediction needs."""

    max_prompt_tokens: int
    max_new_tokens: int = 40
    batch_size: int = 16
    runs: int = 1  # > 1 samples at `temperature`; 1 = greedy
    temperature: float = 0.7


def _device(model):
    return next(model.parameters()).device


def tag_token_ids(tokenizer, tag: str) -> list[int]:
    return tokenizer(tag, add_special_tokens=False)["input_ids"]


def _batches(n: int, lengths: list[int], batch_size: int):
    """Index batches of similar length (less padding), returned in a stable order."""
    order = sorted(range(n), key=lambda i: lengths[i])
    return [order[k : k + batch_size] for k in range(0, n, batch_size)]


@dataclass
class GuardPass:
    scores: list[float]  # P(reply starts with the tag)
    greedy: list[bool]  # the tag's first token is the single most likely first token (greedy decoding would tag)
    seconds: list[float]  # per item
    first_logps: list[float]  # log-prob of the tag's first token as the reply's first token (the decision itself)


def tag_logprobs(logits, tag_t):
    """From the logits at the positions that predict the tag's T tokens ([B, T, V]) and the tag ids ([T]): the
    log-probs [B, T, V], the tag's total log-prob [B] and whether the greedy first token is the tag's [B]."""
    import torch

    lp = torch.log_softmax(logits.float(), dim=-1)
    total = lp[:, torch.arange(len(tag_t), device=lp.device), tag_t].sum(-1)
    return lp, total, logits[:, 0].argmax(-1) == tag_t[0]


def guard_pass(
    model, tokenizer, prompts: list[list[int]], tag: str, batch_size: int = 16, row_adapters: list[str] | None = None
) -> GuardPass:
    """The guard score of every prompt and whether greedy decoding would start with the tag.

    `row_adapters[i]` names the loaded adapter that scores prompt i (PEFT's mixed-adapter batch; every named
    adapter must be enabled); None = the active adapters for every prompt."""
    import torch

    tag_ids = tag_token_ids(tokenizer, tag)
    T = len(tag_ids)
    n = len(prompts)
    res = GuardPass([0.0] * n, [False] * n, [0.0] * n, [0.0] * n)
    dev = _device(model)
    tag_t = torch.tensor(tag_ids, device=dev)
    for idx in _batches(n, [len(p) for p in prompts], batch_size):
        t0 = time.perf_counter()
        # left padding aligns every row's tag at the end, so only the last T+1 logits are computed
        seqs = [prompts[i] + tag_ids for i in idx]
        L = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), L), tokenizer.pad_token_id, dtype=torch.long)
        att = torch.zeros((len(seqs), L), dtype=torch.long)
        for b, s in enumerate(seqs):
            ids[b, L - len(s) :] = torch.tensor(s)
            att[b, L - len(s) :] = 1
        pos = (att.cumsum(-1) - 1).clamp(min=0)
        extra = {"adapter_names": [row_adapters[i] for i in idx]} if row_adapters else {}
        with torch.no_grad():
            logits = model(
                input_ids=ids.to(dev), attention_mask=att.to(dev), position_ids=pos.to(dev), logits_to_keep=T + 1, **extra
            ).logits.float()
        lp, total, first_is_tag = tag_logprobs(logits[:, :T], tag_t)  # positions predicting the T tag tokens
        dt = (time.perf_counter() - t0) / len(idx)
        for b, i in enumerate(idx):
            res.scores[i], res.greedy[i], res.seconds[i] = float(torch.exp(total[b])), bool(first_is_tag[b]), dt
            res.first_logps[i] = float(lp[b, 0, tag_t[0]])
    return res


def guard_scores(model, tokenizer, prompts: list[list[int]], tag: str, batch_size: int = 16) -> tuple[list[float], list[float]]:
    """Probability of the tag as the first reply tokens, per prompt; also seconds per item."""
    g = guard_pass(model, tokenizer, prompts, tag, batch_size)
    return g.scores, g.seconds


def generate_replies(
    model,
    tokenizer,
    prompts: list[list[int]],
    max_new_tokens: int = 40,
    batch_size: int = 16,
    do_sample: bool = False,
    temperature: float = 0.7,
    top_p: float = 0.9,
    begin_suppress: list[int] | None = None,
) -> tuple[list[str], list[float]]:
    """Replies (left-padded batches), decoded without special tokens; also seconds per item."""
    import torch

    replies, secs = [""] * len(prompts), [0.0] * len(prompts)
    dev = _device(model)
    for idx in _batches(len(prompts), [len(p) for p in prompts], batch_size):
        t0 = time.perf_counter()
        L = max(len(prompts[i]) for i in idx)
        ids = torch.full((len(idx), L), tokenizer.pad_token_id, dtype=torch.long)
        att = torch.zeros((len(idx), L), dtype=torch.long)
        for b, i in enumerate(idx):
            p = prompts[i]
            ids[b, L - len(p) :] = torch.tensor(p)
            att[b, L - len(p) :] = 1
        kwargs = {"do_sample": True, "temperature": temperature, "top_p": top_p} if do_sample else {"do_sample": False}
        if begin_suppress:
            kwargs["begin_suppress_tokens"] = begin_suppress
        with torch.no_grad():
            out = model.generate(
                input_ids=ids.to(dev),
                attention_mask=att.to(dev),
                max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
                **kwargs,
            )
        for b, i in enumerate(idx):
            replies[i] = tokenizer.decode(out[b, L:], skip_special_tokens=True).strip()
        dt = (time.perf_counter() - t0) / len(idx)
        for i in idx:
            secs[i] = dt
    return replies, secs


def gated_replies(
    model,
    tokenizer,
    prompts: list[list[int]],
    scores: list[float],
    threshold: float,
    tag: str,
    replies: list[str],
    max_new_tokens: int = 40,
    batch_size: int = 16,
) -> list[str]:
    """Guard-gated decoding: the guard score decides, the adapter writes the reply.

    Greedy decoding starts with the tag whenever its first token is the single most likely one, even
    at low probability (natural replies spread their first-token mass over many words). Gating uses
    the calibrated score instead: score >= threshold -> the reply starts with the tag (the model
    continues after it); below -> the tag's first token is banned at the first step. Replies that
    already agree with the gate are kept, so only disagreements are generated again.
    """
    return decided_replies(
        model, tokenizer, prompts, [sc >= threshold for sc in scores], tag, replies, max_new_tokens, batch_size
    )


def decided_replies(
    model,
    tokenizer,
    prompts: list[list[int]],
    want: list[bool],
    tag: str,
    replies: list[str],
    max_new_tokens: int = 40,
    batch_size: int = 16,
) -> list[str]:
    """`replies` (the active adapters' greedy replies) with their start re-decided: want[i] = begin
    with the tag. Replies that already agree are kept; the others are generated again with the tag
    written first or its first token banned (replies_with_tag_decided)."""
    out = list(replies)
    force = [i for i, (w, r) in enumerate(zip(want, replies)) if w and not r.lstrip().startswith(tag)]
    ban = [i for i, (w, r) in enumerate(zip(want, replies)) if not w and r.lstrip().startswith(tag)]
    for idx, tagged in ((force, True), (ban, False)):
        if idx:
            for i, r in zip(
                idx,
                replies_with_tag_decided(model, tokenizer, [prompts[i] for i in idx], tag, tagged, max_new_tokens, batch_size)[0],
            ):
                out[i] = r
    return out


def replies_with_tag_decided(
    model,
    tokenizer,
    prompts: list[list[int]],
    tag: str,
    tagged: bool,
    max_new_tokens: int = 40,
    batch_size: int = 16,
) -> tuple[list[str], list[float]]:
    """Greedy replies whose start is decided from outside: tagged = the tag is written first and the
    model continues after it; untagged = the tag's first token is banned at the first step."""
    tag_ids = tag_token_ids(tokenizer, tag)
    if not tagged:
        return generate_replies(model, tokenizer, prompts, max_new_tokens, batch_size, begin_suppress=tag_ids[:1])
    cont, secs = generate_replies(
        model, tokenizer, [p + tag_ids for p in prompts], max(max_new_tokens - len(tag_ids), 1), batch_size
    )
    return [f"{tag} {c}".strip() for c in cont], secs
