"""A scripted OpenAI-compatible HTTP server for tests (NeMo's FakeLLM idea, over real HTTP).

Each POST takes the next scripted reply (or, once the script is empty, the answer of a rule set with
`respond_with`); a request nothing answers is answered 418 (not retried by our clients) and recorded, and leaving the `with` block fails the test if that happened
or if scripted replies were left unused. Listens on 127.0.0.1, a free port; no sleeps.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def chat_body(content: str | None) -> dict:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": "scripted",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def completion_body(text: str) -> dict:
    return {
        "id": "cmpl-test",
        "object": "text_completion",
        "created": 0,
        "model": "scripted",
        "choices": [{"index": 0, "finish_reason": "stop", "text": text, "logprobs": None}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


class ScriptedOpenAI:
    def __init__(self):
        self.script: deque = deque()
        self.requests: list[dict] = []  # {"path", "json", "headers" (lower-case names)} per request
        self.overrun: list[str] = []
        self.responder = None  # fn(path, request json) -> (status, body): answers once the script is empty
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def reply(self, status: int = 200, body: dict | str | None = None, headers: dict | None = None) -> ScriptedOpenAI:
        self.script.append((status, body if body is not None else {}, headers or {}))
        return self

    def chat(self, content: str | None) -> ScriptedOpenAI:
        return self.reply(200, chat_body(content))

    def completion(self, text: str) -> ScriptedOpenAI:
        return self.reply(200, completion_body(text))

    def respond_with(self, fn) -> ScriptedOpenAI:
        """Answer every request beyond the script with fn(path, json) -> (status, body) (a rule, not a list)."""
        self.responder = fn
        return self

    def error(self, status: int, message: str = "scripted error") -> ScriptedOpenAI:
        return self.reply(status, {"error": {"message": message, "type": "server_error", "code": None}})

    def _handler(self):
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # http.server calls do_<METHOD>
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with outer._lock:
                    seen = {k.lower(): v for k, v in self.headers.items()}
                    outer.requests.append({"path": self.path, "json": json.loads(raw or b"{}"), "headers": seen})
                    item = outer.script.popleft() if outer.script else None
                    if item is None and outer.responder is not None:
                        item = (*outer.responder(self.path, outer.requests[-1]["json"]), {})
                    if item is None:
                        outer.overrun.append(self.path)
                if item is None:
                    item = (418, {"error": {"message": "scripted server ran out of replies"}}, {})
                status, body, headers = item
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # keep test output clean
                pass

        return Handler

    def __enter__(self) -> ScriptedOpenAI:
        self._thread.start()
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if exc_type is None:
            assert not self.overrun, f"scripted server ran out of replies for {self.overrun}"
            assert not self.script, f"{len(self.script)} scripted replies were never requested"
