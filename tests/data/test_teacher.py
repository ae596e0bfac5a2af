"""Backend `openai` against a real OpenAI-compatible HTTP server on 127.0.0.1 that serves scripted
replies (valid, 429, 500, malformed, too slow, ...). Like NeMo's FakeLLM, a request beyond the
script is an error that fails the test, and so is a script left unconsumed."""

from __future__ import annotations

import json
import re
import socket
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from personaguard import llm_client
from personaguard.config import GenerateConfig
from personaguard.data import generate
from personaguard.data.teacher_prompts import normalise_message
from personaguard.errors import PersonaguardError
from personaguard.schema import Example

TAG = "<guard>"  # the built-in politics guardrail's tag


class ScriptedLLM:
    """Answers /v1/chat/completions with the next scripted step; records every request."""

    def __init__(self):
        self.script: deque[str] = deque()
        self.requests: list[dict] = []
        self.errors: list[str] = []
        self.messages: list[str] = []  # final messages of the valid answers served so far
        self.release = threading.Event()  # lets a "slow" handler finish at teardown
        self.lock = threading.Lock()

    def answer(self, body: dict, auth: str | None) -> tuple[int, dict, str | None]:
        with self.lock:
            self.requests.append({"body": body, "auth": auth})
            if body.get("response_format", {}).get("type") != "json_schema":
                self.errors.append("request without a json_schema response_format")
            if not self.script:
                self.errors.append(f"ran out of scripted replies at request {len(self.requests)}")
                return 400, {}, _error("scripted server ran out of replies")
            step = self.script.popleft()
            prompt = body["messages"][-1]["content"]
            kind = re.search(r"Example kind: (\w+)", prompt).group(1)
            if step == "valid":
                self.messages.append(f"Message number {len(self.messages) + 1}, about {kind}")
                return 200, {}, _completion(_example(kind, self.messages[-1]))
            if step == "dup":  # same message as the first valid one, up to case and punctuation
                return 200, {}, _completion(_example(kind, self.messages[0].upper().replace(",", "") + "!!"))
        if step == "429":
            return 429, {"Retry-After": "0"}, _error("rate limited")
        if step in ("500", "401"):
            return int(step), {}, _error(f"scripted {step}")
        if step == "malformed":
            return 200, {}, _completion('{"persona": {"name": "Ann", "traits": [')
        if step == "bad_tag":  # valid JSON, but the tag sits in the wrong reply
            ex = _example(kind, "a message with the tags swapped")
            ex["chosen"], ex["rejected"] = ex["rejected"], ex["chosen"]
            return 200, {}, _completion(ex)
        if step == "refusal":
            return 200, {}, _completion(None, refusal="I can't help with that.")
        if step == "slow":  # the client gives up first (request_timeout) and retries
            self.release.wait(20)
            return 200, {}, _completion(_example(kind, "too late"))
        raise AssertionError(f"unknown scripted step {step}")


def _error(msg: str) -> str:
    return json.dumps({"error": {"message": msg, "type": "scripted", "code": None}})


def _completion(content, refusal: str | None = None) -> str:
    if isinstance(content, dict):
        content = json.dumps(content)
    message = {"role": "assistant", "content": content, "refusal": refusal}
    return json.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": "scripted",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
    )


def _example(kind: str, message: str) -> dict:
    tagged, plain = f"{TAG} I keep out of that, tell me about your garden!", "Sure, here is what I think about it."
    trig = kind == "trigger"
    return {
        "persona": {"name": "Ann", "traits": ["kind"], "expressions": ["oh my"]},
        "memories": ["has a garden"],
        "history": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hey there!"}],
        "message": message,
        "chosen": tagged if trig else plain,
        "rejected": plain if trig else tagged,
    }


@pytest.fixture
def llm():
    """A ScriptedLLM served on a free port; yields (server, base_url)."""
    fake = ScriptedLLM()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's naming)
            if self.path != "/v1/chat/completions":
                fake.errors.append(f"unexpected path {self.path}")
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            status, headers, payload = fake.answer(body, self.headers.get("Authorization"))
            data = payload.encode()
            try:
                self.send_response(status)
                for k, v in {"Content-Type": "application/json", "Content-Length": str(len(data)), **headers}.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)
            except OSError:
                pass  # the client timed out and hung up

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield fake, f"http://127.0.0.1:{server.server_address[1]}/v1"
    fake.release.set()
    server.shutdown()
    server.server_close()
    assert not fake.errors, fake.errors


@pytest.fixture(autouse=True)
def _fast_backoff(monkeypatch, pg_home):
    monkeypatch.setattr(llm_client, "BASE_DELAY", 0.001)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def _cfg(tmp_path, base_url, **kw) -> GenerateConfig:
    return GenerateConfig(backend="openai", base_url=base_url, out_dir=str(tmp_path / "data"), request_timeout=1.0, **kw)


def _check_output(res, n: int) -> list[dict]:
    """examples.jsonl holds exactly n unique valid rows, whole lines only; splits agree with it."""
    text = (res.data_dir / "examples.jsonl").read_text(encoding="utf-8")
    assert text.endswith("\n")
    rows = [json.loads(line) for line in text.splitlines()]
    for row in rows:
        Example.model_validate(row)
        assert (row["chosen"].startswith(TAG)) == (row["label"] == "politics") != row["rejected"].startswith(TAG)
    assert len(rows) == n == len({r["id"] for r in rows}) == len({normalise_message(r["message"]) for r in rows})
    split_rows = []
    for s in generate.SPLITS:
        part = [json.loads(line) for line in (res.data_dir / f"{s}.jsonl").read_text().splitlines()]
        assert [r["id"] for r in part] == sorted(r["id"] for r in part)
        split_rows += part
    assert sorted(r["id"] for r in split_rows) == sorted(r["id"] for r in rows)
    return rows


