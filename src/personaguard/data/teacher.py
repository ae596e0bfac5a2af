"""Backend `openai`: generate examples with an LLM behind any OpenAI-compatible endpoint.

Usage (reached through generate.run; the key is read from the environment, never stored):
    export OPENAI_API_KEY=sk-...
    personaguard generate --set backend=openai --set llm_model=gpt-4o-mini --n 400
    # vLLM / Ollama / llama.cpp server on this machine: no key needed
    personaguard generate --set backend=openai --set base_url=http://127.0.0.1:8000/v1 --set llm_model=my-model

Design:
- Transport goes through personaguard.llm_client (the policy the judge and Llama Guard share): 429,
  5xx, timeouts and connection errors back off exponentially with jitter (or as Retry-After says), up
  to cfg.max_retries per answer; any other 4xx means a wrong key, model or endpoint, so it stops the
  run at once with one line instead of spending the budget. Each attempt passes `_take_request`, so
  every HTTP request counts against cfg.request_budget and in the stats.
- Invalid answers (see teacher_prompts.parse_example) get their own cfg.max_retries, then the example
  is skipped and counted; it stays missing, so the next run tries it again.
- Worker threads only talk to the endpoint. The calling thread owns the output file, the dedup
  set and the counters: writes need no lock, and a kill loses at most the requests in flight.
- cfg.request_budget caps requests started; once spent, no new request goes out and the run ends
  normally (what is written stays; run again with a larger budget to continue).
"""

from __future__ import annotations

import threading
import zlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from .. import llm_client
from ..config import GenerateConfig
from ..errors import PersonaguardError
from ..guardrails import Guardrail, registry
from ..llm_client import LLMClient, RetriesExhausted
from ..schema import Example
from .teacher_prompts import RESPONSE_FORMAT, InvalidOutput, Job, build_messages, normalise_message, parse_example, plan_kind

if TYPE_CHECKING:
    import openai

WHAT = "backend 'openai'"  # how messages name this caller


@dataclass
class LLMStats:
    """Counters of one run; workers add through `add` (locked), the main thread owns the rest."""

    requests: int = 0
    failed_requests: int = 0  # 429/5xx/timeout/connection errors (each one, retried or not)
    invalid: int = 0  # answers rejected by validation (each one, retried or not)
    duplicates: int = 0  # valid answers whose final message was already in the data
    skipped: int = 0  # examples given up after their retries
    written: int = 0
    budget_exhausted: bool = False
    last_error: str = ""  # of the last failed request, for the message when none succeeds
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for k, v in counts.items():
                setattr(self, k, getattr(self, k) + v)


class _Stop(Exception):
    """The budget is spent or the run is shutting down: leave the example for the next run."""


def api_key(cfg: GenerateConfig) -> str:
    """The key from cfg.api_key_env (a placeholder for a server on this machine); a one-line error if empty."""
    return llm_client.api_key(cfg.api_key_env, cfg.base_url, WHAT)


class _Worker:
    """Turns one Job into one valid Example (or None after the retries); safe to call from threads."""

    def __init__(self, g: Guardrail, cfg: GenerateConfig, fixed: dict, stats: LLMStats):
        self.g, self.cfg, self.fixed, self.stats = g, cfg, fixed, stats
        self.stop = threading.Event()
        self._budget_lock = threading.Lock()
        self.client = LLMClient(
            cfg.base_url,
            cfg.api_key_env,
            what=WHAT,
            timeout=cfg.request_timeout,
            max_retries=cfg.max_retries,
            sleep=self._pause,
            on_failure=self._failed,
        )

    def _take_request(self) -> None:
        with self._budget_lock:
            if self.stop.is_set():
                raise _Stop
            if self.cfg.request_budget and self.stats.requests >= self.cfg.request_budget:
                self.stats.budget_exhausted = True
                raise _Stop
            self.stats.add(requests=1)

    def _pause(self, seconds: float) -> None:
        """The backoff between attempts; a shutdown (stop set) ends it and abandons the example."""
        if self.stop.wait(seconds):
            raise _Stop

    def _failed(self, detail: str) -> None:
        self.stats.add(failed_requests=1)
        self.stats.last_error = detail

    def _complete(self, messages: list[dict], seed: int) -> str | None:
        """One answer's text, retrying transport failures; None once they are used up."""

        def send(sdk: openai.OpenAI):
            self._take_request()  # every attempt, retries included, counts against the budget
            return sdk.chat.completions.create(
                model=self.cfg.llm_model, messages=messages, response_format=RESPONSE_FORMAT, seed=seed
            )

        try:
            resp = self.client.request(send)
        except RetriesExhausted:
            return None
        choice = resp.choices[0].message if resp.choices else None
        return (choice.content or "") if choice else ""

    def example(self, job: Job) -> tuple[Example | None, str]:
        """(example, "ok") or (None, reason) with reason in invalid / failed / stopped."""
        fixed_persona, fixed_history = self.fixed.get(job.split, ({}, []))
        messages = build_messages(self.g, self.cfg, job, fixed_persona, fixed_history)
        try:
            for attempt in range(self.cfg.max_retries + 1):
                seed = zlib.crc32(f"{self.cfg.seed}-{job.id}-{job.tries}-{attempt}".encode())
                content = self._complete(messages, seed)
                if content is None:
                    return None, "failed"
                try:
                    return parse_example(content, self.g, self.cfg, job, fixed_persona, fixed_history), "ok"
                except InvalidOutput:
                    self.stats.add(invalid=1)
            return None, "invalid"
        except _Stop:
            return None, "stopped"


