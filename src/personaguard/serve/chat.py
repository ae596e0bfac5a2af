"""`personaguard chat`: talk to a persona in the terminal, with the guard decision shown per turn.

Two backends with one loop: the local model (an Engine in this process, no server) or a running
`personaguard serve` (or any server that speaks its API) through the official `openai` client, so
the chat also shows how a client passes persona and guardrails (`extra_body`)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from ..errors import PersonaguardError
from .personas import PersonaSpec


@dataclass
class ChatSetup:
    """Who the user talks to: a registry persona by name, or persona fields, and the guardrails."""

    persona_name: str | None = None  # "maya" -> model "persona:maya"
    persona: PersonaSpec | None = None  # from --persona-file
    guardrails: list[str] | None = None  # None: the persona's defaults (or none)
    max_tokens: int = 96
    temperature: float = 0.0
    messages: list[dict] = field(default_factory=list)

    def extra_body(self) -> dict:
        out: dict = {}
        if self.persona is not None:
            out["persona"] = self.persona.model_dump(include={"name", "traits", "expressions"})
            out["memories"] = self.persona.memories
            if self.guardrails is None:
                out["guardrails"] = self.persona.guardrails
        if self.guardrails is not None:
            out["guardrails"] = self.guardrails
        return out


Send = Callable[[ChatSetup], tuple[dict, Iterator[str]]]


def local_backend(engine, personas: dict[str, PersonaSpec], model_id: str) -> Send:
    """Answer with `engine` in this process, through the same request handling as the server."""
    from .app import ChatRequest, resolve_request, to_snapshot

    def send(setup: ChatSetup) -> tuple[dict, Iterator[str]]:
        req = ChatRequest.model_validate(
            {
                "model": f"persona:{setup.persona_name}" if setup.persona_name else model_id,
                "messages": setup.messages,
                **setup.extra_body(),
            }
        )
        spec, guardrails = resolve_request(req, engine, personas)
        snap, system = to_snapshot(req, spec)
        turn = engine.turn(snap, guardrails, setup.max_tokens, setup.temperature, 1.0, system)
        return turn.decision.public(), turn.pieces

    return send


def server_backend(url: str, token_env: str = "PERSONAGUARD_SERVER_TOKEN", http_client=None) -> Send:
    """Answer through a server's /v1/chat/completions with the `openai` client, streaming."""
    import openai

    base = url.rstrip("/")
    base = base if base.endswith("/v1") else base + "/v1"
    api = openai.OpenAI(base_url=base, api_key=os.environ.get(token_env) or "none", http_client=http_client, max_retries=0)
    try:
        base_model = api.models.list().data[0].id
    except openai.APIError as exc:
        raise PersonaguardError(f"--server {url}: {_api_message(exc)}") from None

    def send(setup: ChatSetup) -> tuple[dict, Iterator[str]]:
        try:
            stream = api.chat.completions.create(
                model=f"persona:{setup.persona_name}" if setup.persona_name else base_model,
                messages=setup.messages,
                max_tokens=setup.max_tokens,
                temperature=setup.temperature,
                stream=True,
                extra_body=setup.extra_body(),
            )
            first = next(iter(stream))
        except openai.APIError as exc:
            raise PersonaguardError(f"server: {_api_message(exc)}") from None
        guard = (first.model_extra or {}).get("guard") or {"triggered": False, "guardrail": None, "score": None}

        def pieces() -> Iterator[str]:
            for chunk in stream:
                for choice in chunk.choices:
                    if choice.delta and choice.delta.content:
                        yield choice.delta.content

        return guard, pieces()

    return send


def _api_message(exc) -> str:
    """The server's own one-line message when it sent an OpenAI error body, else the client's."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return err["message"]
    return str(getattr(exc, "message", exc))


def describe(guard: dict) -> str:
    if guard.get("triggered"):
        return f"[guard] {guard['guardrail']} fired (score {guard['score']:.2f})"
    if guard.get("score") is None:
        return "[guard] no guardrails on"
    return f"[guard] none fired (top score {guard['score']:.2f})"


def chat_loop(send: Send, setup: ChatSetup, name: str, read: Callable[[str], str] = input, out=None) -> int:
    """Read a line, answer it (streamed to `out` as it is made), repeat; `/reset` starts over,
    `/quit` or end of input stops. Returns the number of turns answered."""
    out = out or sys.stdout

    def write(text: str) -> None:
        out.write(text + "\n")
        out.flush()

    write(f"Chatting with {name}. /reset starts over, /quit (or Ctrl-D) ends.")
    turns = 0
    while True:
        try:
            line = read("you> ").strip()
        except EOFError:
            write("")
            return turns
        if line in ("/quit", "/exit"):
            return turns
        if line == "/reset":
            setup.messages.clear()
            write("(new conversation)")
            continue
        if not line:
            continue
        setup.messages.append({"role": "user", "content": line})
        try:
            guard, pieces = send(setup)
        except PersonaguardError as exc:
            setup.messages.pop()
            write(f"error: {exc}")
            continue
        write(describe(guard))
        out.write(f"{name}> ")
        reply = ""
        for piece in pieces:
            reply += piece
            out.write(piece)
            out.flush()
        write("")
        setup.messages.append({"role": "assistant", "content": reply or "..."})
        turns += 1
