"""The OpenAI-compatible server: `create_app(config)` gives a FastAPI app for uvicorn.

Why OpenAI's schema: teams already have clients for it. A request without personaguard's extra
fields (`persona`, `memories`, `guardrails`) is a plain chat completion, so the official `openai`
client works unchanged and passes the extra fields with `extra_body`. Every response carries
`guard: {triggered, guardrail, score}`; a stream carries it in its first chunk, before any text.

Model names follow vLLM's LoRA serving: the base model's id, each guardrail adapter by its name
(that adapter alone), and `persona:NAME` for a persona of the registry with its guardrails.
Errors use OpenAI's error body (`{"error": {"message", "type", "param", "code"}}`) and are 4xx for
anything a client sent; a malformed body is a 400, never a 500.
"""

from __future__ import annotations

import hmac
import json
import os
import time
import uuid
from importlib import resources
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..config import ServeConfig
from ..errors import PersonaguardError
from ..schema import Message, Persona, Snapshot
from .engine import make_engine
from .personas import PersonaSpec, check_name, load_personas

PERSONA_PREFIX = "persona:"


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "\n".join(p.text for p in self.content)
        return self.content or ""


class PersonaIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field("", max_length=64)
    traits: list[str] = Field(default_factory=list, max_length=50)
    expressions: list[str] = Field(default_factory=list, max_length=50)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class ChatRequest(BaseModel):
    """OpenAI's chat completion request (the fields this server uses; other OpenAI fields are
    accepted and ignored, as OpenAI-compatible servers do) plus personaguard's three."""

    model_config = ConfigDict(extra="ignore")
    model: str = Field(..., min_length=1, max_length=200)
    messages: list[ChatMessage] = Field(..., min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int | None = Field(None, ge=1, le=1, description="only 1 is supported")
    stop: str | list[str] | None = None
    logit_bias: dict[str, float] | None = Field(None, max_length=300)
    persona: PersonaIn | None = None
    memories: list[str] | None = Field(None, max_length=100)
    guardrails: list[str] | None = Field(None, max_length=64)

    @field_validator("logit_bias")
    @classmethod
    def _bias(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        """OpenAI's form: token ids as strings, biases from -100 (never) to 100 (always)."""
        for key, bias in (v or {}).items():
            if not key.isdigit():
                raise ValueError(f"key {key!r} is not a token id (a non-negative integer as a string)")
            if not -100 <= bias <= 100:
                raise ValueError(f"bias {bias} of token {key} is outside -100..100")
        return v


class TokenizeRequest(BaseModel):
    """vLLM's `POST /tokenize` (the router asks an upstream for the tag's token id this way)."""

    model_config = ConfigDict(extra="ignore")
    model: str | None = Field(None, max_length=200)
    prompt: str = Field(..., max_length=100_000)
    add_special_tokens: bool = True


class ApiError(PersonaguardError):
    """A client's mistake: its HTTP status and OpenAI error code (the terminal chat prints the message)."""

    def __init__(self, status: int, message: str, code: str, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


def _error_body(status: int, message: str, code: str, param: str | None = None) -> dict:
    kind = {401: "authentication_error", 404: "not_found_error", 413: "invalid_request_error"}.get(
        status, "invalid_request_error" if status < 500 else "server_error"
    )
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _validation_message(errors: list[dict]) -> tuple[str, str | None]:
    """One line from pydantic/FastAPI errors: where (body.messages.2.role) and what."""
    err = errors[0]
    loc = [str(p) for p in err.get("loc", ()) if p != "body"]
    where = ".".join(loc) or "body"
    return f"{where}: {err.get('msg', 'invalid value')}", where


def to_snapshot(req: ChatRequest, spec: PersonaSpec | None) -> tuple[Snapshot, str]:
    """The request's conversation as a Snapshot (the training prompt shape) and the client's system
    text, which is added to the persona's system prompt as extra guidelines.

    Chat clients do not always alternate strictly: consecutive messages of one role are joined with
    a newline (as the real-chat sets do), and assistant messages before the first user message (a
    character's greeting) are dropped, since the prompt shape starts with the user."""
    system = [m.text() for m in req.messages if m.role in ("system", "developer") and m.text().strip()]
    turns: list[list] = []
    for i, m in enumerate(req.messages):
        if m.role in ("system", "developer"):
            continue
        text = m.text()
        if not text.strip():
            raise ApiError(400, f"messages.{i}.content: empty message", "invalid_message", f"messages.{i}.content")
        if turns and turns[-1][0] == m.role:
            turns[-1][1] += "\n" + text
        elif turns or m.role == "user":
            turns.append([m.role, text])
    if not turns or turns[-1][0] != "user":
        raise ApiError(400, "messages: the last message must come from the user", "invalid_messages", "messages")
    persona = Persona(**(spec.model_dump(include={"name", "traits", "expressions"}) if spec else {}))
    if req.persona is not None:
        persona = Persona(**req.persona.model_dump())
    memories = req.memories if req.memories is not None else (spec.memories if spec else [])
    snap = Snapshot(
        id="request",
        persona=persona,
        memories=memories,
        history=[Message(role=r, content=t) for r, t in turns[:-1]],
        message=turns[-1][1],
    )
    return snap, "\n".join(system)


def resolve_request(req: ChatRequest, engine, personas: dict[str, PersonaSpec]) -> tuple[PersonaSpec | None, list[str]]:
    """(persona of the registry or None, guardrails) from `model` and the extra fields."""
    spec, guardrails = None, []
    if req.model.startswith(PERSONA_PREFIX):
        key = req.model[len(PERSONA_PREFIX) :]
        try:
            check_name("persona", key)
        except PersonaguardError as exc:
            raise ApiError(400, f"model: {exc}", "invalid_model", "model") from None
        if key.lower() not in personas:
            raise ApiError(404, f"model: unknown persona '{key}'; known: {sorted(personas)}", "model_not_found", "model")
        spec = personas[key.lower()]
        guardrails = list(spec.guardrails)
    elif req.model in engine.cards:
        guardrails = [req.model]
    elif req.model != engine.model_id:
        try:
            check_name("model", req.model)
        except PersonaguardError as exc:
            raise ApiError(400, f"model: {exc}", "invalid_model", "model") from None
        raise ApiError(404, f"model: unknown model '{req.model}'; see GET /v1/models", "model_not_found", "model")
    if req.guardrails is not None:
        for i, g in enumerate(req.guardrails):
            try:
                check_name("guardrail", g)
            except PersonaguardError as exc:
                raise ApiError(400, f"guardrails.{i}: {exc}", "invalid_guardrail", "guardrails") from None
        unknown = [g for g in req.guardrails if g not in engine.cards]
        if unknown:
            raise ApiError(
                400,
                f"guardrails: unknown {unknown}; this server has {engine.guardrails}",
                "unknown_guardrail",
                "guardrails",
            )
        guardrails = list(req.guardrails)
    return spec, guardrails


def create_app(cfg: ServeConfig, engine=None):
    """The FastAPI app. `engine` answers turns: the local model (serve/engine.py), or with
    `cfg.upstream` a router to another OpenAI-compatible server (serve/upstream.py); it can be given
    (tests, `chat`) to skip loading the model again."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    engine = engine or make_engine(cfg)
    personas = load_personas(cfg.personas_dir)
    for key, spec in personas.items():
        missing = [g for g in spec.guardrails if g not in engine.cards]
        if missing:
            raise PersonaguardError(
                f"{cfg.personas_dir}/{key}.yaml: guardrails {missing} are not trained in {cfg.adapters_dir} "
                f"(it has {engine.guardrails})"
            )
    token = os.environ.get(cfg.token_env) or None  # read once; never logged, never written
    created = int(time.time())
    app = FastAPI(title="personaguard", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine, app.state.personas = engine, personas

    def error(status: int, message: str, code: str, param: str | None = None) -> JSONResponse:
        return JSONResponse(_error_body(status, message, code, param), status_code=status)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return error(exc.status, exc.message, exc.code, exc.param)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        message, param = _validation_message(exc.errors())
        return error(400, message, "invalid_request", param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return error(exc.status_code, str(exc.detail), "not_found" if exc.status_code == 404 else "http_error")

    @app.middleware("http")
    async def _guard_requests(request: Request, call_next):
        """Bearer token on /v1/* and /tokenize when the token variable is set; body size limit on every request."""
        if token is not None and (request.url.path.startswith("/v1/") or request.url.path == "/tokenize"):
            given = request.headers.get("authorization", "")
            scheme, _, value = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
                return error(401, f"missing or wrong bearer token (the server's {cfg.token_env})", "invalid_api_key")
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > cfg.max_body_bytes):
            return error(413, f"request body over {cfg.max_body_bytes} bytes (max_body_bytes)", "body_too_large")
        if request.method == "POST":
            body = b""
            async for chunk in request.stream():
                body += chunk
                if len(body) > cfg.max_body_bytes:
                    return error(413, f"request body over {cfg.max_body_bytes} bytes (max_body_bytes)", "body_too_large")
            request._body = body  # starlette reads the cached body downstream
        return await call_next(request)

    @app.get("/health")
    def health():
        return {"status": "ok", "model": engine.model_id, "guardrails": engine.guardrails}

    @app.get("/v1/models")
    def list_models():
        base = {"id": engine.model_id, "object": "model", "created": created, "owned_by": "personaguard"}
        rows = [base]
        for name, card in sorted(engine.cards.items()):
            rows.append(
                {
                    "id": name,
                    "object": "model",
                    "created": created,
                    "owned_by": "personaguard",
                    "root": name,
                    "parent": engine.model_id,
                    "guardrail": card,
                }
            )
        for key, spec in sorted(personas.items()):
            rows.append(
                {
                    "id": PERSONA_PREFIX + key,
                    "object": "model",
                    "created": created,
                    "owned_by": "personaguard",
                    "root": PERSONA_PREFIX + key,
                    "parent": engine.model_id,
                    "persona": spec.model_dump(include={"name", "traits", "expressions"}),
                    "guardrails": spec.guardrails,
                }
            )
        return {"object": "list", "data": rows}

    @app.post("/tokenize")
    def tokenize(req: TokenizeRequest):
        if req.model is not None and req.model != engine.model_id and req.model not in engine.cards:
            raise ApiError(404, f"model: unknown model '{req.model}'; see GET /v1/models", "model_not_found", "model")
        tokens = engine.tokenize(req.prompt, req.add_special_tokens)
        return {"count": len(tokens), "max_model_len": engine.max_model_len, "tokens": tokens}

    @app.get("/", response_class=HTMLResponse)
    def playground():
        return (resources.files("personaguard.serve") / "playground.html").read_text(encoding="utf-8")

    @app.post("/v1/chat/completions")
    def chat_completions(req: ChatRequest):
        if len(req.messages) > cfg.max_messages:
            raise ApiError(
                400, f"messages: {len(req.messages)} is over the limit of {cfg.max_messages}", "too_many_messages", "messages"
            )
        if req.stop:
            raise ApiError(400, "stop: stop sequences are not supported by this server", "unsupported", "stop")
        max_tokens = req.max_completion_tokens or req.max_tokens or cfg.default_max_tokens
        if max_tokens > cfg.max_tokens_limit:
            raise ApiError(
                400, f"max_tokens: {max_tokens} is over the limit of {cfg.max_tokens_limit}", "max_tokens_too_large", "max_tokens"
            )
        spec, guardrails = resolve_request(req, engine, personas)
        try:
            snap, system = to_snapshot(req, spec)
        except ValidationError as exc:
            message, param = _validation_message(exc.errors())
            raise ApiError(400, f"messages: {message}", "invalid_messages", "messages") from None
        temperature = 0.0 if req.temperature is None else req.temperature
        bias = {int(k): v for k, v in (req.logit_bias or {}).items()}
        too_big = [k for k in bias if engine.vocab_size is not None and k >= engine.vocab_size]
        if too_big:
            raise ApiError(
                400,
                f"logit_bias: token ids {too_big} are over the vocabulary ({engine.vocab_size})",
                "invalid_logit_bias",
                "logit_bias",
            )
        turn = engine.turn(snap, guardrails, max_tokens, temperature, req.top_p or 1.0, system, logit_bias=bias or None)
        rid, now = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        head = {"id": rid, "created": now, "model": req.model}
        if not req.stream:
            text = "".join(turn.pieces)
            usage = _usage(turn)
            return {
                **head,
                "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": turn.finish_reason}],
                "usage": usage,
                "guard": turn.decision.public(),
            }

        def events():
            def chunk(delta: dict, finish: str | None = None, **extra) -> str:
                body = {
                    **head,
                    "object": "chat.completion.chunk",
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                }
                return f"data: {json.dumps({**body, **extra})}\n\n"

            pieces = turn.pieces
            try:
                yield chunk({"role": "assistant", "content": ""}, guard=turn.decision.public())
                for piece in pieces:
                    yield chunk({"content": piece})
                yield chunk({}, turn.finish_reason)
                if req.stream_options and req.stream_options.include_usage:
                    yield f"data: {json.dumps({**head, 'object': 'chat.completion.chunk', 'choices': [], 'usage': _usage(turn)})}\n\n"
                yield "data: [DONE]\n\n"
            finally:
                pieces.close()  # client gone: stop generating

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    return app


def _usage(turn) -> dict:
    return {
        "prompt_tokens": turn.prompt_tokens,
        "completion_tokens": turn.completion_tokens,
        "total_tokens": turn.prompt_tokens + turn.completion_tokens,
    }
