"""Stacking and merging: deltas compared exactly from the saved files (PEFT's merge tests do the same),
dynamic stack vs cat merge compared on logits. Adapters get random LoRA weights instead of training:
a trained B is just some non-zero matrix, and random ones make every cross term visible."""

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from personaguard.errors import PersonaguardError


def _random_adapter(
    base_dir,
    out,
    seed,
    r=4,
    alpha=8,
    targets=("q_proj", "v_proj"),
    use_rslora=False,
    scale=0.2,
    max_prompt_tokens=512,
    guardrail=None,
):
    """A LoRA folder with random factors that describes itself like a trained one (guardrail named after the folder)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from personaguard.adapters import write_info
    from personaguard.guardrails import Guardrail, registry

    torch.manual_seed(seed)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base_dir),
        LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets), use_rslora=use_rslora, task_type="CAUSAL_LM"),
    )
    for name, p in model.named_parameters():
        if "lora_" in name:
            p.data = torch.randn_like(p) * scale
    model.save_pretrained(out)
    guardrail = (
        guardrail or registry().get(out.name) or Guardrail(name=out.name, trigger="the trigger", resolution="the resolution")
    )
    (out / "guardrail.yaml").write_text(yaml.safe_dump(guardrail.model_dump(mode="json")))
    write_info(
        out,
        guardrail=guardrail,
        base_model=str(base_dir),
        max_prompt_tokens=max_prompt_tokens,
        max_reply_tokens=64,
        gate_threshold=None,
        run_id=f"random-{seed}",
    )
    return str(out)


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    return {
        "politics": _random_adapter(tiny_model_dir, root / "politics", 1),
        "meeting": _random_adapter(tiny_model_dir, root / "meeting", 2, targets=("q_proj", "v_proj", "o_proj")),
        "small": _random_adapter(tiny_model_dir, root / "small", 3, r=2, alpha=2),
        "rs": _random_adapter(tiny_model_dir, root / "rs", 4, use_rslora=True),
    }


def factors(adapter_dir) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], float]:
    """{module: (A, B)} and the LoRA scale, read from the saved folder (no PEFT involved)."""
    from safetensors.torch import load_file

    adapter_dir = Path(adapter_dir)
    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    sd = load_file(adapter_dir / "adapter_model.safetensors")
    mods = {k.split(".lora_A")[0]: (sd[k], sd[k.replace("lora_A", "lora_B")]) for k in sd if ".lora_A" in k}
    scale = cfg["lora_alpha"] / (math.sqrt(cfg["r"]) if cfg.get("use_rslora") else cfg["r"])
    return mods, scale


def deltas(adapter_dir, weight=1.0) -> dict[str, torch.Tensor]:
    mods, scale = factors(adapter_dir)
    return {m: weight * scale * (b @ a) for m, (a, b) in mods.items()}


def summed(*dws):
    out: dict[str, torch.Tensor] = {}
    for dw in dws:
        for m, d in dw.items():
            out[m] = out[m] + d if m in out else d.clone()
    return out


def assert_deltas_close(got, want, atol=1e-6):
    assert set(got) == set(want)
    for m in want:
        torch.testing.assert_close(got[m], want[m], atol=atol, rtol=1e-5, msg=m)


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_cat_merge_is_the_exact_weighted_sum(adapters, tmp_path):
    from personaguard.stack.merge import merge

    rec = merge([adapters["politics"], adapters["meeting"]], "cat", [1.0, -0.5], tmp_path / "pm")
    want = summed(deltas(adapters["politics"]), deltas(adapters["meeting"], -0.5))
    assert_deltas_close(deltas(tmp_path / "pm"), want)  # o_proj comes from meeting alone
    assert rec["rank"] == 8


def test_cat_merge_of_rslora_members_keeps_their_scale(adapters, tmp_path):
    from personaguard.stack.merge import merge

    merge([adapters["rs"], adapters["small"]], "cat", None, tmp_path / "m")
    assert not json.loads((tmp_path / "m" / "adapter_config.json").read_text())["use_rslora"]
    assert_deltas_close(deltas(tmp_path / "m"), summed(deltas(adapters["rs"]), deltas(adapters["small"])))


def test_linear_merge_adds_cross_terms(adapters, tmp_path):
    from personaguard.stack.merge import merge

    merge([adapters["politics"], adapters["meeting"]], "linear", None, tmp_path / "lin")
    (p, s1), (m, s2) = factors(adapters["politics"]), factors(adapters["meeting"])
    got, exact = deltas(tmp_path / "lin"), summed(deltas(adapters["politics"]), deltas(adapters["meeting"]))
    mod = next(k for k in p if k in m)
    (a1, b1), (a2, b2) = p[mod], m[mod]
    assert not torch.allclose(got[mod], exact[mod], atol=1e-3)
    # linear averages A and B separately: (√s1 B1 + √s2 B2)(√s1 A1 + √s2 A2) = exact + √(s1 s2)(B1 A2 + B2 A1)
    torch.testing.assert_close(got[mod] - exact[mod], math.sqrt(s1 * s2) * (b1 @ a2 + b2 @ a1), atol=1e-5, rtol=1e-4)


def test_svd_with_enough_rank_is_exact(adapters, tmp_path):
    from personaguard.stack.merge import merge

    rec = merge([adapters["politics"], adapters["small"]], "svd", None, tmp_path / "svd", svd_rank=6)
    assert rec["svd_rank"] == 6
    assert_deltas_close(deltas(tmp_path / "svd"), summed(deltas(adapters["politics"]), deltas(adapters["small"])), atol=1e-5)


def test_merge_refusals(adapters, tmp_path):
    from personaguard.stack.merge import merge

    two = [adapters["politics"], adapters["meeting"]]
    (tmp_path / "exists").mkdir()
    cases = [
        (dict(adapter_dirs=two, method="cat", weights=None, out_dir=tmp_path / "exists"), "already exists"),
        (dict(adapter_dirs=two, method="ties", weights=None, out_dir=tmp_path / "a"), "needs density"),
        (dict(adapter_dirs=two, method="cat", weights=None, out_dir=tmp_path / "a", density=0.5), "drop it"),
        (dict(adapter_dirs=two, method="mean", weights=None, out_dir=tmp_path / "a"), "not one of"),
        (dict(adapter_dirs=two, method="cat", weights=[1.0], out_dir=tmp_path / "a"), "one per adapter"),
        (
            dict(adapter_dirs=[adapters["politics"], adapters["small"]], method="linear", weights=None, out_dir=tmp_path / "a"),
            "equal LoRA ranks",
        ),
        (
            dict(adapter_dirs=[adapters["politics"], tmp_path], method="cat", weights=None, out_dir=tmp_path / "a"),
            "no adapter_config.json",
        ),
    ]
    for kwargs, msg in cases:
        with pytest.raises(PersonaguardError, match=msg) as exc:
            merge(**kwargs)
        assert "\n" not in str(exc.value)
    assert not (tmp_path / "a").exists() and not list((tmp_path / "exists").iterdir())


def test_merge_folder_is_a_plain_peft_adapter_with_provenance(adapters, tiny_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from personaguard.stack.merge import merge

    out = tmp_path / "ties"
    rec = merge([adapters["politics"], adapters["meeting"]], "ties", [1.0, 1.0], out, density=0.5)
    meta = json.loads((out / "merge.json").read_text())
    assert meta == {k: v for k, v in rec.items() if k != "out_dir"}
    assert {"method", "weights", "sources", "density", "peft_version", "seconds", "merge_seconds"} <= set(meta)
    assert meta["method"] == "ties" and meta["density"] == 0.5 and meta["weights"] == [1.0, 1.0]
    assert meta["sources"] == [str(Path(adapters[n]).resolve()) for n in ("politics", "meeting")]
    assert sorted(p.name for p in (out / "guardrails").iterdir()) == ["meeting.yaml", "politics.yaml"]
    assert not [p for p in out.iterdir() if p.is_dir() and p.name != "guardrails"]  # no per-adapter subfolders
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(out))
    assert list(model.peft_config) == ["default"]
    assert not list(tmp_path.glob(".ties.*"))  # temp folder cleaned up


def test_dynamic_stack_equals_cat_merge_and_switches(adapters, tiny_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from personaguard.adapters import activate, active_adapters, load_stack, no_adapter
    from personaguard.stack.merge import merge

    both = [adapters["politics"], adapters["meeting"]]
    merge(both, "cat", None, tmp_path / "cat")
    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    ids = torch.randint(0, plain.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    base = logits(plain, ids)
    cat_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(tmp_path / "cat"))
    cat = logits(cat_model.eval(), ids)

    model, names = load_stack(tiny_model_dir, both)
    assert names == ["politics", "meeting"] and active_adapters(model) == names
    stacked = logits(model, ids)
    torch.testing.assert_close(stacked, cat, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(stacked, base, atol=1e-3)

    activate(model, ["politics"])
    one = logits(model, ids)
    assert active_adapters(model) == ["politics"] and not torch.allclose(one, stacked, atol=1e-3)
    with no_adapter(model):
        assert active_adapters(model) == []
        torch.testing.assert_close(logits(model, ids), base, atol=1e-6, rtol=1e-6)
    assert active_adapters(model) == ["politics"]
    torch.testing.assert_close(logits(model, ids), one, atol=1e-6, rtol=1e-6)
    activate(model, names)
    torch.testing.assert_close(logits(model, ids), stacked, atol=1e-6, rtol=1e-6)
    # switching (PEFT's enable/set_adapter) must never leave adapter weights trainable
    assert not any(p.requires_grad for p in model.parameters())
    with pytest.raises(PersonaguardError, match="unknown adapter"):
        activate(model, ["nope"])


def test_load_stack_refuses_duplicate_names(adapters, tiny_model_dir, tmp_path):
    import shutil

    from personaguard.adapters import load_stack

    twin = tmp_path / "x" / "politics"
    shutil.copytree(adapters["politics"], twin)
    with pytest.raises(PersonaguardError, match="share the name 'politics'"):
        load_stack(tiny_model_dir, [adapters["politics"], str(twin)])


def test_merge_refuses_adapters_of_different_base_models(adapters, tmp_path):
    import shutil

    from personaguard.stack.merge import merge

    other = tmp_path / "other"
    shutil.copytree(adapters["meeting"], other)
    info = json.loads((other / "personaguard.json").read_text())
    (other / "personaguard.json").write_text(json.dumps({**info, "base_model": "someone/other-model"}))
    with pytest.raises(PersonaguardError, match=r"trained on .* but .*other on 'someone/other-model'") as exc:
        merge([adapters["politics"], str(other)], "cat", None, tmp_path / "m")
    assert "\n" not in str(exc.value) and not (tmp_path / "m").exists()