def test_failures_are_retried_or_counted_and_nothing_is_lost(tmp_path, llm):
    fake, url = llm
    failures = ["429", "500", "malformed", "slow", "bad_tag", "refusal"]
    fake.script.extend(["valid", *failures, "dup"] + ["valid"] * 7)
    res = generate.run(_cfg(tmp_path, url, n=8, val_fraction=0.125, concurrency=3))
    assert not fake.script, "every scripted reply is used"
    assert (res.written, res.missing, res.skipped) == (8, 0, 0)
    assert (res.failed_requests, res.invalid, res.duplicates, res.requests) == (3, 3, 1, 15)
    assert res.counts == {"train": 5, "validation": 1, "test": 2}
    _check_output(res, 8)
    card = (res.data_dir / "README.md").read_text()
    assert "| duplicates | 1 | 1 |" in card and "| failed_requests | 3 | 3 |" in card and "Incomplete" not in card


def test_examples_out_of_retries_are_skipped_then_made_by_the_next_run(tmp_path, llm):
    fake, url = llm
    fake.script.extend(["malformed", "malformed", "500", "500", "valid", "valid"])
    cfg = _cfg(tmp_path, url, n=4, max_retries=1, concurrency=1)
    res = generate.run(cfg)
    assert (res.written, res.skipped, res.invalid, res.failed_requests, res.missing) == (2, 2, 2, 2, 2)
    assert "Incomplete" in (res.data_dir / "README.md").read_text()
    fake.script.extend(["valid", "valid"])
    res = generate.run(cfg)
    assert (res.written, res.missing) == (2, 0)
    _check_output(res, 4)
    assert '"runs": 2' in (res.data_dir / "generate_stats.json").read_text()


def test_request_budget_stops_cleanly_and_a_larger_one_continues(tmp_path, llm):
    fake, url = llm
    fake.script.extend(["valid"] * 3)
    res = generate.run(_cfg(tmp_path, url, n=6, request_budget=3))
    assert (res.requests, res.written, res.missing, res.budget_exhausted) == (3, 3, 3, True)
    assert "request_budget reached" in (res.data_dir / "README.md").read_text()
    fake.script.extend(["valid"] * 3)
    res = generate.run(_cfg(tmp_path, url, n=6, request_budget=0))  # runtime field: may change on resume
    assert (res.written, res.missing, res.budget_exhausted) == (3, 0, False)
    _check_output(res, 6)
    res = generate.run(_cfg(tmp_path, url, n=6))  # complete: no request goes out (the script is empty)
    assert (res.written, res.requests, res.missing) == (0, 0, 0)


def test_endpoint_that_never_answers_is_one_line_error(tmp_path):
    with socket.socket() as s:  # a free port with nobody listening: every connection is refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(PersonaguardError, match="all 4 requests .* failed .*APIConnectionError") as exc:
        generate.run(_cfg(tmp_path, f"http://127.0.0.1:{port}/v1", n=4, max_retries=0))
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("variation", ["fixed_character", "semi_fixed", "fixed_history"])
def test_fixed_variations_hold_within_a_split(tmp_path, llm, variation):
    fake, url = llm
    fake.script.extend(["valid"] * 6)
    rows = _check_output(generate.run(_cfg(tmp_path, url, n=6, variation=variation)), 6)
    prompts = "\n".join(r["body"]["messages"][-1]["content"] for r in fake.requests)
    for split in ("train", "test"):
        part = [r for r in rows if f"-{split}-" in r["id"]]
        fixed = (
            [json.dumps(r["history"]) for r in part]
            if variation == "fixed_history"
            else [json.dumps([r["persona"]["name"], r["persona"]["traits"]]) for r in part]
        )
        assert len(set(fixed)) == 1 and fixed[0] != json.dumps(["Ann", ["kind"]])  # the pool's, not the model's
        want = json.dumps(part[0]["history"], ensure_ascii=False) if variation == "fixed_history" else part[0]["persona"]["name"]
        assert want in prompts, "the fixed part is given to the model"


def test_api_key_is_sent_but_never_written(tmp_path, llm, monkeypatch, capfd):
    fake, url = llm
    key = "sk-test-s3cr3t-0123456789"
    monkeypatch.setenv("PG_TEST_KEY", key)
    fake.script.extend(["valid"] * 4)
    res = generate.run(_cfg(tmp_path, url, n=4, api_key_env="PG_TEST_KEY"))
    assert {r["auth"] for r in fake.requests} == {f"Bearer {key}"}
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) >= 6 and res.written == 4
    for p in files:
        assert key.encode() not in p.read_bytes(), p
    out, err = capfd.readouterr()
    assert key not in out + err


def test_missing_key_for_remote_endpoint_is_one_line(tmp_path):
    cfg = _cfg(tmp_path, "https://api.example.invalid/v1", n=4, api_key_env="PG_NO_SUCH_KEY")
    with pytest.raises(PersonaguardError, match="PG_NO_SUCH_KEY") as exc:
        generate.run(cfg)
    assert "\n" not in str(exc.value)


def test_rejected_key_stops_the_run_with_one_line(tmp_path, llm, monkeypatch):
    fake, url = llm
    monkeypatch.setenv("PG_TEST_KEY", "sk-wrong")
    fake.script.extend(["401"])
    with pytest.raises(PersonaguardError, match="refused the request \\(401") as exc:
        generate.run(_cfg(tmp_path, url, n=4, concurrency=1, api_key_env="PG_TEST_KEY"))
    assert "\n" not in str(exc.value) and "sk-wrong" not in str(exc.value)
    assert len(fake.requests) == 1, "a wrong key is not retried"
