"""Evaluate several guardrails at once: no adapter, each adapter alone, and the stack (dynamic or merged).

Usage:
    personaguard pipeline --config configs/paper-cpu.yaml          # step 3 ends with this stage
    from personaguard.stack.evaluate import run
    run(StackEvalConfig(adapters={"politics": "runs/a/adapters/politics", "meeting": "runs/a/adapters/meeting"},
                        test_data={"politics": ".../politics_vary_all/test.jsonl", "meeting": ".../meeting_vary_all/test.jsonl"},
                        out_dir="runs/a/stacks"))

Every setting answers the SAME items: each member's triggering test items, the neutral test items of
all members (the shared neutral set) and a small packaged set of double-trigger messages (meet me at a
political rally). All adapters and merged stacks sit on ONE base model and are switched with
`stack.activate`, so the base loads once and each setting costs only its generation.

`dynamic_gated` is the dynamic stack with its tag decided by one threshold on the stack's own guard
score, the one that meets the stacking target with the widest margin on all members' validation splits
pooled (routing.stack_calibration); it re-decides the
dynamic stack's replies, so only the items where the two disagree are generated again. The table also
puts each member alone, the sum and the re-decided stacks asked for (dynamic_gated, dynamic_agree) side
by side on those validation splits, and says when one misses the target there.

`dynamic_agree` re-decides the dynamic stack's replies too: the tag stays only where at least one
member alone would also tag (routing.member_votes, one guard pass per member), so the members' own
mistakes no longer add up and the sum's own mistakes need a member's vote.

Per guardrail g the metrics are those of a single adapter (tag rate on g's items, false tag rate on
neutral items, AUROC...) computed over g's items plus the neutral ones; the table puts no adapter /
single / dynamic / each merge side by side (the paper's Table 2 shape). Each single adapter's tag rate
on the OTHER guardrails' items is reported too ("cross" tag rate): with cross-negative training data it
should fall, while a stack must still tag those items (another member fires).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from ..config import DEFAULT_STACK_METHOD, RUNTIME_STACK_METHODS, StackEvalConfig, dump_yaml
from ..errors import PersonaguardError
from ..guardrails import Guardrail
from ..inference import Decoding
from ..metrics import TARGET_FALSE, TARGET_KEEP, detection_metrics, fmt, relative_to_single, starts_with_tag, target_margin
from ..schema import NONE_LABEL, Snapshot, ensure_dir, read_jsonl, write_csv_atomic, write_jsonl_atomic, write_text_atomic
from .confusion import attribution, confusion, confusion_markdown, subset_table, subsets_markdown

if TYPE_CHECKING:
    from .routing import StackCalibration

TABLE_KEYS = ("tag_rate", "false_tag_rate", "auroc", "f1")


@dataclass
class StackEvalResult:
    out_dir: Path
    table: dict[str, dict[str, dict]]  # guardrail -> setting -> metrics
    double_trigger: dict[str, dict]  # setting -> {n, tag_rate}
    merges: dict[str, dict] = field(default_factory=dict)  # method -> what merge() recorded


def double_trigger_items(seed: int = 0) -> list[Snapshot]:
    """The packaged double-trigger messages as snapshots with held-out personas and histories."""
    from importlib import resources

    from ..data.pools import load_pools

    raw = json.loads((resources.files("personaguard.data") / "pools" / "double_triggers.json").read_text(encoding="utf-8"))
    side = load_pools().side(test=True)
    rng = random.Random(f"{seed}-double")
    return [
        Snapshot(
            id=f"double-{i:03d}",
            persona=rng.choice(side.personas),
            history=rng.choice(side.histories),
            memories=rng.sample(side.memories, k=rng.choice([0, 1])),
            message=item["text"],
            label=NONE_LABEL,
            kind="double_trigger",
            labels=item["labels"],
        )
        for i, item in enumerate(raw["items"])
    ]


def _content(s: Snapshot) -> str:
    return json.dumps(s.model_dump(include={"persona", "memories", "history", "message"}), sort_keys=True)


def shared_items(test_data: dict[str, str], labels: set[str], per_guardrail: int) -> list[Snapshot]:
    """Each member's triggering items plus its neutral items (up to `per_guardrail` of each, 0 = all).

    A neutral snapshot found in several members' files is kept once: the offline generator draws
    example i of every guardrail from the same stream, so plain neutral turns repeat across the
    members' test splits, and counting each copy would weigh one false tag three times."""
    items, seen = [], set()
    for g, path in test_data.items():
        rows = read_jsonl(path, Snapshot, allowed_labels=labels)
        trig = [r for r in rows if r.label == g]
        neu = [r for r in rows if r.label == NONE_LABEL]
        if per_guardrail:
            trig, neu = trig[:per_guardrail], neu[:per_guardrail]
        items += trig + [r for r in neu if _content(r) not in seen]
        seen |= {_content(r) for r in neu}
    ids = [s.id for s in items]
    if len(set(ids)) != len(ids):
        raise PersonaguardError(
            "stack evaluation: the members' test files share item ids; give each its own generated test split"
        )
    return items


