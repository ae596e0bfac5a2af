import json

import pytest

from personaguard.config import EvaluateConfig, TrainConfig
from personaguard.metrics import detection_metrics
from personaguard.schema import write_jsonl_atomic
from tests.train.test_train import make_examples


def _row(label, reply, score):
    return {"label": label, "reply": reply, "guard_score": score, "guard_seconds": 0.1, "reply_seconds": 0.2}


def test_detection_metrics_by_hand():
    rows = [
        _row("politics", "<guard> no politics", 0.9),
        _row("politics", "sure, I vote X", 0.4),
        _row("none", "haha nice", 0.1),
        _row("none", "ok <guard> weird", 0.5),
        _row("meeting", "<guard> can't meet", 0.3),
    ]
    m = detection_metrics(rows, "politics", "<guard>")
    assert m["tag_rate"] == 0.5
    assert m["false_tag_rate"] == 0.5  # tag anywhere in a neutral reply counts
    assert m["precision"] == 0.5  # 1 TP, 1 FP (meeting reply starts with the tag)
    assert m["recall"] == 0.5
    # scores: pos {0.9, 0.4}, neg {0.1, 0.5, 0.3}: 5 of 6 pairs ordered correctly
    assert m["auroc"] == pytest.approx(5 / 6)
    assert m["per_label"]["meeting"] == {"n": 1, "tag_rate": 1.0}


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    from personaguard.train import train

    root = tmp_path_factory.mktemp("ev")
    write_jsonl_atomic(root / "data" / "train.jsonl", make_examples(8))
    write_jsonl_atomic(root / "data" / "test.jsonl", make_examples(6))
    train.run(
        TrainConfig(model=tiny_model_dir, data_dir=str(root / "data"), out_dir=str(root / "adapter"), max_steps=2, batch_size=4)
    )
    return root


