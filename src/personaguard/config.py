"""Typed configuration for every stage, loaded from YAML with `--set key=value` overrides.

Each stage has its own pydantic model (`extra="forbid"`, a description on every field); the
pipeline config nests them. Errors come out as one line naming the file and the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import PersonaguardError
from .guardrails import format_validation_error
from .models import EMBEDDED

Variation = Literal["vary_all", "fixed_character", "fixed_history", "semi_fixed"]
# Prompts are cut to this many tokens (oldest history first) unless a training config says otherwise;
# evaluation and stacking take the value an adapter was trained with from its folder.
DEFAULT_MAX_PROMPT_TOKENS = 512


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class GenerateOptions(_Strict):
    """What `generate` makes; the pipeline's `generate:` section (guardrail and folders are filled in)."""

    backend: Literal["offline", "openai"] = Field(
        "offline",
        description="Data source: 'offline' draws from the packaged pools; 'openai' asks an OpenAI-compatible endpoint.",
    )
    variation: Variation = Field("vary_all", description="Which snapshot fields vary between examples.")
    n: int = Field(400, ge=4, description="Total examples (train + validation + test).")
    trigger_share: float = Field(0.5, gt=0, lt=1, description="Share of triggering examples; the rest are neutral.")
    hard_negative_share: float = Field(0.3, ge=0, le=1, description="Share of neutral examples that are near-miss messages.")
    cross_negative_share: float = Field(
        0.35,
        ge=0,
        le=1,
        description="Share of neutral examples whose message is another guardrail's trigger (answered normally): an "
        "adapter trained without them learns 'a serious question' and fires on the other guardrails' topics. Joint "
        "training makes its own and sets this to 0.",
    )
    other_topic_share: float = Field(
        0.15,
        ge=0,
        le=1,
        description="Share of neutral examples whose message is a serious or personal question on a topic no "
        "guardrail covers (love, loss, ethics, family; pools/other_topics.json), answered normally: the other "
        "guardrails' triggers alone teach 'not those topics', not 'only mine', so an adapter still fires on a "
        "topic it never saw.",
    )
    continuation_share: float = Field(
        0.25,
        ge=0,
        le=1,
        description="Share of neutral examples whose message is the next user turn of their own history "
        "(a coherent continuation, as most real neutral turns are), with that conversation's reply as chosen.",
    )
    multi_message_share: float = Field(
        0.25,
        ge=0,
        le=1,
        description="Share of final messages sent as several chat lines (a short lead line before it or a "
        "tail after it, triggering or not), as people type in real chats.",
    )
    mixed_turn_share: float = Field(
        0.2,
        ge=0,
        le=1,
        description="Share of final messages sent together with an unrelated everyday line (before or after "
        "it, triggering or not): real turns often bury a proposal or a question among other news.",
    )
    long_turn_share: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Share of final messages buried in a long ramble (2-6 unrelated everyday lines before it and "
        "after it, triggering or not), so a trigger in the middle of a long message is still found and a long "
        "chatty message alone is no reason to fire. Such prompts run longer than max_prompt_tokens (the message "
        "is never cut below 4x that budget), so training gets slower.",
    )
    shared_hard_share: float = Field(
        0.4,
        ge=0,
        le=1,
        description="Share of hard negatives taken from the other guardrails' near-miss pools (they are "
        "neutral for every guardrail), so stacked adapters do not fire on each other's near-misses.",
    )
    compound_trigger_share: float = Field(
        0.1,
        ge=0,
        le=0.5,
        description="Share of triggering examples whose turn also carries another guardrail's trigger (tagged: "
        "this guardrail's trigger is there). Cross-negatives alone teach 'the other topic means no tag', and a "
        "stack then misses messages that trigger two guardrails at once.",
    )
    val_fraction: float = Field(0.05, ge=0, lt=0.5, description="Validation share.")
    test_fraction: float = Field(0.2, gt=0, lt=0.5, description="Test share (drawn from held-out pool items).")
    seed: int = Field(0, description="Seed: the same seed gives the same data.")
    # backend 'openai' only; the fields below do not affect the offline backend
    base_url: str | None = Field(
        None, description="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1 (None = api.openai.com)."
    )
    llm_model: str = Field("gpt-4o-mini", min_length=1, description="Model name sent to the endpoint.")
    api_key_env: str = Field(
        "OPENAI_API_KEY", min_length=1, description="Environment variable holding the API key (the key itself is never stored)."
    )
    concurrency: int = Field(4, ge=1, le=256, description="Requests in flight at once.")
    max_retries: int = Field(
        5,
        ge=0,
        description="Retries per example for failed requests (429/5xx/timeouts) and, separately, for invalid or duplicate outputs.",
    )
    request_timeout: float = Field(60.0, gt=0, description="Seconds before one request is abandoned and retried.")
    request_budget: int = Field(
        0, ge=0, description="Stop cleanly after this many requests (0 = unlimited); run again to continue."
    )

    @model_validator(mode="after")
    def _check(self) -> GenerateOptions:
        if self.base_url is not None and not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url {self.base_url!r} must start with http:// or https:// (e.g. http://127.0.0.1:8000/v1)")
        return self