def _validation_path(cfg: StackEvalConfig, g: str) -> Path:
    if g in cfg.val_data:
        return Path(cfg.val_data[g])
    if g not in cfg.test_data:
        raise PersonaguardError(f"stack: no validation split for {g!r}; set val_data.{g} (a `generate` validation.jsonl)")
    return Path(cfg.test_data[g]).with_name("validation.jsonl")


def _has_validation(cfg: StackEvalConfig) -> bool:
    """Whether a check that needs no calibration should run: val_data given (a missing file is then an
    error, raised by validation_items), or every member's default validation.jsonl present."""
    if cfg.val_data:
        return True
    return set(cfg.test_data) == set(cfg.adapters) and all(_validation_path(cfg, g).is_file() for g in cfg.test_data)


def validation_items(cfg: StackEvalConfig, method: str) -> list[Snapshot]:
    """The members' validation splits pooled (routed_joint and dynamic_gated calibrate on all of them)."""
    items = []
    for g in cfg.test_data:
        path = _validation_path(cfg, g)
        if not path.is_file():
            raise PersonaguardError(
                f"{path}: missing; {method} needs each member's validation split "
                f"(set val_data.{g}, or keep the validation.jsonl that generate writes beside test.jsonl)"
            )
        items += read_jsonl(path, Snapshot, allowed_labels=set(cfg.adapters) | {NONE_LABEL})
    return items


def data_items(path: str, members: set[str], per_guardrail: int, extra_dirs: list[str] | None) -> list[Snapshot]:
    """The items of one shared data file (`data`): any known guardrail's label, `none`, capped per label."""
    from ..data.eval_sets import resolve_data
    from ..guardrails import registry

    rows = read_jsonl(resolve_data(path), Snapshot, allowed_labels=set(registry(extra_dirs)) | members | {NONE_LABEL})
    if not per_guardrail:
        return rows
    seen: dict[str, int] = {}
    kept = []
    for r in rows:
        seen[r.label] = seen.get(r.label, 0) + 1
        if seen[r.label] <= per_guardrail:
            kept.append(r)
    return kept


def _merged(cfg: StackEvalConfig, method: str, dirs: list[str], out: Path) -> tuple[Path, dict]:
    """The merged adapter for `method`, made once: a re-run reuses a folder merged from the same sources."""
    from .merge import merge

    dest = out / "merged" / method
    record = dest / "merge.json"
    if record.is_file():
        info = json.loads(record.read_text(encoding="utf-8"))
        if info.get("sources") == [str(Path(d).resolve()) for d in dirs] and info.get("method") == method:
            return dest, info
        raise PersonaguardError(f"{dest} holds a merge of other adapters; delete it or use another out_dir")
    density = cfg.density if method in ("ties", "dare_ties", "dare_linear") else None
    info = merge(dirs, method, None, dest, density, svd_rank=cfg.svd_rank if method == "svd" else None, model=cfg.model)
    return dest, info


