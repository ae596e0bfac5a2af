"""Train several guardrail adapters together, each step with a random subset of them active.

Usage:
    personaguard train-joint --config joint.yaml   # members: {politics: {data_dir: ..., out_dir: ...}, ...}; train: {...}
    personaguard pipeline --config configs/paper-cpu.yaml     # joint_training: true there
    from personaguard.train.joint import run; run(JointTrainConfig(members=..., out_dir=..., train={...}))

Why: a dynamic stack adds its members' LoRA updates, and members trained one by one do not add up:
each changes the hidden states the others read, so their sum loses tags or fires on neutral turns
(docs/research-log.md, "Stacking three guardrails" and "Members that add up"). Here the training
objective is the stack's own. Each step draws one non-empty subset S of the members (all of them
with probability `full_stack_share` + `neutral_stack_share`, else uniformly from all 2^n - 1) and
activates it (PEFT adds the active adapters' updates exactly as a dynamic stack does when serving).
Each row's target follows S:
- a row that triggers a member in S keeps its tagged reply as chosen (single-adapter training);
- a row that triggers a member outside S swaps chosen and rejected: that guardrail is off, so the
  persona answers in character without the tag (the cross-negative, made from the members' own data);
- a neutral row keeps its natural reply as chosen.
So every set a request may activate -- each member alone, any pair, all of them -- is trained for,
and only the members in S receive gradients that step. The validation loss uses all members at once.
On the `neutral_stack_share` of the steps (all members active) only the neutral rows are scored, their
loss a mean over the batch's neutral rows: the full stack's extra false tags sit on near-miss turns
(docs/research-log.md), and full-set steps with every trigger tagged (`full_stack_share`) raised them.

Outputs: one ordinary PEFT adapter folder per member (usable alone, stacked or merged) with
config.yaml, guardrail.yaml, joint.json (the run it came from), its gate threshold calibrated with that
member alone on its own validation split, and a copy of the joint run's metrics.csv.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

from ..config import JointTrainConfig, TrainConfig, dump_yaml
from ..errors import PersonaguardError
from ..guardrails import get_guardrail
from ..schema import NONE_LABEL, Example, read_jsonl, write_text_atomic
from .train import (
    TrainResult,
    _lora_config,
    _make_trainer_classes,
    as_dataset,
    finish_adapter,
    lora_for_training,
    tokenize_examples,
    training_arguments,
)


class SubsetTargets:
    """Per batch: activates a random non-empty subset of the members and marks the rows to swap.

    Called by the Trainer's compute_loss with the batch from `orpo.pack_pairs` (its `member` holds each
    row's member index, -1 for neutral rows); returns the batch with a bool `swap` added, and on
    neutral-only steps a bool `row_mask` (the neutral rows). In eval mode all members are active and
    every row is scored, so the validation loss is the full stack's."""

    NEUTRAL_ONLY = " (neutral rows only)"  # suffix of the full set's key in `drawn` for neutral-only steps

    def __init__(self, names: list[str], seed: int, full_share: float = 0.0, neutral_share: float = 0.0):
        import torch

        self.names = names
        self.full_share = full_share
        self.neutral_share = neutral_share
        self.subsets = [s for k in range(1, len(names) + 1) for s in itertools.combinations(range(len(names)), k)]
        self.gen = torch.Generator().manual_seed(seed)
        self.drawn = {",".join(names[i] for i in s): 0 for s in self.subsets}
        if neutral_share:
            self.drawn[",".join(names) + self.NEUTRAL_ONLY] = 0

    def draw(self, training: bool) -> tuple[tuple[int, ...], bool]:
        """(active member indices, whether only the neutral rows are scored this step)."""
        import torch

        if not training:
            return tuple(range(len(self.names))), False
        u = float(torch.rand((), generator=self.gen)) if self.full_share or self.neutral_share else 1.0
        neutral_only = u < self.neutral_share
        if neutral_only or u < self.neutral_share + self.full_share:
            s = self.subsets[-1]  # combinations() lists the full set last
        else:
            s = self.subsets[int(torch.randint(len(self.subsets), (1,), generator=self.gen))]
        self.drawn[",".join(self.names[i] for i in s) + (self.NEUTRAL_ONLY if neutral_only else "")] += 1
        return s, neutral_only

    def __call__(self, model, inputs: dict) -> dict:
        import torch

        subset, neutral_only = self.draw(model.training)
        peft_model = getattr(model, "module", model)  # DDP wraps the model
        # set_adapter makes exactly these trainable and the others frozen: only S gets gradients this step
        peft_model.base_model.set_adapter([self.names[i] for i in subset])
        member = inputs["member"]
        on = torch.zeros(len(self.names), dtype=torch.bool, device=member.device)
        on[list(subset)] = True
        swap = (member >= 0) & ~on[member.clamp(min=0)]
        if neutral_only:  # the full stack learns where not to fire; its triggers are not scored this step
            return {**inputs, "swap": swap, "row_mask": member < 0}
        return {**inputs, "swap": swap}


