from personaguard.prompt import prompt_ids, render_messages, reply_ids
from personaguard.schema import Snapshot

SNAP = Snapshot(
    id="s",
    persona={"name": "Kai", "traits": ["loves jazz"], "expressions": ["oh wow"]},
    memories=["Has a cat named Miso"],
    history=[
        {"role": "user", "content": f"turn {i}"} if i % 2 == 0 else {"role": "assistant", "content": f"turn {i}"}
        for i in range(8)
    ],
    message="final question",
)


def test_render_has_every_field_in_order():
    msgs = render_messages(SNAP)
    sys_text = msgs[0]["content"]
    assert msgs[0]["role"] == "system"
    for needle in ("Kai", "loves jazz", "oh wow", "Miso"):
        assert needle in sys_text
    assert [m["content"] for m in msgs[1:-1]] == [f"turn {i}" for i in range(8)]
    assert msgs[-1] == {"role": "user", "content": "final question"}


def test_empty_persona_renders():
    msgs = render_messages(Snapshot(id="e", message="hi"))
    assert msgs[0]["content"].startswith("You are a persona") and len(msgs) == 2


def test_long_history_is_cut_oldest_first(tiny_model_dir):
    from personaguard.models import load_tokenizer

    tok = load_tokenizer(tiny_model_dir)
    full = prompt_ids(tok, SNAP, max_tokens=10_000)
    short = prompt_ids(tok, SNAP, max_tokens=len(full) - 5)
    text = tok.decode(short)
    assert len(short) < len(full) and "turn 0" not in text and "turn 7" in text and "final question" in text
    assert reply_ids(tok, "hello", 8)[-1] == tok.eos_token_id