class GenerateConfig(GenerateOptions):
    """`personaguard generate`: one guardrail's data set."""

    guardrail: str = Field("politics", description="Guardrail name or YAML path.")
    guardrails_dir: str | None = Field(None, description="Extra folder of user guardrail YAML files.")
    out_dir: str = Field("runs/data", description="Output folder; files go to {out_dir}/{guardrail}_{variation}/.")


class TrainOptions(_Strict):
    """How an adapter is trained; the pipeline's `train:` section and joint training's shared `train:`."""

    lora_r: int = Field(16, ge=1, description="LoRA rank.")
    lora_alpha: int = Field(32, ge=1, description="LoRA alpha (scale = alpha / r).")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout.")
    target_modules: list[str] | str = Field(
        "all-linear", description="Modules to adapt; 'all-linear' = every attention and MLP projection."
    )
    lora_top_layers: int = Field(
        0,
        ge=0,
        description="0 = LoRA in every decoder layer; N = only in the last N layers, so the "
        "backward pass stops below them (half the step time at N = 15 of 30 on CPU; bench/orpo_step.py --top-layers).",
    )
    orpo_lambda: float = Field(0.1, ge=0, description="Weight of the odds-ratio term (ORPO's lambda/beta).")
    decision_token_weight: float = Field(
        1.0, ge=1, description="Weight of each reply's first token (tag or not) in ORPO's mean token log-prob; 1 = plain ORPO."
    )
    neutral_loss: Literal["orpo", "anchor"] = Field(
        "orpo",
        description="Loss on neutral (label 'none') rows: 'orpo' = NLL(chosen) + odds ratio against the tagged "
        "refusal, as in the paper; 'anchor' = answer as the base model would (KL over the chosen reply, and the tag's "
        "log-probability held at the base's), which teaches no tag suppression outside the trigger (summed stacks of such "
        "members still lost tags on SmolLM2: docs/research-log.md, 'Members that add up').",
    )
    anchor_weight: float = Field(
        1.0,
        gt=0,
        description="With neutral_loss 'anchor': weight of a neutral row's anchor loss against a triggering row's ORPO loss.",
    )
    tag_anchor_weight: float = Field(
        1.0,
        ge=0,
        description="With neutral_loss 'anchor': weight of the Huber penalty on the "
        "shift of the tag's log-probability from the base model's at a neutral reply's start (0 = KL only; see train/orpo.py).",
    )
    lr: float = Field(5e-4, gt=0, description="Peak learning rate.")
    epochs: float = Field(2.0, gt=0, description="Passes over the training data.")
    max_steps: int = Field(-1, description="If > 0, stop after this many optimiser steps (overrides epochs).")
    batch_size: int = Field(8, ge=1, description="Pairs per device step.")
    grad_accum: int = Field(1, ge=1, description="Gradient accumulation steps.")
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="Linear warm-up share of the steps.")
    max_prompt_tokens: int = Field(
        DEFAULT_MAX_PROMPT_TOKENS,
        ge=16,
        description="Prompts are cut to this (oldest history "
        "first); recorded in the adapter folder, so evaluation, stacking and serving cut prompts the same way.",
    )
    max_reply_tokens: int = Field(64, ge=4, description="Chosen/rejected replies are cut to this.")
    logging_steps: int = Field(5, ge=1, description="Log (and write metrics.csv) every N steps.")
    eval_steps: int = Field(0, ge=0, description="Validation loss every N steps (0 = once per epoch).")
    save_steps: int = Field(50, ge=1, description="Checkpoint every N steps (for --resume).")
    save_total_limit: int = Field(2, ge=1, description="Checkpoints kept.")
    resume: bool = Field(False, description="Continue from the newest checkpoint in out_dir (only the run recorded there).")
    overwrite: bool = Field(
        False,
        description="Replace an earlier training's files in out_dir (a new run into a non-empty folder is refused without it).",
    )
    seed: int = Field(0, description="Training seed.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where to train.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field("auto", description="auto = fp32 on CPU, bf16 on CUDA.")
    load_in_4bit: bool = Field(False, description="QLoRA: 4-bit base weights (CUDA + bitsandbytes).")
    gradient_checkpointing: bool = Field(False, description="Trade compute for memory (big models on GPU).")
    report_to: list[str] = Field(
        default_factory=list, description="transformers report_to integrations (e.g. tensorboard, wandb)."
    )
    frozen_adapters: list[str] = Field(
        default_factory=list,
        description="Stack-aware training: these adapter folders stay loaded, active and frozen while "
        "the new adapter trains, so it learns to work on top of them (for use in that stack).",
    )
    extra_data_dirs: list[str] = Field(
        default_factory=list,
        description="More `generate` folders whose train.jsonl is mixed into this adapter's training "
        "data (stack-aware training gives a chain member the earlier members' data, so it learns the whole stack's behaviour).",
    )

    @model_validator(mode="after")
    def _check(self) -> TrainOptions:
        if self.load_in_4bit and self.device == "cpu":
            raise ValueError("load_in_4bit needs device 'cuda' or 'auto' on a GPU machine; set load_in_4bit: false on CPU")
        return self


class TrainConfig(TrainOptions):
    """`personaguard train`: one adapter for one guardrail."""

    model: str = Field(EMBEDDED, description="Base model: embedded name, local folder or HF id.")
    guardrail: str | None = Field(
        None, description="Guardrail name or YAML path (saved next to the adapter); default: the one the data was generated for."
    )
    guardrails_dir: str | None = Field(None, description="Extra folder of user guardrail YAML files.")
    data_dir: str = Field(..., description="Folder with train.jsonl (and validation.jsonl) from `generate`.")
    out_dir: str = Field(..., description="Adapter output folder (PEFT format).")


class JointMember(_Strict):
    data_dir: str = Field(..., description="This guardrail's `generate` folder (train.jsonl, validation.jsonl).")
    out_dir: str = Field(..., description="Where this guardrail's PEFT adapter folder is written.")


class JointOptions(_Strict):
    """How the members' steps are drawn; the pipeline's `joint:` section."""

    full_stack_share: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Share of steps with every member active; the steps that are neither these nor "
        "neutral_stack_share's draw uniformly from all non-empty subsets (0 = all subsets equally, each member alone included).",
    )
    neutral_stack_share: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Share of steps with every member active on which only the neutral rows are "
        "scored (their loss a mean over the batch's neutral rows): the full stack learns where not to fire without the "
        "extra tagged rows that full_stack_share adds.",
    )

    @model_validator(mode="after")
    def _check(self) -> JointOptions:
        if self.full_stack_share + self.neutral_stack_share > 1:
            raise ValueError(
                f"full_stack_share + neutral_stack_share: {self.full_stack_share} + "
                f"{self.neutral_stack_share} is over 1; they are shares of the same steps"
            )
        return self


