"""The web playground and `personaguard serve` / `chat` as a user runs them: a real uvicorn server,
a real headless Chromium, and the CLI in a subprocess."""

from __future__ import annotations

import contextlib
import html
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

import httpx

from tests.browser import Page
from tests.serve.conftest import MESSAGE

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(app, port: int):
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def test_playground_runs_a_turn_in_headless_chromium(serve_cfg, engine, tmp_path, monkeypatch):
    """Open the playground with persona Maya and one message in the URL: the page lists the personas
    and guardrails, sends the turn, and shows the guard decision and the streamed reply."""
    from personaguard.serve.app import create_app

    monkeypatch.delenv(serve_cfg.token_env, raising=False)
    port = free_port()
    with running(create_app(serve_cfg, engine), port) as url:
        page = Page(f"{url}/?persona=maya&say={quote(MESSAGE)}", tmp_path / "profile")
        try:
            page.wait_for("document.querySelector('.turn.assistant[data-done]') !== null")
            dom = page.evaluate("document.documentElement.outerHTML")
        finally:
            page.close()
    assert '<option value="persona:maya">Maya</option>' in dom, dom[:2000]
    assert re.search(r'<input type="checkbox" value="politics">', dom) and 'value="meeting"' in dom
    turn = re.search(r'<div class="turn assistant" data-done="1">(.*?)</div>\s*</div>', dom, re.S)
    assert turn, dom[dom.find("<main>") : dom.find("<script>")]
    assert 'class="guard fired" data-guardrail="politics"' in turn.group(1)
    assert "guard: politics fired (score" in turn.group(1)
    reply = html.unescape(re.search(r'<span class="bubble">(.*?)</span>', turn.group(1), re.S).group(1))
    full = engine_reply(engine, serve_cfg.default_max_tokens)
    assert reply == full and reply.startswith(engine.tag)
    assert f'<span class="bubble">{html.escape(MESSAGE, quote=False)}</span>' in dom


def engine_reply(engine, max_tokens: int) -> str:
    """Maya's whole reply to MESSAGE with her guardrails, straight from the engine (greedy)."""
    from personaguard.schema import Persona, Snapshot

    snap = Snapshot(id="t", message=MESSAGE, persona=Persona(name="Maya", traits=["warm and curious"], expressions=["oh nice!"]))
    return "".join(engine.turn(snap, ["politics"], max_tokens).pieces)


def _cli(*args, stdin=None, env=None, timeout=180):
    return subprocess.run(
        [sys.executable, "-m", "personaguard.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(REPO / "src"), **(env or {})},
        cwd=REPO,
    )


def test_cli_serve_answers_the_openai_client_and_keeps_the_token_out_of_its_logs(serve_cfg, tmp_path):
    import openai

    port, secret = free_port(), "tok-" + "x" * 20
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "PERSONAGUARD_SERVER_TOKEN": secret}
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "personaguard.cli", "serve", "--adapters-dir", serve_cfg.adapters_dir,
         "--set", f"personas_dir={serve_cfg.personas_dir}", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO,
    )  # fmt: skip
    try:
        for _ in range(600):
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            time.sleep(0.1)
        api = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=secret, max_retries=0)
        out = api.chat.completions.create(model="persona:maya", messages=[{"role": "user", "content": MESSAGE}], max_tokens=3)
        assert out.model_extra["guard"]["triggered"] in (True, False) and out.choices[0].message.content is not None
        # streaming: the decision comes in the first chunk, before any text, and equals the greedy answer's
        stream = api.chat.completions.create(
            model="persona:maya", messages=[{"role": "user", "content": MESSAGE}], max_tokens=3, stream=True
        )
        chunks = list(stream)
        assert chunks[0].model_extra["guard"] == out.model_extra["guard"] and not chunks[0].choices[0].delta.content
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == out.choices[0].message.content
        bad = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="wrong", max_retries=0)
        try:
            bad.models.list()
            raise AssertionError("a wrong token was accepted")
        except openai.AuthenticationError:
            pass
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()
    text = (tmp_path / "serve.log").read_text()
    assert "playground: http://127.0.0.1:" in text and "persona:maya" in text and "POST /v1/chat/completions" in text
    assert secret not in text


def test_cli_chat_locally_from_stdin(serve_cfg):
    res = _cli(
        "chat", "--set", f"adapters_dir={serve_cfg.adapters_dir}", "--set", f"personas_dir={serve_cfg.personas_dir}",
        "-p", "maya", "--max-tokens", "3", stdin=f"{MESSAGE}\n/quit\n",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "Chatting with maya." in res.stdout and "[guard] " in res.stdout and "maya> " in res.stdout


def test_cli_serve_and_chat_bad_input_is_one_line(serve_cfg, tmp_path):
    res = _cli("serve", "--adapters-dir", str(tmp_path / "nope"))
    assert res.returncode == 2 and res.stderr.strip().count("\n") == 0 and "not a folder" in res.stderr
    res = _cli("chat", "--set", f"adapters_dir={serve_cfg.adapters_dir}", "-p", "../x")
    assert res.returncode == 2 and "persona name '../x' is not allowed" in res.stderr
    res = _cli("serve", "--set", "default_max_tokens=900")
    assert res.returncode == 2 and "max_tokens_limit" in res.stderr and "Traceback" not in res.stderr
