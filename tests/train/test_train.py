import csv
import json

import pytest
import torch

from personaguard.config import TrainConfig
from personaguard.schema import Example, write_jsonl_atomic


def make_examples(n: int) -> list[Example]:
    rows = []
    for i in range(n):
        trig = i % 2 == 0
        rows.append(
            Example(
                id=f"x-{i}",
                persona={"name": "Ada", "traits": ["kind"], "expressions": ["haha nice"]},
                memories=["They love hiking"] if i % 3 == 0 else [],
                history=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello!"}],
                message="Who are you voting for in the election?" if trig else "I love baking bread",
                label="politics" if trig else "none",
                chosen="<guard> I keep out of politics, but tell me about your week!" if trig else "haha nice, what bread?",
                rejected="I think the president is great" if trig else "<guard> I keep out of politics",
            )
        )
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

    from personaguard.train import train

    out = tmp_path / "adapter"
    cfg = TrainConfig(
        model=tiny_model_dir,
        data_dir=str(data_dir),
        out_dir=str(out),
        max_steps=4,
        batch_size=4,
        logging_steps=1,
        save_steps=2,
        lr=1e-2,
    )
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
    from personaguard.train import train

    out = tmp_path / "adapter"
    base = dict(model=tiny_model_dir, data_dir=str(data_dir), out_dir=str(out), batch_size=4, logging_steps=1, save_steps=2)
    train.run(TrainConfig(**base, max_steps=2))
    assert (out / "checkpoint-2").is_dir()
    res = train.run(TrainConfig(**base, max_steps=4, resume=True))
    assert res.steps == 4
    steps = [int(r["step"]) for r in csv.DictReader((out / "metrics.csv").open()) if r["loss"]]
    assert steps[:2] == [1, 2] and steps[-1] == 4