class JointTrainConfig(JointOptions):
    """`personaguard train-joint`: several members trained together for stacking."""

    model: str = Field(EMBEDDED, description="Base model of every member: embedded name, local folder or HF id.")
    guardrails_dir: str | None = Field(None, description="Extra folder of user guardrail YAML files.")
    members: dict[str, JointMember] = Field(
        ..., description="Guardrail name (or YAML path) -> its data and adapter folders; two or more."
    )
    out_dir: str = Field(..., description="Folder of the joint run itself: metrics.csv and train_result.json.")
    train: TrainOptions = Field(
        default_factory=TrainOptions, description="Training options shared by every member (lr, epochs, ...)."
    )

    @model_validator(mode="before")
    @classmethod
    def _shared_only(cls, data):
        train = data.get("train") if isinstance(data, dict) else None
        if isinstance(train, dict):
            given = sorted(k for k in train if k in ("guardrail", "data_dir", "out_dir"))
            if given:
                raise ValueError(f"train sets {given}, which each member has its own of; set them under members")
            if "model" in train or "guardrails_dir" in train:
                raise ValueError("train.model / train.guardrails_dir are shared by every member; set them at the top level")
        return data

    @model_validator(mode="after")
    def _check_members(self) -> JointTrainConfig:
        if len(self.members) < 2:
            raise ValueError(f"members: joint training needs two or more guardrails, got {len(self.members)}")
        for key in ("frozen_adapters", "extra_data_dirs"):
            if getattr(self.train, key):
                raise ValueError(
                    f"train.{key} is for one adapter trained on top of others; joint training trains "
                    "every member together, drop it"
                )
        if self.train.resume:
            raise ValueError("train.resume: joint training cannot resume from a checkpoint yet; start it again")
        return self

    def member_configs(self, source: str = "config") -> list[TrainConfig]:
        """One TrainConfig per member: the shared options plus the model, its guardrail and folders."""
        shared = {**self.train.model_dump(), "model": self.model, "guardrails_dir": self.guardrails_dir}
        return [
            build(
                TrainConfig, {**shared, "guardrail": g, "data_dir": m.data_dir, "out_dir": m.out_dir}, f"{source} (members.{g})"
            )
            for g, m in self.members.items()
        ]