def generate(
    g: Guardrail,
    cfg: GenerateConfig,
    todo: list[tuple[str, str, int, bool]],
    fixed: dict,
    seen: set[str],
    write: Callable[[Example], None],
    bar,
) -> LLMStats:
    """Produce the `todo` items (id, split, i, triggering) and `write` each as it completes.

    `seen` holds the dedup keys of the final messages already on disk; it is updated in place.
    `fixed` maps split -> (persona, history) used by the fixed variations.
    """
    stats = LLMStats()
    if not todo:  # a finished data set needs no key and no endpoint
        return stats
    worker = _Worker(g, cfg, fixed, stats)
    others = [o for name, o in sorted(registry([cfg.guardrails_dir] if cfg.guardrails_dir else None).items()) if name != g.name]
    pending: deque[Job] = deque()
    for ex_id, split, i, triggering in todo:
        job = Job(ex_id, split, i, triggering)
        plan_kind(cfg, job, others)
        pending.append(job)
    inflight: dict[Future, Job] = {}
    pool = ThreadPoolExecutor(cfg.concurrency, thread_name_prefix="personaguard-llm")
    try:
        while pending or inflight:
            while pending and len(inflight) < cfg.concurrency and not stats.budget_exhausted:
                job = pending.popleft()
                inflight[pool.submit(worker.example, job)] = job
            if not inflight:
                break
            finished, _ = wait(inflight, return_when=FIRST_COMPLETED)
            for fut in finished:
                _settle(inflight.pop(fut), *fut.result(), cfg, stats, seen, write, pending, bar)
    finally:
        worker.stop.set()  # wakes workers sleeping in a backoff so the process can exit
        pool.shutdown(wait=False, cancel_futures=True)
    if stats.requests and stats.failed_requests == stats.requests:
        # nothing ever got through: a server that is down or a wrong base_url, not bad luck
        raise PersonaguardError(
            f"backend 'openai': all {stats.requests} requests to {cfg.base_url or 'api.openai.com'} failed "
            f"(last: {stats.last_error}); is the server running and base_url right?"
        )
    return stats


def _settle(
    job: Job,
    ex: Example | None,
    reason: str,
    cfg: GenerateConfig,
    stats: LLMStats,
    seen: set[str],
    write: Callable[[Example], None],
    pending: deque,
    bar,
) -> None:
    """Main-thread bookkeeping for one finished job: dedup, write, requeue or count a skip."""
    if ex is not None:
        key = normalise_message(ex.message)
        if key not in seen:
            seen.add(key)
            write(ex)
            stats.written += 1
            bar.update(1)
        else:
            stats.duplicates += 1
            if job.tries < cfg.max_retries:
                pending.appendleft(replace(job, tries=job.tries + 1, avoid=[*job.avoid, ex.message]))
            else:
                stats.skipped += 1
    elif reason != "stopped":
        stats.skipped += 1
    bar.set_postfix(
        invalid=stats.invalid, dup=stats.duplicates, failed=stats.failed_requests, skipped=stats.skipped, refresh=False
    )
