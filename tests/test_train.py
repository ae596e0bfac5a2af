import csv

import pytest
import torch

from personaguard.config import TrainConfig
from personaguard.schema import Example, write_jsonl_atomic


def make_examples(n: int) -> list[Example]:
    rows = []
    for i in range(n):
        trig = i % 2 == 0
        rows.append(Example(
            id=f"x-{i}", persona={"name": "Ada", "traits": ["kind"], "expressions": ["haha nice"]},
            memories=["They love hiking"] if i % 3 == 0 else [],
            history=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello!"}],
            message="Who are you voting for in the election?" if trig else "I love baking bread",
            label="politics" if trig else "none",
            chosen="<guard> I keep out of politics, but tell me about your week!" if trig else "haha nice, what bread?",
            rejected="I think the president is great" if trig else "<guard> I keep out of politics",
        ))
    return rows


@pytest.fixture
def data_dir(tmp_path):
    d = tmp_path / "data"
    write_jsonl_atomic(d / "train.jsonl", make_examples(12))
    write_jsonl_atomic(d / "validation.jsonl", make_examples(4))
    return d


def test_training_changes_lora_only(tiny_model_dir, data_dir, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from personaguard import train

    out = tmp_path / "adapter"
    cfg = TrainConfig(model=tiny_model_dir, data_dir=str(data_dir), out_dir=str(out), max_steps=4, batch_size=4,
                      logging_steps=1, save_steps=2, lr=1e-2)
    base_before = {k: v.clone() for k, v in AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict().items()}
    res = train.run(cfg)
    assert res.steps == 4 and res.final_loss is not None and torch.isfinite(torch.tensor(res.final_loss))
    for f in ("adapter_config.json", "adapter_model.safetensors", "config.yaml", "guardrail.yaml", "metrics.csv"):
        assert (out / f).exists(), f
    lora = load_file(out / "adapter_model.safetensors")
    b_weights = [v for k, v in lora.items() if "lora_B" in k]
    assert b_weights and any(v.abs().sum() > 0 for v in b_weights)  # B starts at zero: it moved
    base_after = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    assert all(torch.equal(base_before[k], base_after[k]) for k in base_before)
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert rows and {"nll", "or_loss", "log_odds", "chosen_logp", "rejected_logp"} <= set(rows[0])
    assert any(r["or_loss"] for r in rows) and any(r["eval_loss"] for r in rows)


def test_resume_continues_from_checkpoint(tiny_model_dir, data_dir, tmp_path):
    from personaguard import train

    out = tmp_path / "adapter"
    base = dict(model=tiny_model_dir, data_dir=str(data_dir), out_dir=str(out), batch_size=4, logging_steps=1, save_steps=2)
    train.run(TrainConfig(**base, max_steps=2))
    assert (out / "checkpoint-2").is_dir()
    res = train.run(TrainConfig(**base, max_steps=4, resume=True))
    assert res.steps == 4
    steps = [int(r["step"]) for r in csv.DictReader((out / "metrics.csv").open()) if r["loss"]]
    assert steps[:2] == [1, 2] and steps[-1] == 4