def test_evaluate_writes_outputs(tiny_model_dir, trained):
    from personaguard.evaluate import evaluate

    out = trained / "eval"
    res = evaluate.run(
        EvaluateConfig(
            model=tiny_model_dir,
            adapter=str(trained / "adapter"),
            data=str(trained / "data" / "test.jsonl"),
            out_dir=str(out),
            max_new_tokens=6,
            batch_size=4,
        )
    )
    assert set(res.metrics) == {"none", "adapter"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["settings"]["adapter"]["n_triggering"] == 3 and metrics["settings"]["adapter"]["n_neutral"] == 3
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 12 and all(0.0 <= p["guard_score"] <= 1.0 for p in preds)
    assert "| adapter |" in (out / "report.md").read_text()
    # the 'none' setting really disables the adapter: scores differ once LoRA B is non-zero
    by = {(p["id"], p["setting"]): p["guard_score"] for p in preds}
    assert any(abs(by[(i, "none")] - by[(i, "adapter")]) > 0 for i, _ in by)


def test_guard_score_is_tag_probability(tiny_model_dir):
    import torch

    from personaguard.inference import guard_scores, tag_token_ids
    from personaguard.models import load_model

    model, tok = load_model(tiny_model_dir)
    prompts = [[1, 5, 9, 12], [1, 7]]
    scores, _ = guard_scores(model, tok, prompts, "<guard>", batch_size=2)
    tag = tag_token_ids(tok, "<guard>")
    for p, s in zip(prompts, scores):
        with torch.no_grad():
            lp = torch.log_softmax(model(torch.tensor([p + tag])).logits[0], -1)
        ref = float(torch.exp(sum(lp[len(p) - 1 + k, t] for k, t in enumerate(tag))))
        assert s == pytest.approx(ref, rel=1e-4)


def test_baselines_and_repeated_runs(tiny_model_dir, trained):
    from personaguard.evaluate import evaluate

    out = trained / "eval_baselines"
    res = evaluate.run(
        EvaluateConfig(
            model=tiny_model_dir,
            adapter=str(trained / "adapter"),
            data=str(trained / "data" / "test.jsonl"),
            out_dir=str(out),
            settings=["system_prompt", "adapter", "embedding"],
            runs=2,
            max_new_tokens=4,
            batch_size=4,
            baseline_train_data=str(trained / "data" / "train.jsonl"),
        )
    )
    assert res.metrics["adapter"]["runs"] == 2 and "tag_rate_std" in res.metrics["adapter"]
    assert res.metrics["adapter"]["neutral_preserved"] is not None  # tag judge verdicts recorded
    # the toy data separates perfectly by message, so the embedding classifier must too
    assert res.metrics["embedding"]["auroc"] == 1.0
    preds = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert {p["run"] for p in preds if p["setting"] == "adapter"} == {0, 1}
    assert all("valid" in p for p in preds if p["setting"] != "embedding")


def test_gate_threshold_sits_between_classes():
    from personaguard.metrics import gate_threshold

    thr = gate_threshold([0.5, 0.8, 0.9], [0.1, 0.3, 0.6])
    # best F1 keeps every positive (0.5), so the gate moves halfway down to the next negative (0.3)
    assert thr == pytest.approx(0.4)


def test_gated_replies_follow_the_gate(tiny_model_dir):
    from personaguard.inference import gated_replies, generate_replies
    from personaguard.models import load_model

    model, tok = load_model(tiny_model_dir)
    prompts = [[1, 5, 9, 12], [1, 7], [3, 4, 5]]
    raw, _ = generate_replies(model, tok, prompts, 6, 4)
    forced = gated_replies(model, tok, prompts, [0.9, 0.9, 0.9], 0.5, "<guard>", raw, 8, 4)
    assert all(r.startswith("<guard>") for r in forced)
    fake_tagged = ["<guard> x"] * 3
    banned = gated_replies(model, tok, prompts, [0.1, 0.1, 0.1], 0.5, "<guard>", fake_tagged, 8, 4)
    assert not any(r.startswith("<") for r in banned)


def test_llm_judge_and_llama_guard_over_http(tiny_model_dir, trained, monkeypatch):
    """evaluate end to end against a scripted OpenAI-compatible server: judge verdicts and Llama Guard
    decisions flow into the metrics; a second run is answered from the judge cache."""
    from personaguard.config import EndpointConfig
    from personaguard.evaluate import evaluate
    from tests.scripted_openai import ScriptedOpenAI, chat_body, completion_body

    monkeypatch.setenv("PG_EVAL_KEY", "sk-eval-secret")

    def rule(path, body):
        if path.endswith("/chat/completions"):  # the judge: every verdict says "adheres"
            return 200, chat_body(json.dumps({"explanation": "fine", "valid": True, "adheres": True}))
        return 200, completion_body("unsafe\nS1" if "voting" in body["prompt"].split("<END CONVERSATION>")[0][-400:] else "safe")

    out = trained / "eval_http"
    with ScriptedOpenAI() as server:
        server.respond_with(rule)
        ep = EndpointConfig(base_url=server.base_url, model="judge-x", api_key_env="PG_EVAL_KEY")
        lg = EndpointConfig(base_url=server.base_url, model="llama-guard-3", api_key_env="PG_EVAL_KEY")
        cfg = EvaluateConfig(
            model=tiny_model_dir,
            adapter=str(trained / "adapter"),
            data=str(trained / "data" / "test.jsonl"),
            out_dir=str(out),
            settings=["adapter", "llama_guard"],
            judge=ep,
            llama_guard=lg,
            max_new_tokens=4,
            batch_size=4,
        )
        res = evaluate.run(cfg)
        n_first = len(server.requests)
        assert sum(r["path"].endswith("/chat/completions") for r in server.requests) >= 1
        evaluate.run(cfg)
        judge_again = [r for r in server.requests[n_first:] if r["path"].endswith("/chat/completions")]
    assert res.metrics["adapter"]["adherence"] == 1.0 and res.metrics["adapter"]["neutral_preserved"] == 1.0
    assert res.metrics["llama_guard"]["tag_rate"] == 1.0 and res.metrics["llama_guard"]["false_tag_rate"] == 0.0
    assert judge_again == []  # every verdict came from judge_cache.jsonl
    meta = json.loads((out / "metrics.json").read_text())["meta"]
    assert meta["judge"].startswith("LLM (judge-x)")
    assert "sk-eval-secret" not in "".join(p.read_text() for p in out.iterdir() if p.is_file())


@pytest.fixture(scope="module")
def trained_short(tiny_model_dir, tmp_path_factory):
    """An adapter trained with prompts cut to 72 tokens (the shipped configs train at 224, the default is 512)."""
    from personaguard.train import train

    root = tmp_path_factory.mktemp("short")
    write_jsonl_atomic(root / "data" / "train.jsonl", make_examples(8))
    write_jsonl_atomic(root / "data" / "test.jsonl", make_examples(4))
    train.run(
        TrainConfig(
            model=tiny_model_dir,
            data_dir=str(root / "data"),
            out_dir=str(root / "adapter"),
            max_steps=1,
            batch_size=4,
            max_prompt_tokens=72,
        )
    )
    return root


def test_standalone_evaluate_uses_the_adapters_prompt_length_and_guardrail(tiny_model_dir, trained_short, monkeypatch):
    """`personaguard evaluate --adapter DIR` once cut prompts at 512 tokens and assumed guardrail politics,
    whatever the adapter was trained with; now the folder says, and prompts are cut as in training."""
    import yaml

    from personaguard import prompt
    from personaguard.evaluate import evaluate

    cuts = []
    real = prompt.prompt_ids
    monkeypatch.setattr(
        prompt, "prompt_ids", lambda tok, s, max_tokens, *a, **k: cuts.append(max_tokens) or real(tok, s, max_tokens, *a, **k)
    )
    out = trained_short / "eval"
    evaluate.run(
        EvaluateConfig(
            model=tiny_model_dir,
            adapter=str(trained_short / "adapter"),
            data=str(trained_short / "data" / "test.jsonl"),
            out_dir=str(out),
            max_new_tokens=4,
            batch_size=4,
        )
    )
    used = yaml.safe_load((out / "config.yaml").read_text())
    trained_with = yaml.safe_load((trained_short / "adapter" / "config.yaml").read_text())
    assert used["max_prompt_tokens"] == 72 and set(cuts) == {72}
    assert used["model"] == trained_with["model"] and used["guardrail"] == "politics"


def test_standalone_evaluate_takes_the_base_model_from_the_adapter(trained_short):
    import yaml

    from personaguard.evaluate import evaluate

    out = trained_short / "eval_no_model"
    evaluate.run(
        EvaluateConfig(
            adapter=str(trained_short / "adapter"),
            data=str(trained_short / "data" / "test.jsonl"),
            out_dir=str(out),
            max_new_tokens=4,
            batch_size=4,
            settings=["adapter"],
        )
    )
    trained_with = yaml.safe_load((trained_short / "adapter" / "config.yaml").read_text())
    assert yaml.safe_load((out / "config.yaml").read_text())["model"] == trained_with["model"]


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("max_prompt_tokens", 512, "trained at 72"),
        ("guardrail", "meeting", "trained for 'politics'"),
        ("model", "embedded:smollm2-135m-instruct", "contradicts the adapter"),
    ],
)
def test_evaluate_refuses_a_value_that_contradicts_the_adapter(trained_short, field, value, message):
    from personaguard.errors import PersonaguardError
    from personaguard.evaluate import evaluate

    cfg = EvaluateConfig(
        adapter=str(trained_short / "adapter"),
        data=str(trained_short / "data" / "test.jsonl"),
        out_dir=str(trained_short / "refused"),
        **{field: value},
    )
    with pytest.raises(PersonaguardError, match=message):
        evaluate.run(cfg)
    assert not (trained_short / "refused").exists()  # refused before anything is written