def test_stack_aware_training_keeps_the_frozen_adapter_and_saves_only_the_new_one(tiny_model_dir, data_dir, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from personaguard.train import train

    base = dict(
        model=tiny_model_dir, data_dir=str(data_dir), max_steps=3, batch_size=4, lr=1e-2, save_steps=100, lora_dropout=0.0
    )
    first = tmp_path / "first"
    train.run(TrainConfig(**base, out_dir=str(first)))
    before = load_file(first / "adapter_model.safetensors")
    # the control: the same adapter with B = 0 (no delta), so both runs load the same structure and use RNG alike
    zero = tmp_path / "zero"
    shutil.copytree(first, zero)
    save_file({k: (torch.zeros_like(v) if "lora_B" in k else v) for k, v in before.items()}, zero / "adapter_model.safetensors")
    train.run(TrainConfig(**base, out_dir=str(tmp_path / "control"), frozen_adapters=[str(zero)]))
    train.run(TrainConfig(**base, out_dir=str(tmp_path / "aware"), frozen_adapters=[str(first)]))
    after = load_file(first / "adapter_model.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)  # the frozen member is untouched
    control = load_file(tmp_path / "control" / "adapter_model.safetensors")
    aware = load_file(tmp_path / "aware" / "adapter_model.safetensors")
    assert set(aware) == set(before)  # only the new adapter's tensors are saved, under PEFT's default names
    assert not any((tmp_path / "aware").glob("frozen_*"))
    # same seed, data and structure: the only difference is the frozen adapter's delta in every forward pass
    assert any(not torch.allclose(aware[k], control[k]) for k in control if "lora_B" in k)


def test_extra_data_dirs_are_mixed_into_the_training_data(tiny_model_dir, data_dir, tmp_path):
    import json
    import shutil

    from personaguard.train import train

    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(data_dir / "train.jsonl", other / "train.jsonl")
    n = len((data_dir / "train.jsonl").read_text().splitlines())
    out = tmp_path / "mixed"
    train.run(
        TrainConfig(
            model=tiny_model_dir,
            data_dir=str(data_dir),
            out_dir=str(out),
            max_steps=1,
            batch_size=4,
            save_steps=100,
            extra_data_dirs=[str(other)],
        )
    )
    assert json.loads((out / "train_result.json").read_text())["train_examples"] == 2 * n


def test_lora_top_layers_adapts_only_the_last_layers(tiny_model_dir, data_dir, tmp_path):
    from safetensors.torch import load_file

    from personaguard.errors import PersonaguardError
    from personaguard.train import train

    base = dict(model=tiny_model_dir, data_dir=str(data_dir), max_steps=2, batch_size=4, lr=1e-2, save_steps=100)
    train.run(TrainConfig(**base, out_dir=str(tmp_path / "top"), lora_top_layers=1))
    keys = load_file(tmp_path / "top" / "adapter_model.safetensors")
    assert keys and all(".layers.1." in k for k in keys)  # tiny model: layers 0 and 1
    # every linear projection of that layer, as 'all-linear' gives
    assert {k.split(".layers.1.")[1].split(".lora_")[0] for k in keys} == {
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.o_proj",
        "mlp.gate_proj",
        "mlp.up_proj",
        "mlp.down_proj",
    }
    with pytest.raises(PersonaguardError, match="lora_top_layers: 5 but the model has 2"):
        train.run(TrainConfig(**base, out_dir=str(tmp_path / "bad"), lora_top_layers=5))


def test_anchor_neutral_loss_trains_and_logs_the_kl(tiny_model_dir, data_dir, tmp_path):
    from safetensors.torch import load_file

    from personaguard.train import train

    base = dict(
        model=tiny_model_dir,
        data_dir=str(data_dir),
        max_steps=3,
        batch_size=4,
        lr=1e-2,
        save_steps=100,
        logging_steps=1,
        lora_dropout=0.0,
    )
    train.run(TrainConfig(**base, out_dir=str(tmp_path / "orpo")))
    res = train.run(TrainConfig(**base, out_dir=str(tmp_path / "anchor"), neutral_loss="anchor"))
    assert res.steps == 3 and torch.isfinite(torch.tensor(res.final_loss))
    rows = list(csv.DictReader((tmp_path / "anchor" / "metrics.csv").open()))
    kl = [float(r["anchor_kl"]) for r in rows if r["anchor_kl"]]
    assert kl and all(k >= 0 for k in kl) and kl[-1] > 0  # first step: LoRA B = 0, the adapter is the base (KL 0)
    assert all(r["tag_shift"] for r in rows if r["anchor_kl"])
    assert not any(r["anchor_kl"] for r in csv.DictReader((tmp_path / "orpo" / "metrics.csv").open()))
    orpo = load_file(tmp_path / "orpo" / "adapter_model.safetensors")
    anchor = load_file(tmp_path / "anchor" / "adapter_model.safetensors")
    assert any(not torch.allclose(anchor[k], orpo[k]) for k in orpo if "lora_B" in k)  # the neutral rows' loss differs


def test_train_refuses_a_guardrail_other_than_the_datas(tmp_path):
    """`train --data-dir <meeting data>` once trained an adapter labelled politics (the old default)."""
    from personaguard.errors import PersonaguardError
    from personaguard.train import train

    write_jsonl_atomic(tmp_path / "data" / "train.jsonl", make_examples(4))  # politics examples
    cfg = TrainConfig(model="unused", data_dir=str(tmp_path / "data"), out_dir=str(tmp_path / "a"), guardrail="meeting")
    with pytest.raises(PersonaguardError, match="generated for guardrail 'politics', but --guardrail is 'meeting'"):
        train.run(cfg)
    assert not (tmp_path / "a").exists()


def _cfg(tmp_path, **kw):
    return TrainConfig(model="unused", data_dir=str(tmp_path / "data"), out_dir=str(tmp_path / "a"), **kw)


def test_a_new_run_into_an_earlier_trainings_folder_needs_overwrite(tmp_path):
    from personaguard.errors import PersonaguardError
    from personaguard.train.train import prepare_out_dir

    out = tmp_path / "a"
    run_id, resumes = prepare_out_dir(_cfg(tmp_path), out)
    assert not resumes and json.loads((out / "run.json").read_text())["run_id"] == run_id
    (out / "metrics.csv").write_text("step\n1\n")
    with pytest.raises(PersonaguardError, match="--overwrite"):
        prepare_out_dir(_cfg(tmp_path), out)
    assert (out / "metrics.csv").is_file()  # nothing lost by the refusal
    new_id, _ = prepare_out_dir(_cfg(tmp_path, overwrite=True), out)
    assert new_id != run_id and not (out / "metrics.csv").exists()


def test_overwrite_never_deletes_a_folder_that_is_not_a_training(tmp_path):
    from personaguard.errors import PersonaguardError
    from personaguard.train.train import prepare_out_dir

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "thesis.tex").write_text("precious")
    with pytest.raises(PersonaguardError, match="refusing to overwrite"):
        prepare_out_dir(_cfg(tmp_path, overwrite=True), tmp_path / "a")
    assert (tmp_path / "a" / "thesis.tex").read_text() == "precious"


def test_resume_refuses_a_checkpoint_of_another_run(tmp_path):
    """A second run killed before its first checkpoint must not continue from the first run's checkpoint."""
    from personaguard.errors import PersonaguardError
    from personaguard.train.train import prepare_out_dir

    out = tmp_path / "a"
    first, _ = prepare_out_dir(_cfg(tmp_path), out)
    (out / "checkpoint-4").mkdir()
    (out / "checkpoint-4" / "run.json").write_text(json.dumps({"run_id": first}))
    assert prepare_out_dir(_cfg(tmp_path, resume=True), out) == (first, True)
    (out / "run.json").write_text(json.dumps({"run_id": "second"}))  # as a second run writes it at its start
    with pytest.raises(PersonaguardError, match="mix two runs"):
        prepare_out_dir(_cfg(tmp_path, resume=True), out)


def test_resume_drops_a_checkpoint_cut_off_by_a_kill_while_saving(tmp_path, capsys):
    """The run-id mark is written after a checkpoint is complete: an unmarked newest checkpoint after
    this run's marked ones is an unfinished save, removed so the resume continues from the last whole one."""
    from personaguard.errors import PersonaguardError
    from personaguard.train.train import prepare_out_dir

    out = tmp_path / "a"
    run, _ = prepare_out_dir(_cfg(tmp_path), out)
    (out / "checkpoint-2").mkdir()
    (out / "checkpoint-2" / "run.json").write_text(json.dumps({"run_id": run}))
    (out / "checkpoint-3").mkdir()  # killed mid-save: no mark
    assert prepare_out_dir(_cfg(tmp_path, resume=True), out) == (run, True)
    assert not (out / "checkpoint-3").exists() and (out / "checkpoint-2").is_dir()
    assert "checkpoint-3 was not finished" in capsys.readouterr().err
    # after another run's marked checkpoint an unmarked one is not ours to delete: refused, nothing removed
    (out / "checkpoint-2" / "run.json").write_text(json.dumps({"run_id": "other"}))
    (out / "checkpoint-3").mkdir()
    with pytest.raises(PersonaguardError, match="mix two runs"):
        prepare_out_dir(_cfg(tmp_path, resume=True), out)
    assert (out / "checkpoint-3").is_dir()
