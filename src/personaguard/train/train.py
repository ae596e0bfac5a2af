"""Train one guardrail LoRA adapter with ORPO.

Usage:
    personaguard train --config configs/quickstart.yaml --set train.data_dir=... --set train.out_dir=...
    python -c "from personaguard.train import run; run(TrainConfig(data_dir=..., out_dir=...))"

Built on `transformers.Trainer` (so accelerate/DeepSpeed launch, checkpoints, `--resume` and
`report_to` work as usual) with our own loss: shared-prefix packing of chosen and rejected
(see orpo.py). Output: a PEFT adapter folder + config.yaml + guardrail.yaml + metrics.csv.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import TrainConfig, dump_yaml
from ..errors import PersonaguardError
from ..guardrails import get_guardrail
from ..schema import NONE_LABEL, Example, ensure_dir, read_jsonl, write_text_atomic

METRIC_COLUMNS = [
    "step",
    "epoch",
    "loss",
    "nll",
    "or_loss",
    "log_odds",
    "chosen_logp",
    "rejected_logp",
    "reward_acc",
    "anchor_kl",
    "tag_shift",
    "learning_rate",
    "grad_norm",
    "eval_loss",
    "eval_nll",
    "eval_or_loss",
    "eval_log_odds",
    "eval_chosen_logp",
    "eval_rejected_logp",
    "eval_reward_acc",
    "eval_anchor_kl",
    "eval_tag_shift",
]


@dataclass
class TrainResult:
    adapter_dir: Path
    steps: int
    seconds: float
    final_loss: float | None


def tokenize_examples(examples: list[Example], tokenizer, cfg: TrainConfig) -> list[dict]:
    from ..prompt import prompt_ids, reply_ids

    rows = []
    for ex in examples:
        row = {
            "prompt_ids": prompt_ids(tokenizer, ex, cfg.max_prompt_tokens),
            "chosen_ids": reply_ids(tokenizer, ex.chosen, cfg.max_reply_tokens),
            "rejected_ids": reply_ids(tokenizer, ex.rejected, cfg.max_reply_tokens),
        }
        row["neutral"] = ex.label == NONE_LABEL  # neutral_loss 'anchor' scores these rows against the base model
        row["length"] = (
            len(row["prompt_ids"]) + len(row["chosen_ids"]) + len(row["rejected_ids"])
        )  # packed length, for length-grouped batches
        rows.append(row)
    return rows


def as_dataset(feats: list[dict]):
    import datasets

    return datasets.Dataset.from_list(feats)


def _make_trainer_classes():
    """Defined lazily so importing this module does not import torch/transformers."""
    import torch
    from transformers import Trainer, TrainerCallback

    from .orpo import pack_pairs, packed_forward

    class ORPOTrainer(Trainer):
        """Trainer whose loss is ORPO over shared-prefix packed pairs; logs the loss parts too."""

        def __init__(
            self,
            *args,
            orpo_lambda: float = 0.1,
            decision_token_weight: float = 1.0,
            neutral_loss: str = "orpo",
            anchor_weight: float = 1.0,
            tag_anchor_weight: float = 1.0,
            row_targets=None,
            **kwargs,
        ):
            super().__init__(*args, **kwargs)
            self.row_targets = row_targets  # joint training: picks the active members and each row's target per batch
            self.orpo_lambda = orpo_lambda
            self.decision_token_weight = decision_token_weight
            self.neutral_loss = neutral_loss
            self.anchor_weight = anchor_weight
            self.tag_anchor_weight = tag_anchor_weight
            self._sums: dict[str, dict[str, float]] = {"train": {}, "eval": {}}
            self._counts: dict[str, dict[str, int]] = {
                "train": {},
                "eval": {},
            }  # per part: anchor_kl comes only with neutral rows

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if self.row_targets is not None:
                inputs = self.row_targets(model, inputs)
            parts = packed_forward(
                model,
                inputs,
                self.orpo_lambda,
                self.decision_token_weight,
                self.neutral_loss,
                self.anchor_weight,
                self.tag_anchor_weight,
            )
            split = "train" if model.training else "eval"
            for k, v in parts.items():
                if k != "loss":
                    self._sums[split][k] = self._sums[split].get(k, 0.0) + float(v.detach())
                    self._counts[split][k] = self._counts[split].get(k, 0) + 1
            if return_outputs:
                return parts["loss"], {"logits": parts["log_odds"].detach()[None]}
            return parts["loss"]

        def log(self, logs, *args, **kwargs):
            split, prefix = ("eval", "eval_") if "eval_loss" in logs else ("train", "")
            if ("loss" in logs or split == "eval") and self._counts[split]:
                for k, v in self._sums[split].items():
                    logs[prefix + k] = round(v / self._counts[split][k], 6)
                self._sums[split], self._counts[split] = {}, {}
            super().log(logs, *args, **kwargs)

    class MetricsCSV(TrainerCallback):
        """Appends every log event to metrics.csv (fsync'd; survives a crash, continues on resume)."""

        def __init__(self, path: Path):
            self.path = path

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs:
                return
            new = not self.path.exists()
            with self.path.open("a", newline="", encoding="utf-8") as fh:
                w = csv.DictWriter(fh, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
                if new:
                    w.writeheader()
                w.writerow({"step": state.global_step, "epoch": round(state.epoch or 0.0, 4), **logs})
                fh.flush()
                os.fsync(fh.fileno())

    def collate(pad_id):
        return lambda feats: pack_pairs(feats, pad_id)

    return ORPOTrainer, MetricsCSV, collate, torch


def calibrate_gate(model, tok, val_rows: list[Example], guardrail, cfg: TrainConfig, out_dir: Path) -> float | None:
    """Pick the guard-score threshold for gated decoding on the validation split; saved next to the adapter."""
    import torch

    from ..inference import guard_scores
    from ..metrics import GATE_FILE, gate_threshold
    from ..prompt import prompt_ids

    model.eval()
    with torch.no_grad():
        scores, _ = guard_scores(
            model, tok, [prompt_ids(tok, r, cfg.max_prompt_tokens) for r in val_rows], guardrail.tag, cfg.batch_size
        )
    pos = [s for s, r in zip(scores, val_rows) if r.label == guardrail.name]
    neg = [s for s, r in zip(scores, val_rows) if r.label != guardrail.name]
    thr = gate_threshold(pos, neg)
    if thr is not None:
        write_text_atomic(
            out_dir / GATE_FILE,
            json.dumps(
                {
                    "threshold": thr,
                    "n_validation": len(val_rows),
                    "source": "validation split, best F1 moved halfway to the next negative",
                },
                indent=2,
            ),
        )
    return thr


def _lora_config(model, cfg: TrainConfig):
    """The LoRA config `cfg` asks for, resolved against `model` (for lora_top_layers)."""
    from peft import LoraConfig

    targets, layers = cfg.target_modules, None
    if cfg.lora_top_layers:
        n = model.config.num_hidden_layers
        if cfg.lora_top_layers > n:
            raise PersonaguardError(f"train.lora_top_layers: {cfg.lora_top_layers} but the model has {n} decoder layers")
        layers = list(range(n - cfg.lora_top_layers, n))
        targets = _layer_linear_names(model) if targets == "all-linear" else targets  # PEFT wants names with a layer list
    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=targets,
        layers_to_transform=layers,
        task_type="CAUSAL_LM",
    )


def _lora_model(model, cfg: TrainConfig, adapter_name: str = "default"):
    from peft import get_peft_model, prepare_model_for_kbit_training

    if cfg.load_in_4bit:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    from .dropout import use_gap_dropout

    peft_model = get_peft_model(model, _lora_config(model, cfg), adapter_name=adapter_name)
    use_gap_dropout(peft_model)  # PEFT's per-layer nn.Dropout was 18 % of a CPU step (train/dropout.py)
    return peft_model


def _layer_linear_names(model) -> list[str]:
    """Names of the linear projections inside the decoder layers (what 'all-linear' selects there)."""
    import torch

    names = {
        name.rsplit(".", 1)[-1] for name, mod in model.named_modules() if isinstance(mod, torch.nn.Linear) and ".layers." in name
    }
    if not names:
        raise PersonaguardError("train.lora_top_layers: found no linear layers under '.layers.'; list target_modules by name")
    return sorted(names)


def _add_frozen(model, dirs: list[str]) -> None:
    """Load `dirs` next to the trainable 'default' adapter, all active, only 'default' trainable.

    Their LoRA deltas add to the new adapter's in every forward pass (as in a dynamic stack), so the
    new adapter is trained for the stack it will be used in."""
    names = []
    for i, d in enumerate(dirs):
        name = f"frozen_{i}"
        model.load_adapter(str(d), adapter_name=name, is_trainable=False)
        names.append(name)
    model.base_model.set_adapter(["default", *names])  # PEFT marks every active adapter trainable...
    for n, p in model.named_parameters():
        if "lora_" in n:
            p.requires_grad_(".default." in n)  # ...so freeze all but the new one again


def training_arguments(cfg: TrainConfig, out_dir: Path, device: str, with_eval: bool, **overrides):
    """The Trainer's arguments for `cfg` (shared by one adapter's and a joint run's training)."""
    from transformers import TrainingArguments

    bf16 = device.startswith("cuda") and cfg.precision in ("auto", "bf16")
    return TrainingArguments(
        **{
            **dict(
                output_dir=str(out_dir),
                per_device_train_batch_size=cfg.batch_size,
                per_device_eval_batch_size=cfg.batch_size,
                gradient_accumulation_steps=cfg.grad_accum,
                learning_rate=cfg.lr,
                num_train_epochs=cfg.epochs,
                max_steps=cfg.max_steps,
                warmup_steps=cfg.warmup_ratio,  # a float < 1 is read as a ratio of the total steps
                lr_scheduler_type="linear",
                logging_steps=cfg.logging_steps,
                eval_strategy=("steps" if cfg.eval_steps else "epoch") if with_eval else "no",
                eval_steps=cfg.eval_steps or None,
                save_strategy="steps",
                save_steps=cfg.save_steps,
                save_total_limit=cfg.save_total_limit,
                seed=cfg.seed,
                use_cpu=device == "cpu",
                bf16=bf16,
                fp16=device.startswith("cuda") and cfg.precision == "fp16",
                remove_unused_columns=False,
                # batches of similar packed length waste less compute on padding
                train_sampling_strategy="group_by_length",
                length_column_name="length",
                label_names=["c_tgt"],
                dataloader_pin_memory=False,
                report_to=cfg.report_to or "none",
                disable_tqdm=False,
            ),
            **overrides,
        }
    )


def lora_for_training(cfg: TrainConfig, adapter_name: str = "default"):
    """(PEFT model with a fresh LoRA adapter `adapter_name`, tokenizer, device) for `cfg`, seeded."""
    from transformers import set_seed

    from ..models import LoadOptions, load_model, pick_device

    set_seed(cfg.seed)
    device = pick_device(cfg.device)
    model, tok = load_model(cfg.model, LoadOptions(cfg.device, cfg.precision, cfg.load_in_4bit))
    model.config.use_cache = False
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return _lora_model(model, cfg, adapter_name), tok, device


def data_guardrail(cfg: TrainConfig, rows: list[Example], path: Path):
    """The guardrail the data was generated for; a --guardrail that names another is refused (it would
    train an adapter labelled with one guardrail on another's triggers)."""
    labels = sorted({r.label for r in rows} - {NONE_LABEL})
    if len(labels) != 1:
        raise PersonaguardError(f"{path}: triggering examples of {labels or 'no guardrail'}; one guardrail's data expected")
    extra = [cfg.guardrails_dir] if cfg.guardrails_dir else None
    guardrail = get_guardrail(cfg.guardrail or labels[0], extra)
    if guardrail.name != labels[0]:
        raise PersonaguardError(
            f"{path}: generated for guardrail {labels[0]!r}, but --guardrail is {guardrail.name!r}; drop --guardrail or "
            "point --data-dir at that guardrail's data"
        )
    return guardrail


def run(cfg: TrainConfig) -> TrainResult:
    """Train the adapter described by `cfg`; returns where it was saved and how long it took."""
    data_dir, out_dir = Path(cfg.data_dir), Path(cfg.out_dir)
    train_rows = read_jsonl(data_dir / "train.jsonl", Example)
    if not train_rows:
        raise PersonaguardError(f"{data_dir / 'train.jsonl'}: no training examples")
    guardrail = data_guardrail(cfg, train_rows, data_dir / "train.jsonl")
    cfg = cfg.model_copy(update={"guardrail": cfg.guardrail or guardrail.name})
    for extra in cfg.extra_data_dirs:
        train_rows += read_jsonl(Path(extra) / "train.jsonl", Example)
    val_path = data_dir / "validation.jsonl"
    val_rows = read_jsonl(val_path, Example) if val_path.is_file() else []
    run_id, has_ckpt = prepare_out_dir(cfg, out_dir)

    ORPOTrainer, MetricsCSV, collate, torch = _make_trainer_classes()
    model, tok, device = lora_for_training(cfg)
    if cfg.frozen_adapters:
        _add_frozen(model, cfg.frozen_adapters)

    train_feats = tokenize_examples(train_rows, tok, cfg)
    val_feats = tokenize_examples(val_rows, tok, cfg) if val_rows else None
    args = training_arguments(cfg, out_dir, device, bool(val_feats))
    trainer = ORPOTrainer(
        model=model,
        args=args,
        train_dataset=as_dataset(train_feats),
        eval_dataset=as_dataset(val_feats) if val_feats else None,
        data_collator=collate(tok.pad_token_id),
        callbacks=[MetricsCSV(out_dir / "metrics.csv"), _run_id_callback(run_id)],
        orpo_lambda=cfg.orpo_lambda,
        decision_token_weight=cfg.decision_token_weight,
        neutral_loss=cfg.neutral_loss,
        anchor_weight=cfg.anchor_weight,
        tag_anchor_weight=cfg.tag_anchor_weight,
    )
    t0 = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=True if (cfg.resume and has_ckpt) else None)
    seconds = time.perf_counter() - t0
    trainer.model.save_pretrained(out_dir, selected_adapters=["default"])  # never the frozen stack members
    finish_adapter(
        trainer.model,
        tok,
        cfg,
        guardrail,
        out_dir,
        val_rows,
        {
            "steps": result.global_step,
            "seconds": round(seconds, 1),
            "train_loss": result.training_loss,
            "train_examples": len(train_feats),
            "device": device,
        },
        run_id,
    )
    return TrainResult(out_dir, result.global_step, seconds, result.training_loss)


