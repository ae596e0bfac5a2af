"""The one OpenAI-compatible client: the data teacher (data/teacher.py), the LLM judge
(evaluate/judge.py) and the Llama Guard baseline (evaluate/baselines.py) all talk to their endpoints
through `LLMClient`, so they share one policy for keys, retries and error messages:

- The key comes from the environment variable the caller names and goes only into the HTTP client.
  An empty variable is a one-line PersonaguardError naming it, unless the server runs on this machine
  (localhost, 127.x, ::1): local servers (vLLM, llama.cpp, Ollama) ignore the key, so a placeholder is sent.
- 408, 409, 429, every 5xx, time-outs, dropped connections and unreadable answers are retried, at most
  `max_retries` times, after the Retry-After the server asked for or else an exponential, jittered
  backoff (BASE_DELAY doubling per retry, 50-100 % of it); no wait exceeds MAX_DELAY. Any other 4xx
  (wrong key, model or URL) raises at once: asking again cannot fix it.
- The key never reaches a message or a log: exception text is redacted before it is used.

Usage:
    from personaguard.llm_client import LLMClient
    client = LLMClient("http://127.0.0.1:8000/v1", "OPENAI_API_KEY", what="LLM judge", timeout=60)
    resp = client.request(lambda sdk: sdk.chat.completions.create(model="m", messages=[...]))

Why our own retry loop and not the SDK's `max_retries` (set to 0 here): the SDK (openai 3.60, read in
`_base_client`) repeats the request inside one call, so a caller cannot count attempts (the teacher's
request_budget and failed_requests, the judge's `requests`) nor stop between them; it waits with a bare
`time.sleep` that neither a test nor the teacher's shutdown can interrupt; and its backoff tops out at
8 s, short for a rate-limited API. The SDK's timeout, error classes and parsed error bodies are used as
they are.
"""

from __future__ import annotations

import email.utils
import ipaddress
import logging
import math
import os
import random
import time
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlparse

import openai

from .errors import PersonaguardError

T = TypeVar("T")
log = logging.getLogger(__name__)

BASE_DELAY = 1.0  # seconds before the first retry when the server names none; doubles per retry (tests lower it)
MAX_DELAY = 60.0  # the longest single wait, whatever Retry-After says
RETRY_STATUS = frozenset({408, 409, 429})  # plus every 5xx, as the SDK itself would
NO_KEY = "no-key"  # what a server on this machine gets when the variable is empty (the SDK insists on a key)


class RetriesExhausted(PersonaguardError):
    """Every attempt failed with a transient error; the message names the last one (key redacted)."""


def is_local(base_url: str | None) -> bool:
    """True when base_url points at this machine (None means api.openai.com)."""
    host = urlparse(base_url).hostname if base_url else None
    if host in ("localhost", "0.0.0.0"):
        return True
    try:
        return bool(host) and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def api_key(api_key_env: str, base_url: str | None, what: str) -> str:
    """The key in $api_key_env; NO_KEY for a local server; a one-line error naming the variable otherwise."""
    key = os.environ.get(api_key_env, "").strip()
    if key:
        return key
    if is_local(base_url):
        return NO_KEY
    raise PersonaguardError(
        f"{what}: environment variable {api_key_env} is empty; export the API key for "
        f"{base_url or 'api.openai.com'} there, or set api_key_env to the variable that holds it "
        f"(any value will do for a server that needs none)"
    )


def redact(text: str, key: str | None) -> str:
    """`text` with every occurrence of the key replaced by ***."""
    return text.replace(key, "***") if key and key != NO_KEY else text


def describe(exc: BaseException, key: str | None, limit: int = 300) -> str:
    """The error as one line: the server's own message when it sent one, redacted before it is cut."""
    body = getattr(exc, "body", None)
    text = body["message"] if isinstance(body, dict) and isinstance(body.get("message"), str) else str(exc)
    return " ".join(redact(text, key).split())[:limit]


