"""llm_client against the scripted OpenAI-compatible server: what is retried and how long it waits
(sleep injected: nothing really sleeps), what is not, and that the key never leaves the HTTP header."""

from __future__ import annotations

import email.utils
import logging
import socket
import subprocess
import sys
import time

import httpx
import openai
import pytest

from personaguard import llm_client
from personaguard.errors import PersonaguardError
from personaguard.llm_client import LLMClient, RetriesExhausted, backoff_delay, is_local
from tests.scripted_openai import ScriptedOpenAI

KEY = "sk-sentinel-7f3a9c2e51d04b86"


@pytest.fixture
def server():
    with ScriptedOpenAI() as s:
        yield s


@pytest.fixture
def make(server, monkeypatch):
    """make(**kw) -> (client, sleeps, failures) for the scripted server, key KEY in $PG_TEST_KEY."""
    monkeypatch.setenv("PG_TEST_KEY", KEY)

    def make(**kw):
        sleeps: list[float] = []
        failures: list[str] = []
        kw = {"max_retries": 3, "sleep": sleeps.append, "on_failure": failures.append, **kw}
        client = LLMClient(server.base_url, "PG_TEST_KEY", what="test endpoint", timeout=5, **kw)
        return client, sleeps, failures

    return make


def ask(client: LLMClient) -> str:
    resp = client.request(lambda sdk: sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}]))
    return resp.choices[0].message.content


def test_transient_errors_are_retried_then_succeed(server, make):
    server.error(500).error(503).reply(429, {"error": {"message": "slow down"}}).chat("hello")
    client, sleeps, failures = make()
    assert ask(client) == "hello"
    assert len(server.requests) == 4 and len(sleeps) == 3 and len(failures) == 3
    assert failures[0].startswith("InternalServerError: ") and failures[2].startswith("RateLimitError: slow down")
    assert 0.5 <= sleeps[0] <= 1.0 and 1.0 <= sleeps[1] <= 2.0 and 2.0 <= sleeps[2] <= 4.0  # doubling, jittered
    assert {r["headers"]["authorization"] for r in server.requests} == {f"Bearer {KEY}"}


@pytest.mark.parametrize("status", [408, 409, 429, 502])
def test_retried_statuses(server, make, status):
    server.error(status).chat("ok")
    client, sleeps, _ = make()
    assert ask(client) == "ok" and len(sleeps) == 1


@pytest.mark.parametrize(
    "status, hint",
    [
        (400, "supports this request"),
        (401, "$PG_TEST_KEY"),
        (403, "$PG_TEST_KEY"),
        (404, "model name and base_url"),
        (422, "supports this request"),
    ],
)
def test_other_client_errors_are_not_retried(server, make, status, hint):
    server.error(status, "you asked for something odd")
    client, sleeps, failures = make()
    with pytest.raises(PersonaguardError, match=rf"refused the request \({status}: you asked for something odd\)") as info:
        ask(client)
    assert not isinstance(info.value, RetriesExhausted) and hint in str(info.value)
    assert len(server.requests) == 1 and sleeps == [] and failures == []


def test_retry_after_is_honoured(server, make):
    server.reply(429, {"error": {"message": "slow down"}}, headers={"Retry-After": "7"})
    server.reply(503, {"error": {"message": "busy"}}, headers={"retry-after-ms": "1500"})
    server.reply(429, {"error": {"message": "much later"}}, headers={"Retry-After": "3600"})
    server.chat("ok")
    client, sleeps, _ = make()
    assert ask(client) == "ok"
    assert sleeps == [7.0, 1.5, llm_client.MAX_DELAY]


def test_retry_after_as_an_http_date():
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    resp = httpx.Response(429, headers={"Retry-After": when}, request=httpx.Request("POST", "http://h/v1"))
    exc = openai.RateLimitError("slow down", response=resp, body=None)
    assert 25 <= backoff_delay(0, exc) <= 30


