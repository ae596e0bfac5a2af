"""Build the packaged evaluation set adversarial-v1 deterministically from the family modules in this folder.

    python scripts/adversarial_v1/build.py && python scripts/adversarial_v1/verify.py

Every sentence is this project's own writing (see src/personaguard/data/eval_sets/README.md). Evaluation only:
nothing here may feed the generator's pools, and verify.py fails if a turn equals a pool string or a turn of
a real-chat set. Rebuilding changes the file's sha256, which eval_sets.py records: update it there and in the
README with any edit.
"""

import importlib
import json
import os
import random
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


FAMILIES = [
    importlib.import_module(f"fam_{name}")
    for name in ("indirect", "roleplay", "drift", "buried", "injected", "non_english", "typos")
]
SEED = 20261205
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(ROOT, "src", "personaguard", "data", "eval_sets", "adversarial_v1.jsonl")
KEYS = ["id", "label", "family", "lang", "persona", "memories", "history", "message"]


def build_rows():
    rows = []
    for i, mod in enumerate(FAMILIES):
        rng = random.Random(SEED * 100 + i)  # one stream per family: editing one family never shifts another
        rows.extend(mod.build(rng))
    out = []
    for n, r in enumerate(rows, 1):
        row = {"id": f"adversarial_v1-{n:04d}"}
        row.update(r)
        row["persona"] = {
            "name": r["persona"]["name"],
            "traits": list(r["persona"]["traits"]),
            "expressions": list(r["persona"]["expressions"]),
        }
        out.append({k: row[k] for k in KEYS})
    return out


def main():
    rows = build_rows()
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(OUT), prefix=".adversarial_v1.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, OUT)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    print(f"wrote {len(rows)} rows to {OUT}")


if __name__ == "__main__":
    main()