def _rows(cfg: TrainConfig, split: str, index: dict[str, int], required: bool) -> list[tuple[Example, int]]:
    """`split` rows of one member's data folder with each row's member index (-1 = neutral)."""
    path = Path(cfg.data_dir) / f"{split}.jsonl"
    if not path.is_file():
        if required:
            raise PersonaguardError(f"{path}: not found; run `personaguard generate` for this guardrail first")
        return []
    rows = read_jsonl(path, Example, allowed_labels={NONE_LABEL, *index})
    if required and not rows:
        raise PersonaguardError(f"{path}: no training examples")
    cross = sum(getattr(r, "kind", None) in ("cross_negative", "compound_trigger") for r in rows)
    if cross:
        raise PersonaguardError(
            f"{path}: {cross} cross_negative/compound_trigger rows; joint training makes its own cross-negatives from "
            "the members' triggers, so generate this data with cross_negative_share 0 and compound_trigger_share 0"
        )
    return [(r, index.get(r.label, -1)) for r in rows]


def _features(rows: list[tuple[Example, int]], tok, cfg: TrainConfig) -> list[dict]:
    feats = tokenize_examples([r for r, _ in rows], tok, cfg)
    for f, (_, m) in zip(feats, rows):
        f["member"] = m
    return feats


def _save_member(model, name: str, out_dir: Path) -> None:
    """Write adapter `name` as an ordinary PEFT folder at out_dir (PEFT puts non-default names in a subfolder)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir, prefix=".save."))
    try:
        model.save_pretrained(str(tmp), selected_adapters=[name])
        for f in (tmp / name).iterdir():
            os.replace(f, out_dir / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(cfg: JointTrainConfig, source: str = "config") -> list[TrainResult]:
    """Train all members of `cfg` together; returns one TrainResult per member (the same steps and time)."""
    members = cfg.member_configs(source)
    first = members[0]
    guardrails = [get_guardrail(m.guardrail, [m.guardrails_dir] if m.guardrails_dir else None) for m in members]
    names = [g.name for g in guardrails]
    if len(set(names)) != len(names):
        raise PersonaguardError(f"{source}: members name the same guardrail twice ({names}); give each once")
    index = {n: i for i, n in enumerate(names)}
    train_rows = [r for m in members for r in _rows(m, "train", index, True)]
    val_by_member = [_rows(m, "validation", index, False) for m in members]
    val_rows = [r for rows in val_by_member for r in rows]
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.csv").unlink(missing_ok=True)

    ORPOTrainer, MetricsCSV, collate, _ = _make_trainer_classes()
    model, tok, device = lora_for_training(first, names[0])
    for n in names[1:]:
        model.add_adapter(n, _lora_config(model.get_base_model(), first))
    from .dropout import use_gap_dropout

    use_gap_dropout(model)  # the members added here get PEFT's nn.Dropout too
    model.base_model.set_adapter(names)  # every member trainable when the optimiser collects its parameters

    train_feats = _features(train_rows, tok, first)
    val_feats = _features(val_rows, tok, first) if val_rows else None
    # no checkpoints: transformers' resume loads one adapter only; unused members' parameters get no gradient under DDP
    args = training_arguments(first, out_dir, device, bool(val_feats), save_strategy="no", ddp_find_unused_parameters=True)
    targets = SubsetTargets(names, first.seed, cfg.full_stack_share, cfg.neutral_stack_share)
    trainer = ORPOTrainer(
        model=model,
        args=args,
        train_dataset=as_dataset(train_feats),
        eval_dataset=as_dataset(val_feats) if val_feats else None,
        data_collator=collate(tok.pad_token_id),
        callbacks=[MetricsCSV(out_dir / "metrics.csv")],
        orpo_lambda=first.orpo_lambda,
        decision_token_weight=first.decision_token_weight,
        neutral_loss=first.neutral_loss,
        anchor_weight=first.anchor_weight,
        tag_anchor_weight=first.tag_anchor_weight,
        row_targets=targets,
    )
    t0 = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - t0

    results = []
    run_id = uuid.uuid4().hex[:12]  # one id for every member of the run
    for m, g, rows in zip(members, guardrails, val_by_member):
        adapter = Path(m.out_dir)
        _save_member(trainer.model, g.name, adapter)
        write_text_atomic(
            adapter / "joint.json",
            json.dumps({"joint_run": str(out_dir), "members": dict(zip(names, (x.out_dir for x in members)))}, indent=2),
        )
        if (out_dir / "metrics.csv").is_file():
            shutil.copy2(out_dir / "metrics.csv", adapter / "metrics.csv")
        trainer.model.base_model.set_adapter([g.name])  # the gate is the member's alone, as routed stacks use it
        finish_adapter(
            trainer.model,
            tok,
            m,
            g,
            adapter,
            [r for r, _ in rows],
            {
                "steps": result.global_step,
                "seconds": round(seconds, 1),
                "train_loss": result.training_loss,
                "train_examples": len(train_feats),
                "device": device,
                "joint_run": str(out_dir),
            },
            run_id,
        )
        results.append(TrainResult(adapter, result.global_step, seconds, result.training_loss))
    write_text_atomic(
        out_dir / "train_result.json",
        json.dumps(
            {
                "steps": result.global_step,
                "seconds": round(seconds, 1),
                "train_loss": result.training_loss,
                "train_examples": len(train_feats),
                "device": device,
                "subsets_drawn": targets.drawn,
                "members": {n: x.out_dir for n, x in zip(names, members)},
            },
            indent=2,
        ),
    )
    write_text_atomic(out_dir / "config.yaml", dump_yaml(cfg))
    return results