class EndpointConfig(_Strict):
    base_url: str = Field(..., description="OpenAI-compatible base URL, e.g. http://localhost:8000/v1.")
    model: str = Field(..., description="Model name at that endpoint (or a local folder for llama_guard).")
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the API key (never stored).")


EvalSetting = Literal["none", "adapter", "adapter_gated", "system_prompt", "embedding", "llama_guard"]


class EvaluateOptions(_Strict):
    """How evaluation runs; the pipeline's `evaluate:` section (model, adapter, data and folders are filled in)."""

    settings: list[EvalSetting] = Field(
        ["none", "adapter", "adapter_gated"],
        description="Conditions: none (base model), adapter (greedy), adapter_gated (the adapter's guard score "
        "decides the tag with the threshold saved at training; needs 'adapter' in the list too), system_prompt (guardrail "
        "text in the system prompt, no adapter), embedding (MiniLM + logistic regression trained on baseline_train_data), "
        "llama_guard.",
    )
    runs: int = Field(1, ge=1, description="Sampling runs per generative setting (>1 samples; reports mean ± std).")
    temperature: float = Field(0.7, gt=0, description="Sampling temperature when runs > 1.")
    judge: EndpointConfig | None = Field(None, description="LLM judge endpoint; without it the deterministic tag judge is used.")
    llama_guard: EndpointConfig | None = Field(None, description="Llama Guard endpoint (or local folder as model).")
    max_new_tokens: int = Field(40, ge=4, description="Reply length generated per item.")
    batch_size: int = Field(16, ge=1, description="Items per generation batch.")
    limit: int = Field(0, ge=0, description="Evaluate at most this many items (0 = all).")
    checkpoints: list[str] = Field(
        default_factory=list,
        description="Also evaluate these checkpoint-N folders of the adapter ('all' or step numbers); "
        "writes checkpoints.json/csv, a curve of the detection metrics per step.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where to run.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field("auto", description="auto = fp32 on CPU, bf16 on CUDA.")
    load_in_4bit: bool = Field(False, description="4-bit base weights (CUDA + bitsandbytes).")

    @field_validator("checkpoints", mode="before")
    @classmethod
    def _steps_as_text(cls, v):
        return [str(c) for c in v] if isinstance(v, list) else v  # YAML reads `[25, 50]` as numbers

    @model_validator(mode="after")
    def _check(self) -> EvaluateOptions:
        if "adapter_gated" in self.settings and "adapter" not in self.settings:
            raise ValueError("settings includes 'adapter_gated' but not 'adapter' (the gate reuses its replies); add 'adapter'")
        if "llama_guard" in self.settings and not self.llama_guard:
            raise ValueError("settings includes 'llama_guard' but no llama_guard endpoint is configured")
        return self


class EvaluateConfig(EvaluateOptions):
    """`personaguard evaluate`: one adapter (or none) on one Snapshot JSONL.

    With an adapter, its folder supplies the guardrail, the base model and the prompt length it was
    trained with (adapters.read_info); a value given here that contradicts the folder is refused."""

    model: str | None = Field(
        None, description="Base model; default: the adapter's base model (the embedded model without an adapter)."
    )
    adapter: str | None = Field(None, description="PEFT adapter folder (or a checkpoint-N inside it).")
    guardrail: str | None = Field(
        None, description="Guardrail whose label counts as triggering; default: the adapter's (required without an adapter)."
    )
    guardrails_dir: str | None = Field(None, description="Extra folder of user guardrail YAML files.")
    data: str = Field(
        ...,
        description="Snapshot JSONL to evaluate (e.g. test.jsonl or outside data), or a packaged set name such as real-chats-v1.",
    )
    out_dir: str = Field(..., description="Where metrics.json, predictions.jsonl and report.md go.")
    baseline_train_data: str | None = Field(None, description="Training JSONL for the embedding classifier baseline.")
    max_prompt_tokens: int | None = Field(
        None,
        ge=16,
        description="Prompts are cut to this; default: the adapter's "
        f"training value ({DEFAULT_MAX_PROMPT_TOKENS} without an adapter).",
    )

    def decoding(self):
        """The prompt and reply settings prediction needs (after `evaluate.resolve` filled max_prompt_tokens)."""
        from .inference import Decoding

        return Decoding(
            self.max_prompt_tokens or DEFAULT_MAX_PROMPT_TOKENS, self.max_new_tokens, self.batch_size, self.runs, self.temperature
        )

    @model_validator(mode="after")
    def _check_adapter(self) -> EvaluateConfig:
        if self.checkpoints and not self.adapter:
            raise ValueError("checkpoints are given but no adapter folder; set adapter to the training run's folder")
        if "adapter" in self.settings and not self.adapter:
            raise ValueError("settings includes 'adapter' but no adapter folder is given; set adapter or use settings: [none]")
        if "embedding" in self.settings and not self.baseline_train_data:
            raise ValueError("settings includes 'embedding' but baseline_train_data is not set; give the training JSONL")
        return self


# stacks made at run time from the loaded members; every other method writes a merged adapter folder
RUNTIME_STACK_METHODS = ("dynamic", "dynamic_gated", "dynamic_agree", "routed", "routed_gated", "routed_joint")
MERGE_METHODS = ("cat", "svd", "linear", "ties", "dare_ties", "dare_linear")
StackMethod = Literal[RUNTIME_STACK_METHODS + MERGE_METHODS]
# The stack the product uses (pipeline, `stack`, later the server): members trained independently, any
# subset chosen per request, each member deciding alone so one added member changes no other's decision.
DEFAULT_STACK_METHOD = "routed"
STACK_METHOD_HELP: dict[str, str] = {
    "dynamic": "all members active at once (their exact sum, no merge)",
    "dynamic_gated": "the sum, its tag decided by the sum's guard score against one threshold calibrated on the members' "
    "pooled validation splits",
    "dynamic_agree": "the sum writes every reply, its tag kept only where at least one member alone would tag too "
    "(every member's vote from one mixed-adapter pass)",
    "routed": "each member decides alone (as its greedy reply would); the one that fires writes the reply",
    "routed_gated": "routed, each member with its own gate threshold",
    "routed_joint": "routed, each gate recalibrated on all members' validation splits pooled",
    "cat": "merge: exact sum written as one adapter (rank = sum of ranks)",
    "svd": "merge: truncated SVD of the exact sum",
    "linear": "merge: A and B averaged separately (paper's linear merge)",
    "ties": "merge: TIES (trim, elect sign, average)",
    "dare_ties": "merge: DARE drop + TIES",
    "dare_linear": "merge: DARE drop + linear",
}


class StackOptions(_Strict):
    """Which stacks are compared and how; the pipeline's `stack:` section (members and folders are filled in)."""

    methods: list[StackMethod] = Field(
        [
            DEFAULT_STACK_METHOD,
            "routed_gated",
            "routed_joint",
            "dynamic",
            "dynamic_gated",
            "dynamic_agree",
            "cat",
            "svd",
            "linear",
        ],
        description=f"Stacks to compare ({DEFAULT_STACK_METHOD!r} is the default stack of the product: any subset of "
        "independently trained members, attribution included): "
        + "; ".join(f"{k} = {v}" for k, v in STACK_METHOD_HELP.items())
        + ".",
    )
    data: str | None = Field(
        None,
        description="One Snapshot JSONL (or a packaged set such as real-chats-v1) that every setting answers instead of "
        "the members' test splits; its labels may name guardrails outside the stack (they must stay untagged).",
    )
    val_data: dict[str, str] = Field(
        default_factory=dict,
        description="Guardrail name -> its validation JSONL, for routed_joint, dynamic_gated and "
        "dynamic_agree's check (default: validation.jsonl beside each test file, as `generate` writes them).",
    )
    density: float = Field(0.5, gt=0, le=1, description="ties/dare_*: share of weights kept.")
    svd_rank: int | None = Field(None, ge=1, description="svd: rank of the merged adapter (None = the largest member rank).")
    per_guardrail: int = Field(
        0, ge=0, description="At most this many triggering and this many neutral items per member (0 = all)."
    )
    double_trigger: bool = Field(True, description="Also answer the packaged double-trigger messages (two guardrails at once).")
    seed: int = Field(0, description="Seed for the double-trigger snapshots' personas and histories.")
    max_new_tokens: int = Field(32, ge=4, description="Reply length generated per item.")
    batch_size: int = Field(16, ge=1, description="Items per generation batch.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where to run.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field("auto", description="auto = fp32 on CPU, bf16 on CUDA.")
    load_in_4bit: bool = Field(False, description="4-bit base weights (CUDA + bitsandbytes).")


class StackEvalConfig(StackOptions):
    """`personaguard stack`: members stacked, each single and every method on one shared item set.

    The base model and prompt length come from the member adapters' folders (they must agree)."""

    model: str | None = Field(None, description="Base model; default: the one every member adapter was trained on.")
    adapters: dict[str, str] = Field(..., description="Guardrail name -> its adapter folder (two or more).")
    test_data: dict[str, str] = Field(
        default_factory=dict, description="Guardrail name -> its test JSONL (triggering + neutral items); not needed with `data`."
    )
    out_dir: str = Field(..., description="Where merged adapters, stack_metrics.json and stack_table.md/csv go.")
    guardrails_dir: str | None = Field(None, description="Extra folder of user guardrail YAML files.")
    aware_adapters: dict[str, str] = Field(
        default_factory=dict,
        description="Guardrail name -> stack-aware adapter (trained with earlier stack members frozen "
        "and active; may be the member's own adapter); adds the setting 'dynamic_aware' with these stacked.",
    )
    max_prompt_tokens: int | None = Field(
        None, ge=16, description="Prompts are cut to this; default: the members' training value."
    )

    @model_validator(mode="after")
    def _check(self) -> StackEvalConfig:
        if len(self.adapters) < 2:
            raise ValueError(f"adapters: a stack needs two or more guardrail adapters, got {len(self.adapters)}")
        if self.data is None and set(self.test_data) != set(self.adapters):
            raise ValueError(
                f"test_data names {sorted(self.test_data)} but adapters {sorted(self.adapters)}; give each member's test "
                "file, or one `data` file for all"
            )
        return self


class ServeConfig(_Strict):
    """`personaguard serve` / `chat`: one base model, every trained guardrail adapter in a folder, chosen per request."""

    adapters_dir: str = Field(
        "runs/quickstart/adapters",
        description="Folder whose sub-folders are trained guardrail adapters (each with personaguard.json); "
        "adapters load only from here, each under its folder name.",
    )
    model: str | None = Field(None, description="Base model; default: the one the adapters were trained on (they must agree).")
    personas_dir: str | None = Field(
        "configs/personas", description="Folder of persona YAML files (name, traits, expressions, memories, guardrails)."
    )
    served_model_name: str | None = Field(
        None, description="The base model's id in /v1/models and responses; default: `model` as configured."
    )
    host: str = Field("127.0.0.1", description="Address to listen on (0.0.0.0 to accept other machines).")
    port: int = Field(8000, ge=1, le=65535, description="Port to listen on.")
    device: str = Field("auto", description="auto | cpu | cuda.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="Weights dtype (auto: fp32 on CPU, bf16 on CUDA)."
    )
    load_in_4bit: bool = Field(False, description="Load the base model in 4-bit (CUDA + bitsandbytes).")
    merge_lone_adapter: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Fold a lone guardrail's adapter into the weights while it is the only one in use: its turns then "
        "cost what the base model's do (unmerged LoRA layers add ~25 % per forward on a CPU), for one more copy of "
        "the adapted weights in memory. auto: on for fp32 weights on the CPU (in bf16 the folded weights round "
        "differently from the adapter's own output).",
    )
    max_prompt_tokens: int | None = Field(
        None, ge=16, description="Prompts are cut to this (oldest history first); default: the adapters' training value."
    )
    default_max_tokens: int = Field(96, ge=1, description="Reply length when a request gives no max_tokens.")
    max_tokens_limit: int = Field(512, ge=1, description="Largest max_tokens a request may ask for (larger: 400).")
    max_messages: int = Field(200, ge=1, description="Most messages in one request (more: 400).")
    max_body_bytes: int = Field(1_000_000, ge=1024, description="Largest request body in bytes (larger: 413).")
    upstream: str | None = Field(
        None,
        description="Base URL of an OpenAI-compatible server that serves the guardrail adapters as LoRA models "
        "(vLLM with `personaguard export-vllm`'s command, or another `personaguard serve`); this server then "
        "routes: guard decision and reply come from there, no model is loaded here.",
    )
    upstream_key_env: str = Field(
        "UPSTREAM_API_KEY", description="Environment variable with the upstream's API key, if it needs one."
    )
    tag: str = Field("<guard>", min_length=1, description="With `upstream`: the tag the adapters were trained to write.")
    token_env: str = Field(
        "PERSONAGUARD_SERVER_TOKEN",
        description="Environment variable holding the bearer token; when it is set, /v1/* and /tokenize need "
        "`Authorization: Bearer <token>` (the token is never stored or logged).",
    )

    @field_validator("merge_lone_adapter", mode="before")
    @classmethod
    def _on_off(cls, v):
        """YAML reads a bare on/off as a boolean (`--set merge_lone_adapter=off` included)."""
        return {True: "on", False: "off"}.get(v, v) if isinstance(v, bool) else v

    @model_validator(mode="after")
    def _check(self) -> ServeConfig:
        if self.default_max_tokens > self.max_tokens_limit:
            raise ValueError(f"default_max_tokens {self.default_max_tokens} is above max_tokens_limit {self.max_tokens_limit}")
        return self


class PipelineConfig(_Strict):
    """`personaguard pipeline`: generate -> train -> evaluate (-> stack) -> report for every guardrail."""

    model: str = Field(EMBEDDED, description="Base model for every stage.")
    guardrails: list[str] = Field(["politics"], min_length=1, description="Guardrails to build, one adapter each.")
    guardrails_dir: str | None = Field(None, description="Extra folder of user guardrail YAML files.")
    run_dir: str = Field("runs/quickstart", description="Everything goes under this folder.")
    generate: GenerateOptions = Field(default_factory=GenerateOptions, description="Data options (see `config show generate`).")
    train: TrainOptions = Field(default_factory=TrainOptions, description="Training options (see `config show train`).")
    evaluate: EvaluateOptions = Field(
        default_factory=EvaluateOptions, description="Evaluation options (see `config show evaluate`)."
    )
    extra_eval_data: list[str] = Field(
        default_factory=list,
        description="More Snapshot JSONL files (or packaged set names such as real-chats-v1) to evaluate each adapter on.",
    )
    variations: dict[str, list[Variation]] = Field(
        default_factory=dict,
        description="Extra dataset variations per guardrail (e.g. politics: [fixed_character]); each "
        "trains its own adapter, evaluated on its own test split and on the main variation's, for the variation table.",
    )
    stack: StackOptions | None = Field(
        None,
        description="Evaluate all guardrails' main adapters stacked (see `config show stack`); needs two or more guardrails.",
    )
    stack_aware_training: bool = Field(
        False,
        description="With stack: retrain the guardrails as a chain, each later one with the earlier ones frozen and "
        "active (adapters/<guardrail>_stack_aware), and evaluate the chain stacked as 'dynamic_aware'.",
    )

    joint_training: bool = Field(
        False,
        description="Train the guardrails' main adapters together (train/joint.py): each step a random subset of "
        "them is active and a row whose guardrail is off answers as a neutral turn, so every subset's sum (each member "
        "alone, all at once) is trained for. Needs two or more guardrails and generate.cross_negative_share 0.",
    )
    joint: JointOptions = Field(
        default_factory=JointOptions, description="With joint_training: how steps are drawn (see `config show train-joint`)."
    )

    @model_validator(mode="after")
    def _check(self) -> PipelineConfig:
        unknown = sorted(set(self.variations) - set(self.guardrails))
        if unknown:
            raise ValueError(
                f"variations names {unknown}, which are not in guardrails {self.guardrails}; add them there or drop them"
            )
        if self.stack is not None and len(self.guardrails) < 2:
            raise ValueError("stack is set but guardrails has fewer than two entries; list two or more or drop stack")
        if self.joint_training:
            if len(self.guardrails) < 2:
                raise ValueError("joint_training needs two or more guardrails; list them or set joint_training: false")
            if self.stack_aware_training:
                raise ValueError("joint_training and stack_aware_training are two ways to train for the stack; set one of them")
            if "cross_negative_share" in self.generate.model_fields_set and self.generate.cross_negative_share:
                raise ValueError(
                    "joint_training makes its own cross-negatives from the members' triggers; "
                    "set generate.cross_negative_share: 0"
                )
        return self


def _set_path(data: dict, dotted: str, value) -> None:
    keys = dotted.split(".")
    cur = data
    for k in keys[:-1]:
        cur = cur.setdefault(k, {})
        if not isinstance(cur, dict):
            raise PersonaguardError(f"--set {dotted}: '{k}' is not a section")
    cur[keys[-1]] = value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """`key.sub=value` pairs; values are parsed as YAML scalars/lists (`lr=1e-3`, `x=[a,b]`)."""
    for item in overrides:
        if "=" not in item:
            raise PersonaguardError(f"--set {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise PersonaguardError(
                f"--set {item!r}: value is not valid YAML ({_yaml_problem(exc)}); quote it or fix the brackets"
            ) from None
        _set_path(data, key.strip(), value)
    return data


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """yaml's own multi-line message reduced to its problem ("mapping values are not allowed here")."""
    problem = getattr(exc, "problem", None)
    return problem or str(exc).splitlines()[0]


def load_yaml(path: str | Path | None) -> dict:
    if path is None:
        return {}
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise PersonaguardError(f"{p}: config file not found") from None
    except UnicodeDecodeError:
        raise PersonaguardError(f"{p}: not UTF-8 text; save the config as UTF-8") from None
    except IsADirectoryError:
        raise PersonaguardError(f"{p}: is a folder, expected a YAML config file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise PersonaguardError(f"{p}: not valid YAML ({where}{_yaml_problem(exc)})") from None
    if not isinstance(data, dict):
        raise PersonaguardError(f"{p}: expected a mapping of config fields at the top level")
    return data


def build(model: type[BaseModel], data: dict, source: str = "config"):
    """Validate `data` as `model`; one-line error naming the source and the field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise PersonaguardError(f"{source}: {format_validation_error(exc)}") from None


def load_config(model: type[BaseModel], path: str | Path | None, overrides: list[str] | None = None, **defaults):
    data = {**defaults, **load_yaml(path)}
    apply_overrides(data, overrides or [])
    return build(model, data, str(path) if path else "config")


def dump_yaml(cfg: BaseModel) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


# --- reference: `personaguard config show STAGE` and docs/configuration.md ---------------------------

STAGE_CONFIGS: dict[str, type[BaseModel]] = {
    "pipeline": PipelineConfig,
    "generate": GenerateConfig,
    "train": TrainConfig,
    "train-joint": JointTrainConfig,
    "evaluate": EvaluateConfig,
    "stack": StackEvalConfig,
    "serve": ServeConfig,
}
_SECTION_OF = {
    GenerateOptions: "generate",
    TrainOptions: "train",
    EvaluateOptions: "evaluate",
    StackOptions: "stack",
    JointOptions: "train-joint",
}


def _default_text(field) -> str:
    if field.is_required():
        return "(required)"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return f"see `config show {_SECTION_OF.get(type(value), type(value).__name__)}`"
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def _fields(model: type[BaseModel]) -> list[tuple[str, str, str]]:
    """(name, default, description) per field; a stage's own fields (model, folders) before the shared options."""
    own = model.__dict__.get("__annotations__", {})
    names = sorted(model.model_fields, key=lambda n: n not in own)
    return [(n, _default_text(model.model_fields[n]), (model.model_fields[n].description or "").strip()) for n in names]


def fields_table(model: type[BaseModel]) -> str:
    """Every field of `model`: name, default, description, as plain text for a terminal."""
    import textwrap

    rows = _fields(model)
    width = max(len(n) for n, _, _ in rows)
    out = [(model.__doc__ or model.__name__).strip().splitlines()[0], ""]
    for name, default, desc in rows:
        out.append(f"{name.ljust(width)}  default: {default}")
        out += textwrap.wrap(desc, 100, initial_indent=" " * (width + 2), subsequent_indent=" " * (width + 2))
    return "\n".join(out)


def configuration_markdown() -> str:
    """docs/configuration.md: every stage's fields, generated from the descriptions written once here."""
    lines = [
        "# Configuration reference",
        "",
        "Generated by `personaguard config docs --out docs/configuration.md` from the field descriptions in",
        "`src/personaguard/config.py` (a test fails when this page is stale). Every command takes `--config FILE.yaml`",
        "and `--set key=value` (dotted keys for sections, e.g. `--set train.lr=1e-4`); `personaguard config show STAGE`",
        "prints the same in the terminal.",
        "",
    ]
    for stage, model in STAGE_CONFIGS.items():
        doc = (model.__doc__ or "").strip()
        lines += [f"## {stage}", "", doc, "", "| field | default | description |", "|---|---|---|"]
        for name, default, desc in _fields(model):
            cell = (default if default.startswith("see ") or default == "(required)" else f"`{default}`").replace("|", "\\|")
            lines.append(f"| `{name}` | {cell} | {desc.replace('|', chr(92) + '|')} |")
        lines.append("")
    return "\n".join(lines)
