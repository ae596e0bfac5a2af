"""Replies, guard scores and decisions for one evaluation setting (shared by evaluate, checkpoints, stack).

Usage:
    model, tok = load_eval_model("embedded:smollm2-135m-instruct", "runs/q/adapters/politics", LoadOptions())
    rows = predict(model, tok, snaps, Decoding(max_prompt_tokens=224), guardrail, "adapter")
"""

from __future__ import annotations

from ..inference import Decoding
from ..metrics import GROUP_FIELDS, starts_with_tag
from ..schema import Snapshot


def load_eval_model(model_name: str, adapter: str | None, opts):
    """Base model with the adapter attached (if any); `disable_adapter()` gives the 'none' setting."""
    from ..models import load_model

    model, tok = load_model(model_name, opts)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    model.eval()
    return model, tok


def system_prompt_guideline(g) -> str:
    """The prompt-engineering baseline: the guardrail written into the system prompt."""
    return (
        f"Special rule: {g.trigger} When that happens: {g.resolution} "
        f"The tag is {g.tag} and must be the very first text of such a reply."
    )


def predict(model, tok, snaps: list[Snapshot], cfg: Decoding, guardrail, setting: str, run: int = 0) -> list[dict]:
    """Generate replies and guard scores for one generative setting."""
    import torch

    from ..inference import generate_replies, guard_scores
    from ..prompt import prompt_ids

    extra = system_prompt_guideline(guardrail) if setting == "system_prompt" else ""
    prompts = [prompt_ids(tok, s, cfg.max_prompt_tokens, extra) for s in snaps]
    scores, g_secs = guard_scores(model, tok, prompts, guardrail.tag, cfg.batch_size)
    torch.manual_seed(run)
    replies, r_secs = generate_replies(
        model, tok, prompts, cfg.max_new_tokens, cfg.batch_size, do_sample=cfg.runs > 1, temperature=cfg.temperature
    )
    return [
        {
            "id": s.id,
            "label": s.label,
            "setting": setting,
            "run": run,
            "message": s.message,
            "reply": r,
            "tagged": starts_with_tag(r, guardrail.tag),
            "guard_score": sc,
            "guard_seconds": gs,
            "reply_seconds": rs,
            **group_fields(s),
        }
        for s, r, sc, gs, rs in zip(snaps, replies, scores, g_secs, r_secs)
    ]


def group_fields(s: Snapshot) -> dict:
    """The snapshot's grouping fields (kind, domain, topic) that metrics break false positives down by."""
    extra = s.model_extra or {}
    return {k: extra[k] for k in GROUP_FIELDS if isinstance(extra.get(k), str)}


def gate_rows(
    raw: list[dict], model, tok, snaps: list[Snapshot], cfg: Decoding, guardrail, threshold: float, setting: str = "adapter_gated"
) -> list[dict]:
    """The active adapters' replies under guard-gated decoding (only disagreeing items are generated again)."""
    from ..inference import gated_replies
    from ..prompt import prompt_ids

    prompts = [prompt_ids(tok, s, cfg.max_prompt_tokens) for s in snaps]
    replies = gated_replies(
        model,
        tok,
        prompts,
        [r["guard_score"] for r in raw],
        threshold,
        guardrail.tag,
        [r["reply"] for r in raw],
        cfg.max_new_tokens,
        cfg.batch_size,
    )
    return [
        {**r, "setting": setting, "reply": rep, "tagged": starts_with_tag(rep, guardrail.tag)} for r, rep in zip(raw, replies)
    ]
