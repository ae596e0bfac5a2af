"""`personaguard serve --upstream URL`: the same API as a thin guard router in front of another
OpenAI-compatible server that serves each guardrail adapter as a LoRA model under its name (vLLM
with `export-vllm`'s command, or another `personaguard serve`).

Why a router: vLLM batches many requests across adapters on a GPU, but knows nothing of personas,
per-request guardrail sets or the `guard` field. The router renders the persona prompt as the
adapters were trained on it, asks each requested adapter for its first few tokens (greedy) — an
adapter fires when its reply begins with the tag, the routed stack's own rule — and streams the
reply from the adapter that fired. Members are asked in the request's order and the first that
fires answers; without the upstream's log-probabilities there is no score to rank them by, so
`score` is null here.

A turn on which nothing fired is answered as the local engine answers it: by a lone guardrail's own
adapter (the persona keeps its adapter's voice), by the base model under a stack. The local engine
bans the tag's first token there; OpenAI's API has no "ban at the first step only", so:
- greedy: the adapter's reply is the decision's own greedy continuation, which did not start with
  the tag, so nothing needs banning;
- sampling: `logit_bias` bans the tag's first token for the whole reply. Its id comes from the
  upstream's `POST /tokenize` (vLLM's, and ours); an upstream without it gets such turns answered
  by the base model, where no tag can appear.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from ..config import ServeConfig
from ..errors import PersonaguardError
from ..prompt import render_messages
from ..schema import Snapshot
from .engine import Engine, GuardDecision, Turn

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
        self._root = base[: -len("/v1")]  # vLLM serves /tokenize beside /v1, not under it
        self.max_model_len, self.vocab_size = None, None  # the upstream checks its own limits
        try:
            self.tag_token: int | None = self.tokenize(self.tag, add_special_tokens=False)[0]
        except (PersonaguardError, IndexError):
            self.tag_token = None

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

    def tokenize(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """The upstream's token ids for `text` (its `POST /tokenize`)."""
        import openai

        body = {"model": self.base_model, "prompt": text, "add_special_tokens": add_special_tokens}
        try:
            out = self.api.post(self._root + "/tokenize", body=body, cast_to=object)
        except openai.APIError as exc:
            raise PersonaguardError(f"upstream /tokenize: {getattr(exc, 'message', exc)}") from None
        tokens = out.get("tokens") if isinstance(out, dict) else None
        if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
            raise PersonaguardError("upstream /tokenize: the answer has no list of token ids")
        return tokens

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
        logit_bias: dict[int, float] | None = None,
    ) -> Turn:
        guardrails = self.check_guardrails(guardrails)
        messages = render_messages(snap, extra_guidelines)
        decision = self.decide(messages, guardrails)
        writer = decision.guardrail or Engine.quiet_writer(guardrails)
        bias = dict(logit_bias or {})
        if writer and not decision.triggered and temperature > 0:
            if self.tag_token is None:
                writer = None  # the tag cannot be banned at this upstream: the base model answers
            else:
                bias[self.tag_token] = -100
        extra = {"logit_bias": {str(k): v for k, v in bias.items()}} if bias else {}
        stream = self._call(
            model=writer or self.base_model,
            messages=messages,
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            stream=True,
            stream_options={"include_usage": True},
            **extra,
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
