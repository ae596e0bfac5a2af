"""Tests of the scripts in bench/ (run on the tiny model; the real runs use the embedded SmolLM2)."""

import importlib.util
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).parents[2] / "bench"


def load_bench(name: str):
    """Import bench/<name>.py as module `name` (bench/ is not a package; scripts import siblings by name)."""
    spec = importlib.util.spec_from_file_location(name, BENCH_DIR / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod
