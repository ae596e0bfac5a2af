"""Wall time of the README's main command from a fresh clone, and whether its adapter still works.

    .venv/bin/python bench/quickstart_time.py                 # clone HEAD, run the README's first command
    .venv/bin/python bench/quickstart_time.py --keep-cache    # reuse the converted model cache (no GGUF step)

Clones the committed HEAD of this repository into a temporary folder and runs the first command of the
README's first code block there exactly as written (setup included: the venv, pip from its cache, the
GGUF conversion into an empty model cache unless --keep-cache). The wall time of that command is the
figure. Then, outside the timing, it evaluates the politics adapter the command trained on the
real-chat dev set (`../shared/data/dev_real_v1.jsonl` beside the project, else the packaged
`real-chats-v1`) and checks the quality the speed must not cost: own trigger >= 0.95, neutral <= 0.05,
each other guardrail's trigger <= 0.05. Writes a JSON result; the last line printed is the wall time
as a ratio to the 10-minute target.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEV = REPO.parent / "shared" / "data" / "dev_real_v1.jsonl"
TARGET_S = 600.0
OWN, NEUTRAL, OTHER = 0.95, 0.05, 0.05


def readme_command(readme: Path) -> str:
    """The first line of the README's first ```bash block: the command a newcomer runs."""
    m = re.search(r"```bash\n(.+?)\n", readme.read_text(encoding="utf-8"))
    if not m:
        raise SystemExit(f"{readme}: no ```bash block")
    return m.group(1).strip()


def checks(per_label: dict, own: str) -> dict:
    """The quickstart's quality bar on the real-chat confusion row of its adapter."""
    out = {}
    for label, v in per_label.items():
        rate = v["tag_rate"]
        if label == own:
            out[f"own:{label}"] = rate >= OWN
        elif label == "none":
            out["neutral"] = rate <= NEUTRAL
        else:
            out[f"other:{label}"] = rate <= OTHER
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keep-cache", action="store_true", help="use the existing model cache (skips the GGUF conversion)")
    ap.add_argument("--data", help="real-chat set for the quality check (default: the dev set beside the project)")
    ap.add_argument("--out", default="bench/results/quickstart_time.json")
    ap.add_argument("--keep-run", action="store_true", help="keep the clone and its run (adapters, data) for more evaluation")
    args = ap.parse_args(argv)

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    tmp = Path(tempfile.mkdtemp(prefix="quickstart_time_"))
    clone = tmp / "repo"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    cmd = readme_command(clone / "README.md")
    env = dict(os.environ)
    env.pop("VIRTUAL_ENV", None)
    if not args.keep_cache:
        env["PERSONAGUARD_HOME"] = str(tmp / "home")
    print(f"$ {cmd}   (in {clone}, commit {commit})", flush=True)
    t0 = time.perf_counter()
    run = subprocess.run(["bash", "-c", cmd], cwd=clone, env=env)
    wall = time.perf_counter() - t0
    if run.returncode != 0:
        print(f"the README command failed (exit {run.returncode}) after {wall:.0f} s; clone kept in {clone}")
        return 1

    data = args.data or (str(DEV) if DEV.is_file() else "real-chats-v1")
    adapter = clone / "runs" / "quickstart" / "adapters" / "politics"
    out_dir = tmp / "eval"
    subprocess.run(
        [str(clone / ".venv/bin/personaguard"), "evaluate", "--adapter", str(adapter), "--data", data, "--out-dir", str(out_dir)],
        cwd=clone,
        env=env,
        check=True,
    )
    per_label = json.loads((out_dir / "metrics.json").read_text(encoding="utf-8"))["settings"]["adapter"]["per_label"]
    # the pipeline's own stage times; the rest of the wall time is setup, model loading and start-up
    stages = json.loads((clone / "runs" / "quickstart" / "summary.json").read_text(encoding="utf-8"))["seconds"]
    result = {
        "commit": commit,
        "command": cmd,
        "machine": f"{os.cpu_count()} CPU cores",
        "fresh_model_cache": not args.keep_cache,
        "wall_s": round(wall, 1),
        "target_s": TARGET_S,
        "ratio_to_target": round(wall / TARGET_S, 3),
        "stage_seconds": {**stages, "setup, loading and start-up": round(wall - sum(stages.values()), 1)},
        "data": data,
        "per_label": {k: v["tag_rate"] for k, v in per_label.items()},
        "checks": checks(per_label, "politics"),
    }
    sys.path.insert(0, str(REPO / "src"))
    from personaguard.schema import write_text_atomic

    out = REPO / args.out if not Path(args.out).is_absolute() else Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, json.dumps(result, indent=2) + "\n")
    if args.keep_run:
        print(f"run kept: {clone / 'runs' / 'quickstart'}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({k: result[k] for k in ("stage_seconds", "per_label", "checks")}))
    print(f"quickstart wall time {wall / 60:.1f} min; ratio to the 10-minute target: {wall / TARGET_S:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
