import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from personaguard.cli import app

runner = CliRunner()


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "personaguard.cli", *args], capture_output=True, text=True, **kw)


def test_help_lists_commands_without_torch():
    res = _cli("--help")
    assert res.returncode == 0
    for cmd in ("pipeline", "generate", "train", "evaluate", "guardrails", "models"):
        assert cmd in res.stdout
    probe = subprocess.run(
        [sys.executable, "-c", "import sys, personaguard.cli; print('torch' in sys.modules)"], capture_output=True, text=True
    )
    assert probe.stdout.strip() == "False"


def test_every_command_has_help():
    for cmd in (
        ["pipeline"],
        ["generate"],
        ["train"],
        ["train-joint"],
        ["evaluate"],
        ["merge"],
        ["stack"],
        ["plot"],
        ["report"],
        ["models"],
        ["guardrails", "list"],
        ["guardrails", "show"],
    ):
        assert runner.invoke(app, [*cmd, "--help"]).exit_code == 0


def test_guardrails_show():
    res = runner.invoke(app, ["guardrails", "show", "meeting"])
    assert res.exit_code == 0 and "name: meeting" in res.stdout and "<guard>" in res.stdout


def test_bad_config_is_one_line_error(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("guardrails: [politics]\ntrain: {epochs: 1}\nrun_dir: x\nmodle: typo\n")
    res = _cli("pipeline", "--config", str(f))
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "modle" in lines[0] and str(f) in lines[0]


def test_bad_stage_section_names_section(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("train: {epochz: 1}\n")
    res = _cli("pipeline", "--config", str(f))
    assert res.returncode == 2 and "train.epochz" in res.stderr  # the section and the field


def test_evaluate_bad_jsonl_one_line(tmp_path, tiny_model_dir):
    d = tmp_path / "d.jsonl"
    d.write_text('{"id": "a", "message": "hi", "label": "none"}\n{"id": "b", "message": "yo", "label": "sports"}\n')
    res = _cli(
        "evaluate", "--data", str(d), "--guardrail", "politics", "--model", tiny_model_dir, "--out-dir", str(tmp_path / "o")
    )
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and f"{d}:2: field 'label': unknown label 'sports'" in res.stderr


def test_train_joint_with_one_member_is_one_line_error():
    res = _cli("train-joint", "--set", "members={politics: {data_dir: d, out_dir: a}}", "--set", "out_dir=j")
    assert res.returncode == 2 and "two or more" in res.stderr and len(res.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args",
    [
        ["generate", "--nn", "8"],
        ["generate", "--n", "many"],
        ["merge", "a", "b", "--out", "x", "--weights"],
        ["no-such-command"],
        ["evaluate", "--set"],
        ["merge", "a", "b", "--weights", "1,abc", "--out", "x"],
    ],
)
def test_usage_errors_are_one_line_and_exit_2(args):
    res = _cli(*args)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in res.stderr


def test_no_arguments_prints_help_where_to_start_and_exits_2():
    res = _cli()
    assert res.returncode == 2 and "Start here" in res.stdout and "Traceback" not in res.stderr


def test_debug_shows_the_traceback():
    res = _cli("--debug", "config", "show", "nope")
    assert res.returncode != 0 and "Traceback" in res.stderr


def test_help_and_import_do_not_load_torch():
    code = (
        "import sys, personaguard; from personaguard import cli; from typer.testing import CliRunner; "
        "r = CliRunner().invoke(cli.app, ['--help']); s = CliRunner().invoke(cli.app, ['stack', '--help']); "
        "assert r.exit_code == 0 and s.exit_code == 0, (r.output, s.output); "
        "assert 'dynamic_agree' in s.output, s.output; print('torch' in sys.modules)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "False"


def test_config_show_lists_every_field_with_default():
    from personaguard.config import TrainConfig

    res = _cli("config", "show", "train")
    assert res.returncode == 0
    for name in TrainConfig.model_fields:
        assert f"\n{name} " in res.stdout
    assert "default: 0.1" in res.stdout  # orpo_lambda


def test_configuration_page_is_current():
    """docs/configuration.md is generated from the field descriptions; regenerate it when a field changes."""
    from personaguard.config import configuration_markdown

    page = Path(__file__).parents[1] / "docs" / "configuration.md"
    assert page.read_text(encoding="utf-8") == configuration_markdown(), (
        "docs/configuration.md is stale: run `personaguard config docs --out docs/configuration.md`"
    )


def test_evaluate_without_adapter_keeps_the_settings_asked_for(tmp_path, tiny_model_dir):
    """`settings=[none,embedding]` without --adapter once ran only `none`."""
    d = tmp_path / "d.jsonl"
    d.write_text('{"id": "a", "message": "hi", "label": "none"}\n')
    res = _cli(
        "evaluate",
        "--data",
        str(d),
        "--guardrail",
        "politics",
        "--model",
        tiny_model_dir,
        "--out-dir",
        str(tmp_path / "o"),
        "--set",
        "settings=[none,embedding]",
    )
    assert res.returncode == 2 and "baseline_train_data" in res.stderr  # embedding kept, so its missing input is reported


def test_ctrl_c_exits_130_with_one_line_on_what_was_kept(tmp_path):
    """`generate && train` must not carry on after an interrupt (it once exited 0)."""
    import signal
    import time

    proc = subprocess.Popen(
        [sys.executable, "-m", "personaguard.cli", "generate", "--n", "200000", "--out-dir", str(tmp_path / "d")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # a background shell may pass SIGINT ignored
    )
    raw = tmp_path / "d" / "politics_vary_all"
    deadline = time.monotonic() + 60
    while not any(raw.glob("*.jsonl")) and time.monotonic() < deadline:  # interrupt once it is writing
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert err.strip().split("\r")[-1].splitlines()[-1].startswith("interrupted: files written so far are kept")


def test_guardrails_new_from_flags_then_generate_offline(tmp_path):
    env = {**__import__("os").environ, "PERSONAGUARD_HOME": str(tmp_path / "home")}
    examples = [f"Do you believe in thing {i}?" for i in range(7)]
    args = ["guardrails", "new", "religion", "--trigger", "asks about faith", "--resolution", "decline kindly"]
    args += [a for e in examples for a in ("-e", e)] + ["-n", "my church has a bake sale"]
    res = _cli(*args, env=env, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr
    assert "7 examples (2 held out for the test split): enough to train" in res.stdout
    assert "--set 'guardrails=[religion]'" in res.stdout
    assert (tmp_path / "home" / "guardrails" / "religion.yaml").is_file()
    res = _cli("generate", "--guardrail", "religion", "--n", "24", "--out-dir", str(tmp_path / "data"), env=env)
    assert res.returncode == 0, res.stderr
    missing = _cli("guardrails", "new", "other", env=env, stdin=subprocess.DEVNULL)
    assert (
        missing.returncode == 2
        and missing.stderr.strip() == "error: guardrails new: --trigger is required (no terminal to ask on)"
    )
