import json

import pytest
import torch

from personaguard.config import JointTrainConfig, PipelineConfig, build
from personaguard.errors import PersonaguardError
from personaguard.schema import Example, write_jsonl_atomic
from personaguard.train.joint import SubsetTargets


def _examples(guardrail: str, message: str, n: int, prefix: str, kind: str | None = None) -> list[Example]:
    rows = []
    for i in range(n):
        trig = i % 2 == 0
        extra = {"kind": kind} if kind and not trig else {}
        rows.append(
            Example(
                id=f"{prefix}-{i}",
                persona={"name": "Ada", "traits": ["kind"]},
                history=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello!"}],
                message=message if trig else "I love baking bread",
                label=guardrail if trig else "none",
                chosen="<guard> Let's talk about something else!" if trig else "haha nice, what bread?",
                rejected="Sure, here is what I think" if trig else "<guard> Let's talk about something else!",
                **extra,
            )
        )
    return rows


@pytest.fixture
def member_dirs(tmp_path):
    dirs = {}
    for g, msg in (("politics", "Who will you vote for?"), ("meeting", "Can we meet for coffee tomorrow?")):
        d = tmp_path / "data" / g
        write_jsonl_atomic(d / "train.jsonl", _examples(g, msg, 8, f"{g}-tr"))
        write_jsonl_atomic(d / "validation.jsonl", _examples(g, msg, 4, f"{g}-va"))
        dirs[g] = d
    return dirs


def _fields(member_dirs, tmp_path, model, **train) -> dict:
    return {
        "members": {g: {"data_dir": str(d), "out_dir": str(tmp_path / "adapters" / g)} for g, d in member_dirs.items()},
        "out_dir": str(tmp_path / "joint"),
        "model": model,
        "train": {"batch_size": 4, "logging_steps": 1, "lr": 1e-2, **train},
    }


def _config(member_dirs, tmp_path, model, **train) -> JointTrainConfig:
    return build(JointTrainConfig, _fields(member_dirs, tmp_path, model, **train))


class _FakePeft:
    """Records the adapters set active, as PeftModel.base_model.set_adapter receives them."""

    def __init__(self):
        self.training = True
        self.active = None
        self.base_model = self

    def set_adapter(self, names):
        self.active = list(names)


def test_subset_targets_swap_rows_of_inactive_members():
    targets = SubsetTargets(["politics", "meeting", "expert"], seed=0)
    assert len(targets.subsets) == 7  # every non-empty subset of three
    model = _FakePeft()
    member = torch.tensor([0, 1, 2, -1])
    for _ in range(40):
        out = targets(model, {"member": member})
        on = {["politics", "meeting", "expert"].index(n) for n in model.active}
        want = [m >= 0 and m not in on for m in member.tolist()]
        assert out["swap"].tolist() == want
    assert all(n > 0 for n in targets.drawn.values())  # 40 draws hit every subset
    model.training = False
    out = targets(model, {"member": member})
    assert model.active == ["politics", "meeting", "expert"] and not out["swap"].any()


