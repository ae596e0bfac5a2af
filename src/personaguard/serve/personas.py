"""Personas as config: a folder of YAML files, one persona each, addressed as `persona:NAME`.

Why a registry: a team ships a handful of characters, each with its own guardrails; clients should
name the character, not resend its traits and guardrail list with every request."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import PersonaguardError

# names reach file lookups and adapter lookups: letters, digits, '_' and '-' only, so no path tricks
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def check_name(kind: str, name: str) -> str:
    """`name` if it is a plain name; otherwise a one-line error (it never touches the file system)."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise PersonaguardError(f"{kind} name {name!r} is not allowed: use 1-64 letters, digits, '_' or '-' (no paths)")
    return name


class PersonaSpec(BaseModel):
    """One persona file: who the character is and which guardrails it wears by default."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1, max_length=64)
    traits: list[str] = Field(default_factory=list, max_length=50)
    expressions: list[str] = Field(default_factory=list, max_length=50)
    memories: list[str] = Field(default_factory=list, max_length=100)
    guardrails: list[str] = Field(default_factory=list, description="Guardrail adapter names worn by default.")

    @field_validator("traits", "expressions", "memories")
    @classmethod
    def _short_lines(cls, v: list[str]) -> list[str]:
        for line in v:
            if not line.strip() or len(line) > 500:
                raise ValueError("each line must be non-empty and at most 500 characters")
        return v


def _problem(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "file"
    return f"{where}: {err['msg']}"


def load_persona_file(path: str | Path) -> PersonaSpec:
    """One persona file (for `chat --persona-file`), checked like the registry's."""
    path = Path(path)
    if not path.is_file():
        raise PersonaguardError(f"{path}: persona file not found")
    return _read(path)


def _read(path: Path) -> PersonaSpec:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise PersonaguardError(f"{path}: not readable YAML ({type(exc).__name__})") from None
    if not isinstance(raw, dict):
        raise PersonaguardError(f"{path}: expected a mapping with name, traits, expressions, memories, guardrails")
    try:
        return PersonaSpec.model_validate(raw)
    except ValidationError as exc:
        raise PersonaguardError(f"{path}: {_problem(exc)}") from None


def load_personas(folder: str | Path | None) -> dict[str, PersonaSpec]:
    """Every `*.yaml` in `folder`, keyed by its file name (lower-case); {} when `folder` is None.

    A broken file is an error naming the file and field: a server must not start with half its
    characters silently missing."""
    if folder is None:
        return {}
    root = Path(folder)
    if not root.is_dir():
        raise PersonaguardError(f"personas_dir {root}: not a folder (set personas_dir: null to serve without personas)")
    out: dict[str, PersonaSpec] = {}
    for path in sorted(root.glob("*.yaml")):
        key = path.stem.lower()
        try:
            check_name("persona", key)
        except PersonaguardError as exc:
            raise PersonaguardError(f"{path}: {exc}") from None
        out[key] = _read(path)
    return out
