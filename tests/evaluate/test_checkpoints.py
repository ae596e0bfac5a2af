import csv
import json

import pytest

from personaguard.config import EvaluateConfig, TrainConfig
from personaguard.errors import PersonaguardError
from personaguard.schema import write_jsonl_atomic
from tests.train.test_train import make_examples


@pytest.fixture(scope="module")
def run(tiny_model_dir, tmp_path_factory):
    from personaguard.train import train

    root = tmp_path_factory.mktemp("ck")
    rows = make_examples(8)
    for i, r in enumerate(rows):  # a grouping field, as outside data (dev sets) carry
        r.kind = "hard_negative" if i % 4 == 1 else "neutral" if r.label == "none" else "trigger"
    write_jsonl_atomic(root / "data" / "train.jsonl", rows)
    write_jsonl_atomic(root / "data" / "test.jsonl", rows[:6])
    train.run(
        TrainConfig(
            model=tiny_model_dir,
            data_dir=str(root / "data"),
            out_dir=str(root / "adapter"),
            max_steps=3,
            batch_size=4,
            lr=5e-3,
            save_steps=1,
            save_total_limit=3,
        )
    )
    return root


def test_all_checkpoints_give_a_curve_whose_last_point_is_the_final_adapter(tiny_model_dir, run):
    from personaguard.evaluate import evaluate
    from personaguard.report import plots as plot

    out = run / "eval" / "politics" / "test"
    res = evaluate.run(
        EvaluateConfig(
            model=tiny_model_dir,
            adapter=str(run / "adapter"),
            data=str(run / "data" / "test.jsonl"),
            out_dir=str(out),
            settings=["adapter"],
            checkpoints=["all"],
            max_new_tokens=4,
            batch_size=4,
        )
    )
    curve = list(csv.DictReader((out / "checkpoints.csv").open()))
    assert [int(r["step"]) for r in curve] == [1, 2, 3]
    data = json.loads((out / "checkpoints.json").read_text())
    # checkpoint-3 is the final state the adapter folder holds, so its scores match the adapter setting's
    final = res.metrics["adapter"]
    assert data[-1]["mean_guard_score_triggering"] == pytest.approx(final["mean_guard_score_triggering"], rel=1e-5)
    assert data[-1]["tag_rate"] == final["tag_rate"]
    # earlier steps are different adapters: LoRA B starts at zero and moves every step
    assert data[0]["mean_guard_score_triggering"] != pytest.approx(data[-1]["mean_guard_score_triggering"], rel=1e-6)
    assert "## Checkpoints" in (out / "report.md").read_text()
    assert json.loads((out / "metrics.json").read_text())["meta"]["checkpoint_steps"] == [1, 2, 3]
    assert "checkpoint_curves.png" in {p.name for p in plot.run(run)}


def test_false_tags_are_broken_down_by_kind(tiny_model_dir, run):
    from personaguard.evaluate import evaluate

    res = evaluate.run(
        EvaluateConfig(
            model=tiny_model_dir,
            adapter=str(run / "adapter"),
            data=str(run / "data" / "test.jsonl"),
            out_dir=str(run / "eval_groups"),
            settings=["adapter"],
            max_new_tokens=4,
            batch_size=4,
        )
    )
    groups = res.metrics["adapter"]["per_group"]["kind"]
    assert set(groups) == {"politics:trigger", "none:neutral", "none:hard_negative"}
    assert sum(g["n"] for g in groups.values()) == 6
    assert "kind=none:hard_negative" in (run / "eval_groups" / "report.md").read_text()


def test_unknown_checkpoint_step_names_the_ones_present(tiny_model_dir, run):
    from personaguard.evaluate import evaluate

    cfg = EvaluateConfig(
        model=tiny_model_dir,
        adapter=str(run / "adapter"),
        data=str(run / "data" / "test.jsonl"),
        out_dir=str(run / "eval_bad"),
        settings=["adapter"],
        checkpoints=[7],
    )
    with pytest.raises(PersonaguardError, match=r"checkpoint-7 not found; present: \[1, 2, 3\]"):
        evaluate.run(cfg)


def test_checkpoints_need_an_adapter():
    with pytest.raises(ValueError, match="checkpoints are given but no adapter"):
        EvaluateConfig(data="x.jsonl", out_dir="o", settings=["none"], checkpoints=["all"])