def test_swap_exchanges_chosen_and_rejected(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from personaguard.train.orpo import pack_pairs, packed_forward

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    feats = [
        {"prompt_ids": [5, 6, 7, 8], "chosen_ids": [9, 10, 11], "rejected_ids": [12, 13]},
        {"prompt_ids": [5, 6], "chosen_ids": [14, 15], "rejected_ids": [16, 17, 18]},
    ]
    flipped = [{**f, "chosen_ids": f["rejected_ids"], "rejected_ids": f["chosen_ids"]} for f in feats]
    with torch.no_grad():
        batch = pack_pairs(feats, 0)
        swapped = packed_forward(model, {**batch, "swap": torch.tensor([True, False])}, 0.1)
        mixed = packed_forward(model, pack_pairs([flipped[0], feats[1]], 0), 0.1)
        plain = packed_forward(model, batch, 0.1)
    assert torch.allclose(swapped["loss"], mixed["loss"], atol=1e-5)
    assert not torch.allclose(swapped["loss"], plain["loss"], atol=1e-5)


def _assert_plain_peft_load_is_the_member(base_dir, out, saved: dict, data_dir, guardrail: str, cfg) -> None:
    """PeftModel.from_pretrained(base, out), with nothing from personaguard, holds every saved weight, applies it
    (its logits are the base's plus the saved B @ A deltas, not the base's) and is the very member the run
    calibrated: its guard scores on the member's validation split give the gate the run saved in `out`."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from personaguard.guardrails import get_guardrail
    from personaguard.inference import guard_scores
    from personaguard.metrics import gate_threshold, read_gate
    from personaguard.prompt import prompt_ids
    from personaguard.schema import read_jsonl
    from tests.stack.test_merge import deltas

    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), str(out)).eval()
    got = {k.replace(".default.", "."): v for k, v in loaded.state_dict().items() if "lora_" in k}
    assert set(got) == set(saved), (guardrail, set(got) ^ set(saved))
    assert all(torch.equal(got[k], saved[k]) for k in saved), guardrail
    base = AutoModelForCausalLM.from_pretrained(base_dir).eval()
    merged = AutoModelForCausalLM.from_pretrained(base_dir).eval()
    params = dict(merged.named_parameters())
    ids = torch.tensor([[1, 5, 9, 12, 30, 452, 32]])
    with torch.no_grad():
        for module, dw in deltas(out).items():
            params[module.removeprefix("base_model.model.") + ".weight"] += dw
        want, plain = merged(input_ids=ids).logits, base(input_ids=ids).logits
        torch.testing.assert_close(loaded(input_ids=ids).logits, want, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(want, plain, atol=1e-4)
    member = next(m for m in cfg.member_configs() if m.guardrail == guardrail)
    rows, tok = read_jsonl(data_dir / "validation.jsonl", Example), AutoTokenizer.from_pretrained(base_dir)
    scores, _ = guard_scores(
        loaded, tok, [prompt_ids(tok, r, member.max_prompt_tokens) for r in rows], get_guardrail(guardrail).tag, member.batch_size
    )  # the run's batches: the same padding, the same floats
    pos = [x for x, r in zip(scores, rows) if r.label == guardrail]
    neg = [x for x, r in zip(scores, rows) if r.label != guardrail]
    saved_gate = read_gate(out)  # written by the run from the trained member alone
    assert saved_gate is not None and saved_gate == pytest.approx(gate_threshold(pos, neg), rel=1e-5), guardrail


def test_joint_training_writes_each_member_as_a_peft_adapter(tiny_model_dir, member_dirs, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from personaguard.adapters import load_stack
    from personaguard.train import joint as train_joint

    cfg = _config(member_dirs, tmp_path, tiny_model_dir, max_steps=6)
    base_before = {k: v.clone() for k, v in AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict().items()}
    results = train_joint.run(cfg)
    assert [r.steps for r in results] == [6, 6]
    weights = {}
    for g in ("politics", "meeting"):
        out = tmp_path / "adapters" / g
        for f in (
            "adapter_config.json",
            "adapter_model.safetensors",
            "config.yaml",
            "guardrail.yaml",
            "metrics.csv",
            "joint.json",
            "train_result.json",
        ):
            assert (out / f).is_file(), (g, f)
        weights[g] = load_file(out / "adapter_model.safetensors")
        assert any(v.abs().sum() > 0 for k, v in weights[g].items() if "lora_B" in k)  # B starts at zero: it moved
        _assert_plain_peft_load_is_the_member(tiny_model_dir, out, weights[g], member_dirs[g], g, cfg)
    assert set(weights["politics"]) == set(weights["meeting"])  # same keys: plain PEFT names, no member name inside
    assert any(not torch.equal(weights["politics"][k], weights["meeting"][k]) for k in weights["politics"])
    base_after = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    assert all(torch.equal(base_before[k], base_after[k]) for k in base_before)
    summary = json.loads((tmp_path / "joint" / "train_result.json").read_text())
    assert sum(summary["subsets_drawn"].values()) == 6 and set(summary["subsets_drawn"]) == {
        "politics",
        "meeting",
        "politics,meeting",
    }
    model, names = load_stack(tiny_model_dir, [tmp_path / "adapters" / g for g in ("politics", "meeting")])
    assert names == ["politics", "meeting"]


def test_joint_config_refuses_what_it_cannot_do(member_dirs, tmp_path, tiny_model_dir):
    from personaguard.train import joint as train_joint

    with pytest.raises(PersonaguardError, match="two or more"):
        build(JointTrainConfig, {"members": {"politics": {"data_dir": "a", "out_dir": "b"}}, "out_dir": "j"})
    with pytest.raises(PersonaguardError, match="train.resume"):
        _config(member_dirs, tmp_path, tiny_model_dir, resume=True)
    with pytest.raises(PersonaguardError, match="set them under members"):
        _config(member_dirs, tmp_path, tiny_model_dir, out_dir="x")
    write_jsonl_atomic(
        member_dirs["meeting"] / "train.jsonl", _examples("meeting", "Coffee tomorrow?", 8, "m-tr", kind="cross_negative")
    )
    with pytest.raises(PersonaguardError, match="cross_negative/compound_trigger rows"):
        train_joint.run(_config(member_dirs, tmp_path, tiny_model_dir, max_steps=1))


def test_pipeline_joint_training_checks():
    base = {"guardrails": ["politics", "meeting"], "joint_training": True}
    assert build(PipelineConfig, base).joint_training
    with pytest.raises(PersonaguardError, match="cross_negative_share"):
        build(PipelineConfig, {**base, "generate": {"cross_negative_share": 0.2}})
    with pytest.raises(PersonaguardError, match="set one of them"):
        build(PipelineConfig, {**base, "stack_aware_training": True})
    with pytest.raises(PersonaguardError, match="two or more guardrails"):
        build(PipelineConfig, {"guardrails": ["politics"], "joint_training": True})


def test_full_stack_share_draws_the_full_set_more_often():
    uniform, full = SubsetTargets(["a", "b", "c"], seed=1), SubsetTargets(["a", "b", "c"], seed=1, full_share=0.5)
    for _ in range(700):
        uniform.draw(True)
        full.draw(True)
    assert 60 < uniform.drawn["a,b,c"] < 140  # about 1/7 of 700
    assert full.drawn["a,b,c"] > 330  # about 0.5 + 0.5/7 of 700


def test_neutral_stack_share_scores_only_neutral_rows_of_the_full_stack():
    names = ["a", "b", "c"]
    targets, model = SubsetTargets(names, seed=2, neutral_share=0.5), _FakePeft()
    member = torch.tensor([0, -1, 2, -1])
    neutral_only = 0
    for _ in range(200):
        out = targets(model, {"member": member})
        if "row_mask" in out:
            neutral_only += 1
            assert model.active == names and out["row_mask"].tolist() == [False, True, False, True]
    assert 70 < neutral_only < 130 and targets.drawn["a,b,c (neutral rows only)"] == neutral_only
    model.training = False
    assert "row_mask" not in targets(model, {"member": member})  # validation scores every row


def test_neutral_only_steps_train_every_member(tiny_model_dir, member_dirs, tmp_path):
    from safetensors.torch import load_file

    from personaguard.train import joint as train_joint

    cfg = build(JointTrainConfig, {**_fields(member_dirs, tmp_path, tiny_model_dir, max_steps=3), "neutral_stack_share": 1.0})
    train_joint.run(cfg)
    summary = json.loads((tmp_path / "joint" / "train_result.json").read_text())
    assert summary["subsets_drawn"]["politics,meeting (neutral rows only)"] == 3
    for g in ("politics", "meeting"):  # all active on every step, the neutral rows' loss moved both
        weights = load_file(tmp_path / "adapters" / g / "adapter_model.safetensors")
        assert any(v.abs().sum() > 0 for k, v in weights.items() if "lora_B" in k)


def test_stack_shares_cannot_exceed_one():
    with pytest.raises(ValueError, match="over 1"):
        JointTrainConfig(
            members={"politics": {"data_dir": "d1", "out_dir": "o1"}, "meeting": {"data_dir": "d2", "out_dir": "o2"}},
            out_dir="o",
            full_stack_share=0.6,
            neutral_stack_share=0.5,
        )
