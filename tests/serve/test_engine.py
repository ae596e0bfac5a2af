"""The engine's one-prefill turn: its decision equals inference.guard_pass's, and a reply continued from
the decision pass's KV cache equals the same writer's reply generated from scratch."""

import pytest

from personaguard.schema import Persona, Snapshot

from .conftest import MESSAGE

SNAPS = [
    Snapshot(id="a", message=MESSAGE),
    Snapshot(id="b", message="I baked bread today, it came out flat again", persona=Persona(name="Maya")),
    Snapshot(id="c", message="should we meet up for coffee next week?", memories=["User likes tea"]),
]


def _ids(engine, snap):
    from personaguard.prompt import prompt_ids

    return prompt_ids(engine.tokenizer, snap, engine.max_prompt_tokens)


@pytest.mark.parametrize("member", ["politics", "meeting"])
def test_decision_pass_scores_like_guard_pass(engine, member):
    from personaguard.adapters import use_adapters
    from personaguard.inference import guard_pass

    with engine.lock:
        for snap in SNAPS:
            ids = _ids(engine, snap)
            with use_adapters(engine.model, [member]):
                want = guard_pass(engine.model, engine.tokenizer, [ids], engine.tag, batch_size=1)
                (score,), (greedy,), cache = engine._guard_forward(ids, None)
            assert score == pytest.approx(want.scores[0], rel=1e-4, abs=1e-7) and greedy == want.greedy[0]
            assert (
                cache.get_seq_length() == len(ids) + len(engine.tokenizer(engine.tag, add_special_tokens=False)["input_ids"]) - 1
            )


def _from_scratch(engine, snap, writer, fired, n):
    """The writer's greedy reply generated without any cache (the tag first when it fired, banned when not)."""
    import torch

    from personaguard.adapters import use_adapters
    from personaguard.inference import tag_token_ids

    tag = tag_token_ids(engine.tokenizer, engine.tag)
    prefix = tag if fired else []
    x = torch.tensor([_ids(engine, snap) + prefix])
    extra = {} if fired else {"begin_suppress_tokens": tag[:1]}
    with engine.lock, use_adapters(engine.model, [writer] if writer else []), torch.no_grad():
        out = engine.model.generate(
            input_ids=x,
            attention_mask=torch.ones_like(x),
            max_new_tokens=n - len(prefix),
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            pad_token_id=engine.tokenizer.pad_token_id,
            **extra,
        )
    text = engine.tokenizer.decode(out[0, x.shape[1] :], skip_special_tokens=True)
    return f"{engine.tag} {text.lstrip()}" if fired else text


@pytest.mark.parametrize("guardrails", [["politics"], ["meeting"], ["meeting", "politics"]])
def test_reply_from_the_decision_cache_equals_the_reply_from_scratch(engine, guardrails):
    from personaguard.adapters import active_adapters

    for snap in SNAPS:
        turn = engine.turn(snap, guardrails, 10)
        got = "".join(turn.pieces)
        fired = turn.decision.guardrail
        writer = fired or (guardrails[0] if len(guardrails) == 1 else None)
        with engine.lock:
            left = engine.active
            assert left == active_adapters(engine.model)  # this engine does not fold adapters in (conftest)
        # a lone guardrail stays on after its turn: the next turn of the same persona flips nothing
        assert left == ([writer] if writer else [])
        assert got == _from_scratch(engine, snap, writer, bool(fired), 10), (snap.id, guardrails, fired)


def test_a_lone_guardrail_answers_its_quiet_turns_without_the_tag(engine):
    turn = engine.turn(Snapshot(id="q", message=MESSAGE), ["meeting"], 8)
    text = "".join(turn.pieces)
    assert turn.decision.triggered is False and not text.startswith(engine.tag)


def test_a_stack_decides_in_one_mixed_batch_with_each_members_solo_scores(engine):
    from personaguard.adapters import use_adapters

    members = ["meeting", "politics"]
    with engine.lock:
        for snap in SNAPS:
            ids = _ids(engine, snap)
            solo = {}
            for m in members:
                with use_adapters(engine.model, [m]):
                    (solo[m],), _, _ = engine._guard_forward(ids, None)
            decision, caches = engine._decide(ids, members)
            assert decision.scores == pytest.approx(solo, rel=1e-4, abs=1e-7)
            # only the member that fired keeps its row of the batch's cache, as a one-row cache
            assert list(caches) == ([decision.guardrail] if decision.triggered else [])
            for cache in caches.values():
                assert cache.layers[0].keys.shape[0] == 1


def test_a_lone_adapter_folded_into_the_weights_answers_as_its_lora_layers_and_unfolds_exactly(served, engine):
    """merge_lone_adapter: the same turns on an engine that folds a lone adapter into the weights give the
    LoRA engine's decisions (scores to fp32 rounding) and replies; stacks and the base model run on the
    original weight tensors again, bit for bit."""
    import torch

    from personaguard.adapters import active_adapters
    from personaguard.config import ServeConfig
    from personaguard.serve.engine import Engine

    adapters, personas, _ = served
    folded = Engine(ServeConfig(adapters_dir=str(adapters), personas_dir=str(personas), merge_lone_adapter="on"))
    folded.tag = engine.tag
    assert folded.merge_lone and not engine.merge_lone
    weights = {name: p.detach().clone() for name, p in folded.model.named_parameters() if "lora_" not in name}
    for guardrails in (["politics"], ["meeting"], ["meeting", "politics"], [], ["politics"], ["meeting"], []):
        for snap in SNAPS:
            want, got = engine.turn(snap, guardrails, 10), folded.turn(snap, guardrails, 10)
            assert "".join(got.pieces) == "".join(want.pieces), (snap.id, guardrails)
            assert got.decision.guardrail == want.decision.guardrail
            for m, score in want.decision.scores.items():
                assert got.decision.scores[m] == pytest.approx(score, rel=1e-4, abs=1e-7)
        with folded.lock:
            if len(guardrails) == 1:  # folded in: the LoRA layers are off, the weights carry the adapter
                assert folded.active == guardrails and active_adapters(folded.model) == []
                assert folded._merged is not None
            else:
                assert folded._merged is None and folded.active == ([] if not guardrails else active_adapters(folded.model))
                now = {name: p for name, p in folded.model.named_parameters() if "lora_" not in name}
                assert all(torch.equal(now[name], w) for name, w in weights.items()), guardrails


def test_auto_folds_fp32_weights_on_the_cpu_only(served):
    """In bf16 the folded weight rounds W + BA once, the LoRA layer rounds W x and BA x apart: replies
    could change, so `auto` leaves bf16 weights unfolded."""
    from personaguard.config import ServeConfig
    from personaguard.serve.engine import Engine

    adapters = str(served[0])
    assert Engine(ServeConfig(adapters_dir=adapters, personas_dir=None)).merge_lone
    assert not Engine(ServeConfig(adapters_dir=adapters, personas_dir=None, precision="bf16")).merge_lone
    assert not Engine(ServeConfig(adapters_dir=adapters, personas_dir=None, merge_lone_adapter="off")).merge_lone


def test_merge_lone_adapter_reads_yaml_on_and_off(served):
    """`--set merge_lone_adapter=off` reaches the config as YAML's boolean false."""
    from personaguard.config import ServeConfig, load_config

    for given, want in (("off", "off"), ("on", "on"), ("auto", "auto"), ("false", "off")):
        cfg = load_config(ServeConfig, None, [f"adapters_dir={served[0]}", f"merge_lone_adapter={given}"])
        assert cfg.merge_lone_adapter == want
