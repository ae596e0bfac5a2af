import subprocess
import sys

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
    probe = subprocess.run([sys.executable, "-c", "import sys, personaguard.cli; print('torch' in sys.modules)"],
                           capture_output=True, text=True)
    assert probe.stdout.strip() == "False"


def test_every_command_has_help():
    for cmd in (["pipeline"], ["generate"], ["train"], ["train-joint"], ["evaluate"], ["merge"], ["stack"], ["plot"], ["report"], ["models"], ["guardrails", "list"], ["guardrails", "show"]):
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
    assert res.returncode == 2 and "(train)" in res.stderr and "epochz" in res.stderr


def test_evaluate_bad_jsonl_one_line(tmp_path, tiny_model_dir):
    d = tmp_path / "d.jsonl"
    d.write_text('{"id": "a", "message": "hi", "label": "none"}\n{"id": "b", "message": "yo", "label": "sports"}\n')
    res = _cli("evaluate", "--data", str(d), "--model", tiny_model_dir, "--out-dir", str(tmp_path / "o"))
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and f"{d}:2: field 'label': unknown label 'sports'" in res.stderr


def test_train_joint_with_one_member_is_one_line_error():
    res = _cli("train-joint", "--set", "members={politics: {data_dir: d, out_dir: a}}", "--set", "out_dir=j")
    assert res.returncode == 2 and "two or more" in res.stderr and len(res.stderr.strip().splitlines()) == 1
