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
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import PersonaguardError

DEFAULT_TAG = "<guard>"
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,47}$")


class Guardrail(BaseModel):
    """A behavioural guardrail; `name` is also used in file and adapter names."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Identifier: lowercase letters, digits and '_' (used in paths).")
    trigger: str = Field(min_length=3, description="When the guardrail fires (one or two sentences).")
    resolution: str = Field(min_length=3, description="How the persona must answer when it fires.")
    tag: str = Field(default=DEFAULT_TAG, min_length=1, description="Marker the reply must begin with.")
    description: str = Field(default="", description="Optional longer note for humans.")

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
