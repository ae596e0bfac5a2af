"""Packaged evaluation sets: name resolution, the real-chat file itself, and that no training data
(generated examples, or any string of the offline pools) shares a turn with it."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import subprocess
import sys
from collections import Counter
from importlib import resources
from pathlib import Path

import pytest

from personaguard import schema
from personaguard.config import GenerateConfig
from personaguard.data import eval_sets, generate
from personaguard.data.eval_sets import EVAL_SETS, eval_set_path, list_sets, resolve_data
from personaguard.errors import PersonaguardError
from personaguard.schema import Snapshot, read_jsonl

NAME = "real-chats-v1"
SHA256 = "e9db3ba2cb4edf818b40ccdaa64bd61dc8ddee1a8cba3061fd105c1c33c1ee43"  # dev_real_v1, from its README
LABELS = {"politics": 40, "expert_opinion": 40, "meeting": 40, "none": 120}
GUARDRAILS = ("politics", "expert_opinion", "meeting")
RELIGION = "real-religion-v1"
RELIGION_LABELS = {"religion": 40, "none": 60}
ROMANCE = "real-romance-v1"
USER_SETS = {RELIGION: ("religion", RELIGION_LABELS), ROMANCE: ("romance", {"romance": 40, "none": 60})}
MIN_WORDS = 4


def norm(text: str) -> str:
    return " ".join(text.lower().split())


@pytest.fixture(scope="module")
def dev_rows() -> list[dict]:
    return [json.loads(line) for line in eval_set_path(NAME).read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def dev_turns(dev_rows) -> dict[str, str]:
    """Normalised dev message and history turns -> the first item id using it."""
    out: dict[str, str] = {}
    for row in dev_rows:
        for text in [row["message"], *(h["content"] for h in row["history"])]:
            out.setdefault(norm(text), row["id"])
    return out


# ---------------------------------------------------------------- resolve_data and the registry


def test_resolve_known_name_gives_the_packaged_file():
    path = resolve_data(NAME)
    assert path.is_file() and path.name == "real_chats_v1.jsonl"
    assert path == Path(str(resources.files("personaguard.data") / "eval_sets" / "real_chats_v1.jsonl"))


def test_resolve_unknown_name_lists_the_known_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PersonaguardError) as exc:
        resolve_data("real-chats-v2")
    msg = str(exc.value)
    assert "\n" not in msg and "'real-chats-v2'" in msg and NAME in msg


def test_resolve_paths_come_back_unchanged(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for p in ("data/dev.jsonl", "dev.jsonl", "missing/file", str(tmp_path / "x.jsonl")):
        assert resolve_data(p) == Path(p)
    (tmp_path / "mychats").write_text("{}\n", encoding="utf-8")  # an existing file, whatever its name
    assert resolve_data("mychats") == Path("mychats")


def test_sha256_matches_the_readme_and_the_registry():
    path = eval_set_path(NAME)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SHA256 == EVAL_SETS[NAME].sha256
    readme = (resources.files("personaguard.data") / "eval_sets" / "README.md").read_text(encoding="utf-8")
    assert SHA256 in readme and "dev_real_v1" in readme and "Evaluation only" in readme
    for licence_word in (
        "MIT",
        "Apache-2.0",
        "BYU-PCCL/chitchat-dataset",
        "anthropics/hh-rlhf",
        "Itaymanes/K-QA",
        "NVIDIA/garak",
        "ReversecLabs/spikee",
    ):
        assert licence_word in readme, licence_word


def test_a_modified_file_is_refused(monkeypatch):
    eval_set_path.cache_clear()
    monkeypatch.setitem(EVAL_SETS, NAME, dataclasses.replace(EVAL_SETS[NAME], sha256="0" * 64))
    try:
        with pytest.raises(PersonaguardError, match="sha256"):
            resolve_data(NAME)
    finally:
        eval_set_path.cache_clear()


def test_file_parses_into_240_snapshots_with_the_label_counts():
    rows = read_jsonl(resolve_data(NAME), Snapshot, allowed_labels=set(LABELS))
    assert len(rows) == 240 and len({r.id for r in rows}) == 240
    assert Counter(r.label for r in rows) == LABELS


def test_list_sets():
    rows = {r["name"]: r for r in list_sets()}
    assert sorted(rows) == sorted([NAME, RELIGION, ROMANCE, "adversarial-v1"])
    row = rows[NAME]
    assert row["items"] == 240 and row["labels"] == LABELS
    assert "MIT" in row["licence"] and "Apache-2.0" in row["licence"] and "evaluation only" in row["licence"]
    assert rows[RELIGION]["items"] == 100 and rows[RELIGION]["labels"] == RELIGION_LABELS


# ---------------------------------------------------------------- the set for a user-defined guardrail


@pytest.mark.parametrize("name", sorted(USER_SETS))
def test_user_guardrail_sets_parse_and_the_readme_records_them(name):
    labels = USER_SETS[name][1]
    rows = read_jsonl(resolve_data(name), Snapshot, allowed_labels=set(labels))
    assert len(rows) == 100 and len({r.id for r in rows}) == 100
    assert Counter(r.label for r in rows) == labels
    readme = (resources.files("personaguard.data") / "eval_sets" / "README.md").read_text(encoding="utf-8")
    assert EVAL_SETS[name].sha256 in readme and EVAL_SETS[name].filename in readme


def test_user_guardrail_sets_use_conversations_of_no_other_set():
    """Each real conversation judges one set only (the source names the conversation)."""
    seen: dict[str, str] = {}
    for name in EVAL_SETS:
        for line in eval_set_path(name).read_text(encoding="utf-8").splitlines():
            conv = re.search(r"conversation ([0-9a-f-]{36})", json.loads(line).get("source", ""))
            if conv and name != NAME:
                assert seen.setdefault(conv.group(1), name) == name, (conv.group(1), name, seen[conv.group(1)])


@pytest.mark.parametrize("name", sorted(USER_SETS))
def test_user_guardrail_file_and_its_data_share_no_turn_with_the_eval_sets(name, tmp_path, pg_home, monkeypatch):
    """A user guardrail file in configs/guardrails (examples, near-misses, replies) and the offline
    data built from it must not contain a message or history turn of the set that judges it, nor of
    the dev set."""
    guardrail = USER_SETS[name][0]
    monkeypatch.setattr(schema.os, "fsync", lambda fd: None)
    targets = {}
    for set_name in (NAME, name):
        for line in eval_set_path(set_name).read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            for text in [row["message"], *(h["content"] for h in row["history"])]:
                targets.setdefault(norm(text), row["id"])
    repo = Path(__file__).resolve().parents[2]
    spec = (repo / "configs" / "guardrails" / f"{guardrail}.yaml").read_text(encoding="utf-8")
    import yaml

    leaves = list(_leaves(yaml.safe_load(spec)))
    res = generate.run(
        GenerateConfig(guardrail=guardrail, guardrails_dir=str(repo / "configs" / "guardrails"), n=400, out_dir=str(tmp_path))
    )
    for split in generate.SPLITS:
        for line in (res.data_dir / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
            ex = json.loads(line)
            leaves += [ex["message"], *(h["content"] for h in ex["history"])]
    assert len(leaves) > 400
    hits = {f"{s!r} = {targets[norm(s)]}" for s in leaves if len(norm(s).split()) >= MIN_WORDS and norm(s) in targets}
    assert not hits, sorted(hits)[:20]


def test_module_does_not_import_torch():
    code = "import sys, personaguard.data.eval_sets as m; m.list_sets(); sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# ---------------------------------------------------------------- no training data shares a turn with it


def _leaves(obj):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _leaves(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _leaves(v)


def test_no_pool_string_is_a_dev_turn(dev_rows, dev_turns):
    """Every string leaf of every packaged pool file (pools/**/*.json) against the dev set's messages
    and history turns, each line of a multi-line turn, persona traits/expressions and memories, case
    and whitespace normalised. Strings of fewer than 4 words are skipped: "lol", "yeah", "haha yeah"
    or "me too!" are in any chat corpus and collide legitimately."""
    targets = dict(dev_turns)
    for row in dev_rows:
        turns = [row["message"], *(h["content"] for h in row["history"])]
        extra = [*row["persona"].get("traits", []), *row["persona"].get("expressions", []), *row.get("memories", [])]
        for text in [line for t in turns for line in t.split("\n")] + extra:
            targets.setdefault(norm(text), row["id"])
    root = Path(str(resources.files("personaguard.data") / "pools"))
    files = sorted(root.rglob("*.json"))
    assert len(files) >= 9  # neutral, personas, memories, histories, fillers, double_triggers, triggers/*, contrast/*
    hits, checked = set(), 0
    for f in files:
        for s in _leaves(json.loads(f.read_text(encoding="utf-8"))):
            k = norm(s)
            if len(k.split()) < MIN_WORDS:
                continue
            checked += 1
            if k in targets:
                hits.add(f"{f.relative_to(root)}: {s!r} = {targets[k]}")
    assert checked > 5_000
    assert not hits, sorted(hits)


def test_no_generated_example_shares_a_turn_with_the_dev_set(tmp_path, pg_home, dev_turns, monkeypatch):
    """Offline data for every built-in guardrail and every variation the configs use (vary_all for all
    three, plus fixed_character / fixed_history / semi_fixed; vary_all also with cross-guardrail
    negatives), n as in configs/paper-cpu.yaml: no train/validation/test message or history turn,
    case and whitespace normalised, equals a dev message or history turn. Turns of fewer than 4
    words are skipped as above ("lol" is a whole history turn in both). The per-line fsync of the
    writer is switched off here: 19,200 rows of crash safety cost up to 40 s on a busy disk."""
    monkeypatch.setattr(schema.os, "fsync", lambda fd: None)
    runs = [("vary_all", 0.0), ("vary_all", 0.2), ("fixed_character", 0.0), ("fixed_history", 0.0), ("semi_fixed", 0.0)]
    hits, checked = set(), 0
    for g in GUARDRAILS:
        for variation, cross in runs:
            cfg = GenerateConfig(
                guardrail=g, variation=variation, n=1280, cross_negative_share=cross, out_dir=str(tmp_path / f"cross{cross}")
            )
            res = generate.run(cfg)
            assert res.missing == 0
            for split in generate.SPLITS:
                for line in (res.data_dir / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
                    ex = json.loads(line)
                    for text in [ex["message"], *(h["content"] for h in ex["history"])]:
                        k = norm(text)
                        checked += 1
                        if len(k.split()) >= MIN_WORDS and k in dev_turns:
                            hits.add(f"{g}/{variation}/{split} {ex['id']}: {text!r} = {dev_turns[k]}")
    assert checked > 15 * 1280
    assert not hits, sorted(hits)[:20]


def test_the_registry_only_names_packaged_files():
    for name, s in EVAL_SETS.items():
        assert (resources.files("personaguard.data") / "eval_sets" / s.filename).is_file(), name
        assert eval_sets._looks_like_name(name)


# ---------------------------------------------------------------- the adversarial pack (our own writing)

ADVERSARIAL = "adversarial-v1"
FAMILIES = ("indirect", "roleplay", "drift", "buried", "injected", "non_english", "typos")


def test_adversarial_pack_parses_with_every_family_and_label():
    rows = read_jsonl(resolve_data("adversarial"), Snapshot, allowed_labels={*GUARDRAILS, "none"})
    assert resolve_data("adversarial") == resolve_data(ADVERSARIAL)
    assert len({r.id for r in rows}) == len(rows) and len({norm(r.message) for r in rows}) == len(rows)
    counts = Counter((r.model_extra["family"], r.label) for r in rows)
    for family in FAMILIES:
        for g in GUARDRAILS:
            assert counts[(family, g)] >= 40, (family, g)
        assert counts[(family, "none")] >= 40, family
    assert {r.model_extra["family"] for r in rows} == set(FAMILIES)
    langs = Counter((r.model_extra["lang"], r.label) for r in rows if r.model_extra["family"] == "non_english")
    for lang in ("es", "de", "fr", "pt"):
        for label in (*GUARDRAILS, "none"):
            assert langs[(lang, label)] >= 10, (lang, label)
    readme = (resources.files("personaguard.data") / "eval_sets" / "README.md").read_text(encoding="utf-8")
    assert EVAL_SETS[ADVERSARIAL].sha256 in readme and EVAL_SETS[ADVERSARIAL].filename in readme


def test_adversarial_pack_shares_no_turn_with_the_real_sets_or_the_pools():
    """Written for this project: no message or history turn (4+ words, normalised) is a turn of a real
    set (it was not copied from them) or a string of the offline pools (the generator cannot have
    taught an adapter the answer)."""
    targets: dict[str, str] = {}
    for name in (NAME, RELIGION, ROMANCE):
        for line in eval_set_path(name).read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            for text in [row["message"], *(h["content"] for h in row["history"])]:
                targets.setdefault(norm(text), row["id"])
    root = Path(str(resources.files("personaguard.data") / "pools"))
    for f in sorted(root.rglob("*.json")):
        for s in _leaves(json.loads(f.read_text(encoding="utf-8"))):
            targets.setdefault(norm(s), f"pools/{f.relative_to(root)}")
    hits = set()
    for line in eval_set_path(ADVERSARIAL).read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        for text in [row["message"], *(h["content"] for h in row["history"])]:
            k = norm(text)
            if len(k.split()) >= MIN_WORDS and k in targets:
                hits.add(f"{row['id']}: {text!r} = {targets[k]}")
    assert not hits, sorted(hits)[:20]