def guardrail_metrics(rows: list[dict], g: str, tag: str) -> dict:
    """Single-adapter metrics of guardrail g over its own and the neutral items; per_label over all."""
    own = [r for r in rows if r["label"] in (g, NONE_LABEL) and r.get("kind") != "double_trigger"]
    m = detection_metrics(own, g, tag)
    m["per_label"] = detection_metrics([r for r in rows if r.get("kind") != "double_trigger"], g, tag)["per_label"]
    return m


def resolve(cfg: StackEvalConfig) -> tuple[StackEvalConfig, dict[str, Guardrail]]:
    """`cfg` with the base model and prompt length its members were trained with, and each member's guardrail.

    Both come from the adapter folders (adapters.read_info); members trained on different bases or at
    different prompt lengths cannot share one forward pass, so they are refused, as is a value given
    here that contradicts them."""
    from ..adapters import read_info
    from ..models import same_model

    infos = {name: read_info(d) for name, d in cfg.adapters.items()}
    for name, info in infos.items():
        if info.guardrail.name not in (name, Path(name).stem):  # keyed by name, or by the YAML file's path
            raise PersonaguardError(
                f"adapters.{name}: {cfg.adapters[name]} was trained for {info.guardrail.name!r}; "
                "key each adapter by its own guardrail"
            )
    first = next(iter(infos.values()))
    for key, value in (("model", first.base_model), ("max_prompt_tokens", first.max_prompt_tokens)):
        given = getattr(cfg, key)
        for name, info in infos.items():
            theirs = info.base_model if key == "model" else info.max_prompt_tokens
            same = same_model(str(theirs), str(value)) if key == "model" else theirs == value
            if not same:
                raise PersonaguardError(
                    f"adapters.{name} was trained with {key} {theirs!r}, adapters."
                    f"{next(iter(infos))} with {value!r}; stack members must share it"
                )
        if given is not None and not (same_model(given, value) if key == "model" else given == value):
            raise PersonaguardError(f"{key} {given!r} contradicts the member adapters ({value!r}); drop it")
    members = {name: info.guardrail for name, info in infos.items()}
    return cfg.model_copy(update={"model": cfg.model or first.base_model, "max_prompt_tokens": first.max_prompt_tokens}), members


