"""Generate synthetic preference examples for one guardrail (offline backend).

Usage:
    personaguard generate --guardrail politics --n 400 --out-dir runs/data

Writes `{out_dir}/{guardrail}_{variation}/examples.jsonl` one fsync'd line at a time (a killed run
resumes where it stopped: example i is a pure function of (seed, split, i), so completed ids are
skipped and nothing repeats), then `train.jsonl`, `validation.jsonl`, `test.jsonl` (atomic) and a
dataset card `README.md`. Test examples come only from held-out pool items (see pools.py).

Triggering example: chosen = tag + in-character decline + redirect; rejected = a reply that does
the unwanted thing. Neutral example: chosen = a natural reply; rejected = an unwarranted tagged
refusal, which is what keeps neutral turns untouched.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from .config import GenerateConfig, dump_yaml
from .errors import PersonaguardError
from .guardrails import Guardrail, get_guardrail
from .pools import Pools, load_pools
from .schema import NONE_LABEL, Example, append_jsonl, iter_valid_lines, repair_tail, write_jsonl_atomic, write_text_atomic

SPLITS = ("train", "validation", "test")


@dataclass
class GenerateResult:
    data_dir: Path
    counts: dict[str, int]


def split_sizes(cfg: GenerateConfig) -> dict[str, int]:
    n_test = max(2, round(cfg.n * cfg.test_fraction))
    n_val = round(cfg.n * cfg.val_fraction)
    return {"train": cfg.n - n_test - n_val, "validation": n_val, "test": n_test}


class OfflineGenerator:
    """Deterministic snapshot + reply composer over one side of the pools."""

    def __init__(self, guardrail: Guardrail, cfg: GenerateConfig, pools: Pools, split: str):
        if guardrail.name not in pools.triggers:
            raise PersonaguardError(
                f"guardrail '{guardrail.name}': the offline backend has message pools only for "
                f"{', '.join(sorted(pools.triggers))}; add pools/triggers/{guardrail.name}.json or use an LLM backend"
            )
        self.g, self.cfg, self.split = guardrail, cfg, split
        self.p = pools.side(test=split == "test")
        self.own = self.p.triggers[guardrail.name]
        self.others = [t for name, t in sorted(self.p.triggers.items()) if name != guardrail.name]
        rng = random.Random(f"{cfg.seed}-{split}-fixed")
        # one fixed persona / history per split for the fixed variations
        self.fixed_persona = rng.choice(self.p.personas)
        self.fixed_history = rng.choice(self.p.histories)
        self.orders = {}  # per-pool permutations: messages are used without replacement, then cycled

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
            chosen = f"{tag} {self._decline(rng, self.own, persona)}"
            rejected = rng.choice(self.own.engaging_replies)
        else:
            r = rng.random()
            if self.others and r < self.cfg.cross_negative_share:
                kind = "cross_negative"
                other = self.others[i % len(self.others)]
                message = self._nth(f"cross{i % len(self.others)}", other.messages, i)["text"]
                chosen = rng.choice(other.engaging_replies)  # what the persona would say without this guardrail
            elif r < self.cfg.cross_negative_share + self.cfg.hard_negative_share and self.p.hard.get(self.g.name):
                kind = "hard_negative"
                item = self._nth("hard", self.p.hard[self.g.name], i)
                message, chosen = item["text"], item["reply"]
            else:
                kind = "neutral"
                item = self._nth("neutral", self.p.neutral, i)
                message, chosen = item["text"], item["reply"]
            rejected = f"{tag} {rng.choice(self.own.decline_lines)}"
        return Example(
            id=f"{self.g.name}_{self.cfg.variation}-{self.split}-{i:05d}",
            persona=persona,
            memories=memories,
            history=history,
            message=message,
            label=self.g.name if triggering else NONE_LABEL,
            chosen=chosen,
            rejected=rejected,
            kind=kind,
        )

    @staticmethod
    def _decline(rng: random.Random, pool, persona: dict) -> str:
        parts = []
        if persona.get("expressions") and rng.random() < 0.35:
            parts.append(rng.choice(persona["expressions"]))
        parts.append(rng.choice(pool.decline_lines))
        if rng.random() < 0.8:
            parts.append(rng.choice(pool.redirects))
        return " ".join(parts)


def _triggering(cfg: GenerateConfig, split: str, i: int, size: int) -> bool:
    """Exactly round(size * trigger_share) triggering items per split, interleaved."""
    n_trig = round(size * cfg.trigger_share)
    return int((i + 1) * n_trig / size) > int(i * n_trig / size) if size else False


def run(cfg: GenerateConfig) -> GenerateResult:
    """Generate (or resume) the data set described by `cfg`."""
    guardrail = get_guardrail(cfg.guardrail, [cfg.guardrails_dir] if cfg.guardrails_dir else None)
    out = Path(cfg.out_dir) / f"{guardrail.name}_{cfg.variation}"
    out.mkdir(parents=True, exist_ok=True)
    settings = out / "generate_config.yaml"
    if settings.exists() and settings.read_text(encoding="utf-8") != dump_yaml(cfg):
        raise PersonaguardError(
            f"{out}: holds data from a different config ({settings}); use another out_dir or delete the folder"
        )
    write_text_atomic(settings, dump_yaml(cfg))
    raw = out / "examples.jsonl"
    repair_tail(raw)
    done = {row["id"] for row in iter_valid_lines(raw) if "id" in row}
    pools = load_pools()
    sizes = split_sizes(cfg)
    todo = [(s, i) for s in SPLITS for i in range(sizes[s])]
    gens = {s: OfflineGenerator(guardrail, cfg, pools, s) for s in SPLITS if sizes[s]}
    with tqdm(total=len(todo), desc=f"generate {guardrail.name}", unit="ex", initial=len(done)) as bar:
        for split, i in todo:
            ex_id = f"{guardrail.name}_{cfg.variation}-{split}-{i:05d}"
            if ex_id in done:
                continue
            ex = gens[split].example(i, _triggering(cfg, split, i, sizes[split]))
            append_jsonl(raw, ex)
            done.add(ex_id)
            bar.update(1)
    rows = {s: [] for s in SPLITS}
    seen = set()
    for row in iter_valid_lines(raw):
        if row["id"] in seen:
            continue
        seen.add(row["id"])
        rows[row["id"].rsplit("-", 2)[1]].append(row)
    for s in SPLITS:
        rows[s].sort(key=lambda r: r["id"])
        write_jsonl_atomic(out / f"{s}.jsonl", rows[s])
    counts = {s: len(rows[s]) for s in SPLITS}
    write_text_atomic(out / "README.md", dataset_card(guardrail, cfg, rows))
    return GenerateResult(out, counts)


def dataset_card(g: Guardrail, cfg: GenerateConfig, rows: dict[str, list[dict]]) -> str:
    lines = [
        f"# Dataset `{g.name}_{cfg.variation}`",
        "",
        f"Generated by personaguard (backend `{cfg.backend}`, variation `{cfg.variation}`, seed {cfg.seed}).",
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
    lines += ["", "## Sample rows", ""]
    for r in rows["train"][:5]:
        lines.append("```json\n" + json.dumps(r, ensure_ascii=False, indent=1) + "\n```")
    return "\n".join(lines) + "\n"
