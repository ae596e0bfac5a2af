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


def test_a_long_message_keeps_the_persona_and_its_whole_text(tiny_model_dir):
    from personaguard.models import load_tokenizer

    tok = load_tokenizer(tiny_model_dir)
    words = " ".join(f"w{i}" for i in range(15))
    snap = SNAP.model_copy(update={"message": f"{words} TRIGGER in the middle {words} the end"})
    budget = len(prompt_ids(tok, Snapshot(id="s", message="x"))) + 10
    ids = prompt_ids(tok, snap, max_tokens=budget)
    text = tok.decode(ids)
    assert budget < len(ids) <= 4 * budget and " ... " not in text
    # the history goes first; the system prompt and every word of the message stay
    assert text.startswith(tok.decode(prompt_ids(tok, Snapshot(id="s", message="x"))[:3]))
    assert "You are" in text and "turn 7" not in text and "TRIGGER in the middle" in text and "the end" in text


def test_a_message_over_the_hard_cap_loses_its_middle_not_the_persona(tiny_model_dir):
    from personaguard.models import load_tokenizer
    from personaguard.prompt import LONG_MESSAGE_FACTOR

    tok = load_tokenizer(tiny_model_dir)
    snap = SNAP.model_copy(update={"message": "START " + " ".join(f"w{i}" for i in range(2000)) + " END"})
    budget = 64
    ids = prompt_ids(tok, snap, max_tokens=budget)
    text = tok.decode(ids)
    assert len(ids) <= LONG_MESSAGE_FACTOR * budget
    assert "You are" in text and "START" in text and "END" in text and " ... " in text and "w1000 " not in text
