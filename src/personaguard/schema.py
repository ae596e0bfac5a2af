"""The shared nouns: Persona, Snapshot (one moment of a chat) and Example (a Snapshot plus a
chosen and a rejected reply), with JSONL reading/writing.

Readers accept missing optional fields and keep unknown extra fields (e.g. `source`, `domain`) so
outside data can be evaluated and written back untouched; a malformed row raises an error naming
the file, the line and the field. Writers never lose what is already on disk: `append_jsonl`
fsyncs each line, `write_jsonl_atomic` writes a temp file and renames it.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import PersonaguardError
from .guardrails import format_validation_error

NONE_LABEL = "none"


class Persona(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = ""
    traits: list[str] = Field(default_factory=list)
    expressions: list[str] = Field(default_factory=list)


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["user", "assistant"]
    content: str


class Snapshot(BaseModel):
    """One moment of a conversation; `label` is a guardrail name or 'none'."""

    model_config = ConfigDict(extra="allow")

    id: str
    persona: Persona = Field(default_factory=Persona)
    memories: list[str] = Field(default_factory=list)
    history: list[Message] = Field(default_factory=list)
    message: str = Field(min_length=1)
    label: str = NONE_LABEL

    @model_validator(mode="after")
    def _alternating(self) -> Snapshot:
        for i, m in enumerate(self.history):
            want = "user" if i % 2 == 0 else "assistant"
            if m.role != want:
                raise ValueError(f"history[{i}].role must be '{want}' (user/assistant alternate, user first)")
        if self.history and self.history[-1].role != "assistant":
            raise ValueError("history must end with an assistant turn (the final user turn is `message`)")
        return self


class Example(Snapshot):
    """A training row: the preferred (`chosen`) and dispreferred (`rejected`) reply."""

    chosen: str = Field(min_length=1)
    rejected: str = Field(min_length=1)


def read_jsonl(path: str | Path, model: type[BaseModel] = Snapshot, allowed_labels: set[str] | None = None) -> list:
    """Parse a JSONL file into `model` rows; one-line errors name `file:line` and the field."""
    path = Path(path)
    if not path.is_file():
        raise PersonaguardError(f"{path}: data file not found")
    rows = []
    seen: dict[str, int] = {}
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise PersonaguardError(
                    f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); "
                    "save the file as UTF-8"
                ) from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise PersonaguardError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise PersonaguardError(f"{path}:{lineno}: expected a JSON object")
            try:
                row = model.model_validate(obj)
            except ValidationError as exc:
                raise PersonaguardError(f"{path}:{lineno}: {format_validation_error(exc)}") from None
            if allowed_labels is not None and getattr(row, "label", None) not in allowed_labels:
                raise PersonaguardError(
                    f"{path}:{lineno}: field 'label': unknown label '{row.label}', expected one of "
                    f"{', '.join(sorted(allowed_labels))}"
                )
            row_id = getattr(row, "id", None)
            if row_id is not None:
                # predictions and the judge are keyed by id: a repeated id would silently overwrite
                if row_id in seen:
                    raise PersonaguardError(
                        f"{path}:{lineno}: field 'id': duplicate id '{row_id}' (first on line {seen[row_id]}); ids must be unique"
                    )
                seen[row_id] = lineno
            rows.append(row)
    return rows


def iter_valid_lines(path: Path) -> Iterator[dict]:
    """Complete JSON lines of a file being appended to; a torn last line (crash) is skipped."""
    if not path.exists():
        return
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if not line.endswith("\n"):
                break
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


def _dump(row: BaseModel | dict) -> str:
    data = row.model_dump(mode="json") if isinstance(row, BaseModel) else row
    return json.dumps(data, ensure_ascii=False)


def repair_tail(path: Path) -> None:
    """Cut a torn last line left by a crash so appends start on a fresh line."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
        with path.open("r+b") as fh:
            fh.truncate(keep)
            fh.flush()
            os.fsync(fh.fileno())


def append_jsonl(path: Path, row: BaseModel | dict) -> None:
    """Append one line and fsync it, so a kill at any point loses nothing already written."""
    with path.open("a", encoding="utf-8") as fh:
        fh.write(_dump(row) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def write_csv_atomic(path: str | Path, rows: list[dict], fieldnames: list[str]) -> None:
    """CSV with a header row, written atomically like write_text_atomic."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fieldnames, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    write_text_atomic(path, buf.getvalue())


def ensure_dir(path: str | Path, what: str = "out_dir") -> Path:
    """Create the output folder `path` (field `what`), or one line saying why it cannot be."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise PersonaguardError(f"{what} {path}: a file is in the way (expected a folder); choose another {what}") from None
    except PermissionError:
        raise PersonaguardError(f"{what} {path}: cannot create the folder (permission denied); choose another {what}") from None
    except OSError as exc:
        raise PersonaguardError(f"{what} {path}: cannot create the folder ({exc.strerror}); choose another {what}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise PersonaguardError(f"{what} {path}: folder is not writable (permission denied); choose another {what}")
    return path


def file_mode() -> int:
    """The mode `open()` would give a new file (0644 under the usual umask); mkstemp alone gives 0600."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write via a temp file in the same folder and rename: readers never see half a file."""
    path = Path(path)
    ensure_dir(path.parent, "output folder")
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except PermissionError:
        raise PersonaguardError(f"{path}: cannot write (permission denied on {path.parent})") from None
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
            raise PersonaguardError(f"{path}: cannot write, no space left on the device; free some space and run again") from None
        raise


def write_jsonl_atomic(path: str | Path, rows: Iterable[BaseModel | dict]) -> None:
    write_text_atomic(path, "".join(_dump(r) + "\n" for r in rows))


def load_dataset(path: str | Path):
    """A JSONL file of Examples or Snapshots as a `datasets.Dataset` (lazy import)."""
    import datasets

    return datasets.Dataset.from_json(str(path))
