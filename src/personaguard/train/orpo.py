"""ORPO loss and the shared-prefix packing it trains on.

Loss (Hong et al. 2024): NLL(chosen) + lambda * -log sigmoid(log_odds), with
log_odds = log(p_c / (1 - p_c)) - log(p_r / (1 - p_r)) and p = exp(mean per-token log-prob of the
reply). Prompt tokens are never scored.

Why our own packing instead of TRL's ORPOTrainer: chosen and rejected share one prompt, and persona
prompts (system + memories + history) are several times longer than the replies. TRL runs
prompt+chosen and prompt+rejected as two sequences; we run ONE sequence [prompt | chosen | rejected]
where a 4-D attention mask hides the chosen tokens from the rejected ones and the rejected
positions restart right after the prompt, so the prompt is encoded once. The logits are identical
to the two-sequence computation (tests/train/test_orpo.py checks this); bench/orpo_step.py measures the
speed-up.

`neutral_loss="anchor"` replaces that loss on neutral rows (label `none`) with "answer as before",
measured against the frozen base model: the KL divergence from its next-token distributions to the
adapter's over the chosen reply, plus a Huber penalty on the gap between the adapter's and the base's
log-probability of the rejected reply's first token (the tag) at the reply's start.
Why: a stack of adapters adds their updates, and the tag's log-probability moves roughly by the sum of
what each member does to it. ORPO's neutral rows (rejected = a tagged refusal) teach every member to push
the tag *below* the base model on all turns but its own trigger, so in a stack the others outweigh the
member that should fire (docs/research-log.md, "Stacking three guardrails"). The KL alone does not fix
it: the base model gives the tag a log-prob of about -8 to -11 at a neutral reply's start, a member
trained with the KL alone raised that by 4-6 nats at almost no KL cost, and three such members summed
made the tag the likeliest first token on 0.75-0.83 of the neutral turns (docs/research-log.md, run X1).
Held at the base's log-probability, a member neither pushes the tag down nor up outside its trigger.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, stable at both ends (Maechler 2012)."""
    return torch.where(x > -0.6931472, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def odds_ratio_terms(chosen_logps: torch.Tensor, rejected_logps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example odds-ratio loss (-log sigmoid(log_odds)) and log_odds, from mean token log-probs."""
    c, r = chosen_logps.float(), rejected_logps.float()
    log_odds = (c - r) - (log1mexp(c) - log1mexp(r))
    return -F.logsigmoid(log_odds), log_odds


def orpo_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    orpo_lambda: float = 0.1,
    anchor_loss: torch.Tensor | None = None,
    anchored: torch.Tensor | None = None,
    anchor_weight: float = 1.0,
    row_mask: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Batch ORPO loss plus the parts worth logging (all batch means).

    With `anchor_loss` (per row) and the bool mask `anchored`, the anchored rows contribute
    `anchor_weight * anchor_loss` instead of NLL + lambda * odds-ratio; the loss stays a mean over all rows
    and the ORPO parts are logged over the other rows. With the bool `row_mask` [B] only those rows count:
    the others are left out before any term is computed, so they get no gradient even where their terms
    are not finite; with no row left the loss is 0 (the parts are then logged over every row)."""
    if row_mask is not None:
        if not bool(row_mask.any()):
            parts = orpo_loss(chosen_logps.detach(), rejected_logps.detach(), orpo_lambda)
            return {**parts, "loss": chosen_logps[:0].float().sum()}  # 0 with the graph kept for backward
        kept_anchor = None if anchor_loss is None else anchor_loss[row_mask]
        kept_anchored = None if anchored is None else anchored[row_mask]
        return orpo_loss(chosen_logps[row_mask], rejected_logps[row_mask], orpo_lambda, kept_anchor, kept_anchored, anchor_weight)
    or_loss, log_odds = odds_ratio_terms(chosen_logps, rejected_logps)
    nll_rows = -chosen_logps.float()
    per_row = nll_rows + orpo_lambda * or_loss
    if anchored is not None and bool(anchored.any()):
        per_row = torch.where(anchored, anchor_weight * anchor_loss, per_row)
        scored = ~anchored
        if not bool(scored.any()):
            scored = torch.ones_like(anchored)  # an all-neutral batch: log the ORPO parts of every row anyway
        nll_rows, or_loss, log_odds = nll_rows[scored], or_loss[scored], log_odds[scored]
        chosen_logps, rejected_logps = chosen_logps[scored], rejected_logps[scored]
    return {
        "loss": per_row.mean(),
        "nll": nll_rows.mean(),
        "or_loss": or_loss.mean(),
        "log_odds": log_odds.mean(),
        "chosen_logp": chosen_logps.float().mean(),
        "rejected_logp": rejected_logps.float().mean(),
        "reward_acc": (chosen_logps > rejected_logps).float().mean(),
    }


def pack_pairs(features: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Collate {prompt_ids, chosen_ids, rejected_ids} rows into shared-prefix sequences.

    Returns input_ids/position_ids [B, L], `allow` [B, L, L] (True where attention is allowed),
    for each reply the positions whose logits predict it (`*_src`), the tokens (`*_tgt`) and a mask,
    `neutral` [B] (the rows' `neutral` flag, False where absent) and `member` [B] (the rows' `member`
    index for joint training, -1 where absent).
    """
    neutral = torch.tensor([bool(f.get("neutral", False)) for f in features])
    member = torch.tensor([int(f.get("member", -1)) for f in features])  # joint training: the row's guardrail index
    features = [{k: list(f[k]) for k in ("prompt_ids", "chosen_ids", "rejected_ids")} for f in features]
    B = len(features)
    L = max(len(f["prompt_ids"]) + len(f["chosen_ids"]) + len(f["rejected_ids"]) for f in features)
    Cm = max(len(f["chosen_ids"]) for f in features)
    Rm = max(len(f["rejected_ids"]) for f in features)
    input_ids = torch.full((B, L), pad_id, dtype=torch.long)
    position_ids = torch.zeros((B, L), dtype=torch.long)
    allow = torch.zeros((B, L, L), dtype=torch.bool)
    out = {k: torch.zeros((B, n), dtype=torch.long) for k, n in (("c_src", Cm), ("c_tgt", Cm), ("r_src", Rm), ("r_tgt", Rm))}
    c_mask = torch.zeros((B, Cm), dtype=torch.bool)
    r_mask = torch.zeros((B, Rm), dtype=torch.bool)
    causal = torch.tril(torch.ones((L, L), dtype=torch.bool))
    for b, f in enumerate(features):
        p, c, r = f["prompt_ids"], f["chosen_ids"], f["rejected_ids"]
        P, C, R = len(p), len(c), len(r)
        n = P + C + R
        input_ids[b, :n] = torch.tensor(p + c + r)
        position_ids[b, : P + C] = torch.arange(P + C)
        position_ids[b, P + C : n] = torch.arange(P, P + R)
        allow[b, :n, :n] = causal[:n, :n]
        allow[b, P + C : n, P : P + C] = False  # rejected never sees chosen
        idx = torch.arange(n, L)
        allow[b, idx, idx] = True  # padding rows attend to themselves only (no NaN rows)
        # token t of a reply is predicted by the position before it; the first token of BOTH replies
        # is predicted by the last prompt position.
        out["c_src"][b, :C] = torch.arange(P - 1, P + C - 1)
        out["c_tgt"][b, :C] = torch.tensor(c)
        c_mask[b, :C] = True
        out["r_src"][b, :R] = torch.tensor([P - 1] + list(range(P + C, P + C + R - 1)))
        out["r_tgt"][b, :R] = torch.tensor(r)
        r_mask[b, :R] = True
    return {
        "input_ids": input_ids,
        "position_ids": position_ids,
        "allow": allow,
        **out,
        "c_mask": c_mask,
        "r_mask": r_mask,
        "neutral": neutral,
        "member": member,
    }


def additive_mask(allow: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B, L, L] bool -> [B, 1, L, L] additive float mask (0 keep, dtype-min drop), as HF expects."""
    mask = torch.zeros(allow.shape, dtype=dtype, device=allow.device)
    mask.masked_fill_(~allow, torch.finfo(dtype).min)
    return mask[:, None]


def mean_reply_logps(
    logits: torch.Tensor, src: torch.Tensor, tgt: torch.Tensor, mask: torch.Tensor, decision_token_weight: float = 1.0
) -> torch.Tensor:
    """Mean log-prob of each reply's tokens from full-sequence logits (the two-sequence reference
    computation the packed one is tested against); only the scored rows go through log_softmax."""
    return _mean_logp(torch.log_softmax(_at(logits, src).float(), dim=-1), tgt, mask, decision_token_weight)


def _at(x: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """The rows of `x` [B, L, D] at the positions `src` [B, n] -> [B, n, D]."""
    return torch.gather(x, 1, src[..., None].expand(-1, -1, x.shape[-1]))


def _mean_logp(logp: torch.Tensor, tgt: torch.Tensor, mask: torch.Tensor, decision_token_weight: float = 1.0) -> torch.Tensor:
    """Weighted mean token log-prob of each reply from its rows' log-probs; the first token counts `decision_token_weight` times."""
    return _weighted_mean(logp.gather(-1, tgt[..., None]).squeeze(-1), mask, decision_token_weight)


def _weighted_mean(values: torch.Tensor, mask: torch.Tensor, decision_token_weight: float = 1.0) -> torch.Tensor:
    """Mean of each row's masked per-token values; the first reply token counts `decision_token_weight` times."""
    m = mask.to(values.dtype)
    if decision_token_weight != 1.0:
        m = m.clone()
        m[:, 0] *= decision_token_weight
    return (values * m).sum(-1) / m.sum(-1).clamp(min=1)


def anchor_kl(
    logp: torch.Tensor, base_logp: torch.Tensor, mask: torch.Tensor, decision_token_weight: float = 1.0
) -> torch.Tensor:
    """Per-row weighted mean over reply positions of KL(base || adapter), from both models' log-probs."""
    kl = (base_logp.exp() * (base_logp - logp)).sum(-1)
    return _weighted_mean(kl, mask, decision_token_weight)


def _split_model(model):
    """(decoder, lm_head) when the model allows computing logits for chosen rows only, else None.

    The vocabulary projection is ~20% of a small model's compute; prompt positions need no logits,
    so projecting only the scored positions saves that work (bench/orpo_step.py)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(base.config, "final_logit_softcapping", None) or not hasattr(base, "get_decoder"):
        return None
    decoder, head = base.get_decoder(), base.get_output_embeddings()
    return (decoder, head) if decoder is not None and head is not None else None


def _scored_rows(model, kwargs: dict, srcs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Logits at the positions in each of `srcs` ([B, n] -> [B, n, V]), from one forward pass."""
    split = _split_model(model)
    if split is None:
        logits = model(**kwargs).logits
        return [_at(logits, s) for s in srcs]
    decoder, head = split
    hidden = decoder(**kwargs).last_hidden_state
    return [head(_at(hidden, s)) for s in srcs]


def packed_forward(
    model,
    batch: dict[str, torch.Tensor],
    orpo_lambda: float,
    decision_token_weight: float = 1.0,
    neutral_loss: str = "orpo",
    anchor_weight: float = 1.0,
    tag_anchor_weight: float = 1.0,
) -> dict[str, torch.Tensor]:
    """One forward pass over packed pairs -> ORPO loss dict.

    `decision_token_weight` > 1 weights each reply's first token more in its mean log-prob (1 = plain ORPO).
    A guardrail's decision is that one token (the tag or a natural first word); in a plain mean over
    ~48 reply tokens it is ~2 % of the signal.
    `neutral_loss="anchor"` scores the batch's neutral rows against the base model instead (KL plus
    `tag_anchor_weight` x Huber(tag log-prob shift); one more forward pass over those rows, adapters
    disabled, no gradient); `model` must be a PEFT model. Logs `anchor_kl` and `tag_shift` (nats).
    A bool `swap` [B] in the batch exchanges chosen and rejected for those rows (train/joint.py: a
    triggering row whose guardrail is not active at this step should be answered as a neutral turn);
    a bool `row_mask` [B] keeps only those rows in the loss (train/joint.py: steps that score neutral rows only)."""
    dtype = next(p for p in model.parameters() if p.is_floating_point()).dtype
    kwargs = dict(
        input_ids=batch["input_ids"],
        position_ids=batch["position_ids"],
        attention_mask=additive_mask(batch["allow"], dtype),
        use_cache=False,
    )
    c_rows, r_rows = _scored_rows(model, kwargs, [batch["c_src"], batch["r_src"]])
    c_logp = torch.log_softmax(c_rows.float(), dim=-1)  # once: the anchor reuses it
    chosen = _mean_logp(c_logp, batch["c_tgt"], batch["c_mask"], decision_token_weight)
    rejected = _mean_logp(torch.log_softmax(r_rows.float(), dim=-1), batch["r_tgt"], batch["r_mask"], decision_token_weight)
    swap = batch.get("swap")
    if swap is not None and bool(swap.any()):  # joint training: rows whose guardrail is switched off prefer the untagged reply
        chosen, rejected = torch.where(swap, rejected, chosen), torch.where(swap, chosen, rejected)
    neutral, row_mask = batch.get("neutral"), batch.get("row_mask")
    if neutral_loss != "anchor" or neutral is None or not bool(neutral.any()):
        return orpo_loss(chosen, rejected, orpo_lambda, row_mask=row_mask)
    sub = {k: (v[neutral] if torch.is_tensor(v) else v) for k, v in kwargs.items()}
    with torch.no_grad(), model.disable_adapter():
        (base_rows,) = _scored_rows(model, sub, [batch["c_src"][neutral]])
    logp, base_logp = c_logp[neutral], torch.log_softmax(base_rows.float(), dim=-1)
    kl = anchor_kl(logp, base_logp, batch["c_mask"][neutral], decision_token_weight)
    # the first reply position predicts both replies' first token; a neutral row's rejected reply starts with the tag
    unwanted = batch["r_tgt"][neutral, :1]
    shift = (logp[:, 0].gather(-1, unwanted) - base_logp[:, 0].gather(-1, unwanted)).squeeze(-1)
    anchor = torch.zeros_like(chosen, dtype=torch.float32)
    anchor[neutral] = kl + tag_anchor_weight * F.huber_loss(shift, torch.zeros_like(shift), reduction="none", delta=1.0)
    parts = orpo_loss(chosen, rejected, orpo_lambda, anchor, neutral, anchor_weight, row_mask)
    return {**parts, "anchor_kl": kl.mean(), "tag_shift": shift.mean()}
