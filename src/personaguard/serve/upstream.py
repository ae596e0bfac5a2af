"""`personaguard serve --upstream URL`: the same API as a thin guard router in front of another
OpenAI-compatible server that serves each guardrail adapter as a LoRA model under its name (vLLM
with `export-vllm`'s command, or another `personaguard serve`).

Why a router: vLLM batches many requests across adapters on a GPU, but knows nothing of personas,
per-request guardrail sets or the `guard` field. The router renders the persona prompt as the
adapters were trained on it, asks each requested adapter for its first few tokens (greedy) — an
adapter fires when its reply begins with the tag, the routed stack's own rule — and streams the
reply from the adapter that fired, or from the base model. Members are asked in the request's
order and the first that fires answers; without the upstream's log-probabilities there is no
score to rank them by, so `score` is null here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from ..config import ServeConfig
from ..errors import PersonaguardError
from ..prompt import render_messages
from ..schema import Snapshot
from .engine import GuardDecision, Turn

DECISION_TOKENS = 8  # enough for the tag to appear whole at the start of the reply


class UpstreamEngine:
    """Answers turns through `cfg.upstream`; the guardrails are the upstream's LoRA models."""

    def __init__(self, cfg: ServeConfig, http_client=None):
        import openai

        self.cfg, self.tag = cfg, cfg.tag
        base = cfg.upstream.rstrip("/")
        base = base if base.endswith("/v1") else base + "/v1"
        self.api = openai.OpenAI(
            base_url=base, api_key=os.environ.get(cfg.upstream_key_env) or "none", http_client=http_client, max_retries=1
        )
        try:
            models = self.api.models.list().data
        except openai.APIError as exc:
            raise PersonaguardError(f"upstream {cfg.upstream}: {getattr(exc, 'message', exc)}") from None
        extra = [{"id": m.id, **(m.model_extra or {})} for m in models]
        roots = [m["id"] for m in extra if not m.get("parent")]
        if not roots:
            raise PersonaguardError(f"upstream {cfg.upstream}: /v1/models lists no base model")
        self.base_model = cfg.model or roots[0]
        self.model_id = cfg.served_model_name or self.base_model
        # LoRA modules are listed with the base as parent (vLLM's convention); personas of a personaguard upstream are not adapters
        self._cards = {
            m["id"]: m.get("guardrail") or {"trigger": "", "resolution": ""}
            for m in extra
            if m.get("parent") == self.base_model and not m["id"].startswith("persona:")
        }
        if not self._cards:
            raise PersonaguardError(f"upstream {cfg.upstream}: no LoRA adapters of '{self.base_model}' in /v1/models")

    @property
    def guardrails(self) -> list[str]:
        return sorted(self._cards)

    @property
    def cards(self) -> dict[str, dict]:
        return dict(self._cards)

    def check_guardrails(self, names: list[str]) -> list[str]:
        unknown = [n for n in names if n not in self._cards]
        if unknown:
            raise PersonaguardError(f"unknown guardrail(s) {unknown}; this server has {self.guardrails}")
        return list(dict.fromkeys(names))

    def _call(self, **kwargs):
        import openai

        try:
            return self.api.chat.completions.create(**kwargs)
        except openai.APIError as exc:
            raise PersonaguardError(f"upstream: {getattr(exc, 'message', exc)}") from None

    def decide(self, messages: list[dict], guardrails: list[str]) -> GuardDecision:
        for g in guardrails:
            out = self._call(model=g, messages=messages, max_tokens=DECISION_TOKENS, temperature=0)
            if (out.choices[0].message.content or "").lstrip().startswith(self.tag):
                return GuardDecision(True, g, None)
        return GuardDecision(False, None, None)

    def turn(
        self,
        snap: Snapshot,
        guardrails: list[str],
        max_tokens: int,
        temperature: float = 0.0,
        top_p: float = 1.0,
        extra_guidelines: str = "",
    ) -> Turn:
        guardrails = self.check_guardrails(guardrails)
        messages = render_messages(snap, extra_guidelines)
        decision = self.decide(messages, guardrails)
        stream = self._call(
            model=decision.guardrail or self.base_model,
            messages=messages,
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            stream=True,
            stream_options={"include_usage": True},
        )
        state: dict = {}
        return Turn(decision, 0, self._pieces(stream, state), state)

    def _pieces(self, stream, state: dict) -> Iterator[str]:
        try:
            for chunk in stream:
                if chunk.usage:
                    state["completion_tokens"] = chunk.usage.completion_tokens
                    state["prompt_tokens"] = chunk.usage.prompt_tokens
                for choice in chunk.choices:
                    if choice.finish_reason:
                        state["finish_reason"] = choice.finish_reason
                    if choice.delta and choice.delta.content:
                        yield choice.delta.content
        finally:
            stream.close()
