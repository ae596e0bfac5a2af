"""bench/adversarial.py: per-family rates from metrics and stack predictions, and a run on the tiny model."""

import json

from . import load_bench


def _bench():
    return load_bench("adversarial")


def test_family_rates_pair_each_family_with_its_controls():
    bench = _bench()
    per_group = {
        "family": {
            "politics:drift": {"n": 4, "tag_rate": 0.75},
            "none:drift": {"n": 5, "tag_rate": 0.2},
            "meeting:drift": {"n": 4, "tag_rate": 0.5},  # another guardrail's items: not this row's tag rate
            "politics:typos": {"n": 4, "tag_rate": 1.0},
            "none:typos": {"n": 5, "tag_rate": 0.0},
        },
        "lang": {"politics:en": {"n": 8, "tag_rate": 0.9}},
    }
    rates = bench.family_rates(per_group, "politics")
    assert rates == {"drift": {"tag": 0.75, "false": 0.2}, "typos": {"tag": 1.0, "false": 0.0}}
    assert bench.meets(rates["drift"]) is False and bench.meets(rates["typos"]) is True
    assert bench.family_rates({}, "politics") == {}


def test_stack_rates_count_any_members_trigger_and_the_controls():
    bench = _bench()

    def row(label, family, tagged):
        return {"label": label, "family": family, "reply": "<guard> no" if tagged else "sure", "setting": "routed"}

    preds = [
        row("politics", "roleplay", True),
        row("meeting", "roleplay", False),
        row("expert_opinion", "roleplay", True),
        row("none", "roleplay", True),
        row("none", "roleplay", False),
        row("politics", "buried", True),
        {"label": "none", "reply": "<guard>", "setting": "routed"},  # no family (a double trigger): left out
    ]
    rates = bench.stack_family_rates(preds, ["politics", "meeting"])
    assert rates["roleplay"] == {"tag": 0.5, "false": 0.5}  # the expert item is no member's trigger here
    assert rates["buried"] == {"tag": 1.0, "false": None}
    assert bench.meets(rates["buried"]) is None


def test_table_marks_missed_cells_and_dashes_missing_ones():
    bench = _bench()
    text = bench.table({"politics / adapter": {"drift": {"tag": 0.95, "false": 0.0}, "typos": {"tag": 0.5, "false": 0.0}}})
    lines = text.splitlines()
    assert lines[0] == "| row | drift | typos |"
    assert lines[2] == "| politics / adapter | 0.95 / 0.00 | 0.50 / 0.00 ✗ |"


def test_adversarial_bench_runs_on_a_tiny_run(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PERSONAGUARD_HOME", str(tmp_path / "home"))
    real_dev = load_bench("real_dev")
    tiny = ["--set", f"model={tiny_model_dir}", "--set", "generate.n=40", "--set", "train.max_steps=1"]
    tiny += ["--set", "train.batch_size=4", "--set", "train.max_prompt_tokens=96", "--set", "evaluate.limit=4"]
    args = ["--seeds", "0", "--guardrails", "politics", "meeting", "--run-root", str(tmp_path / "runs"), "--no-stack"]
    assert real_dev.main([*args, "--no-embedding", "--out", str(tmp_path / "rd.json"), *tiny]) == 0
    bench = _bench()
    out = tmp_path / "adv.json"
    run_root = str(tmp_path / "runs" / "seed0")
    rc = bench.main(
        ["--run-root", run_root, "--guardrails", "politics", "meeting", "--out", str(out), "--per-label", "2"]
        + ["--set", "max_new_tokens=4", "--set", "batch_size=16"]
    )
    assert rc == 0
    res = json.loads(out.read_text())
    assert set(res["rows"]) == {
        "politics / adapter",
        "politics / adapter_gated",
        "meeting / adapter",
        "meeting / adapter_gated",
    } | {"stack routed (politics+meeting)"}
    for rates in res["rows"].values():
        assert set(rates) == set(bench.FAMILIES)
        for v in rates.values():
            assert 0 <= v["tag"] <= 1 and 0 <= v["false"] <= 1
    printed = capsys.readouterr().out
    assert "| politics / adapter |" in printed and printed.rstrip().splitlines()[-1].startswith("targets met: ")
    out2 = tmp_path / "adv_stack.json"
    args = ["--run-root", run_root, "--guardrails", "politics", "meeting", "--out", str(out2), "--per-label", "2"]
    assert bench.main([*args, "--stack-only", "--set", "max_new_tokens=4"]) == 0
    assert list(json.loads(out2.read_text())["rows"]) == ["stack routed (politics+meeting)"]
