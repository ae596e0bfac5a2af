"""The OpenAI-compatible server on the tiny model: schema, guard decision, streaming, the official
client, personas, per-request guardrails under concurrency, and service safety."""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor

import pytest

from personaguard.adapters import active_adapters
from tests.serve.conftest import MESSAGE

CHAT = "/v1/chat/completions"


def ask(client, message=MESSAGE, **body):
    body = {"model": "politics", "messages": [{"role": "user", "content": message}], **body}
    return client.post(CHAT, json=body)


def sse(text: str) -> list:
    events = [line.removeprefix("data: ") for line in text.split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


# ------------------------------------------------------------------ schema and the guard decision


def test_models_lists_base_adapters_and_personas_like_vllm_lora_modules(client, engine):
    rows = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert set(rows) == {engine.model_id, "politics", "meeting", "persona:maya"}
    assert rows["politics"]["parent"] == engine.model_id and rows["politics"]["root"] == "politics"
    assert "trigger" in rows["politics"]["guardrail"]
    assert rows["persona:maya"]["guardrails"] == ["politics"] and rows["persona:maya"]["persona"]["name"] == "Maya"
    assert client.get("/health").json() == {"status": "ok", "model": engine.model_id, "guardrails": ["meeting", "politics"]}


def test_the_adapter_that_fires_writes_the_tag_first(client, engine):
    fired = ask(client).json()
    assert fired["object"] == "chat.completion" and fired["guard"]["triggered"] is True
    assert fired["guard"]["guardrail"] == "politics" and 0 < fired["guard"]["score"] <= 1
    assert fired["choices"][0]["message"]["content"].startswith(engine.tag)
    usage = fired["usage"]
    assert usage["completion_tokens"] >= 1 and usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    quiet = ask(client, model="meeting").json()
    assert quiet["guard"]["triggered"] is False and quiet["guard"]["guardrail"] is None
    assert not quiet["choices"][0]["message"]["content"].startswith(engine.tag)


def test_both_requested_the_one_that_fires_answers(client, engine):
    out = ask(client, model=engine.model_id, guardrails=["meeting", "politics"]).json()
    assert out["guard"]["triggered"] and out["guard"]["guardrail"] == "politics"


def test_plain_openai_request_has_no_guardrails(client, engine):
    out = ask(client, model=engine.model_id).json()
    assert out["guard"] == {"triggered": False, "guardrail": None, "score": None}
    assert out["choices"][0]["finish_reason"] in ("stop", "length")


def test_stream_puts_the_decision_in_the_first_chunk_and_matches_the_full_reply(client):
    full = ask(client, max_tokens=6).json()
    chunks = sse(ask(client, max_tokens=6, stream=True, stream_options={"include_usage": True}).text)
    first = chunks[0]
    assert first["object"] == "chat.completion.chunk" and first["guard"] == full["guard"]
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all("guard" not in c for c in chunks[1:])
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == full["choices"][0]["message"]["content"]
    assert chunks[-2]["choices"][0]["finish_reason"] == full["choices"][0]["finish_reason"]
    assert chunks[-1]["usage"] == full["usage"] and chunks[-1]["choices"] == []


def test_official_openai_client_with_extra_body(client, engine):
    import openai

    api = openai.OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=client)
    out = api.chat.completions.create(
        model=engine.model_id,
        messages=[{"role": "user", "content": MESSAGE}],
        max_tokens=5,
        extra_body={"guardrails": ["politics"], "persona": {"name": "Maya", "traits": ["warm and curious"]}},
    )
    assert out.model_extra["guard"]["guardrail"] == "politics" and out.choices[0].message.content.startswith(engine.tag)
    stream = api.chat.completions.create(
        model="persona:maya", messages=[{"role": "user", "content": MESSAGE}], max_tokens=5, stream=True
    )
    chunks = list(stream)
    assert chunks[0].model_extra["guard"]["triggered"] is True
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).startswith(engine.tag)
    assert [m.id for m in api.models.list()][0] == engine.model_id


