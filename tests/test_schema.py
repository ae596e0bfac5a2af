import json

import pytest

from personaguard.errors import PersonaguardError
from personaguard.schema import Snapshot, append_jsonl, iter_valid_lines, read_jsonl, repair_tail, write_jsonl_atomic

GOOD = {"id": "a", "message": "hi", "label": "none"}


def _write(tmp_path, lines):
    p = tmp_path / "d.jsonl"
    p.write_text("\n".join(lines) + "\n")
    return p


def test_optional_fields_and_extras_kept(tmp_path):
    p = _write(tmp_path, [json.dumps({**GOOD, "source": "x", "domain": "legal"})])
    [row] = read_jsonl(p)
    assert row.persona.name == "" and row.history == [] and row.memories == []
    dumped = row.model_dump()
    assert dumped["source"] == "x" and dumped["domain"] == "legal"


@pytest.mark.parametrize(
    "bad,needle",
    [
        ("{not json", "d.jsonl:2: not valid JSON"),
        (json.dumps({"id": "b", "label": "none"}), "d.jsonl:2: field 'message': Field required"),
        (json.dumps({**GOOD, "history": [{"role": "assistant", "content": "x"}]}), "d.jsonl:2: history[0].role must be 'user'"),
        (json.dumps({**GOOD, "label": "weather"}), "d.jsonl:2: field 'label': unknown label 'weather'"),
    ],
)
def test_malformed_row_names_line_and_field(tmp_path, bad, needle):
    p = _write(tmp_path, [json.dumps(GOOD), bad])
    with pytest.raises(PersonaguardError) as exc:
        read_jsonl(p, Snapshot, allowed_labels={"none", "politics"})
    assert needle in str(exc.value)
    assert "\n" not in str(exc.value)


def test_torn_tail_is_repaired_and_skipped(tmp_path):
    p = tmp_path / "x.jsonl"
    append_jsonl(p, GOOD)
    with p.open("a") as fh:
        fh.write('{"id": "torn", "mess')
    assert [r["id"] for r in iter_valid_lines(p)] == ["a"]
    repair_tail(p)
    append_jsonl(p, {**GOOD, "id": "b"})
    assert [r["id"] for r in iter_valid_lines(p)] == ["a", "b"]


def test_atomic_write_leaves_no_temp(tmp_path):
    write_jsonl_atomic(tmp_path / "o.jsonl", [GOOD])
    assert [x.name for x in tmp_path.iterdir()] == ["o.jsonl"]


def test_duplicate_id_names_file_line_and_id(tmp_path):
    p = _write(tmp_path, [json.dumps(GOOD), json.dumps({**GOOD, "id": "b"}), json.dumps(GOOD)])
    with pytest.raises(PersonaguardError, match=r"d\.jsonl:3: field 'id': duplicate id 'a' \(first on line 1\)"):
        read_jsonl(p)


def test_non_utf8_byte_names_file_and_line(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_bytes(json.dumps(GOOD).encode() + b'\n{"id": "b", "message": "caf\xe9"}\n')
    with pytest.raises(PersonaguardError, match=r"d\.jsonl:2: not UTF-8 text \(byte 0xe9"):
        read_jsonl(p)


def test_atomic_write_uses_umask_mode(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        write_jsonl_atomic(tmp_path / "o.jsonl", [GOOD])
    finally:
        os.umask(old)
    assert (tmp_path / "o.jsonl").stat().st_mode & 0o777 == 0o644


def test_disk_full_is_one_line_and_leaves_no_temp(tmp_path, monkeypatch):
    import errno
    import os

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(PersonaguardError, match="no space left on the device"):
        write_jsonl_atomic(tmp_path / "o.jsonl", [GOOD])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", ["file", "file_parent", "read_only"])
def test_ensure_dir_refuses_in_one_line(tmp_path, kind):
    import os

    from personaguard.schema import ensure_dir

    f = tmp_path / "f"
    f.write_text("x")
    if kind == "file":
        target, needle = f, "a file is in the way"
    elif kind == "file_parent":
        target, needle = f / "sub", "a file is in the way"
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        if os.access(ro, os.W_OK):
            pytest.skip("running as root: permissions are not enforced")
        target, needle = ro / "sub", "permission denied"
    with pytest.raises(PersonaguardError, match=needle) as exc:
        ensure_dir(target, "out_dir")
    assert str(target) in str(exc.value) and "out_dir" in str(exc.value)
