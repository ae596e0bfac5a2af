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