def test_backoff_doubles_up_to_the_cap(monkeypatch):
    monkeypatch.setattr(llm_client.random, "uniform", lambda a, b: b)  # the top of the jitter range
    assert [backoff_delay(a) for a in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert backoff_delay(10_000) == 60


def test_attempts_are_bounded(server, make):
    server.error(500).error(500).error(500)
    client, sleeps, failures = make(max_retries=2)
    with pytest.raises(RetriesExhausted, match=r"failed after 3 attempts \(last: InternalServerError"):
        ask(client)
    assert len(server.requests) == 3 and len(sleeps) == 2 and len(failures) == 3


def test_refused_connections_are_retried_then_reported(monkeypatch):
    with socket.socket() as s:  # a free port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sleeps: list[float] = []
    client = LLMClient(f"http://127.0.0.1:{port}/v1", "PG_UNSET_KEY", what="test endpoint", max_retries=2, sleep=sleeps.append)
    with pytest.raises(RetriesExhausted, match="after 3 attempts .*APIConnectionError") as info:
        ask(client)
    assert len(sleeps) == 2 and "\n" not in str(info.value)


def test_timeouts_and_connection_errors_are_transient():
    req = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")
    errors = [openai.APITimeoutError(request=req), openai.APIConnectionError(request=req)]
    sleeps: list[float] = []

    def send(sdk):
        if errors:
            raise errors.pop(0)
        return "ok"

    client = LLMClient("http://127.0.0.1:9/v1", "PG_UNSET_KEY", what="t", max_retries=4, sleep=sleeps.append)
    assert client.request(send) == "ok"
    assert len(sleeps) == 2 and sleeps[1] > 0


def test_a_sleep_that_raises_abandons_the_request(server, make):
    class Stop(Exception):
        pass

    def sleep(seconds):
        raise Stop

    server.error(500)
    client, _, failures = make(sleep=sleep)
    with pytest.raises(Stop):
        ask(client)
    assert len(server.requests) == 1 and len(failures) == 1


def test_missing_key_is_one_line_naming_the_variable(monkeypatch):
    monkeypatch.delenv("PG_NO_SUCH_KEY", raising=False)
    with pytest.raises(PersonaguardError, match="environment variable PG_NO_SUCH_KEY is empty") as info:
        LLMClient("https://api.example.invalid/v1", "PG_NO_SUCH_KEY", what="test endpoint")
    assert "\n" not in str(info.value)
    monkeypatch.setenv("PG_NO_SUCH_KEY", "   ")  # blank counts as missing
    with pytest.raises(PersonaguardError, match="PG_NO_SUCH_KEY"):
        LLMClient(None, "PG_NO_SUCH_KEY", what="test endpoint")  # None = api.openai.com


def test_a_local_server_needs_no_key(server, monkeypatch):
    monkeypatch.delenv("PG_NO_SUCH_KEY", raising=False)
    server.chat("hi")
    assert ask(LLMClient(server.base_url, "PG_NO_SUCH_KEY", what="t")) == "hi"
    assert server.requests[0]["headers"]["authorization"] == f"Bearer {llm_client.NO_KEY}"


@pytest.mark.parametrize(
    "url, local",
    [
        ("http://localhost:8000/v1", True),
        ("http://127.0.0.1:8000/v1", True),
        ("http://127.0.1.1/v1", True),
        ("http://[::1]:8000/v1", True),
        ("http://0.0.0.0:8000/v1", True),
        ("https://api.openai.com/v1", False),
        ("http://10.0.0.5:8000/v1", False),
        ("http://localhost.example.com/v1", False),
        (None, False),
    ],
)
def test_is_local(url, local):
    assert is_local(url) is local


def test_the_key_never_appears_in_messages_or_logs(server, make, caplog, capfd):
    """A server that echoes the key (some proxies do) in retried and fatal errors: only *** comes out."""
    caplog.set_level(logging.DEBUG)  # the SDK's and httpx's own debug logs included
    server.error(500, f"upstream rejected Bearer {KEY}").error(401, f"Incorrect API key provided: {KEY}")
    client, sleeps, failures = make()
    with pytest.raises(PersonaguardError) as info:
        ask(client)
    msg = str(info.value)
    assert "Incorrect API key provided: ***" in msg and "$PG_TEST_KEY" in msg and KEY not in msg
    assert failures == ["InternalServerError: upstream rejected Bearer ***"]
    assert "retry 1 of 3" in caplog.text  # the retry was logged, redacted
    assert KEY not in caplog.text and KEY not in repr(client)
    out, err = capfd.readouterr()
    assert KEY not in out + err


def test_exhausted_message_is_redacted_too(server, make):
    server.error(503, f"key {KEY} over quota").error(503, f"key {KEY} over quota")
    client, _, _ = make(max_retries=1)
    with pytest.raises(RetriesExhausted) as info:
        ask(client)
    assert KEY not in str(info.value) and "key *** over quota" in str(info.value)


def test_importing_the_client_loads_neither_torch_nor_a_stage():
    code = (
        "import sys, personaguard.llm_client\n"
        "bad = [m for m in sys.modules if m.split('.')[0] == 'torch' or m.startswith(('personaguard.data', "
        "'personaguard.train', 'personaguard.evaluate', 'personaguard.stack', 'personaguard.report'))]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
