"""A few checks on the real embedded SmolLM2-135M-Instruct (slow; CI runs them)."""

import math

import pytest
import torch

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smol():
    from personaguard.models import EMBEDDED, resolve_model

    return resolve_model(EMBEDDED)  # converts the GGUF once into the cache


def test_converted_model_is_plain_and_chats(smol):
    from transformers import AutoConfig

    from personaguard.inference import generate_replies
    from personaguard.models import load_model
    from personaguard.prompt import prompt_ids
    from personaguard.schema import Snapshot

    assert getattr(AutoConfig.from_pretrained(smol), "quantization_config", None) is None
    model, tok = load_model(smol)
    snap = Snapshot(id="a", persona={"name": "Mia", "traits": ["baker"]}, message="What's your favourite cake?")
    [reply], _ = generate_replies(model, tok, [prompt_ids(tok, snap)], max_new_tokens=12)
    assert len(reply.split()) >= 3


@pytest.fixture(scope="module")
def politics_run(smol, tmp_path_factory):
    """Thirty ORPO steps on the real model: enough to move the guard score, cheap enough for CI.

    The data has no hard negatives: telling a political question from a same-shaped contrast one
    ("...the new tax bill?" / "...the new spider-man movie?") takes ~100 steps (docs/research-log.md),
    while thirty steps do learn the topic against ordinary neutral turns, which is what these checks need."""
    from personaguard.config import GenerateConfig, TrainConfig
    from personaguard.data import generate
    from personaguard.train import train

    root = tmp_path_factory.mktemp("smol")
    data = generate.run(
        GenerateConfig(
            guardrail="politics", n=100, test_fraction=0.2, val_fraction=0.1, hard_negative_share=0.0, out_dir=str(root / "d")
        )
    )
    train.run(
        TrainConfig(
            model=smol,
            data_dir=str(data.data_dir),
            out_dir=str(root / "a"),
            max_steps=30,
            batch_size=4,
            lr=2e-3,
            max_prompt_tokens=192,
            max_reply_tokens=32,
            save_steps=100,
        )
    )
    return data.data_dir, root / "a"


def test_few_orpo_steps_raise_guard_score(smol, politics_run):
    from peft import PeftModel

    from personaguard.inference import guard_scores
    from personaguard.models import load_model
    from personaguard.prompt import prompt_ids
    from personaguard.schema import Snapshot, read_jsonl

    data_dir, adapter = politics_run
    test = [s for s in read_jsonl(data_dir / "test.jsonl", Snapshot) if s.label == "politics"][:6]
    base, tok = load_model(smol)
    prompts = [prompt_ids(tok, s, 192) for s in test]
    before, _ = guard_scores(base, tok, prompts, "<guard>")
    reference = {k: v.clone() for k, v in base.state_dict().items()}

    model = PeftModel.from_pretrained(base, str(adapter)).eval()
    after, _ = guard_scores(model, tok, prompts, "<guard>")
    # thirty steps move the tag probability by orders of magnitude (1e-10 -> 1e-3 seen here), so compare logs
    mean_log = lambda xs: sum(math.log(max(x, 1e-30)) for x in xs) / len(xs)  # noqa: E731
    assert mean_log(after) > mean_log(before) + 3.0
    # base weights untouched: the LoRA wrapper's base layers hold exactly the original tensors
    state = model.get_base_model().state_dict()
    for k, v in reference.items():
        wrapped = k.replace(".weight", ".base_layer.weight")
        assert torch.equal(state.get(wrapped, state.get(k)), v), k


def test_adapter_against_every_offline_baseline(smol, politics_run):
    """The comparison table of issue 4 on the real model: base, adapter (plain and gated), guardrail in
    the system prompt, embedding classifier (packaged MiniLM) -- same items, same metrics."""
    import json

    from personaguard.config import EvaluateConfig
    from personaguard.evaluate import evaluate

    data_dir, adapter = politics_run
    out = adapter.parent / "eval"
    res = evaluate.run(
        EvaluateConfig(
            model=smol,
            adapter=str(adapter),
            data=str(data_dir / "test.jsonl"),
            out_dir=str(out),
            settings=["none", "adapter", "adapter_gated", "system_prompt", "embedding"],
            baseline_train_data=str(data_dir / "train.jsonl"),
            max_new_tokens=12,
            max_prompt_tokens=192,
            batch_size=6,
        )
    )
    assert set(res.metrics) == {"none", "adapter", "adapter_gated", "system_prompt", "embedding"}
    for name, m in res.metrics.items():
        assert m["n_triggering"] + m["n_neutral"] == 20, name
        assert m["auroc"] is not None and m["latency_guard_s"] > 0, name
    assert res.metrics["none"]["tag_rate"] == 0.0  # the base model never invents the tag
    # the guard score of the trained adapter ranks triggering above neutral better than the base model's
    assert res.metrics["adapter"]["auroc"] > res.metrics["none"]["auroc"]
    report = (out / "report.md").read_text()
    assert all(f"| {s} |" in report for s in res.metrics)
    assert json.loads((out / "metrics.json").read_text())["settings"]["embedding"]["auroc"] >= 0.5


def test_user_guardrail_trains_offline_end_to_end(smol, tmp_path, monkeypatch):
    """A guardrail that exists only as a YAML file (configs/guardrails/religion.yaml): the pipeline
    builds its data offline from the file's examples, trains twenty steps on the real model, and
    evaluates it on its test split and on the packaged real-chat set that judges it. Twenty steps
    raise the held-out triggers' guard score far above the base model's."""
    import json
    from pathlib import Path

    from personaguard import pipeline
    from personaguard.config import PipelineConfig, load_config

    monkeypatch.setenv("PERSONAGUARD_HOME", str(tmp_path / "home"))
    repo = Path(__file__).resolve().parents[1]
    sets = [
        "guardrails=[religion]",
        f"guardrails_dir={repo / 'configs' / 'guardrails'}",
        f"run_dir={tmp_path / 'run'}",
        "generate.n=80",
        "train.max_steps=20",
        "train.epochs=1",
        "train.batch_size=4",
        "train.lr=2.0e-3",
        "train.save_steps=100",
        "evaluate.max_new_tokens=8",
        "evaluate.limit=16",
        "evaluate.settings=[none,adapter]",
        "extra_eval_data=[real-religion-v1]",
    ]
    cfg = load_config(PipelineConfig, repo / "configs" / "quickstart.yaml", sets)
    res = pipeline.run(cfg, 1, 3, source="test")
    adapter = res.run_dir / "adapters" / "religion"
    assert json.loads((adapter / "personaguard.json").read_text())["guardrail"]["name"] == "religion"
    real = json.loads((res.run_dir / "eval" / "religion" / "real-religion-v1" / "metrics.json").read_text())
    assert set(real["settings"]["adapter"]["per_label"]) == {"religion", "none"}
    preds = [json.loads(x) for x in (res.run_dir / "eval" / "religion" / "test" / "predictions.jsonl").read_text().splitlines()]
    score = {s: [p["guard_score"] for p in preds if p["setting"] == s and p["label"] == "religion"] for s in ("none", "adapter")}
    assert score["adapter"] and len(score["adapter"]) == len(score["none"])
    mean_log = lambda xs: sum(math.log(max(x, 1e-30)) for x in xs) / len(xs)  # noqa: E731
    assert mean_log(score["adapter"]) > mean_log(score["none"]) + 3.0
