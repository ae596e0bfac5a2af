"""`personaguard chat` on the tiny model: the loop, the local backend, the server backend through
the openai client, and the `vllm serve` command line for the same adapters."""

from __future__ import annotations

import io
import json
import shlex

import pytest

from personaguard.serve.chat import ChatSetup, chat_loop, describe, local_backend, server_backend
from personaguard.serve.personas import PersonaSpec
from tests.serve.conftest import MESSAGE


def scripted(lines):
    it = iter(lines)

    def read(prompt):
        try:
            return next(it)
        except StopIteration:
            raise EOFError from None

    return read


def test_local_chat_shows_which_guardrail_fired(engine, serve_cfg):
    from personaguard.serve.personas import load_personas

    send = local_backend(engine, load_personas(serve_cfg.personas_dir), engine.model_id)
    out = io.StringIO()
    setup = ChatSetup(persona_name="maya", max_tokens=4)
    turns = chat_loop(send, setup, "Maya", scripted([MESSAGE, "", "/reset", MESSAGE, "/quit", "never read"]), out)
    text = out.getvalue()
    assert turns == 2 and text.count("[guard] politics fired (score") == 2 and "(new conversation)" in text
    assert f"Maya> {engine.tag}" in text
    assert setup.messages[0] == {"role": "user", "content": MESSAGE} and len(setup.messages) == 2


def test_chat_errors_are_one_line_and_keep_the_conversation(engine, serve_cfg):
    send = local_backend(engine, {}, engine.model_id)
    out = io.StringIO()
    setup = ChatSetup(guardrails=["religion"], max_tokens=2)
    assert chat_loop(send, setup, "x", scripted(["hello"]), out) == 0
    assert "error: guardrails: unknown ['religion']" in out.getvalue() and setup.messages == []


def test_persona_file_fields_travel_as_extra_body():
    spec = PersonaSpec(name="Zed", traits=["calm"], memories=["likes tea"], guardrails=["meeting"])
    assert ChatSetup(persona=spec).extra_body() == {
        "persona": {"name": "Zed", "traits": ["calm"], "expressions": []},
        "memories": ["likes tea"],
        "guardrails": ["meeting"],
    }
    assert ChatSetup(persona=spec, guardrails=[]).extra_body()["guardrails"] == []
    assert ChatSetup().extra_body() == {}


def test_server_chat_through_the_openai_client(client, engine):
    send = server_backend("http://testserver", http_client=client)
    out = io.StringIO()
    assert chat_loop(send, ChatSetup(guardrails=["politics"], max_tokens=4), "bot", scripted([MESSAGE]), out) == 1
    assert "[guard] politics fired" in out.getvalue() and f"bot> {engine.tag}" in out.getvalue()
    out = io.StringIO()
    chat_loop(send, ChatSetup(guardrails=["../x"], max_tokens=4), "bot", scripted([MESSAGE]), out)
    assert "error: server: guardrails.0: guardrail name '../x' is not allowed" in out.getvalue()


def test_describe():
    assert describe({"triggered": True, "guardrail": "politics", "score": 0.912}) == "[guard] politics fired (score 0.91)"
    assert describe({"triggered": False, "guardrail": None, "score": None}) == "[guard] no guardrails on"
    assert describe({"triggered": False, "guardrail": None, "score": 0.1}) == "[guard] none fired (top score 0.10)"


def test_vllm_command_names_every_adapter_like_the_server(serve_cfg, engine):
    from personaguard.serve.vllm import vllm_command

    argv = shlex.split(vllm_command(serve_cfg))
    assert argv[:3] == ["vllm", "serve", engine.base_model] and "--enable-lora" in argv
    i = argv.index("--lora-modules")
    modules = dict(a.split("=", 1) for a in argv[i + 1 : i + 3])
    assert sorted(modules) == engine.guardrails and all(modules[g].endswith("/" + g) for g in modules)
    assert argv[argv.index("--max-lora-rank") + 1] == "8"  # r=4 rounded up to a rank vLLM accepts
    assert argv[argv.index("--served-model-name") + 1] == engine.model_id


def test_vllm_refuses_folders_it_cannot_load(serve_cfg, tmp_path):
    import shutil

    from personaguard.errors import PersonaguardError
    from personaguard.serve.vllm import vllm_command, vllm_problems

    root = tmp_path / "adapters"
    shutil.copytree(serve_cfg.adapters_dir, root)
    assert vllm_problems(root / "politics") == []
    cfg_path = root / "meeting" / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "use_dora": True, "target_modules": ["q_proj", "lm_head"]}))
    problems = vllm_problems(root / "meeting")
    assert any("DoRA" in p for p in problems) and any("['lm_head']" in p for p in problems)
    (root / "politics" / "adapter_model.safetensors").unlink()
    with pytest.raises(PersonaguardError) as exc:
        vllm_command(serve_cfg.model_copy(update={"adapters_dir": str(root)}))
    msg = str(exc.value)
    assert "\n" not in msg and "meeting" in msg and "politics" in msg and "no adapter_model.safetensors" in msg


@pytest.mark.parametrize("bad", ["../maya", "a/b", ""])
def test_chat_refuses_path_like_persona_names(bad):
    from personaguard.errors import PersonaguardError
    from personaguard.serve.personas import check_name

    with pytest.raises(PersonaguardError, match="not allowed"):
        check_name("persona", bad)
