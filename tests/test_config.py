from pathlib import Path

import pytest

from personaguard.config import EvaluateConfig, PipelineConfig, TrainConfig, load_config
from personaguard.errors import PersonaguardError


def test_overrides_and_types(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("data_dir: d\nout_dir: o\nlr: 0.001\n")
    cfg = load_config(TrainConfig, f, ["epochs=3", "target_modules=[q_proj,v_proj]"])
    assert cfg.lr == 0.001 and cfg.epochs == 3 and cfg.target_modules == ["q_proj", "v_proj"]


@pytest.mark.parametrize(
    "text,needle",
    [
        ("data_dir: d\nout_dir: o\nlearning_rate: 1\n", "field 'learning_rate': unknown field"),
        ("data_dir: d\nout_dir: o\nlr: -1\n", "field 'lr'"),
        ("out_dir: o\n", "field 'data_dir': Field required"),
        ("- a\n- b\n", "expected a mapping"),
        ("data_dir: d\nout_dir: o\ndevice: cpu\nload_in_4bit: true\n", "load_in_4bit needs device"),
    ],
)
def test_bad_config_one_line(tmp_path, text, needle):
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(PersonaguardError) as exc:
        load_config(TrainConfig, f)
    assert str(f) in str(exc.value) and needle in str(exc.value) and "\n" not in str(exc.value)


def test_adapter_setting_needs_adapter():
    with pytest.raises(PersonaguardError, match="no adapter folder"):
        load_config(EvaluateConfig, None, ["data=x", "out_dir=y"])


def test_shipped_configs_validate():
    from pathlib import Path

    from personaguard.pipeline import stage_configs

    for f in sorted(Path(__file__).parents[1].joinpath("configs").glob("*.yaml")):
        cfg = load_config(PipelineConfig, f)
        for g in cfg.guardrails:
            stage_configs(cfg, g, str(f))


def test_pipeline_fills_in_the_embedding_baselines_training_data():
    from personaguard.pipeline import stage_configs

    cfg = load_config(PipelineConfig, None, ["run_dir=r", "evaluate.settings=[none,embedding]"])
    _, t, evals = stage_configs(cfg, "politics")
    assert evals[0].baseline_train_data == str(Path(t.data_dir) / "train.jsonl")


def test_yaml_syntax_error_names_line(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("n: 3\nseed: 1\nguardrail: politics: x\n")
    with pytest.raises(PersonaguardError, match=r"bad\.yaml: not valid YAML \(line 3, column \d+: ") as exc:
        load_config(TrainConfig, f)
    assert "\n" not in str(exc.value)


def test_set_with_bad_yaml_value_is_one_line():
    with pytest.raises(PersonaguardError, match=r"--set 'settings=\[none': value is not valid YAML") as exc:
        load_config(EvaluateConfig, None, ["settings=[none"])
    assert "\n" not in str(exc.value)
