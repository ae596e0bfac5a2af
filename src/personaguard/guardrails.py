"""Guardrail definitions: the two lines a user writes (trigger, resolution) plus a name and a tag.

Built-in definitions live in `guardrails_builtin/*.yaml` (package data); user definitions are YAML
files with the same fields, found in a folder given by config/CLI or added with
`personaguard guardrails add FILE` (copied into the user guardrail folder).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import sys
from importlib import resources
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import PersonaguardError

DEFAULT_TAG = "<guard>"
MIN_OFFLINE_EXAMPLES = 6  # below this the held-out quarter is 1 item and training sees too few phrasings
RECOMMENDED_EXAMPLES = (12, 20)
MAX_TEXT_CHARS = 1000
HELD_OUT_SHARE = 0.25  # of a guardrail's examples, kept for the test split (data/splits.py)
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,47}$")


class Guardrail(BaseModel):
    """A behavioural guardrail; `name` is also used in file and adapter names."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Identifier: lowercase letters, digits and '_' (used in paths).")
    trigger: str = Field(min_length=3, description="When the guardrail fires (one or two sentences).")
    resolution: str = Field(min_length=3, description="How the persona must answer when it fires.")
    tag: str = Field(default=DEFAULT_TAG, min_length=1, description="Marker the reply must begin with.")
    description: str = Field(default="", description="Optional longer note for humans.")
    examples: list[str] = Field(
        default_factory=list,
        description="Messages that must trigger it, written as users would (a handful to a few dozen). The offline "
        f"backend needs at least {MIN_OFFLINE_EXAMPLES} for a guardrail without packaged pools; a quarter of them is held out "
        "for the test split, so the report says how well it generalises beyond them.",
    )
    near_misses: list[str] = Field(
        default_factory=list,
        description="Messages that look similar but must NOT trigger it (the same words in a harmless sense, adjacent topics).",
    )
    replies: list[str] = Field(
        default_factory=list,
        description="In-character replies that follow the resolution, without the tag (optional: generic polite "
        "declines are used offline when empty).",
    )
    notes: str = Field(default="", description="Anything a teacher model should know (what counts, what does not).")

    @field_validator("examples", "near_misses", "replies")
    @classmethod
    def _check_texts(cls, v: list[str]) -> list[str]:
        seen = set()
        for i, text in enumerate(v):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"item {i + 1} is empty (expected a message as text)")
            if len(text) > MAX_TEXT_CHARS:
                raise ValueError(f"item {i + 1} has {len(text)} characters (at most {MAX_TEXT_CHARS})")
            key = " ".join(text.lower().split())
            if key in seen:
                raise ValueError(f"item {i + 1} repeats an earlier one: {text!r}")
            seen.add(key)
        return [t.strip() for t in v]

    @model_validator(mode="after")
    def _examples_are_not_near_misses(self) -> Guardrail:
        both = {" ".join(t.lower().split()) for t in self.examples} & {" ".join(t.lower().split()) for t in self.near_misses}
        if both:
            raise ValueError(f"{sorted(both)[0]!r} is both an example and a near-miss; it must be one or the other")
        return self

    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError("must match [a-z][a-z0-9_]* (max 48 chars), e.g. 'no_dating'")
        return v


def user_guardrail_dir() -> Path:
    """Where `guardrails add` stores user definitions (override with PERSONAGUARD_HOME)."""
    home = Path(os.environ.get("PERSONAGUARD_HOME", Path.home() / ".cache" / "personaguard"))
    return home / "guardrails"


def load_guardrail_file(path: str | Path) -> Guardrail:
    """Read one guardrail YAML file; errors name the file and the field."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PersonaguardError(f"{path}: guardrail file not found") from None
    except yaml.YAMLError as exc:
        raise PersonaguardError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise PersonaguardError(f"{path}: expected a mapping with fields name, trigger, resolution")
    try:
        return Guardrail.model_validate(raw)
    except ValidationError as exc:
        raise PersonaguardError(f"{path}: {format_validation_error(exc)}") from None


def format_validation_error(exc: ValidationError) -> str:
    """Pydantic's multi-line report folded into one line: `field a.b: message; ...`."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        parts.append(f"field '{loc}': {msg}" if loc else msg)
    return "; ".join(parts)


def _builtin() -> dict[str, Guardrail]:
    out = {}
    folder = resources.files("personaguard") / "guardrails_builtin"
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".yaml"):
            with resources.as_file(entry) as p:
                g = load_guardrail_file(p)
            out[g.name] = g
    return out


@functools.cache
def _warn_once(line: str) -> None:
    """Commands read the registry several times; the user needs each warning once."""
    print(line, file=sys.stderr)


