"""Batched inference shared by evaluation and serving: greedy replies and the guard score.

guard_score = P(reply starts with the tag | prompt), read off ONE teacher-forced forward pass over
prompt + tag tokens (no generation), so it can serve as a cheap classifier with a threshold.
"""

from __future__ import annotations

import time


def _device(model):
    return next(model.parameters()).device


def tag_token_ids(tokenizer, tag: str) -> list[int]:
    return tokenizer(tag, add_special_tokens=False)["input_ids"]


def _batches(n: int, lengths: list[int], batch_size: int):
    """Index batches of similar length (less padding), returned in a stable order."""
    order = sorted(range(n), key=lambda i: lengths[i])
    return [order[k : k + batch_size] for k in range(0, n, batch_size)]


def guard_scores(model, tokenizer, prompts: list[list[int]], tag: str, batch_size: int = 16) -> tuple[list[float], list[float]]:
    """Probability of the tag as the first reply tokens, per prompt; also seconds per item."""
    import torch

    tag_ids = tag_token_ids(tokenizer, tag)
    T = len(tag_ids)
    scores, secs = [0.0] * len(prompts), [0.0] * len(prompts)
    dev = _device(model)
    tag_t = torch.tensor(tag_ids, device=dev)
    for idx in _batches(len(prompts), [len(p) for p in prompts], batch_size):
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
        with torch.no_grad():
            logits = model(input_ids=ids.to(dev), attention_mask=att.to(dev), position_ids=pos.to(dev),
                           logits_to_keep=T + 1).logits.float()
        lp = torch.log_softmax(logits[:, :T], dim=-1)  # positions predicting the T tag tokens
        total = lp[:, torch.arange(T, device=dev), tag_t].sum(-1)
        for b, i in enumerate(idx):
            scores[i] = float(torch.exp(total[b]))
        dt = (time.perf_counter() - t0) / len(idx)
        for i in idx:
            secs[i] = dt
    return scores, secs


def generate_replies(
    model, tokenizer, prompts: list[list[int]], max_new_tokens: int = 40, batch_size: int = 16,
    do_sample: bool = False, temperature: float = 0.7, top_p: float = 0.9,
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
        with torch.no_grad():
            out = model.generate(
                input_ids=ids.to(dev), attention_mask=att.to(dev), max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, **kwargs,
            )
        for b, i in enumerate(idx):
            replies[i] = tokenizer.decode(out[b, L:], skip_special_tokens=True).strip()
        dt = (time.perf_counter() - t0) / len(idx)
        for i in idx:
            secs[i] = dt
    return replies, secs
