"""The bad-input corpus (tests/bad_inputs/cases.yaml): every case, run through the real command line,
must end with exit status 2 and exactly one `error: ...` line naming what is wrong, no traceback, and
no file left behind. Each case fails on its inputs before any model loads, so the corpus stays fast."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).parent / "bad_inputs"
CASES = yaml.safe_load((HERE / "cases.yaml").read_text(encoding="utf-8"))


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_corpus_is_large_and_names_are_unique():
    names = [c["name"] for c in CASES]
    assert len(names) >= 40 and len(set(names)) == len(names)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_bad_input_gives_one_error_line(case, tmp_path, request):
    tiny = request.getfixturevalue("tiny_model_dir") if any("{tiny}" in a for a in case["args"]) else ""

    def fill(text: str) -> str:
        return text.replace("{dir}", str(tmp_path)).replace("{tiny}", tiny)

    for name, text in (case.get("files") or {}).items():
        dest = tmp_path / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(fill(text), encoding="utf-8")
    for name, src in (case.get("copy") or {}).items():
        dest = tmp_path / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(HERE / src, dest)
    before = _files(tmp_path)
    env = {**os.environ, "PERSONAGUARD_HOME": str(tmp_path / "home")}
    res = subprocess.run(
        [sys.executable, "-m", "personaguard.cli", *[fill(a) for a in case["args"]]],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2, res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert fill(case["expect"]) in lines[0]
    assert _files(tmp_path) == before, "the failed command left files behind"