def is_transient(exc: BaseException) -> bool:
    """Whether another attempt may succeed: 408/409/429/5xx, and SDK errors without a status
    (time-outs, refused or dropped connections, answers that could not be read)."""
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in RETRY_STATUS or exc.status_code >= 500
    return isinstance(exc, openai.APIError)


def retry_after(exc: BaseException) -> float | None:
    """Seconds the server asked to wait (retry-after-ms, or Retry-After in seconds or as an HTTP date)."""
    headers = getattr(getattr(exc, "response", None), "headers", None)
    if headers is None:
        return None
    for name, per_second in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        try:
            seconds = float(headers.get(name, "")) / per_second
        except ValueError:
            continue
        if not math.isnan(seconds):
            return max(0.0, seconds)
    try:
        when = email.utils.parsedate_to_datetime(headers.get("retry-after", ""))
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - time.time())


def backoff_delay(attempt: int, exc: BaseException | None = None) -> float:
    """Seconds before retry number attempt + 1 (attempt counts from 0): Retry-After when the server sent
    one, else BASE_DELAY * 2**attempt at 50-100 % (jitter spreads concurrent clients); at most MAX_DELAY."""
    asked = retry_after(exc) if exc is not None else None
    if asked is not None:
        return min(MAX_DELAY, asked)
    return min(MAX_DELAY, BASE_DELAY * 2.0 ** min(attempt, 32)) * random.uniform(0.5, 1.0)


def _hint(status: int, api_key_env: str) -> str:
    if status in (401, 403):
        return f"check the key in ${api_key_env}"
    if status == 404:
        return "check the model name and base_url"
    return "check the model name, base_url and that the server supports this request"


class LLMClient:
    """An `openai.OpenAI` (its own retries off) behind the policy above; safe to share between threads.

    `request(send)` calls `send(sdk_client)` until it returns, retrying transient failures. Between
    attempts it calls `sleep(seconds)`: inject a recorder in tests, or a function that raises to abandon
    the wait (the teacher's shutdown). `on_failure(detail)` hears of every transient failure, retried or
    not, as one redacted line "ErrorType: message". Non-transient errors raise PersonaguardError at
    once; when the attempts run out, RetriesExhausted (a PersonaguardError).
    """

    def __init__(
        self,
        base_url: str | None,
        api_key_env: str,
        *,
        what: str,
        timeout: float = 60.0,
        max_retries: int = 4,
        sleep: Callable[[float], object] = time.sleep,
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        self.base_url, self.api_key_env, self.what = base_url, api_key_env, what
        self.max_retries, self.sleep, self.on_failure = max_retries, sleep, on_failure
        self._key = api_key(api_key_env, base_url, what)
        self.sdk = openai.OpenAI(api_key=self._key, base_url=base_url, timeout=timeout, max_retries=0)

    def __repr__(self) -> str:  # never shows the key
        return f"LLMClient(base_url={self.base_url!r}, api_key_env={self.api_key_env!r}, what={self.what!r})"

    @property
    def endpoint(self) -> str:
        return self.base_url or "api.openai.com"

    def redact(self, text: str) -> str:
        return redact(text, self._key)

    def request(self, send: Callable[[openai.OpenAI], T]) -> T:
        for attempt in range(self.max_retries + 1):
            try:
                return send(self.sdk)
            except openai.APIError as exc:
                if isinstance(exc, openai.APIStatusError) and not is_transient(exc):
                    raise PersonaguardError(
                        f"{self.what}: {self.endpoint} refused the request ({exc.status_code}: "
                        f"{describe(exc, self._key)}); {_hint(exc.status_code, self.api_key_env)}"
                    ) from None
                detail = f"{type(exc).__name__}: {describe(exc, self._key)}"
                if self.on_failure:
                    self.on_failure(detail)
                if attempt == self.max_retries:
                    raise RetriesExhausted(
                        f"{self.what}: {self.endpoint} failed after {attempt + 1} attempts (last: {detail})"
                    ) from None
                delay = backoff_delay(attempt, exc)
                log.info("%s: %s; retry %d of %d in %.1f s", self.what, detail, attempt + 1, self.max_retries, delay)
                self.sleep(delay)
        raise AssertionError("unreachable")
