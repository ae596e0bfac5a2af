"""A real headless Chromium for page tests (the report, the playground)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


def chromium() -> str:
    """The browser's path; skips locally without one, fails on CI (scripts/setup.sh --dev installs it)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if not found and os.environ.get("CI"):
        pytest.fail("CI must have chromium for the page rendering tests (scripts/setup.sh --dev installs it)")
    if not found:
        pytest.skip("chromium not installed (scripts/setup.sh --dev installs it where apt-get is available)")
    return found


def headless(profile: Path, budget_ms: int = 5000) -> list[str]:
    """Command line of a headless run that dumps the DOM after `budget_ms` of virtual time."""
    return [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1280,2400",
        f"--virtual-time-budget={budget_ms}",
    ]


class Page:
    """A headless Chromium page driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`:
    fd 3 in, fd 4 out, messages separated by NUL), in real time. `--dump-dom` with a virtual time
    budget dumps a page as soon as its network is idle, which is too early for a streamed reply."""

    def __init__(self, url: str, profile: Path):
        import subprocess

        to_chrome_r, self._w = os.pipe()
        self._r, from_chrome_w = os.pipe()

        def fds():
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)

        argv = [*headless(profile)[:-1], "--remote-debugging-pipe", url]
        self.proc = subprocess.Popen(argv, preexec_fn=fds, close_fds=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf, self._id = b"", 0
        targets = self._call("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        self._session = self._call("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]

    def _call(self, method: str, session: str | None = None, **params) -> dict:
        import json

        self._id += 1
        msg = {"id": self._id, "method": method, "params": params, **({"sessionId": session} if session else {})}
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        while True:
            while b"\0" not in self._buf:
                chunk = os.read(self._r, 1 << 16)
                if not chunk:
                    raise RuntimeError("chromium closed the DevTools pipe")
                self._buf += chunk
            raw, self._buf = self._buf.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def evaluate(self, expression: str):
        res = self._call("Runtime.evaluate", self._session, expression=expression, returnByValue=True)
        return res["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60.0):
        """Poll `expression` until it is truthy; its value."""
        import time

        end = time.monotonic() + timeout
        while time.monotonic() < end:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {expression}")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        os.close(self._w)
        os.close(self._r)