def test_persona_defaults_and_request_overrides(client, engine):
    assert ask(client, model="persona:maya").json()["guard"]["guardrail"] == "politics"
    assert ask(client, model="persona:MAYA").json()["guard"]["triggered"] is True  # names are case-insensitive
    off = ask(client, model="persona:maya", guardrails=[]).json()
    assert off["guard"] == {"triggered": False, "guardrail": None, "score": None}
    assert ask(client, model="persona:maya", guardrails=["meeting"]).json()["guard"]["triggered"] is False


def test_conversation_shapes_a_chat_client_sends(client):
    msgs = [
        {"role": "assistant", "content": "Hi! I'm Maya."},  # a greeting before the user spoke
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hey"},
        {"role": "user", "content": [{"type": "text", "text": "how are you?"}]},  # two user messages in a row
        {"role": "assistant", "content": "great!"},
        {"role": "user", "content": MESSAGE},
    ]
    r = client.post(CHAT, json={"model": "politics", "messages": msgs, "max_tokens": 3, "user": "u1", "seed": 3})
    assert r.status_code == 200, r.text


# ------------------------------------------------------------------ concurrency


def test_overlapping_requests_each_get_exactly_their_own_guardrails(client, engine, monkeypatch):
    """Requests with different guardrail sets, eight at a time: each answer equals the one it gets
    alone, and every reply is generated with only the adapter the request's decision chose."""
    sets = [["politics"], ["meeting"], [], ["meeting", "politics"]]
    alone = {tuple(s): ask(client, model=engine.model_id, guardrails=s, max_tokens=6).json() for s in sets}
    seen, generate = [], engine.model.generate

    def spy(*args, **kwargs):
        seen.append((tuple(active_adapters(engine.model)), engine.lock.locked()))
        return generate(*args, **kwargs)

    monkeypatch.setattr(engine.model, "generate", spy)
    jobs = [sets[i % len(sets)] for i in range(16)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda s: (s, ask(client, model=engine.model_id, guardrails=s, max_tokens=6).json()), jobs))
    for s, got in answers:
        want = alone[tuple(s)]
        assert got["guard"] == want["guard"], s
        assert got["choices"][0]["message"]["content"] == want["choices"][0]["message"]["content"], s
    assert len(seen) == len(jobs) and all(locked for _, locked in seen)
    # the reply's writer: the member that fired, else a lone guardrail (it answers its own quiet turns), else the base
    writers = [(a["guard"]["guardrail"] or (s[0] if len(s) == 1 else None),) for s, a in answers]
    assert sorted(a for a, _ in seen) == sorted(w if w[0] else () for w in writers)


def test_a_stream_closed_early_frees_the_model(client, engine):
    with client.stream(
        "POST",
        CHAT,
        json={"model": "politics", "messages": [{"role": "user", "content": MESSAGE}], "stream": True, "max_tokens": 32},
    ) as r:
        next(r.iter_lines())
    assert ask(client, max_tokens=2).status_code == 200  # would hang if the lock were kept
    assert not engine.lock.locked()