def registry(extra_dirs: list[str | Path] | None = None, *, wanted: str | None = None) -> dict[str, Guardrail]:
    """All known guardrails: built-in, then the user folder, then `extra_dirs` (later wins).

    An `extra_dirs` folder that does not exist is an error (a mistyped --dir must not pass silently).
    A broken user file is skipped with a one-line warning on stderr, so one bad file does not block
    every command; when it is the guardrail asked for (`wanted`, matched by file name) its error is raised."""
    found = _builtin()
    for d in extra_dirs or []:
        if not Path(d).is_dir():
            raise PersonaguardError(f"guardrails dir {d}: folder not found (expected a folder of guardrail YAML files)")
    dirs = [user_guardrail_dir(), *[Path(d) for d in (extra_dirs or [])]]
    for d in dirs:
        if d.is_dir():
            for f in sorted(d.glob("*.y*ml")):
                try:
                    g = load_guardrail_file(f)
                except PersonaguardError as exc:
                    if wanted is not None and f.stem == wanted:
                        raise
                    _warn_once(f"warning: skipping guardrail file {exc}")
                    continue
                found[g.name] = g
    return found


def get_guardrail(name_or_path: str, extra_dirs: list[str | Path] | None = None) -> Guardrail:
    """Resolve a guardrail by registry name, or load it from a YAML path."""
    if name_or_path.endswith((".yaml", ".yml")) or os.sep in name_or_path:
        return load_guardrail_file(name_or_path)
    reg = registry(extra_dirs, wanted=name_or_path)
    if name_or_path not in reg:
        raise PersonaguardError(
            f"unknown guardrail '{name_or_path}'; known: {', '.join(sorted(reg))} "
            "(add one with `personaguard guardrails add FILE.yaml`)"
        )
    return reg[name_or_path]


def add_guardrail(path: str | Path) -> Path:
    """Validate a YAML definition and copy it to the user folder; never overwrites a name."""
    g = load_guardrail_file(path)
    dest_dir = user_guardrail_dir()
    dest = dest_dir / f"{g.name}.yaml"
    if g.name in _builtin() or dest.exists():
        raise PersonaguardError(f"{path}: guardrail name '{g.name}' already exists; choose another name")
    dest_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, dest)
    return dest


def examples_advice(g: Guardrail) -> str:
    """One line on whether the examples are enough for offline training."""
    n, (lo, hi) = len(g.examples), RECOMMENDED_EXAMPLES
    if n < MIN_OFFLINE_EXAMPLES:
        return (
            f"{n} examples: too few for the offline backend (needs {MIN_OFFLINE_EXAMPLES}, {lo}-{hi} recommended); "
            "add more with --example, or generate with an LLM backend"
        )
    held = max(1, round(n * HELD_OUT_SHARE))
    advice = "enough" if n >= lo else f"enough to train; {lo}-{hi} generalise better"
    return f"{n} examples ({held} held out for the test split): {advice}; {len(g.near_misses)} near-misses"


def new_guardrail(
    name: str,
    trigger: str,
    resolution: str,
    examples: list[str],
    near_misses: list[str],
    out: str | Path | None = None,
) -> tuple[Path, Guardrail]:
    """Validate and write a new guardrail file (default: the user folder); never overwrites.

    A name of a built-in or of an existing user guardrail is refused, so a scaffold can never shadow
    `politics` and change what every run with that name trains."""
    raw = {"name": name, "trigger": trigger, "resolution": resolution, "examples": examples, "near_misses": near_misses}
    try:
        g = Guardrail.model_validate(raw)
    except ValidationError as exc:
        raise PersonaguardError(f"guardrail '{name}': {format_validation_error(exc)}") from None
    dest = Path(out) if out else user_guardrail_dir() / f"{g.name}.yaml"
    if g.name in _builtin():
        raise PersonaguardError(f"guardrail name '{g.name}' is a built-in guardrail; choose another name")
    if dest.exists() or (not out and g.name in registry()):
        raise PersonaguardError(f"{dest}: guardrail '{g.name}' already exists; choose another name or edit that file")
    body = {k: v for k, v in g.model_dump().items() if v not in ("", [], DEFAULT_TAG) or k in ("examples", "near_misses")}
    text = (
        f"# Guardrail '{g.name}', made by `personaguard guardrails new`. Edit freely; list more `examples`\n"
        f"# (messages that must trigger it) and `near_misses` (similar ones that must not) as users would write them.\n"
        + yaml.safe_dump(body, sort_keys=False, allow_unicode=True, width=100)
    )
    from .schema import write_text_atomic  # schema imports this module at load time

    dest.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(dest, text)
    return dest, g