def test_evaluate_without_adapter_needs_a_guardrail(tmp_path):
    from personaguard.errors import PersonaguardError
    from personaguard.evaluate import evaluate

    write_jsonl_atomic(tmp_path / "d.jsonl", make_examples(2))
    with pytest.raises(PersonaguardError, match="--guardrail"):
        evaluate.run(EvaluateConfig(data=str(tmp_path / "d.jsonl"), out_dir=str(tmp_path / "o"), settings=["none"]))


def _no_model_load(monkeypatch):
    from personaguard.evaluate import evaluate

    def boom(*a, **k):
        raise AssertionError("the model must not load before the inputs are checked")

    monkeypatch.setattr(evaluate, "load_eval_model", boom)


def test_evaluate_refuses_an_empty_data_file_before_loading(tmp_path, monkeypatch):
    from personaguard.errors import PersonaguardError
    from personaguard.evaluate import evaluate

    _no_model_load(monkeypatch)
    (tmp_path / "empty.jsonl").write_text("\n")
    cfg = EvaluateConfig(data=str(tmp_path / "empty.jsonl"), out_dir=str(tmp_path / "o"), guardrail="politics", settings=["none"])
    with pytest.raises(PersonaguardError, match=r"empty\.jsonl: no items"):
        evaluate.run(cfg)
    assert not (tmp_path / "o").exists()


def test_evaluate_checks_missing_checkpoints_before_loading(trained_short, tmp_path, monkeypatch):
    from personaguard.errors import PersonaguardError
    from personaguard.evaluate import evaluate

    _no_model_load(monkeypatch)
    cfg = EvaluateConfig(
        adapter=str(trained_short / "adapter"),
        data=str(trained_short / "data" / "test.jsonl"),
        out_dir=str(tmp_path / "o"),
        checkpoints=["3"],
    )
    with pytest.raises(PersonaguardError, match="checkpoint-3 not found"):
        evaluate.run(cfg)
    assert not (tmp_path / "o").exists()


def test_evaluate_refuses_an_out_dir_that_is_a_file(tmp_path, monkeypatch):
    from personaguard.errors import PersonaguardError
    from personaguard.evaluate import evaluate

    _no_model_load(monkeypatch)
    write_jsonl_atomic(tmp_path / "d.jsonl", make_examples(2))
    (tmp_path / "o").write_text("x")
    cfg = EvaluateConfig(data=str(tmp_path / "d.jsonl"), out_dir=str(tmp_path / "o"), guardrail="politics", settings=["none"])
    with pytest.raises(PersonaguardError, match="out_dir .*o: a file is in the way"):
        evaluate.run(cfg)
