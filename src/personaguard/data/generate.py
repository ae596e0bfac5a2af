"""Generate synthetic preference examples for one guardrail (offline or `openai` backend).

Usage:
    personaguard generate --guardrail politics --n 400 --out-dir runs/data
    personaguard generate --set backend=openai --set llm_model=gpt-4o-mini   # see data/teacher.py

Writes `{out_dir}/{guardrail}_{variation}/examples.jsonl` one fsync'd line at a time (a killed run
resumes where it stopped: every example has a fixed id (split, i), completed ids are skipped, so
nothing repeats), then `train.jsonl`, `validation.jsonl`, `test.jsonl` sorted by id (atomic) and a
dataset card `README.md`. Offline, example i is a pure function of (seed, split, i) and test
examples come only from held-out pool items (see pools.py). With an LLM, rows arrive in any order
and a final message already in the data (after normalising) is regenerated, so train and test
share none.

Triggering example: chosen = tag + in-character decline + redirect; rejected = a reply that does
the unwanted thing. Neutral example: chosen = a natural reply; rejected = an unwarranted tagged
refusal, which is what keeps neutral turns untouched.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError
from tqdm import tqdm

from ..config import GenerateConfig, dump_yaml
from ..errors import PersonaguardError
from ..guardrails import MIN_OFFLINE_EXAMPLES, RECOMMENDED_EXAMPLES, Guardrail, get_guardrail
from ..schema import (
    NONE_LABEL,
    Example,
    append_jsonl,
    ensure_dir,
    iter_valid_lines,
    repair_tail,
    write_jsonl_atomic,
    write_text_atomic,
)
from .pools import Pools, load_pools, user_pool
from .variants import vary

SPLITS = ("train", "validation", "test")
# Fields that steer how a run goes but not what it produces: they may change between resumes
# (e.g. a larger request_budget to continue, a moved folder).
RUNTIME_FIELDS = {"out_dir", "concurrency", "max_retries", "request_timeout", "request_budget", "api_key_env"}
COUNT_FIELDS = ("written", "invalid", "duplicates", "failed_requests", "skipped", "requests")
# Data-shaping fields added after the first release: a saved config without one was generated
# before it existed, i.e. with it off. Reading the absence as the new default would let a resume
# append new-style rows to old-style data.
LEGACY_OFF = {
    "continuation_share": 0.0,
    "multi_message_share": 0.0,
    "mixed_turn_share": 0.0,
    "long_turn_share": 0.0,
    "shared_hard_share": 0.0,
    "compound_trigger_share": 0.0,
    "other_topic_share": 0.0,
}


@dataclass
class GenerateResult:
    """Where the data went, rows per split, and what this run did (the LLM counters stay 0 offline)."""

    data_dir: Path
    counts: dict[str, int]
    written: int = 0  # rows appended by this run
    invalid: int = 0  # LLM answers rejected by validation (each one, retried or not)
    duplicates: int = 0  # LLM answers whose final message was already in the data
    failed_requests: int = 0  # requests that ended in 429/5xx/timeout/connection error
    skipped: int = 0  # examples given up after their retries (a later run tries them again)
    requests: int = 0  # requests sent to the endpoint
    budget_exhausted: bool = False  # request_budget reached before the end
    missing: int = 0  # examples still absent; 0 means the data set is complete


def split_sizes(cfg: GenerateConfig) -> dict[str, int]:
    n_test = max(2, round(cfg.n * cfg.test_fraction))
    n_val = round(cfg.n * cfg.val_fraction)
    return {"train": cfg.n - n_test - n_val, "validation": n_val, "test": n_test}


def example_id(g: Guardrail, cfg: GenerateConfig, split: str, i: int) -> str:
    return f"{g.name}_{cfg.variation}-{split}-{i:05d}"


def fixed_parts(cfg: GenerateConfig, side: Pools, split: str) -> tuple[dict, list[dict]]:
    """The one persona and one history a split uses under the fixed variations (both backends)."""
    rng = random.Random(f"{cfg.seed}-{split}-fixed")
    return rng.choice(side.personas), rng.choice(side.histories)


class OfflineGenerator:
    """Deterministic snapshot + reply composer over one side of the pools."""

    def __init__(self, guardrail: Guardrail, cfg: GenerateConfig, pools: Pools, split: str):
        self.g, self.cfg, self.split = guardrail, cfg, split
        self.p = pools.side(test=split == "test")
        # a guardrail defined only in YAML: its examples and near-misses stand in for the packaged pools
        self.user_defined = guardrail.name not in pools.triggers
        if self.user_defined:
            check_offline_examples(guardrail, sorted(pools.triggers))
            self.own, self.p.hard[guardrail.name] = user_pool(guardrail, test=split == "test")
        else:
            self.own = self.p.triggers[guardrail.name]
        self.others = [t for name, t in sorted(self.p.triggers.items()) if name != guardrail.name]
        self.fixed_persona, self.fixed_history = fixed_parts(cfg, self.p, split)
        self.orders = {}  # per-pool permutations: messages are used without replacement, then cycled
        self.long_histories = [h for h in self.p.histories if len(h) >= 4]  # leave >= 2 turns after taking the last pair
        # near-misses of the other guardrails are neutral here too ("my sister and I should do a waffle night")
        self.other_hard = [x for name, v in sorted(self.p.hard.items()) if name != guardrail.name for x in v]
        # everyday one-liners to bury a message among (multi-line pool items would make the turn too long)
        self.side_lines = [x["text"] for x in self.p.neutral if "\n" not in x["text"] and len(x["text"]) <= 120]

    def _nth(self, key: str, items: list, i: int):
        if key not in self.orders:
            order = list(range(len(items)))
            random.Random(f"{self.cfg.seed}-{self.split}-{key}").shuffle(order)
            self.orders[key] = order
        order = self.orders[key]
        return items[order[i % len(order)]]

    def _persona(self, rng: random.Random) -> dict:
        v = self.cfg.variation
        if v == "fixed_character":
            return dict(self.fixed_persona)
        if v == "semi_fixed":
            return {**rng.choice(self.p.personas), "name": self.fixed_persona["name"], "traits": self.fixed_persona["traits"]}
        return dict(rng.choice(self.p.personas))

    def example(self, i: int, triggering: bool) -> Example:
        rng = random.Random(f"{self.cfg.seed}-{self.split}-{i}")
        persona = self._persona(rng)
        history = self.fixed_history if self.cfg.variation == "fixed_history" else rng.choice(self.p.histories)
        memories = rng.sample(self.p.memories, k=rng.choices([0, 1, 2], weights=[0.4, 0.4, 0.2])[0])
        tag = self.g.tag
        kind = "trigger"
        if triggering:
            message = self._nth("trigger", self.own.messages, i)["text"]
            if self.user_defined:
                message = vary(message, rng)
            if self.others and rng.random() < self.cfg.compound_trigger_share:
                # another guardrail's trigger in the same turn: still this guardrail's (see compound_trigger_share)
                kind = "compound_trigger"
                other = self._nth(f"compound{i % len(self.others)}", self.others[i % len(self.others)].messages, i)["text"]
                message = f"{message}\n{other}" if rng.random() < 0.5 else f"{other}\n{message}"
            chosen = f"{tag} {self._decline(rng, self.own, persona)}"
            rejected = rng.choice(self.own.engaging_replies)
        else:
            r = rng.random()
            if self.others and r < self.cfg.cross_negative_share:
                kind = "cross_negative"
                other = self.others[i % len(self.others)]
                message = self._nth(f"cross{i % len(self.others)}", other.messages, i)["text"]
                chosen = rng.choice(other.engaging_replies)  # what the persona would say without this guardrail
            elif (
                self.p.other_topics
                and self.cfg.cross_negative_share <= r < self.cfg.cross_negative_share + self.cfg.other_topic_share
            ):
                kind = "other_topic"
                item = self._nth("other_topic", self.p.other_topics, i)
                message, chosen = vary(item["text"], rng) if self.user_defined else item["text"], item["reply"]
            elif (
                r < self.cfg.cross_negative_share + self.cfg.other_topic_share + self.cfg.hard_negative_share
                and self.p.hard.get(self.g.name)
            ):
                kind = "hard_negative"
                if self.other_hard and rng.random() < self.cfg.shared_hard_share:
                    item = self._nth("hard_other", self.other_hard, i)
                else:
                    item = self._nth("hard", self.p.hard[self.g.name], i)
                message, chosen = item["text"], item["reply"]
                if item.get("style") == "user_near_miss":
                    message = vary(message, rng)  # same surface variety as the examples: it must carry no signal
            elif (
                r
                < self.cfg.cross_negative_share
                + self.cfg.other_topic_share
                + self.cfg.hard_negative_share
                + self.cfg.continuation_share
                and self.long_histories
                and self.cfg.variation != "fixed_history"
            ):
                # the conversation goes on: its next user turn is the message, its reply the chosen one
                kind = "continuation"
                conv = self._nth("continuation", self.long_histories, i)
                history, message, chosen = conv[:-2], conv[-2]["content"], conv[-1]["content"]
            else:
                kind = "neutral"
                item = self._nth("neutral", self.p.neutral, i)
                message, chosen = item["text"], item["reply"]
            rejected = f"{tag} {rng.choice(self.own.decline_lines)}"
        message = self._multi_line(rng, message)
        return Example(
            id=example_id(self.g, self.cfg, self.split, i),
            persona=persona,
            memories=memories,
            history=history,
            message=message,
            label=self.g.name if triggering else NONE_LABEL,
            chosen=chosen,
            rejected=rejected,
            kind=kind,
        )

    def _multi_line(self, rng: random.Random, message: str) -> str:
        """Sometimes send the message as several chat lines: a short lead or tail line ("haha", "just
        curious"), or an unrelated everyday line before or after it ("how long have you played sax?" then
        "we should have a jam session"), as real turns bury a proposal among other news.

        Triggering and neutral messages get them at the same rates, so the extra lines carry no signal
        and the adapter learns to read the line that matters wherever it sits. `long_turn_share` goes
        further: the message in the middle of 4-12 such lines, as one paragraph or one line each."""
        # no draw while it is off: data made with the same seed before it existed stays the same
        if self.side_lines and self.cfg.long_turn_share and rng.random() < self.cfg.long_turn_share:
            before = rng.sample(self.side_lines, rng.randint(2, 6))
            after = rng.sample(self.side_lines, rng.randint(2, 6))
            return (" " if rng.random() < 0.5 else "\n").join([*before, message, *after])
        if self.side_lines and rng.random() < self.cfg.mixed_turn_share:
            side = rng.choice(self.side_lines)
            message = f"{side}\n{message}" if rng.random() < 0.5 else f"{message}\n{side}"
        if not self.p.fillers or rng.random() >= self.cfg.multi_message_share:
            return message
        if rng.random() < 0.6:
            return f"{rng.choice(self.p.fillers['lead'])}\n{message}"
        return f"{message}\n{rng.choice(self.p.fillers['tail'])}"

    @staticmethod
    def _decline(rng: random.Random, pool, persona: dict) -> str:
        parts = []
        if persona.get("expressions") and rng.random() < 0.35:
            parts.append(rng.choice(persona["expressions"]))
        parts.append(rng.choice(pool.decline_lines))
        if rng.random() < 0.8:
            parts.append(rng.choice(pool.redirects))
        return " ".join(parts)


def check_offline_examples(g: Guardrail, packaged: list[str]) -> None:
    """A guardrail without packaged pools needs enough `examples` for the offline backend."""
    if len(g.examples) < MIN_OFFLINE_EXAMPLES:
        raise PersonaguardError(
            f"guardrail '{g.name}': the offline backend needs at least {MIN_OFFLINE_EXAMPLES} `examples` in its YAML file "
            f"(it has {len(g.examples)}; {RECOMMENDED_EXAMPLES[0]}-{RECOMMENDED_EXAMPLES[1]} recommended, see "
            f"`personaguard guardrails new`), or use an LLM backend (--set backend=openai); packaged pools exist only "
            f"for {', '.join(packaged)}"
        )


def _triggering(cfg: GenerateConfig, split: str, i: int, size: int) -> bool:
    """Exactly round(size * trigger_share) triggering items per split, interleaved."""
    n_trig = round(size * cfg.trigger_share)
    return int((i + 1) * n_trig / size) > int(i * n_trig / size) if size else False


def _check_settings(path: Path, cfg: GenerateConfig) -> None:
    """Refuse to mix data from two configs; RUNTIME_FIELDS may differ, missing data-shaping fields read as off."""
    if path.exists():
        try:
            saved = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            old = GenerateConfig.model_validate({**LEGACY_OFF, **saved})
        except (ValidationError, yaml.YAMLError, TypeError):
            old = None
        if old is None or old.model_dump(exclude=RUNTIME_FIELDS) != cfg.model_dump(exclude=RUNTIME_FIELDS):
            raise PersonaguardError(
                f"{path.parent}: holds data from a different config ({path}); use another out_dir or delete the folder"
            )
    write_text_atomic(path, dump_yaml(cfg))


def run(cfg: GenerateConfig) -> GenerateResult:
    """Generate (or resume) the data set described by `cfg`."""
    guardrail = get_guardrail(cfg.guardrail, [cfg.guardrails_dir] if cfg.guardrails_dir else None)
    pools = load_pools()
    if cfg.backend == "offline" and guardrail.name not in pools.triggers:
        check_offline_examples(guardrail, sorted(pools.triggers))  # before any folder is made
    ensure_dir(cfg.out_dir, "out_dir")
    out = ensure_dir(Path(cfg.out_dir) / f"{guardrail.name}_{cfg.variation}", "out_dir")
    _check_settings(out / "generate_config.yaml", cfg)
    raw = out / "examples.jsonl"
    repair_tail(raw)
    on_disk = list(iter_valid_lines(raw))
    done = {row["id"] for row in on_disk if "id" in row}
    sizes = split_sizes(cfg)
    todo = [(example_id(guardrail, cfg, s, i), s, i, _triggering(cfg, s, i, sizes[s])) for s in SPLITS for i in range(sizes[s])]
    todo = [t for t in todo if t[0] not in done]
    result = GenerateResult(out, {})
    if cfg.backend == "openai":
        from . import teacher as generate_llm  # lazy: the openai SDK loads only for this backend

        if todo:
            generate_llm.api_key(cfg)  # a missing key fails here, before the progress bar
    with tqdm(total=cfg.n, desc=f"generate {guardrail.name}", unit="ex", initial=cfg.n - len(todo)) as bar:
        if cfg.backend == "offline":
            gens = {s: OfflineGenerator(guardrail, cfg, pools, s) for s in SPLITS if sizes[s]}
            for _, split, i, triggering in todo:
                append_jsonl(raw, gens[split].example(i, triggering))
                result.written += 1
                bar.update(1)
        else:
            fixed = {s: fixed_parts(cfg, pools.side(test=s == "test"), s) for s in SPLITS}
            seen = {generate_llm.normalise_message(r["message"]) for r in on_disk if isinstance(r.get("message"), str)}
            stats = generate_llm.generate(guardrail, cfg, todo, fixed, seen, lambda ex: append_jsonl(raw, ex), bar)
            for name in COUNT_FIELDS:
                setattr(result, name, getattr(stats, name))
            result.budget_exhausted = stats.budget_exhausted
    rows = _write_splits(raw, out)
    result.counts = {s: len(rows[s]) for s in SPLITS}
    result.missing = cfg.n - sum(result.counts.values())
    totals = _add_totals(out / "generate_stats.json", result)
    write_text_atomic(out / "README.md", dataset_card(guardrail, cfg, rows, result, totals))
    return result


def _write_splits(raw: Path, out: Path) -> dict[str, list[dict]]:
    """{split}.jsonl sorted by id (rows were appended in completion order), first copy of an id wins."""
    rows = {s: [] for s in SPLITS}
    seen_ids = set()
    for row in iter_valid_lines(raw):
        if row["id"] in seen_ids:
            continue
        seen_ids.add(row["id"])
        rows[row["id"].rsplit("-", 2)[1]].append(row)
    for s in SPLITS:
        rows[s].sort(key=lambda r: r["id"])
        write_jsonl_atomic(out / f"{s}.jsonl", rows[s])
    return rows


def _add_totals(path: Path, result: GenerateResult) -> dict[str, int]:
    """Counters summed over every run that finished (a killed run's counts are lost, its rows are not)."""
    totals = {name: 0 for name in ("runs", *COUNT_FIELDS)}
    if path.exists():
        try:
            totals.update({k: int(v) for k, v in json.loads(path.read_text(encoding="utf-8")).items() if k in totals})
        except (ValueError, TypeError, AttributeError):
            pass  # a hand-edited or foreign file: start counting again rather than fail the run
    totals["runs"] += 1
    for name in COUNT_FIELDS:
        totals[name] += getattr(result, name)
    write_text_atomic(path, json.dumps(totals, indent=1) + "\n")
    return totals


def _tokens(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9']+", text.lower()))


def seed_overlap_lines(g: Guardrail, rows: dict[str, list[dict]]) -> list[str]:
    """How diverse the triggering messages are and how close they stay to the user's examples.

    Token Jaccard to the nearest example: 1.0 is a copy; offline rows are variants of the examples
    (high by construction), a teacher's rows should be new situations (low). Distinct-2 is the share
    of distinct word bigrams among all bigrams of the split's triggering messages."""
    out = [
        "| split | triggering messages | distinct messages | distinct-2 | mean overlap | near copies (>= 0.8) |",
        "|---|---|---|---|---|---|",
    ]
    seeds = [_tokens(e) for e in g.examples]
    for s in SPLITS:
        msgs = [r["message"] for r in rows[s] if r["label"] != NONE_LABEL]
        if not msgs:
            continue
        bigrams = [tuple(w) for m in msgs for w in zip(m.lower().split(), m.lower().split()[1:])]
        overlap = [max(len(t & e) / max(1, len(t | e)) for e in seeds) for t in map(_tokens, msgs)]
        out.append(
            f"| {s} | {len(msgs)} | {len(set(msgs))} | {len(set(bigrams)) / max(1, len(bigrams)):.2f} | "
            f"{sum(overlap) / len(overlap):.2f} | {sum(o >= 0.8 for o in overlap) / len(overlap):.2f} |"
        )
    return out


def dataset_card(
    g: Guardrail, cfg: GenerateConfig, rows: dict[str, list[dict]], result: GenerateResult, totals: dict[str, int]
) -> str:
    source = f"backend `{cfg.backend}`" + (f", model `{cfg.llm_model}`" if cfg.backend == "openai" else "")
    lines = [
        f"# Dataset `{g.name}_{cfg.variation}`",
        "",
        f"Generated by personaguard ({source}, variation `{cfg.variation}`, seed {cfg.seed}).",
        "",
        f"- trigger: {g.trigger}",
        f"- resolution: {g.resolution}",
        "",
        "| split | examples | triggering | neutral |",
        "|---|---|---|---|",
    ]
    for s in SPLITS:
        trig = sum(r["label"] != NONE_LABEL for r in rows[s])
        lines.append(f"| {s} | {len(rows[s])} | {trig} | {len(rows[s]) - trig} |")
    if result.missing:
        why = " (request_budget reached)" if result.budget_exhausted else ""
        lines += [
            "",
            f"**Incomplete:** {result.missing} of {cfg.n} examples missing{why}; run the same command again to continue.",
        ]
    lines += ["", "## Generation counts", "", "| count | last run | all runs |", "|---|---|---|"]
    shown = COUNT_FIELDS if cfg.backend == "openai" else ("written",)  # the rest stay 0 offline
    lines += [f"| {name} | {getattr(result, name)} | {totals[name]} |" for name in shown]
    lines += [f"| runs | 1 | {totals['runs']} |"]
    if g.examples:
        lines += ["", "## Against the guardrail file's examples", "", *seed_overlap_lines(g, rows)]
    lines += ["", "## Sample rows", ""]
    for r in rows["train"][:5]:
        lines.append("```json\n" + json.dumps(r, ensure_ascii=False, indent=1) + "\n```")
    return "\n".join(lines) + "\n"
