"""The whole pipeline on the tiny model: two guardrails, an extra variation, stacking, report."""

import csv
import json

from personaguard.config import PipelineConfig, load_config


def test_pipeline_with_variations_and_stack(tiny_model_dir, tmp_path):
    from personaguard import pipeline

    run_dir = tmp_path / "run"
    cfg = load_config(
        PipelineConfig,
        None,
        [
            f"model={tiny_model_dir}",
            f"run_dir={run_dir}",
            "guardrails=[politics,meeting]",
            "variations={politics: [fixed_character]}",
            "generate.n=24",
            "generate.val_fraction=0.1",
            "train.max_steps=1",
            "train.batch_size=4",
            "train.max_prompt_tokens=96",
            "evaluate.max_new_tokens=4",
            "evaluate.batch_size=8",
            "stack={methods: [dynamic, routed_gated, cat], per_guardrail: 3, double_trigger: false}",
            "stack_aware_training=true",
        ],
    )
    res = pipeline.run(cfg)
    assert {k.rsplit(" / ", 1)[0] for k in res.metrics} == {
        "politics / test",
        "politics_fixed_character / test",
        "politics_fixed_character / test_vary_all",
        "meeting / test",
    }
    # the extra variation trained its own adapter on its own data
    assert "data/politics_fixed_character" in (run_dir / "adapters" / "politics_fixed_character" / "config.yaml").read_text()
    rows = list(csv.DictReader((run_dir / "variations.csv").open()))
    assert [(r["adapter"], r["variation"]) for r in rows] == [
        ("politics", "vary_all"),
        ("politics_fixed_character", "fixed_character"),
        ("meeting", "vary_all"),
    ]
    assert rows[1]["main_tag_rate"] != "" and rows[0]["main_tag_rate"] == rows[0]["own_tag_rate"]
    stack = json.loads((run_dir / "stacks" / "stack_metrics.json").read_text())
    assert set(stack["table"]) == {"politics", "meeting"} and list(stack["table"]["meeting"]) == [
        "none",
        "single",
        "dynamic",
        "routed_gated",
        "cat",
        "dynamic_aware",
    ]
    # the stack's members are the main adapters, not the extra variation
    assert stack["meta"]["adapters"]["politics"].endswith("adapters/politics")
    # stack-aware retraining as a chain: the second member trained again on top of the first, saved alone
    assert not (run_dir / "adapters" / "politics_stack_aware").exists()
    aware = run_dir / "adapters" / "meeting_stack_aware"
    aware_cfg = (aware / "config.yaml").read_text()
    assert "adapters/politics" in aware_cfg and "data/politics_vary_all" in aware_cfg  # on the earlier member's data too
    assert stack["meta"]["adapters"]["meeting"].endswith("adapters/meeting")
    assert not any(aware.glob("frozen_*")) and (aware / "adapter_model.safetensors").is_file()
    report = (run_dir / "report.md").read_text()
    assert "## Dataset variations" in report and "## Stacked guardrails" in report
    html = (run_dir / "report.html").read_text()
    assert "<h2>Stacked guardrails</h2><p>" in html and "stacking_bars" in html


def test_pipeline_with_joint_training_trains_the_main_adapters_together(tiny_model_dir, tmp_path):
    from personaguard import pipeline

    run_dir = tmp_path / "run"
    cfg = load_config(
        PipelineConfig,
        None,
        [
            f"model={tiny_model_dir}",
            f"run_dir={run_dir}",
            "guardrails=[politics,meeting]",
            "variations={politics: [fixed_character]}",
            "joint_training=true",
            "generate.n=24",
            "generate.val_fraction=0.2",
            "train.max_steps=2",
            "train.batch_size=4",
            "train.max_prompt_tokens=96",
            "evaluate.max_new_tokens=4",
            "evaluate.batch_size=8",
            "stack={methods: [dynamic, dynamic_gated], per_guardrail: 3, double_trigger: false}",
        ],
    )
    res = pipeline.run(cfg)
    # one joint training for both main adapters; the extra variation trains alone, after every unit's data exists
    assert "joint:train" in res.seconds and "politics:train" not in res.seconds and "meeting:train" not in res.seconds
    assert "politics_fixed_character:train" in res.seconds
    joint = json.loads((run_dir / "joint" / "train_result.json").read_text())
    assert joint["steps"] == 2 and sum(joint["subsets_drawn"].values()) == 2
    for g in ("politics", "meeting"):
        adapter = run_dir / "adapters" / g
        assert json.loads((adapter / "joint.json").read_text())["joint_run"] == str(run_dir / "joint")
        assert (adapter / "adapter_model.safetensors").is_file() and (adapter / "guard_threshold.json").is_file()
    assert not (run_dir / "adapters" / "politics_fixed_character" / "joint.json").exists()
    stack = json.loads((run_dir / "stacks" / "stack_metrics.json").read_text())
    assert list(stack["table"]["politics"]) == ["none", "single", "dynamic", "dynamic_gated"]
    assert isinstance(stack["meta"]["thresholds"]["dynamic_gated"], float)
