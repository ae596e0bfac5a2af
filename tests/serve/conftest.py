"""A served tiny model: two random guardrail adapters, a persona registry, and a tag chosen so that
one adapter fires on the test message and the other does not (random adapters have no trigger of
their own, so the tag is read off their greedy first tokens, as tests/stack does)."""

from __future__ import annotations

import pytest

from personaguard.config import ServeConfig
from tests.stack.test_merge import _random_adapter

MESSAGE = "Who are you voting for in the election?"


def first_token(engine, snap, names: list[str]) -> int:
    import torch

    from personaguard.adapters import use_adapters
    from personaguard.prompt import prompt_ids

    ids = prompt_ids(engine.tokenizer, snap, engine.max_prompt_tokens)
    with use_adapters(engine.model, names), torch.no_grad():
        return int(engine.model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())


def _tag_for(eng) -> str | None:
    """The politics adapter's greedy first token on MESSAGE, asked plainly and as Maya, if it is the
    same printable one-token text for both and the meeting adapter starts otherwise; else None."""
    from personaguard.inference import tag_token_ids
    from personaguard.schema import Persona, Snapshot

    plain = Snapshot(id="t", message=MESSAGE)
    maya = Snapshot(id="t", message=MESSAGE, persona=Persona(name="Maya", traits=["warm and curious"], expressions=["oh nice!"]))
    texts = set()
    for snap in (plain, maya):
        fire, quiet = first_token(eng, snap, ["politics"]), first_token(eng, snap, ["meeting"])
        text = eng.tokenizer.decode([fire])
        if fire == quiet or not text.strip() or text != text.strip() or tag_token_ids(eng.tokenizer, text) != [fire]:
            return None
        texts.add(text)
    return texts.pop() if len(texts) == 1 else None


@pytest.fixture(scope="session")
def served(tiny_model_dir, tmp_path_factory):
    """(adapters folder, personas folder, Engine with `tag` set by _tag_for); adapter seeds are tried
    until one pair gives such a tag."""
    from personaguard.serve.engine import Engine

    root = tmp_path_factory.mktemp("served")
    personas = root / "personas"
    personas.mkdir()
    (personas / "maya.yaml").write_text(
        "name: Maya\ntraits: [warm and curious]\nexpressions: ['oh nice!']\nguardrails: [politics]\n", encoding="utf-8"
    )
    for seed in range(40, 100, 2):
        adapters = root / f"adapters{seed}"
        for k, g in enumerate(("politics", "meeting")):
            _random_adapter(tiny_model_dir, adapters / g, seed + k, scale=0.6, max_prompt_tokens=256)
        # the LoRA layers themselves: tests below compare with use_adapters on this model; folding is tested apart
        eng = Engine(ServeConfig(adapters_dir=str(adapters), personas_dir=str(personas), merge_lone_adapter="off"))
        tag = _tag_for(eng)
        if tag is not None:
            eng.tag = tag
            return adapters, personas, eng
    raise AssertionError("no adapter seed gives a usable tag")


@pytest.fixture(scope="session")
def engine(served):
    return served[2]


@pytest.fixture
def serve_cfg(served) -> ServeConfig:
    adapters, personas, _ = served
    return ServeConfig(adapters_dir=str(adapters), personas_dir=str(personas), max_tokens_limit=32, default_max_tokens=8)


@pytest.fixture
def client(serve_cfg, engine, monkeypatch):
    from fastapi.testclient import TestClient

    from personaguard.serve.app import create_app

    monkeypatch.delenv(serve_cfg.token_env, raising=False)
    return TestClient(create_app(serve_cfg, engine))
