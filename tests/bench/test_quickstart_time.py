"""bench/quickstart_time.py: the command it times is the README's, and its quality bar reads the confusion row."""

from pathlib import Path

from . import load_bench


def test_times_the_readmes_first_command():
    mod = load_bench("quickstart_time")
    readme = Path(__file__).parents[2] / "README.md"
    cmd = mod.readme_command(readme)
    assert cmd == readme.read_text(encoding="utf-8").split("```bash\n", 1)[1].splitlines()[0]
    assert "pipeline" in cmd and "setup.sh" in cmd


def test_quality_bar_on_every_label():
    mod = load_bench("quickstart_time")
    row = {
        "politics": {"tag_rate": 0.95},
        "none": {"tag_rate": 0.06},
        "expert_opinion": {"tag_rate": 0.05},
        "meeting": {"tag_rate": 0.10},
    }
    assert mod.checks(row, "politics") == {
        "own:politics": True,
        "neutral": False,
        "other:expert_opinion": True,
        "other:meeting": False,
    }