def run(cfg: StackEvalConfig) -> StackEvalResult:
    from ..adapters import activate, load_stack
    from ..evaluate.predict import gate_rows, predict
    from ..models import LoadOptions, load_model
    from .routing import gate_thresholds, joint_thresholds, stack_calibration

    cfg, members = resolve(cfg)
    tags = {g.tag for g in members.values()}
    if len(tags) != 1:
        raise PersonaguardError(f"stacked guardrails must share one tag (a stacked reply begins with it); got {sorted(tags)}")
    extra_dirs = [cfg.guardrails_dir] if cfg.guardrails_dir else None
    if cfg.data:
        items = data_items(cfg.data, set(members), cfg.per_guardrail, extra_dirs)
    else:
        items = shared_items(cfg.test_data, set(members) | {NONE_LABEL}, cfg.per_guardrail)
    out = ensure_dir(cfg.out_dir, "out_dir")
    double = double_trigger_items(cfg.seed) if cfg.double_trigger else []
    every = items + double

    dirs = [cfg.adapters[g] for g in members]
    merges, merged_dirs = {}, {}
    for method in cfg.methods:
        if method not in RUNTIME_STACK_METHODS:
            merged_dirs[method], merges[method] = _merged(cfg, method, dirs, out)
    model, tok = load_model(cfg.model, LoadOptions(cfg.device, cfg.precision, cfg.load_in_4bit))
    aware = [cfg.aware_adapters[g] for g in members if g in cfg.aware_adapters]
    if aware and len(aware) != len(members):
        raise PersonaguardError(f"aware_adapters must name every member {sorted(members)}, got {sorted(cfg.aware_adapters)}")
    extra_aware = [d for d in aware if d not in dirs]  # a chain's first member is the plain adapter itself
    model, names = load_stack(model, dirs + [str(d) for d in merged_dirs.values()] + extra_aware)
    n_m = len(dirs) + len(merged_dirs)
    member_names, merged_names = names[: len(dirs)], dict(zip(merged_dirs, names[len(dirs) : n_m]))
    settings = [("none", [])] + [(f"single:{g}", [n]) for g, n in zip(members, member_names)]
    # dynamic_gated and dynamic_agree re-decide the dynamic stack's replies, so they come after them
    methods = sorted(cfg.methods, key=lambda m: m in ("dynamic_gated", "dynamic_agree"))
    settings += [(m, member_names if m in RUNTIME_STACK_METHODS else [merged_names[m]]) for m in methods]
    thresholds = {"routed": {n: None for n in member_names}}
    if "routed_gated" in cfg.methods:
        thresholds["routed_gated"] = dict(zip(member_names, gate_thresholds(dirs)))
    first = next(iter(members.values()))  # the guard score is the tag's probability: the same for every member
    tag = first.tag
    if "routed_joint" in cfg.methods:
        thresholds["routed_joint"] = joint_thresholds(
            model,
            tok,
            dict(zip(members, member_names)),
            validation_items(cfg, "routed_joint"),
            cfg.max_prompt_tokens,
            tag,
            cfg.batch_size,
        )
    stack_thr, calibration = None, None
    checked = [m for m in ("dynamic_gated", "dynamic_agree") if m in cfg.methods]  # shown on the validation splits
    if "dynamic_gated" in cfg.methods:
        calibration = stack_calibration(
            model,
            tok,
            dict(zip(members, member_names)),
            validation_items(cfg, "dynamic_gated"),
            cfg.max_prompt_tokens,
            tag,
            cfg.batch_size,
        )
        stack_thr = calibration.threshold
        if stack_thr is None:
            raise PersonaguardError(
                "dynamic_gated: the members' validation splits need triggering and neutral items to calibrate "
                "the stack's gate on; regenerate with a validation split (generate.val_fraction)"
            )
    elif checked and _has_validation(cfg):  # dynamic_agree needs no calibration; the check runs where the splits exist
        calibration = stack_calibration(
            model,
            tok,
            dict(zip(members, member_names)),
            validation_items(cfg, "dynamic_agree"),
            cfg.max_prompt_tokens,
            tag,
            cfg.batch_size,
        )
    if aware:
        by_dir = {**dict(zip(dirs, member_names)), **dict(zip(extra_aware, names[n_m:]))}
        settings.append(("dynamic_aware", [by_dir[d] for d in aware]))

    ecfg = Decoding(cfg.max_prompt_tokens, cfg.max_new_tokens, cfg.batch_size)
    preds, table, dt, summed = [], {g: {} for g in members}, {}, None
    for setting, active in tqdm(settings, desc="stack settings", unit="setting"):
        activate(model, active)
        if setting in thresholds:
            rows = routed_rows(model, tok, every, ecfg, tag, thresholds[setting], setting, dict(zip(member_names, members)))
        elif setting == "dynamic_gated":
            summed = summed or predict(model, tok, every, ecfg, first, "dynamic")
            rows = gate_rows(summed, model, tok, every, ecfg, first, stack_thr, setting)
        elif setting == "dynamic_agree":
            summed = summed or predict(model, tok, every, ecfg, first, "dynamic")
            rows = agree_rows(summed, model, tok, every, ecfg, tag, member_names)
        else:
            rows = predict(model, tok, every, ecfg, first, setting)
        if setting == "dynamic":
            summed = rows
        for r, s in zip(rows, every):
            if s.id.startswith("double-"):
                r["labels"] = (s.model_extra or {}).get("labels")
        preds += rows
        for g in members:
            if setting.startswith("single:") and setting != f"single:{g}":
                continue  # another member alone: reported as its cross tag rate, not in g's row
            table[g]["single" if setting.startswith("single:") else setting] = guardrail_metrics(rows, g, tag)
        drows = [r for r in rows if r.get("kind") == "double_trigger"]
        if drows:
            dt[setting] = {"n": len(drows), "tag_rate": sum(starts_with_tag(r["reply"], tag) for r in drows) / len(drows)}
    activate(model, member_names)

    write_jsonl_atomic(out / "predictions.jsonl", preds)
    meta = {
        "model": cfg.model,
        "adapters": cfg.adapters,
        "methods": cfg.methods,
        "n_items": len(items),
        "n_double": len(double),
        "thresholds": {m: {g: thr[n] for g, n in zip(members, member_names)} for m, thr in thresholds.items()},
    }
    if stack_thr is not None:
        meta["thresholds"]["dynamic_gated"] = stack_thr  # one threshold: the summed stack's own guard score
    result = {
        "meta": meta,
        "table": table,
        "double_trigger": dt,
        "merges": {
            m: {k: i.get(k) for k in ("rank", "merge_seconds", "seconds", "svd_rank", "density")} for m, i in merges.items()
        },
    }
    if calibration is not None:
        result["validation"] = {"rates": calibration.validation, "misses": [m for c in checked for m in calibration.misses(c)]}
    matrix = confusion(preds)
    routed_settings = [s for s in matrix if s in thresholds]
    attributions = {s: attribution([r for r in preds if r["setting"] == s], list(members)) for s in routed_settings}
    subsets = subset_table(preds, list(members), DEFAULT_STACK_METHOD) if DEFAULT_STACK_METHOD in cfg.methods else []
    guard_cost = guard_cost_ratio(preds, list(members))
    result["confusion"] = matrix
    result["attribution"] = attributions
    result["subsets"] = subsets
    result["guard_cost"] = guard_cost
    write_text_atomic(out / "stack_metrics.json", json.dumps(result, indent=2))
    write_text_atomic(out / "stack_confusion.md", stack_confusion_markdown(matrix, attributions, subsets, guard_cost))
    write_text_atomic(out / "config.yaml", dump_yaml(cfg))
    write_csv_atomic(out / "stack_table.csv", table_rows(table), CSV_COLUMNS)
    write_text_atomic(out / "stack_table.md", table_markdown(table, dt, result["merges"], calibration, checked))
    return StackEvalResult(out, table, dt, merges)