RUN_FILE = "run.json"  # the run id of the training that owns this folder and its checkpoints


def _is_training_folder(out_dir: Path) -> bool:
    names = {p.name for p in out_dir.iterdir()}
    return bool(names & {RUN_FILE, "adapter_config.json", "metrics.csv"}) or any(n.startswith("checkpoint-") for n in names)


def prepare_out_dir(cfg: TrainConfig, out_dir: Path) -> tuple[str, bool]:
    """The run id of this training and whether it resumes from a checkpoint.

    A new run never mixes with an old one: into a non-empty folder it needs `overwrite` (and then
    replaces only a training folder's contents), and `resume` continues only checkpoints written by the
    run recorded in the folder, so a second run killed early cannot be continued from the first's."""
    import shutil
    import uuid

    existing = out_dir.is_dir() and any(out_dir.iterdir())
    if cfg.resume and existing:
        run_path = out_dir / RUN_FILE
        ckpts = sorted(
            out_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]) if p.name.split("-")[-1].isdigit() else -1
        )
        if not run_path.is_file():
            raise PersonaguardError(
                f"{out_dir}: no {RUN_FILE}, so its checkpoints cannot be told apart from another run's; "
                "train again with --overwrite"
            )
        run_id = json.loads(run_path.read_text(encoding="utf-8"))["run_id"]
        # the run-id mark is written after the Trainer has saved a checkpoint completely, so unmarked
        # checkpoints after the newest marked one were cut off by a kill mid-save: drop them and resume
        # from the last complete one
        while ckpts and not (ckpts[-1] / RUN_FILE).is_file() and _is_ours_later(ckpts, run_id):
            print(f"warning: {ckpts[-1]} was not finished (the run was killed while saving it); removing it", file=sys.stderr)
            shutil.rmtree(ckpts.pop())
        if ckpts:
            mark = ckpts[-1] / RUN_FILE
            theirs = json.loads(mark.read_text(encoding="utf-8"))["run_id"] if mark.is_file() else None
            if theirs != run_id:
                raise PersonaguardError(
                    f"{ckpts[-1]} was written by run {theirs or 'unknown'}, not by run {run_id} recorded "
                    f"in {run_path}; resuming would mix two runs: train again with --overwrite"
                )
        return run_id, bool(ckpts)
    if existing and not cfg.overwrite:
        raise PersonaguardError(
            f"{out_dir} is not empty (an earlier training's files); add --overwrite to replace them "
            "or --resume to continue that training"
        )
    if existing:
        if not _is_training_folder(out_dir):
            raise PersonaguardError(
                f"{out_dir} holds files that are not an adapter or its checkpoints; refusing to "
                "overwrite it, choose another out_dir"
            )
        shutil.rmtree(out_dir)
    ensure_dir(out_dir, "out_dir")
    run_id = uuid.uuid4().hex[:12]
    write_text_atomic(out_dir / RUN_FILE, json.dumps({"run_id": run_id, "seed": cfg.seed}, indent=2))
    return run_id, False


