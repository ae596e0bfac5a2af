"""Backend `openai`: generate examples with an LLM behind any OpenAI-compatible endpoint.

Usage (reached through generate.run; the key is read from the environment, never stored):
    export OPENAI_API_KEY=sk-...
    personaguard generate --set backend=openai --set llm_model=gpt-4o-mini --n 400
    # vLLM / Ollama / llama.cpp server on this machine: no key needed
    personaguard generate --set backend=openai --set base_url=http://127.0.0.1:8000/v1 --set llm_model=my-model

Design:
- Our retry policy is the only one in force (the SDK's max_retries=0): 429, 5xx, timeouts and
  connection errors back off exponentially with jitter (or as Retry-After says), up to
  cfg.max_retries per answer. 400/401/403/404/422 mean a wrong key, model or endpoint, so they
  stop the run at once with one line instead of spending the budget.
- Invalid answers (see teacher_prompts.parse_example) get their own cfg.max_retries, then the example
  is skipped and counted; it stays missing, so the next run tries it again.
- Worker threads only talk to the endpoint. The calling thread owns the output file, the dedup
  set and the counters: writes need no lock, and a kill loses at most the requests in flight.
- cfg.request_budget caps requests started; once spent, no new request goes out and the run ends
  normally (what is written stays; run again with a larger budget to continue).
"""

from __future__ import annotations

import os
import random
import threading
import zlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from urllib.parse import urlparse

import openai

from ..config import GenerateConfig
from ..errors import PersonaguardError
from ..guardrails import Guardrail, registry
from .teacher_prompts import RESPONSE_FORMAT, InvalidOutput, Job, build_messages, normalise_message, parse_example, plan_kind
from ..schema import Example

BACKOFF_BASE = 1.0  # seconds before the first retry; doubles each time (tests lower it)
MAX_DELAY = 60.0
RETRYABLE = (openai.RateLimitError, openai.InternalServerError, openai.APITimeoutError, openai.APIConnectionError)
FATAL = (
    openai.BadRequestError, openai.AuthenticationError, openai.PermissionDeniedError,
    openai.NotFoundError, openai.UnprocessableEntityError,
)
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}


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
    """The key from cfg.api_key_env; local servers get a placeholder (the SDK insists on one)."""
    key = os.environ.get(cfg.api_key_env, "").strip()
    if key:
        return key
    host = urlparse(cfg.base_url).hostname if cfg.base_url else None
    if host in LOCAL_HOSTS:
        return "no-key"
    raise PersonaguardError(
        f"backend 'openai': environment variable {cfg.api_key_env} is empty; export your API key for "
        f"{cfg.base_url or 'api.openai.com'} there, or set api_key_env to the variable that holds it"
    )


def backoff_delay(attempt: int, exc: Exception | None = None) -> float:
    """Retry-After when the server sends one, else exponential with jitter (half fixed, half random)."""
    if isinstance(exc, openai.APIStatusError):
        try:
            return min(MAX_DELAY, max(0.0, float(exc.response.headers.get("retry-after", ""))))
        except ValueError:
            pass
    cap = min(MAX_DELAY, BACKOFF_BASE * 2**attempt)
    return cap / 2 + random.uniform(0, cap / 2)


class _Worker:
    """Turns one Job into one valid Example (or None after the retries); safe to call from threads."""

    def __init__(self, g: Guardrail, cfg: GenerateConfig, key: str, fixed: dict, stats: LLMStats):
        self.g, self.cfg, self.key, self.fixed, self.stats = g, cfg, key, fixed, stats
        self.client = openai.OpenAI(api_key=key, base_url=cfg.base_url, timeout=cfg.request_timeout, max_retries=0)
        self.stop = threading.Event()
        self._budget_lock = threading.Lock()

    def _take_request(self) -> None:
        with self._budget_lock:
            if self.stop.is_set():
                raise _Stop
            if self.cfg.request_budget and self.stats.requests >= self.cfg.request_budget:
                self.stats.budget_exhausted = True
                raise _Stop
            self.stats.add(requests=1)

    def _one_line(self, exc: object) -> str:
        """An error's first line for a one-line message, the key masked should a server echo it."""
        return ((str(exc).splitlines() or [""])[0]).replace(self.key, "***")[:300]

    def _complete(self, messages: list[dict], seed: int) -> str | None:
        """One answer's text, retrying transport failures; None once they are used up."""
        for attempt in range(self.cfg.max_retries + 1):
            self._take_request()
            try:
                resp = self.client.chat.completions.create(
                    model=self.cfg.llm_model, messages=messages, response_format=RESPONSE_FORMAT, seed=seed
                )
            except FATAL as exc:
                msg = self._one_line(getattr(exc, "message", exc))
                raise PersonaguardError(
                    f"backend 'openai': {self.cfg.base_url or 'api.openai.com'} refused the request "
                    f"({exc.status_code}: {msg}); check llm_model, base_url and the key in {self.cfg.api_key_env}"
                ) from None
            except (*RETRYABLE, openai.APIError) as exc:  # APIError: whatever else the SDK raises (409, odd bodies)
                self.stats.add(failed_requests=1)
                self.stats.last_error = f"{type(exc).__name__}: {self._one_line(exc)}"
                if attempt < self.cfg.max_retries and self.stop.wait(backoff_delay(attempt, exc)):
                    raise _Stop from None
                continue
            choice = resp.choices[0].message if resp.choices else None
            return (choice.content or "") if choice else ""
        return None

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
    g: Guardrail, cfg: GenerateConfig, todo: list[tuple[str, str, int, bool]], fixed: dict,
    seen: set[str], write: Callable[[Example], None], bar,
) -> LLMStats:
    """Produce the `todo` items (id, split, i, triggering) and `write` each as it completes.

    `seen` holds the dedup keys of the final messages already on disk; it is updated in place.
    `fixed` maps split -> (persona, history) used by the fixed variations.
    """
    stats = LLMStats()
    if not todo:  # a finished data set needs no key and no endpoint
        return stats
    worker = _Worker(g, cfg, api_key(cfg), fixed, stats)
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


def _settle(job: Job, ex: Example | None, reason: str, cfg: GenerateConfig, stats: LLMStats,
            seen: set[str], write: Callable[[Example], None], pending: deque, bar) -> None:
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
    bar.set_postfix(invalid=stats.invalid, dup=stats.duplicates, failed=stats.failed_requests, skipped=stats.skipped, refresh=False)