def agree_rows(summed: list[dict], model, tok, snaps: list[Snapshot], cfg: Decoding, tag: str, members: list[str]) -> list[dict]:
    """dynamic_agree's rows: the dynamic stack's (`summed`, every member active) with the tag kept only where
    at least one member alone votes for it (`member_vote`). guard_score stays the sum's (so its AUROC is
    dynamic's); guard_seconds adds the members' guard passes, the rule's cost."""
    from ..adapters import use_adapters
    from ..inference import decided_replies
    from ..prompt import prompt_ids
    from .routing import member_votes

    prompts = [prompt_ids(tok, s, cfg.max_prompt_tokens) for s in snaps]
    votes, vote_seconds = member_votes(model, tok, prompts, members, tag, cfg.batch_size)
    want = [r["tagged"] and v for r, v in zip(summed, votes)]
    with use_adapters(model, members):
        replies = decided_replies(
            model, tok, prompts, want, tag, [r["reply"] for r in summed], cfg.max_new_tokens, cfg.batch_size
        )
    return [
        {
            **r,
            "setting": "dynamic_agree",
            "reply": rep,
            "tagged": starts_with_tag(rep, tag),
            "member_vote": v,
            "guard_seconds": r["guard_seconds"] + sec,
        }
        for r, rep, v, sec in zip(summed, replies, votes, vote_seconds)
    ]


def routed_rows(
    model, tok, snaps: list[Snapshot], cfg: Decoding, tag: str, thresholds: dict, setting: str, guardrail_of: dict[str, str]
) -> list[dict]:
    """Prediction rows (as evaluate.predict writes them) of the routed stack; guard_score = the top member's.

    `guardrail_of` maps each loaded adapter name to its guardrail: `fired` names the guardrail whose member
    wrote the tagged reply (attribution), and `member_scores` / `member_greedy` keep every member's own
    decision, so the stack of any subset of the members can be decided again from the same passes."""
    from ..evaluate.predict import group_fields
    from ..prompt import prompt_ids
    from .routing import routed_replies

    prompts = [prompt_ids(tok, s, cfg.max_prompt_tokens) for s in snaps]
    out = routed_replies(model, tok, prompts, thresholds, tag, cfg.max_new_tokens, cfg.batch_size)
    return [
        {
            "id": s.id,
            "label": s.label,
            "setting": setting,
            "run": 0,
            "message": s.message,
            "reply": o.reply,
            "tagged": starts_with_tag(o.reply, tag),
            "guard_score": max(o.scores.values()),
            "route": o.route,
            "fired": guardrail_of.get(o.route) if o.route else None,
            "member_scores": {guardrail_of[m]: v for m, v in o.scores.items()},
            "member_greedy": {guardrail_of[m]: v for m, v in o.greedy.items()},
            "guard_seconds": o.guard_seconds,
            "reply_seconds": o.reply_seconds,
            **group_fields(s),
        }
        for s, o in zip(snaps, out)
    ]


