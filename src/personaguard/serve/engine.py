"""The model behind the server and the chat: one base model, every guardrail adapter of a folder.

Why one model with all adapters loaded: personas differ only in which guardrails they wear, so a
request picks its set by activating adapters (a flag flip, no weights move) instead of loading a
model per persona. The active set is state of the one model, so a request holds `lock` from its
guard decision to its last reply token: overlapping requests with different sets are answered one
after the other, each with exactly its own adapters (tests/serve/test_app.py checks it).

The decision is the default stack method (`routed`, stack/routing.py): each requested adapter alone
scores the prompt in one forward pass; the member whose greedy reply would begin with the tag
fires (the most confident one when several do), writes the tag and answers after it; when none
fires the base model answers with the tag's first token banned. So the decision is known before
the first reply token, which is what lets the server put it in the first streamed chunk.

One prefill per turn where it can be: the decision pass keeps its KV cache, and the reply continues
from it when the member that scored the prompt also writes the reply: the member that fired, or a
lone guardrail on a turn it did not fire (the adapter answers its own other turns with the tag
banned, as `evaluate`'s adapter setting and the adapter's training have it). Only a stack of several
members that all stay quiet needs a second prefill, by the base model. A lone guardrail's adapter
also stays active after its turn, so the next turn of the same persona flips nothing.

All torch work runs on ONE thread of the engine (`run`). PyTorch's CPU ops use OpenMP, whose thread
team belongs to the thread that calls them; once two threads have run ops, each decoding step of
either pays for the other team's workers (on 2 cores a 48-token greedy reply took 4.9-5.2 s instead
of 3.1 s, measured with the model loaded once: research log); a team goes away with its thread. A
thread per request or per reply, as a web server gives, is therefore the slow case; one model thread,
which also loads the model, keeps one team.

A lone adapter is folded into the weights (`merge_lone_adapter`): each adapted layer gets a copy of
its weight with the adapter's update added, swapped in for the original. An unmerged LoRA layer runs
two skinny matmuls and PEFT's per-layer bookkeeping on top of the base matmul, which costs 23-28 %
of a forward pass on the CPU for SmolLM2 (measured, research log) while adding ~5 % of its FLOPs;
merged, the lone guardrail's decision and every reply token cost what the base model's do. Swapping
the original tensors back is exact (PEFT's `unmerge_adapter` subtracts the update again and drifts
by a rounding error per switch), at the price of one copy of the adapted weights in memory.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..adapters import AdapterInfo, activate, active_adapters, load_stack, read_info
from ..config import DEFAULT_MAX_PROMPT_TOKENS, ServeConfig
from ..errors import PersonaguardError
from ..models import LoadOptions, load_tokenizer, resolve_model, same_model
from ..prompt import prompt_ids
from ..schema import Snapshot
from .personas import NAME_RE


@dataclass(frozen=True)
class GuardDecision:
    """What the server reports as `guard`: whether a guardrail fired, which one, and its score
    (P(reply starts with the tag) under the fired adapter; with none fired, the highest member score)."""

    triggered: bool
    guardrail: str | None
    score: float | None
    scores: dict[str, float] = field(default_factory=dict)

    def public(self) -> dict:
        return {
            "triggered": self.triggered,
            "guardrail": self.guardrail,
            "score": None if self.score is None else round(self.score, 4),
        }


@dataclass
class Turn:
    """One answered turn: the decision, then the reply text as it is produced (`pieces`)."""

    decision: GuardDecision
    prompt_len: int  # tokens of the prompt as rendered here (0 when an upstream renders it)
    pieces: Iterator[str]
    _state: dict = field(default_factory=dict)

    @property
    def prompt_tokens(self) -> int:
        return self._state.get("prompt_tokens", self.prompt_len)

    @property
    def completion_tokens(self) -> int:
        return self._state.get("completion_tokens", 0)

    @property
    def finish_reason(self) -> str:
        return self._state.get("finish_reason", "stop")


def discover_adapters(folder: str | Path) -> dict[str, Path]:
    """Guardrail adapter folders directly under `folder` (those with adapter_config.json), by folder name.

    Only direct sub-folders with plain names count, so nothing outside the configured folder can be
    loaded and a request can only name what is listed here."""
    root = Path(folder)
    if not root.is_dir():
        raise PersonaguardError(f"adapters_dir {root}: not a folder (train a guardrail first: personaguard pipeline)")
    found = {
        p.name: p
        for p in sorted(root.iterdir())
        if p.is_dir() and (p / "adapter_config.json").is_file() and NAME_RE.match(p.name)
    }
    if not found:
        raise PersonaguardError(
            f"adapters_dir {root}: no guardrail adapters in it (sub-folders with adapter_config.json); "
            "train one with `personaguard pipeline` and point adapters_dir at its adapters/ folder"
        )
    return found


class Engine:
    """Loads the base model with every adapter of `cfg.adapters_dir` and answers turns."""

    def __init__(self, cfg: ServeConfig):
        self.cfg = cfg
        folders = discover_adapters(cfg.adapters_dir)
        self.infos: dict[str, AdapterInfo] = {name: read_info(path) for name, path in folders.items()}
        bases = {i.base_model for i in self.infos.values()}
        base = cfg.model or sorted(bases)[0]
        strangers = [n for n, i in self.infos.items() if not same_model(i.base_model, base)]
        if strangers:
            raise PersonaguardError(
                f"adapters {strangers} in {cfg.adapters_dir} were trained on another base model than '{base}' "
                "(set `model`, or keep one base model's adapters per folder)"
            )
        tags = {i.guardrail.tag for i in self.infos.values()}
        if len(tags) > 1:
            raise PersonaguardError(f"adapters in {cfg.adapters_dir} use different tags {sorted(tags)}; serve them apart")
        self.tag = tags.pop()
        self.base_model = base
        self.model_id = cfg.served_model_name or base
        self.max_prompt_tokens = cfg.max_prompt_tokens or max(
            (i.max_prompt_tokens for i in self.infos.values()), default=DEFAULT_MAX_PROMPT_TOKENS
        )
        resolve_model(base)  # a clear error for an unknown model before the slow load
        opts = LoadOptions(device=cfg.device, precision=cfg.precision, load_in_4bit=cfg.load_in_4bit)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="personaguard-model")
        self._model_thread = self._pool.submit(threading.current_thread).result()
        self.model, _ = self.run(load_stack, base, [str(p) for p in folders.values()], opts)
        self.tokenizer = load_tokenizer(base)
        self.lock = threading.Lock()
        import torch

        weight = next(self.model.parameters())
        self._device = weight.device
        fp32_on_cpu = weight.dtype == torch.float32 and weight.device.type == "cpu"
        self.merge_lone = cfg.merge_lone_adapter == "on" or (cfg.merge_lone_adapter == "auto" and fp32_on_cpu)
        self._merged: tuple[str, dict] | None = None  # (adapter, {layer: its original weight}) while one is folded in
        self._can_merge: dict[str, bool] = {}
        # transformers renamed `past_key_values` to `cache` (5.2x), in generate's arguments and in outputs; the old name warns
        forward = inspect.signature(type(self.model.get_base_model()).forward).parameters
        self._cache_arg = "cache" if "cache" in forward else "past_key_values"

    @property
    def guardrails(self) -> list[str]:
        return sorted(self.infos)

    @property
    def cards(self) -> dict[str, dict]:
        """What /v1/models says about each guardrail."""
        return {n: {"trigger": i.guardrail.trigger, "resolution": i.guardrail.resolution} for n, i in self.infos.items()}

    @property
    def vocab_size(self) -> int:
        """Rows of the output layer: the token ids a `logit_bias` may name."""
        return int(self.model.get_output_embeddings().weight.shape[0])

    @property
    def max_model_len(self) -> int | None:
        return getattr(self.model.config, "max_position_embeddings", None)

    def tokenize(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self.tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"]

    def check_guardrails(self, names: list[str]) -> list[str]:
        unknown = [n for n in names if n not in self.infos]
        if unknown:
            raise PersonaguardError(f"unknown guardrail(s) {unknown}; this server has {self.guardrails}")
        return list(dict.fromkeys(names))

    # -- the decision ------------------------------------------------------------------------------

    def decide(self, ids: list[int], guardrails: list[str]) -> GuardDecision:
        """The routed decision of `guardrails` on one prompt (caller holds `lock`)."""
        return self.run(self._decide, ids, guardrails)[0]

    def _decide(self, ids: list[int], guardrails: list[str]) -> tuple[GuardDecision, dict]:
        """(decision, {member: KV cache of its pass over the prompt and the tag but its last token}).

        One member: its own pass. Several: ONE forward pass whose rows are the same prompt, row i under member
        i's adapter (PEFT's mixed-adapter batch, `adapter_names`): no adapter switch per member, and on a GPU
        k rows cost about one. Only the member that fired keeps its cache row (it writes the reply)."""
        from ..stack.routing import route

        if not guardrails:
            return GuardDecision(False, None, None), {}
        lone = len(guardrails) == 1
        self._activate(guardrails, mixed=not lone)  # several: enabled for the mixed batch, which ignores which are active
        score, greedy, cache = self._guard_forward(ids, None if lone else guardrails)
        scores = dict(zip(guardrails, score))
        fired = route(scores, dict.fromkeys(guardrails), dict(zip(guardrails, greedy)))
        caches = {}
        if lone:
            caches = {guardrails[0]: cache}
        elif fired:
            import torch

            cache.batch_select_indices(torch.tensor([guardrails.index(fired)], device=self._device))
            caches = {fired: cache}
        top = scores[fired] if fired else max(scores.values())
        return GuardDecision(fired is not None, fired, top, scores), caches

    def _guard_forward(self, ids: list[int], rows: list[str] | None) -> tuple[list[float], list[bool], object]:
        """P(reply starts with the tag), whether the greedy first token is the tag's, and the KV cache: for the
        active adapter (rows None) or for one row per adapter named in `rows` (one mixed-adapter batch).

        inference.guard_pass's computation for one prompt (prompt + tag, the logits that predict the tag
        tokens), run over the tag but its last token and with the cache kept: the reply then starts
        from it instead of a second prefill."""
        import torch

        from ..inference import tag_logprobs, tag_token_ids

        tag = tag_token_ids(self.tokenizer, self.tag)
        x = torch.tensor([ids + tag[:-1]] * (len(rows) if rows else 1), device=self._device)
        extra = {"adapter_names": list(rows)} if rows else {}
        with torch.no_grad():
            out = self.model(input_ids=x, use_cache=True, logits_to_keep=len(tag), **extra)
        # logits_to_keep=T: exactly the positions that predict the tag tokens
        _, total, greedy = tag_logprobs(out.logits, torch.tensor(tag, device=self._device))
        return [float(v) for v in total.exp()], [bool(v) for v in greedy], getattr(out, self._cache_arg)

    @staticmethod
    def quiet_writer(guardrails: list[str]) -> str | None:
        """Who answers a turn on which none of `guardrails` fired (and stays active after it): a lone guardrail's
        own adapter, else the base model (None)."""
        return guardrails[0] if len(guardrails) == 1 else None

    def run(self, fn: Callable, *args, **kwargs):
        """fn(*args, **kwargs) on the engine's model thread (where every torch op of the engine runs; see the
        module docstring), waiting for its result. Code that times or drives `model` from outside uses this too."""
        if threading.current_thread() is self._model_thread:
            return fn(*args, **kwargs)
        return self._pool.submit(fn, *args, **kwargs).result()

    @property
    def active(self) -> list[str]:
        """The adapters the model answers with now: the folded-in one, else the active LoRA layers."""
        return [self._merged[0]] if self._merged else active_adapters(self.model)

    def _activate(self, names: list[str], mixed: bool = False) -> None:
        """Make `names` the active adapters unless they already are (caller holds `lock`).

        Unlike `use_adapters` nothing is restored afterwards: each step sets what it needs, so a turn
        flips the LoRA layers once per member and once for the reply, and not at all when the previous
        turn left the right set (a flip walks every LoRA layer: ~25 ms on SmolLM2 on a busy CPU).
        One adapter is folded into the weights when `merge_lone` is on, unless `mixed` (a mixed-adapter
        batch needs the LoRA layers themselves)."""
        if self.merge_lone and len(names) == 1 and not mixed and self._mergeable(names[0]):
            if self._merged and self._merged[0] == names[0]:
                return
            self._unmerge()
            if active_adapters(self.model):
                activate(self.model, [])  # the folded weights carry the adapter; its LoRA layers stay off
            self._merge(names[0])
            return
        self._unmerge()
        if active_adapters(self.model) != names:  # read off the model: nothing to keep in step with it
            activate(self.model, names)

    def _mergeable(self, name: str) -> bool:
        """Only plain LoRA on linear layers is folded in (no DoRA, no embedding LoRA): the adapters `train` makes."""
        if name not in self._can_merge:
            from peft.tuners.lora import Linear

            holders = [
                m for m in self.model.modules() if name in getattr(m, "lora_A", {}) or name in getattr(m, "lora_embedding_A", {})
            ]
            self._can_merge[name] = bool(holders) and all(
                isinstance(m, Linear) and not m.use_dora.get(name, False) for m in holders
            )
        return self._can_merge[name]

    def _merge(self, name: str) -> None:
        import torch

        originals = {}
        with torch.no_grad():
            for module in self.model.modules():
                if name in getattr(module, "lora_A", {}):
                    base = module.get_base_layer()
                    originals[base] = base.weight
                    a, b = module.lora_A[name].weight, module.lora_B[name].weight
                    if module.fan_in_fan_out:  # weight stored (in, out): the update is (B A) transposed
                        folded = torch.addmm(base.weight, a.t(), b.t(), alpha=module.scaling[name])
                    else:  # W + s B A in one kernel and one new tensor (PEFT's get_delta_weight makes two more)
                        folded = torch.addmm(base.weight, b, a, alpha=module.scaling[name])
                    base.weight = torch.nn.Parameter(folded, requires_grad=False)
        self._merged = (name, originals)

    def _unmerge(self) -> None:
        if self._merged:
            for base, weight in self._merged[1].items():
                base.weight = weight
            self._merged = None

    # -- a whole turn --------------------------------------------------------------------------------

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
        """Decide, then start the reply; the reply is produced while `pieces` is read. `logit_bias`
        (OpenAI's: token id -> bias added to its logit at every reply step) shapes the reply, not the decision.

        The lock is taken here and released when the reply ends, is closed early or fails, so the
        adapters stay exactly this request's until its last token."""
        guardrails = self.check_guardrails(guardrails)
        ids = prompt_ids(self.tokenizer, snap, self.max_prompt_tokens, extra_guidelines)
        state: dict = {}
        self.lock.acquire()
        try:
            decision, caches = self.run(self._decide, ids, guardrails)
            # the member that scored the prompt writes the reply from its cache: the one that fired, or a lone guardrail
            writer = decision.guardrail or self.quiet_writer(guardrails)
            cache = caches.get(writer) if writer else None
            pieces = self._reply(ids, decision, writer, cache, max_tokens, temperature, top_p, state, logit_bias)
        except BaseException:  # the reply thread never started, so it cannot release the lock
            self.lock.release()
            raise
        return Turn(decision, len(ids), pieces, state)

    def _reply(
        self,
        ids: list[int],
        decision: GuardDecision,
        writer: str | None,
        cache,
        max_tokens: int,
        temperature: float,
        top_p: float,
        state: dict,
        logit_bias: dict[int, float] | None = None,
    ) -> Iterator[str]:
        """Starts the reply of `writer` (an adapter, or the base model for None) on the model thread (transformers'
        streamer) and returns its text pieces; generation stops early when the reader goes away and releases
        `lock` when it ends. `cache` is the writer's decision pass (prompt + tag but its last token)."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        from ..inference import tag_token_ids

        tag_ids = tag_token_ids(self.tokenizer, self.tag)
        fired = decision.guardrail
        cancel = threading.Event()

        class _Cancelled(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return cancel.is_set()

        prefix = tag_ids if fired else []
        new_tokens = max(max_tokens - len(prefix), 1)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        inputs = torch.tensor([ids + prefix], device=self._device)
        kwargs = dict(
            input_ids=inputs,
            attention_mask=torch.ones_like(inputs),
            max_new_tokens=new_tokens,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
            streamer=streamer,
            stopping_criteria=StoppingCriteriaList([_Cancelled()]),
        )
        if temperature > 0:
            kwargs |= {"do_sample": True, "temperature": temperature, "top_p": top_p}
        else:
            kwargs |= {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        if not fired:
            kwargs["begin_suppress_tokens"] = tag_ids[:1]
        if logit_bias:
            kwargs["sequence_bias"] = {(token,): float(bias) for token, bias in logit_bias.items()}
        if cache is not None:
            kwargs[self._cache_arg] = cache
        error: list[BaseException] = []

        def work() -> None:
            try:
                if cache is not None and not fired:
                    cache.crop(-len(tag_ids))  # back to the prompt but its last token, fed again to predict the reply
                self._activate([writer] if writer else [])
                with torch.no_grad():
                    out = self.model.generate(**kwargs)
                made = out.shape[1] - inputs.shape[1]
                ended = made > 0 and int(out[0, -1]) == self.tokenizer.eos_token_id
                state["completion_tokens"] = len(prefix) + made
                state["finish_reason"] = "length" if made >= new_tokens and not ended else "stop"
            except BaseException as exc:  # surfaced to the reader below
                error.append(exc)
                streamer.end()
            finally:
                self.lock.release()

        done = self._pool.submit(work)  # now, not on first read: a reply nobody reads still ends and frees the lock
        return self._read(streamer, done, cancel, error, fired)

    def _read(self, streamer, done, cancel: threading.Event, error: list, fired: str | None):
        try:
            first = True
            if fired:
                yield self.tag
            for piece in streamer:
                if first and fired and piece:
                    piece = " " + piece.lstrip()  # as evaluation writes it: "<tag> reply"
                first = first and not piece
                if piece:
                    yield piece
            done.result()
            if error:
                raise error[0]
        finally:
            cancel.set()  # reader gone or done: stop generating so the lock is freed soon


def make_engine(cfg: ServeConfig):
    """The local model, or a router to `cfg.upstream` when it is set."""
    if cfg.upstream:
        from .upstream import UpstreamEngine

        return UpstreamEngine(cfg)
    return Engine(cfg)
