"""Verify adversarial_v1.jsonl: counts, schema, uniqueness, and no overlap with project data."""

import collections
import glob
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PATH = os.path.join(ROOT, "src", "personaguard", "data", "eval_sets", "adversarial_v1.jsonl")
DEV = os.path.join(os.path.dirname(ROOT), "shared", "data", "dev_real_v1.jsonl")  # checked where present
EVAL_GLOB = os.path.join(ROOT, "src", "personaguard", "data", "eval_sets", "*.jsonl")
POOLS = os.path.join(ROOT, "src", "personaguard", "data", "pools")

KEYS = ["id", "label", "family", "lang", "persona", "memories", "history", "message"]
LABELS = ["politics", "expert_opinion", "meeting", "none"]
FAMILIES = ["indirect", "roleplay", "drift", "buried", "injected", "non_english", "typos"]
EXPECT = {f: {"politics": 40, "expert_opinion": 40, "meeting": 40, "none": 45} for f in FAMILIES}
EXPECT["non_english"]["none"] = 48
EXPECT_LANG = {"politics": 10, "expert_opinion": 10, "meeting": 10, "none": 12}
LANGS = ["es", "de", "fr", "pt"]

errors = []


def err(msg):
    errors.append(msg)


def norm(s):
    return re.sub(r"\s+", " ", s).strip().casefold()


def strings_in(obj):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from strings_in(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from strings_in(v)


def external_texts():
    texts = set()
    files = ([DEV] if os.path.exists(DEV) else []) + [p for p in sorted(glob.glob(EVAL_GLOB)) if p != PATH]
    for fp in files:
        with open(fp, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                r = json.loads(line)
                if isinstance(r.get("message"), str):
                    texts.add(norm(r["message"]))
                for t in r.get("history") or []:
                    if isinstance(t, dict) and isinstance(t.get("content"), str):
                        texts.add(norm(t["content"]))
    n_pool_files = 0
    for fp in sorted(glob.glob(os.path.join(POOLS, "**", "*.json"), recursive=True)):
        n_pool_files += 1
        with open(fp, encoding="utf-8") as f:
            for s in strings_in(json.load(f)):
                texts.add(norm(s))
    if n_pool_files == 0:
        err("no pool json files found")
    return texts, len(files), n_pool_files


def main():
    rows = []
    with open(PATH, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                err(f"line {i}: bad json {e}")
    counts = collections.Counter()
    lang_counts = collections.Counter()
    seen_msgs = {}
    for i, r in enumerate(rows, 1):
        rid = r.get("id")
        if list(r.keys()) != KEYS:
            err(f"{rid}: key order {list(r.keys())}")
            continue
        if rid != f"adversarial_v1-{i:04d}":
            err(f"{rid}: expected id adversarial_v1-{i:04d}")
        if r["label"] not in LABELS:
            err(f"{rid}: bad label")
        if r["family"] not in FAMILIES:
            err(f"{rid}: bad family")
        if r["family"] == "non_english":
            if r["lang"] not in LANGS:
                err(f"{rid}: bad lang {r['lang']}")
            lang_counts[(r["lang"], r["label"])] += 1
        elif r["lang"] != "en":
            err(f"{rid}: non-english lang in {r['family']}")
        counts[(r["family"], r["label"])] += 1
        p = r["persona"]
        if not isinstance(p, dict) or list(p.keys()) != ["name", "traits", "expressions"]:
            err(f"{rid}: persona keys")
        else:
            if not isinstance(p["name"], str) or not p["name"]:
                err(f"{rid}: persona name")
            if not (
                isinstance(p["traits"], list)
                and 1 <= len(p["traits"]) <= 3
                and all(isinstance(t, str) and t for t in p["traits"])
            ):
                err(f"{rid}: traits {p['traits']}")
            if not (
                isinstance(p["expressions"], list)
                and len(p["expressions"]) <= 2
                and all(isinstance(t, str) for t in p["expressions"])
            ):
                err(f"{rid}: expressions")
        m = r["memories"]
        if not (isinstance(m, list) and len(m) <= 3 and all(isinstance(x, str) and x for x in m)):
            err(f"{rid}: memories {m}")
        h = r["history"]
        if not isinstance(h, list) or len(h) > 6 or len(h) % 2:
            err(f"{rid}: history length {len(h) if isinstance(h, list) else h}")
        else:
            for j, t in enumerate(h):
                if (
                    list(t.keys()) != ["role", "content"]
                    or t["role"] != ("user" if j % 2 == 0 else "assistant")
                    or not isinstance(t["content"], str)
                    or not t["content"].strip()
                ):
                    err(f"{rid}: history turn {j} bad: {t}")
            if r["family"] == "drift" and len(h) < 3:
                err(f"{rid}: drift item with {len(h)} history turns")
        msg = r["message"]
        if not isinstance(msg, str) or not msg.strip():
            err(f"{rid}: empty message")
            continue
        if r["family"] == "buried":
            n = len(msg.split())
            if not 150 <= n <= 300:
                err(f"{rid}: buried message has {n} words")
        if msg in seen_msgs:
            err(f"{rid}: duplicate message of {seen_msgs[msg]}")
        seen_msgs.setdefault(msg, rid)
    # normalised duplicates
    nseen = {}
    for r in rows:
        k = norm(r.get("message", ""))
        if k in nseen:
            err(f"{r['id']}: normalised duplicate of {nseen[k]}")
        nseen.setdefault(k, r["id"])
    # counts
    for f in FAMILIES:
        for lab in LABELS:
            if counts[(f, lab)] != EXPECT[f][lab]:
                err(f"count {f}/{lab} = {counts[(f, lab)]}, expected {EXPECT[f][lab]}")
    for lang in LANGS:
        for lab in LABELS:
            if lang_counts[(lang, lab)] != EXPECT_LANG[lab]:
                err(f"count non_english/{lang}/{lab} = {lang_counts[(lang, lab)]}, expected {EXPECT_LANG[lab]}")
    # overlap with project data
    ext, n_files, n_pools = external_texts()
    for r in rows:
        texts = [("message", r["message"])] + [(f"history[{j}]", t["content"]) for j, t in enumerate(r["history"])]
        for where, t in texts:
            if norm(t) in ext:
                err(f"{r['id']}: {where} identical to a project/dev text: {t[:60]!r}")
    # report
    print(f"rows: {len(rows)}; reference texts: {len(ext)} from {n_files} jsonl + {n_pools} pool files")
    print("family".ljust(12) + "".join(lab.rjust(16) for lab in LABELS) + "total".rjust(8))
    for f in FAMILIES:
        c = [counts[(f, lab)] for lab in LABELS]
        print(f.ljust(12) + "".join(str(x).rjust(16) for x in c) + str(sum(c)).rjust(8))
    for lang in LANGS:
        print(("  " + lang).ljust(12) + "".join(str(lang_counts[(lang, lab)]).rjust(16) for lab in LABELS))
    hl = collections.Counter((r["family"], len(r["history"])) for r in rows)
    print("history lengths:", dict(sorted(hl.items())))
    if errors:
        print(f"FAIL: {len(errors)} problem(s)")
        for e in errors[:200]:
            print("  " + e)
        sys.exit(1)
    print("OK")


if __name__ == "__main__":
    main()