def _order(table: dict[str, dict[str, dict]]) -> list[str]:
    return list(dict.fromkeys(s for per in table.values() for s in per))


CSV_COLUMNS = ["guardrail", "setting", *TABLE_KEYS, "n_triggering", "n_neutral"]


def table_rows(table: dict[str, dict[str, dict]]) -> list[dict]:
    """One CSV row per guardrail and setting."""
    return [
        {"guardrail": g, "setting": s, **{k: m.get(k) for k in CSV_COLUMNS[2:]}}
        for g, per in table.items()
        for s, m in per.items()
    ]


def table_markdown(
    table: dict[str, dict[str, dict]],
    double: dict[str, dict],
    merges: dict[str, dict],
    calibration: StackCalibration | None = None,
    checked: Sequence[str] = ("dynamic_gated",),
) -> str:
    settings = _order(table)
    lines = [
        "# Stacked guardrails",
        "",
        "Tag rate on each guardrail's triggering items / false tag rate on the shared neutral items, per setting.",
        "",
        "| guardrail | " + " | ".join(settings) + " |",
        "|---|" + "---|" * len(settings),
    ]
    for g, per in table.items():
        cells = [f"{fmt(per[s]['tag_rate'])} / {fmt(per[s]['false_tag_rate'])}" if s in per else "–" for s in settings]
        lines.append(f"| {g} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Relative to the single adapter: stacked tag rate / single tag rate, and false tag rate above single.",
        "",
        "| guardrail | " + " | ".join(s for s in settings if s not in ("none", "single")) + " |",
        "|---|" + "---|" * len([s for s in settings if s not in ("none", "single")]),
    ]
    for g, per in table.items():
        single = per.get("single", {})
        cells = []
        for s in settings:
            if s in ("none", "single"):
                continue
            ratio, extra = relative_to_single(single, per.get(s, {}))
            cells.append(f"{fmt(ratio)} / {'+' if (extra or 0) >= 0 else ''}{fmt(extra)}")
        lines.append(f"| {g} | " + " | ".join(cells) + " |")
    others = sorted({lab for per in table.values() for lab in per.get("single", {}).get("per_label", {})} - {NONE_LABEL})
    if others:
        lines += [
            "",
            "Single adapters on the other guardrails' triggering items (tag rate; low = the adapter keeps to its own trigger):",
            "",
            "| adapter | " + " | ".join(others) + " |",
            "|---|" + "---|" * len(others),
        ]
        for g, per in table.items():
            pl = per.get("single", {}).get("per_label", {})
            lines.append(f"| {g} | " + " | ".join(fmt(pl[o]["tag_rate"]) if o in pl else "–" for o in others) + " |")
    if double:
        lines += [
            "",
            "Double-trigger messages (two guardrails at once; the reply must begin with the tag):",
            "",
            "| setting | n | tag rate |",
            "|---|---|---|",
        ]
        lines += [f"| {s} | {d['n']} | {fmt(d['tag_rate'])} |" for s, d in double.items()]
    if calibration is not None:
        lines += validation_markdown(calibration, checked)
    if merges:
        lines += ["", "| merge | rank | seconds (add_weighted_adapter) | seconds (total) |", "|---|---|---|---|"]
        lines += [
            f"| {m} | {i.get('rank')} | {fmt(i.get('merge_seconds'))} | {fmt(i.get('seconds'))} |" for m, i in merges.items()
        ]
    return "\n".join(lines) + "\n"