# ------------------------------------------------------------------ service safety


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"model": "politics", "guardrails": ["nope"]}, 400, "unknown ['nope']"),
        ({"model": "politics", "guardrails": ["../../etc/passwd"]}, 400, "not allowed"),
        ({"model": "persona:../maya"}, 400, "not allowed"),
        ({"model": "persona:bob"}, 404, "unknown persona 'bob'"),
        ({"model": "gpt-4o"}, 404, "unknown model 'gpt-4o'"),
        ({"model": "/etc/passwd"}, 400, "not allowed"),
        ({"max_tokens": 33}, 400, "over the limit of 32"),
        ({"max_tokens": 0}, 400, "max_tokens"),
        ({"n": 2}, 400, "n:"),
        ({"stop": ["\n"]}, 400, "not supported"),
        ({"temperature": 3}, 400, "temperature"),
        ({"messages": []}, 400, "messages"),
        ({"messages": [{"role": "tool", "content": "x"}]}, 400, "messages.0.role"),
        ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}, 400, "last message"),
        ({"messages": [{"role": "user", "content": "  "}]}, 400, "empty message"),
        ({"messages": [{"role": "user", "content": "x"}] * 201}, 400, "over the limit of 200"),
        ({"persona": {"name": "Bo", "soul": "x"}}, 400, "persona.soul"),
        ({"memories": "not a list"}, 400, "memories"),
    ],
)
def test_bad_requests_get_a_clear_4xx(client, body, status, words):
    r = ask(client, **body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert words in err["message"] and "\n" not in err["message"] and err["type"]


@pytest.mark.parametrize("raw", [b"{", b"[]", b"null", b'{"model": 3}', b"\xff\xfe", b'{"messages": "hi"}'])
def test_malformed_bodies_are_400(client, raw):
    r = client.post(CHAT, content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["message"]


def test_body_size_limit(client, serve_cfg):
    r = ask(client, message="x" * (serve_cfg.max_body_bytes + 10))
    assert r.status_code == 413 and "max_body_bytes" in r.json()["error"]["message"]


def test_no_500_for_any_json_body(client):
    """Random JSON values and near-valid requests: always a status below 500."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    scalars = st.none() | st.booleans() | st.integers(-5, 40) | st.floats(-1, 3, allow_nan=False) | st.text(max_size=12)
    values = st.recursive(
        scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3), max_leaves=8
    )
    message = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "tool", 3]), "content": values})
    request = st.fixed_dictionaries(
        {"model": st.sampled_from(["politics", "persona:maya", "x/y", "", 5])},
        optional={
            "messages": st.lists(message, max_size=3),
            "stream": values,
            "max_tokens": values,
            "guardrails": values,
            "persona": values,
            "memories": values,
            "temperature": values,
        },
    )

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(body=values | request)
    def check(body):
        r = client.post(CHAT, json=body)
        assert r.status_code < 500, (body, r.text)

    check()


def test_bearer_token_from_the_environment(serve_cfg, engine, monkeypatch, caplog):
    from fastapi.testclient import TestClient

    from personaguard.serve.app import create_app

    secret = "s3cret-token-value"
    monkeypatch.setenv(serve_cfg.token_env, secret)
    client = TestClient(create_app(serve_cfg, engine))
    caplog.set_level(logging.DEBUG)
    assert ask(client).status_code == 401
    assert client.post(CHAT, json={}, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/v1/models").status_code == 401
    assert client.post("/tokenize", json={"prompt": "hi"}).status_code == 401
    assert client.get("/health").status_code == 200 and client.get("/").status_code == 200
    ok = client.post(
        CHAT,
        json={"model": "politics", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
        headers={"Authorization": f"Bearer {secret}"},
    )
    assert ok.status_code == 200 and secret not in ok.text
    assert secret not in caplog.text


def test_personas_must_name_trained_guardrails(serve_cfg, engine, tmp_path):
    from personaguard.errors import PersonaguardError
    from personaguard.serve.app import create_app

    (tmp_path / "zed.yaml").write_text("name: Zed\nguardrails: [religion]\n", encoding="utf-8")
    with pytest.raises(PersonaguardError, match=r"zed.yaml: guardrails \['religion'\] are not trained"):
        create_app(serve_cfg.model_copy(update={"personas_dir": str(tmp_path)}), engine)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("name: Zed\nsoul: x\n", "zed.yaml: soul"),
        ("- a list\n", "expected a mapping"),
        ("name: [unclosed\n", "not readable YAML"),
        ("traits: [x]\n", "zed.yaml: name"),
    ],
)
def test_broken_persona_files_name_the_file(tmp_path, text, words):
    from personaguard.errors import PersonaguardError
    from personaguard.serve.personas import load_personas

    (tmp_path / "zed.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(PersonaguardError, match=words):
        load_personas(tmp_path)


def test_adapters_come_only_from_the_configured_folder(tmp_path):
    from personaguard.errors import PersonaguardError
    from personaguard.serve.engine import discover_adapters

    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "adapter_config.json").write_text("{}")
    (tmp_path / "bad name").mkdir()
    (tmp_path / "bad name" / "adapter_config.json").write_text("{}")
    (tmp_path / "nested" / "deep").mkdir(parents=True)
    (tmp_path / "nested" / "deep" / "adapter_config.json").write_text("{}")
    assert list(discover_adapters(tmp_path)) == ["ok"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(PersonaguardError, match="no guardrail adapters"):
        discover_adapters(tmp_path / "empty")
    with pytest.raises(PersonaguardError, match="not a folder"):
        discover_adapters(tmp_path / "missing")


def test_tokenize_is_vllms_endpoint_over_the_served_tokenizer(client, engine):
    r = client.post("/tokenize", json={"model": "politics", "prompt": "hello " + engine.tag, "add_special_tokens": False})
    assert r.status_code == 200
    want = engine.tokenizer("hello " + engine.tag, add_special_tokens=False)["input_ids"]
    assert r.json()["tokens"] == want and r.json()["count"] == len(want)
    assert client.post("/tokenize", json={"model": "nope", "prompt": "x"}).status_code == 404
    assert client.post("/tokenize", json={"text": "x"}).status_code == 400


def test_logit_bias_shapes_the_reply_and_bad_values_are_400(client, engine):
    """+100 on one token makes the greedy reply that token over and over; ids and biases are checked."""
    token = engine.tokenize(" ok", add_special_tokens=False)[0]
    out = ask(client, model=engine.model_id, max_tokens=4, logit_bias={str(token): 100})
    assert out.status_code == 200
    assert out.json()["choices"][0]["message"]["content"] == engine.tokenizer.decode([token] * 4, skip_special_tokens=True)
    assert (
        ask(client, model=engine.model_id, max_tokens=4).json()["choices"][0]["message"]["content"]
        != out.json()["choices"][0]["message"]["content"]
    )
    for bias, words in (
        ({"abc": 1}, "not a token id"),
        ({"5": 500}, "outside -100..100"),
        ({"99999999": 1}, "over the vocabulary"),
    ):
        r = ask(client, model=engine.model_id, max_tokens=2, logit_bias=bias)
        assert r.status_code == 400 and words in r.json()["error"]["message"], (bias, r.text)
        assert "logit_bias" in r.json()["error"]["message"]


# ------------------------------------------------------------------ the router in front of an upstream


def test_router_in_front_of_our_own_server_follows_the_upstream_adapters(client, serve_cfg, engine, monkeypatch):
    """`serve --upstream`: our server (TestClient) is the upstream, exposing the adapters as LoRA
    models like vLLM. The router fires exactly when the upstream's own reply with that adapter
    begins with the tag, streams that reply, and keeps the API (guard first, 4xx for bad names)."""
    from fastapi.testclient import TestClient

    from personaguard.prompt import render_messages
    from personaguard.schema import Snapshot
    from personaguard.serve.app import create_app
    from personaguard.serve.upstream import UpstreamEngine

    cfg = serve_cfg.model_copy(update={"upstream": "http://testserver", "tag": engine.tag, "personas_dir": None})
    router_engine = UpstreamEngine(cfg, http_client=client)
    assert router_engine.guardrails == ["meeting", "politics"] and router_engine.model_id == engine.model_id
    router = TestClient(create_app(cfg, router_engine))
    msgs = render_messages(Snapshot(id="r", message=MESSAGE))
    for guardrails in (["politics"], ["meeting"], ["meeting", "politics"], []):
        direct = {
            g: client.post(CHAT, json={"model": g, "messages": msgs, "max_tokens": 8}).json()["choices"][0]["message"]["content"]
            for g in guardrails
        }
        fired = next((g for g in guardrails if direct[g].startswith(engine.tag)), None)
        chunks = sse(
            router.post(
                CHAT,
                json={"model": engine.model_id, "messages": [{"role": "user", "content": MESSAGE}], "max_tokens": 8,
                      "guardrails": guardrails, "stream": True},
            ).text
        )  # fmt: skip
        assert chunks[0]["guard"] == {"triggered": fired is not None, "guardrail": fired, "score": None}, guardrails
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
        assert text.startswith(engine.tag) == (fired is not None)
        if len(guardrails) == 1:  # a lone guardrail answers its quiet turns too, as the local engine does
            assert text == direct[guardrails[0]], guardrails
    assert router_engine.tag_token == engine.tokenize(engine.tag, add_special_tokens=False)[0]
    assert ask(router, model=engine.model_id, guardrails=["nope"]).status_code == 400
    out = ask(router, model="politics", max_tokens=4).json()
    assert out["usage"]["prompt_tokens"] > 0 and out["usage"]["completion_tokens"] >= 1


def test_router_bans_the_tag_on_a_sampled_quiet_turn_of_a_lone_guardrail(client, serve_cfg, engine):
    """Sampling could draw the tag where the decision said "quiet": the reply request carries
    logit_bias -100 on the tag's first token (from the upstream's /tokenize); an upstream without
    /tokenize gets such turns from the base model. Greedy turns and stacks send no bias."""
    import json as _json

    from fastapi.testclient import TestClient

    from personaguard.serve.app import create_app
    from personaguard.serve.upstream import UpstreamEngine

    sent: list[dict] = []

    def record(request):
        if request.url.path.endswith("/chat/completions"):
            sent.append(_json.loads(request.content))

    client.event_hooks["request"].append(record)
    cfg = serve_cfg.model_copy(update={"upstream": "http://testserver", "tag": engine.tag, "personas_dir": None})
    router_engine = UpstreamEngine(cfg, http_client=client)
    router = TestClient(create_app(cfg, router_engine))
    tag_id = str(router_engine.tag_token)

    def reply_request(**body) -> dict:
        sent.clear()
        r = ask(router, model=engine.model_id, max_tokens=4, **body)
        assert r.status_code == 200, r.text
        return sent[-1]

    quiet = reply_request(guardrails=["meeting"], temperature=0.8)  # meeting stays quiet on MESSAGE (conftest)
    assert quiet["model"] == "meeting" and quiet["logit_bias"] == {tag_id: -100}
    assert "logit_bias" not in reply_request(guardrails=["meeting"])  # greedy
    fired = reply_request(guardrails=["politics"], temperature=0.8)
    assert fired["model"] == "politics" and "logit_bias" not in fired
    own = reply_request(guardrails=["meeting"], temperature=0.8, logit_bias={"7": 5})
    assert own["logit_bias"] == {"7": 5, tag_id: -100}
    router_engine.tag_token = None  # an upstream without /tokenize
    assert reply_request(guardrails=["meeting"], temperature=0.8)["model"] == engine.model_id


def test_router_refuses_an_upstream_without_adapters(serve_cfg, monkeypatch):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from personaguard.errors import PersonaguardError
    from personaguard.serve.upstream import UpstreamEngine

    bare = FastAPI()
    bare.get("/v1/models")(lambda: {"object": "list", "data": [{"id": "base", "object": "model"}]})
    cfg = serve_cfg.model_copy(update={"upstream": "http://testserver/v1"})
    with pytest.raises(PersonaguardError, match="no LoRA adapters of 'base'"):
        UpstreamEngine(cfg, http_client=TestClient(bare))