def _is_ours_later(ckpts: list[Path], run_id: str) -> bool:
    """Whether the checkpoints before the last one are this run's (or there are none): only then is an
    unmarked last checkpoint this run's unfinished save rather than another run's."""
    marked = [c for c in ckpts[:-1] if (c / RUN_FILE).is_file()]
    return not marked or json.loads((marked[-1] / RUN_FILE).read_text(encoding="utf-8"))["run_id"] == run_id


def _run_id_callback(run_id: str):
    """Marks every checkpoint with the run that wrote it (checked by prepare_out_dir on --resume)."""
    from transformers import TrainerCallback

    class RunId(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                if ckpt.is_dir():
                    write_text_atomic(ckpt / RUN_FILE, json.dumps({"run_id": run_id}))

    return RunId()


def finish_adapter(
    model, tok, cfg: TrainConfig, guardrail, out_dir: Path, val_rows: list[Example], summary: dict, run_id: str | None = None
) -> float | None:
    """Everything an adapter folder holds besides its weights: tokenizer, config, guardrail, the gate
    calibrated with the model's active adapters, train_result.json (`summary` + the gate) and
    personaguard.json, the description later stages read (adapters.read_info)."""
    import uuid

    from ..adapters import write_info

    tok.save_pretrained(out_dir)
    write_text_atomic(out_dir / "config.yaml", dump_yaml(cfg))
    write_text_atomic(out_dir / "guardrail.yaml", dump_yaml(guardrail))
    threshold = calibrate_gate(model, tok, val_rows, guardrail, cfg, out_dir) if val_rows else None
    run_id = run_id or uuid.uuid4().hex[:12]
    write_text_atomic(
        out_dir / "train_result.json", json.dumps({**summary, "guard_threshold": threshold, "run_id": run_id}, indent=2)
    )
    write_info(
        out_dir,
        guardrail=guardrail,
        base_model=cfg.model,
        max_prompt_tokens=cfg.max_prompt_tokens,
        max_reply_tokens=cfg.max_reply_tokens,
        gate_threshold=threshold,
        run_id=run_id,
    )
    return threshold
