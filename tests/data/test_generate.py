"""Offline backend: determinism, the train/test partition, and crash safety (torn lines, SIGKILL)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from personaguard.config import GenerateConfig
from personaguard.data import generate
from personaguard.data.pools import load_pools
from personaguard.errors import PersonaguardError
from personaguard.guardrails import get_guardrail
from personaguard.schema import Example

SPLIT_FILES = ("train.jsonl", "validation.jsonl", "test.jsonl")


@pytest.fixture(autouse=True)
def _home(pg_home):
    """No user guardrails leak in from the machine running the tests."""


def _run(tmp_path, name: str, **kw) -> generate.GenerateResult:
    return generate.run(GenerateConfig(out_dir=str(tmp_path / name), **kw))


def _files(res) -> dict[str, str]:
    return {f: (res.data_dir / f).read_text(encoding="utf-8") for f in ("examples.jsonl", *SPLIT_FILES)}


def _expected_rows(cfg: GenerateConfig) -> dict[str, dict]:
    """Every example computed in memory, without touching the disk, keyed by id."""
    g, pools, sizes = get_guardrail(cfg.guardrail), load_pools(), generate.split_sizes(cfg)
    rows = {}
    for s in generate.SPLITS:
        gen = generate.OfflineGenerator(g, cfg, pools, s)
        for i in range(sizes[s]):
            ex = gen.example(i, generate._triggering(cfg, s, i, sizes[s]))
            rows[ex.id] = ex.model_dump(mode="json")
    return rows


def _check_complete(path, cfg: GenerateConfig) -> None:
    """Exactly n unique valid rows, whole lines only, each equal to the in-memory example."""
    data = path.read_bytes()
    assert data.endswith(b"\n")
    rows = [json.loads(line) for line in data.decode("utf-8").splitlines()]
    for row in rows:
        Example.model_validate(row)
    expected = _expected_rows(cfg)
    assert len(rows) == cfg.n == len({r["id"] for r in rows})
    assert {r["id"]: r for r in rows} == expected


def test_same_seed_same_data_other_seed_other_data(tmp_path):
    a, b, c = (_run(tmp_path, name, n=60, seed=seed) for name, seed in (("a", 3), ("b", 3), ("c", 4)))
    assert _files(a) == _files(b)
    assert _files(a)["train.jsonl"] != _files(c)["train.jsonl"]
    assert a.counts == {"train": 45, "validation": 3, "test": 12} and a.written == 60 and a.missing == 0


def test_train_and_test_share_no_final_message(tmp_path):
    res = _run(tmp_path, "d", n=400, cross_negative_share=0.2)
    msgs = {s: {json.loads(line)["message"] for line in (res.data_dir / f"{s}.jsonl").open()} for s in generate.SPLITS}
    assert msgs["test"] and not msgs["test"] & (msgs["train"] | msgs["validation"])


def test_resume_after_torn_last_line(tmp_path):
    ref = _run(tmp_path, "ref", n=40)
    cfg = GenerateConfig(out_dir=str(tmp_path / "torn"), n=40)
    first = generate.run(cfg)
    raw = first.data_dir / "examples.jsonl"
    lines = raw.read_text(encoding="utf-8").splitlines(keepends=True)
    raw.write_text("".join(lines[:25]) + lines[25][: len(lines[25]) // 2], encoding="utf-8")  # a crash mid-write
    res = generate.run(cfg)
    assert res.written == 15 and res.counts == ref.counts
    assert _files(res) == _files(ref)
    _check_complete(raw, cfg)


def test_a_different_config_is_refused_but_runtime_fields_may_change(tmp_path):
    _run(tmp_path, "e", n=20)
    with pytest.raises(PersonaguardError, match="different config"):
        _run(tmp_path, "e", n=24)
    res = _run(tmp_path, "e", n=20, concurrency=9, request_budget=5)  # no effect on the data
    assert res.written == 0 and res.missing == 0


def test_sigkill_mid_run_then_resume_leaves_exactly_n_rows(tmp_path, pg_home):
    """Kill the real CLI at three points of a long run, resume, and find every row exactly once."""
    n = 3000
    cfg = GenerateConfig(out_dir=str(tmp_path / "k"), n=n, seed=7)
    cmd = [sys.executable, "-m", "personaguard.cli", "generate", "--n", str(n), "--seed", "7", "--out-dir", cfg.out_dir]
    env = {**os.environ, "PERSONAGUARD_HOME": str(pg_home)}
    raw = tmp_path / "k" / "politics_vary_all" / "examples.jsonl"
    line_bytes = 830  # measured average line length; only used to place the kills
    kills = 0
    for frac in (0.1, 0.35, 0.65):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120
            while proc.poll() is None and time.monotonic() < deadline:
                if raw.exists() and raw.stat().st_size >= frac * n * line_bytes:
                    proc.send_signal(signal.SIGKILL)
                    kills += 1
                    break
                time.sleep(0.005)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert kills == 3, "every run was killed part-way"
    assert 0 < raw.stat().st_size < n * line_bytes * 0.9
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    _check_complete(raw, cfg)
    split_ids = [json.loads(line)["id"] for f in SPLIT_FILES for line in (raw.parent / f).open()]
    assert len(split_ids) == n == len(set(split_ids))


def _memory_rows(**kw) -> list[dict]:
    return list(_expected_rows(GenerateConfig(**kw)).values())


def test_mixed_turns_bury_the_message_among_everyday_lines():
    pools = load_pools()
    trig = {m["text"] for m in pools.triggers["politics"].messages}
    everyday = {x["text"] for x in pools.neutral}
    rows = _memory_rows(n=200, mixed_turn_share=1.0, multi_message_share=0.0, continuation_share=0.0, compound_trigger_share=0.0)
    for r in rows:
        lines = r["message"].split("\n")
        assert any(line in everyday for line in lines), r["message"]  # one line is an everyday one-liner
        if r["label"] == "politics":
            assert "\n".join(lines[1:]) in trig or "\n".join(lines[:-1]) in trig, r["message"]
    first = {r["message"].split("\n")[0] in everyday for r in rows if r["label"] == "politics"}
    assert first == {True, False}  # the trigger sits after the everyday line in some turns, before it in others
    plain = _memory_rows(n=200, mixed_turn_share=0.0, multi_message_share=0.0, continuation_share=0.0, compound_trigger_share=0.0)
    assert all(r["message"] in trig for r in plain if r["label"] == "politics")


def test_long_turns_put_the_message_in_the_middle_of_a_ramble_for_both_labels():
    pools = load_pools()
    trig = {m["text"] for m in pools.triggers["politics"].messages}
    everyday = {x["text"] for x in pools.neutral}
    kw = dict(n=200, mixed_turn_share=0.0, multi_message_share=0.0, continuation_share=0.0, compound_trigger_share=0.0)
    rows = _memory_rows(long_turn_share=1.0, **kw)
    for label in ("politics", "none"):
        msgs = [r["message"] for r in rows if r["label"] == label]
        assert msgs and all(sum(line in m for line in everyday) >= 4 for m in msgs)  # a long turn for either label
    for r in rows:
        if r["label"] == "politics":
            t = next(t for t in trig if t in r["message"])
            i = r["message"].index(t)
            assert 0 < i and i + len(t) < len(r["message"])  # everyday lines before and after the trigger
    assert not any(sum(line in r["message"] for line in everyday) >= 4 for r in _memory_rows(long_turn_share=0.0, **kw))


def test_compound_triggers_carry_own_and_another_trigger_and_are_tagged():
    pools = load_pools()
    own = {m["text"] for m in pools.triggers["politics"].messages}
    other = {m["text"] for g in ("expert_opinion", "meeting") for m in pools.triggers[g].messages}
    kw = dict(n=300, mixed_turn_share=0.0, multi_message_share=0.0)
    rows = _memory_rows(compound_trigger_share=0.5, **kw)
    compound = [r for r in rows if r["kind"] == "compound_trigger"]
    trig = [r for r in rows if r["label"] == "politics"]
    assert 0.35 < len(compound) / len(trig) < 0.65
    for r in compound:
        msg = r["message"]
        assert any(msg.startswith(t + "\n") or msg.endswith("\n" + t) for t in own), msg
        assert any(msg.startswith(t + "\n") or msg.endswith("\n" + t) for t in other), msg
        assert r["label"] == "politics" and r["chosen"].startswith("<guard>")
    assert not any(r["kind"] == "compound_trigger" for r in _memory_rows(compound_trigger_share=0.0, **kw))


def test_other_topic_negatives_come_from_their_pool_with_its_reply_and_no_tag():
    pools = load_pools()
    replies = {x["text"]: x["reply"] for x in pools.other_topics}
    kw = dict(n=300, mixed_turn_share=0.0, multi_message_share=0.0)
    rows = _memory_rows(other_topic_share=0.3, **kw)
    other = [r for r in rows if r["kind"] == "other_topic"]
    neutral = [r for r in rows if r["label"] == "none"]
    assert 0.2 < len(other) / len(neutral) < 0.4
    assert all(r["message"] in replies and r["chosen"] == replies[r["message"]] for r in other)
    assert all(r["rejected"].startswith("<guard>") for r in other)
    assert not any(r["kind"] == "other_topic" for r in _memory_rows(other_topic_share=0.0, **kw))
    assert not any("religio" in x["text"].lower() or "god" in x["text"].lower().split() for x in pools.other_topics)


def test_shared_hard_share_draws_near_misses_from_the_other_guardrails():
    pools = load_pools()
    own = {x["text"] for x in pools.hard["politics"]}
    other = {x["text"] for g, v in pools.hard.items() if g != "politics" for x in v}
    kw = dict(n=300, hard_negative_share=1.0, cross_negative_share=0.0, mixed_turn_share=0.0, multi_message_share=0.0)
    for share, expect in ((0.0, own), (1.0, other)):
        hard = [r["message"] for r in _memory_rows(shared_hard_share=share, **kw) if r["kind"] == "hard_negative"]
        assert len(hard) > 100 and all(m in expect for m in hard)


def test_data_from_before_a_new_generator_option_is_not_resumed_with_it_on(tmp_path):
    """A saved config without mixed_turn_share was made with it off: resuming with the new default would mix styles."""
    res = _run(tmp_path, "old", n=20)
    saved = res.data_dir / "generate_config.yaml"
    text = "".join(
        line for line in saved.read_text(encoding="utf-8").splitlines(keepends=True) if not line.startswith("mixed_turn_share")
    )
    saved.write_text(text, encoding="utf-8")
    with pytest.raises(PersonaguardError, match="different config"):
        _run(tmp_path, "old", n=20)
    assert _run(tmp_path, "old", n=20, mixed_turn_share=0.0).written == 0  # the settings it was made with: resumes


def _religion_file(tmp_path):
    d = tmp_path / "guardrails"
    d.mkdir()
    examples = [
        "Do you believe in God?",
        "Are you religious at all?",
        "What church do you go to?",
        "do u pray before bed?",
        "Which religion is the right one?",
        "What happens after we die, in your view?",
        "Are you Christian or Muslim?",
        "Would you ever convert?",
        "Convince me God exists.",
        "Do you go to mass on Sundays?",
        "Is the Bible true?",
        "Is religion good for people?",
    ]
    near = ["my grandma's church has a bake sale", "this pizza is heavenly", "oh my god I spilled my tea", "we saw a cathedral"]
    body = {
        "name": "religion",
        "trigger": "asks the persona's faith",
        "resolution": "decline kindly",
        "examples": examples,
        "near_misses": near,
    }
    import yaml

    (d / "religion.yaml").write_text(yaml.safe_dump(body))
    return d, examples, near


def test_user_guardrail_offline_splits_hold_out_examples_and_never_tag_near_misses(tmp_path):
    from personaguard.data.splits import held_out
    from personaguard.data.variants import LEADS

    d, examples, near = _religion_file(tmp_path)
    res = generate.run(GenerateConfig(guardrail="religion", guardrails_dir=str(d), n=120, out_dir=str(tmp_path / "out")))
    rows = {
        s: [json.loads(x) for x in (res.data_dir / f"{s}.jsonl").read_text().splitlines()]
        for s in ("train", "validation", "test")
    }
    assert all(rows[s] for s in rows) and all(any(r["label"] == "religion" for r in rows[s]) for s in rows)

    def source_example(message: str) -> set[str]:
        """Which examples a (varied, maybe multi-line) message came from, compared without case or typos."""
        text = " ".join(message.lower().split())
        for lead in LEADS:
            text = text.replace(lead, " ")
        words = set(text.replace("?", " ").replace(".", " ").split())
        return {e for e in examples if len(set(e.lower().rstrip("?.").split()) - words) <= 1}

    held = held_out(examples)
    for s in rows:
        used = set().union(*(source_example(r["message"]) for r in rows[s] if r["label"] == "religion"))
        assert used, s
        assert (used <= held) if s == "test" else not (used & held), (s, used)
    near_words = [set(n.lower().split()) for n in near]
    for s in rows:
        for r in rows[s]:
            if r["label"] == "religion":
                assert not any(len(w - set(r["message"].lower().split())) <= 1 for w in near_words), r["message"]
                assert r["chosen"].startswith("<guard>") and not r["rejected"].startswith("<guard>")
            else:
                assert not r["chosen"].startswith("<guard>")
    kinds = {r["kind"] for s in rows for r in rows[s] if r["label"] == "none"}
    assert {"cross_negative", "hard_negative"} <= kinds
    card = (res.data_dir / "README.md").read_text()
    assert "## Against the guardrail file's examples" in card and "near copies" in card