def validation_markdown(calibration: StackCalibration, checked: Sequence[str] = ("dynamic_gated",)) -> list[str]:
    """The check of the re-decided stacks in `checked` on the pooled validation splits: each member alone, the
    sum and each of them side by side, and a warning for every member one of them misses the target for."""
    cols = ("single", "dynamic", *checked)
    fitted = (
        f"dynamic_gated's threshold {fmt(calibration.threshold)} was calibrated on them; " if "dynamic_gated" in checked else ""
    )
    lines = [
        "",
        f"On the members' pooled validation splits ({fitted}greedy first-token decisions), tag rate / false tag rate:",
        "",
        "| guardrail | " + " | ".join(cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for g, per in calibration.validation.items():
        lines.append(
            f"| {g} | " + " | ".join(f"{fmt(per[c]['tag_rate'])} / {fmt(per[c]['false_tag_rate'])}" for c in cols) + " |"
        )
    lines.append("")
    unchecked = [g for g, per in calibration.validation.items() if target_margin(per["single"], per["dynamic"]) is None]
    for setting in checked:
        misses = calibration.misses(setting)
        if unchecked:
            lines.append(
                f"{setting}: not checked for {', '.join(unchecked)} (no triggering or no neutral items in the validation splits)."
            )
        if misses:
            lines += [
                f"**Warning:** {m}; a miss on validation usually shows on new data too (retrain: joint training, more data)."
                for m in misses
            ]
        elif setting == "dynamic_gated":
            lines.append(
                f"dynamic_gated meets the target on the validation splits (>= {TARGET_KEEP} of each member's tags "
                f"at <= +{TARGET_FALSE} false tags); its threshold was chosen on these items, so no guarantee on new "
                "data: replayed on saved test scores, a gate that passed on one half of the items passed on the other "
                "in 38 % of cases (docs/research-log.md)."
            )
        elif not unchecked:
            lines.append(f"{setting} meets the target on the validation splits (nothing was fitted on them).")
    return lines


def guard_cost_ratio(preds: list[dict], members: list[str]) -> dict[str, float | None]:
    """Each stack's mean guard time per item over the mean of its members' alone: what the decision costs."""

    def mean_seconds(setting: str) -> float | None:
        xs = [r["guard_seconds"] for r in preds if r["setting"] == setting]
        return sum(xs) / len(xs) if xs else None

    singles = [x for x in (mean_seconds(f"single:{g}") for g in members) if x]
    base = sum(singles) / len(singles) if singles else None
    out = {}
    for s in dict.fromkeys(r["setting"] for r in preds):
        if s.startswith("single:") or s == "none":
            continue
        x = mean_seconds(s)
        out[s] = x / base if x is not None and base else None
    return out


def stack_confusion_markdown(matrix: dict, attributions: dict, subsets: list[dict], guard_cost: dict) -> str:
    lines = [
        "# Every setting on every label",
        "",
        "Tag rate of each setting (no adapter, each member alone, each stack) on the items of each label: a member's",
        "own trigger should be tagged, every other column (other guardrails' triggers, `none`) should stay near 0;",
        "`double_trigger` items carry two guardrails at once. Attribution: among tagged items of a member's label,",
        "the share the routed stack answered with that member.",
        "",
        confusion_markdown(matrix, attributions),
        "",
        "Guard decision cost, stack / one member alone (mean guard time per item): "
        + ", ".join(f"{s} {fmt(v, 2)}x" for s, v in guard_cost.items())
        + ".",
    ]
    if subsets:
        lines += [
            "",
            f"## The default stack ({DEFAULT_STACK_METHOD}) on every subset of its members",
            "",
            "Decided again from the same per-member passes. Targets: each member's trigger >= 0.95 x its single tag rate,",
            "neutral <= the worst member alone + 0.02, attribution >= 0.95, double triggers >= 0.95.",
            "",
            subsets_markdown(subsets),
        ]
    return "\n".join(lines) + "\n"
