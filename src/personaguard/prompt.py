"""The single renderer from a Snapshot to chat messages and token ids.

Training, evaluation and serving all go through `render_messages` + `prompt_ids`, so the adapter
sees at inference exactly the prompt shape it was trained on. The guardrail itself is NOT in the
prompt: the adapter has to carry it (the `system_prompt` baseline adds it via `extra_guidelines`).
"""

from __future__ import annotations

from .schema import Snapshot

GUIDELINES = (
    "Stay in character as this persona at all times. Reply briefly and naturally, like a friend "
    "in a chat, and use what you know about the user when it fits."
)


def system_text(snap: Snapshot, extra_guidelines: str = "") -> str:
    p = snap.persona
    lines = [f"You are {p.name}, a persona chatting with a user." if p.name else "You are a persona chatting with a user."]
    if p.traits:
        lines.append("Your traits: " + "; ".join(p.traits) + ".")
    if p.expressions:
        lines.append("Expressions you often use: " + " | ".join(p.expressions))
    if snap.memories:
        lines.append("What you remember about the user:\n" + "\n".join(f"- {m}" for m in snap.memories))
    lines.append("Guidelines: " + GUIDELINES)
    if extra_guidelines:
        lines.append(extra_guidelines)
    return "\n".join(lines)


def render_messages(snap: Snapshot, extra_guidelines: str = "", history_turns: int | None = None) -> list[dict]:
    """OpenAI-style messages: system, then the (possibly shortened) history, then the final user turn."""
    hist = snap.history
    if history_turns is not None:
        keep = max(0, history_turns) // 2 * 2  # keep whole user/assistant pairs
        hist = hist[len(hist) - keep :] if keep else []
    msgs = [{"role": "system", "content": system_text(snap, extra_guidelines)}]
    msgs += [{"role": m.role, "content": m.content} for m in hist]
    msgs.append({"role": "user", "content": snap.message})
    return msgs


def _template_ids(tokenizer, messages: list[dict]) -> list[int]:
    out = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if isinstance(out, dict) or hasattr(out, "keys"):
        out = out["input_ids"]
    return list(out)


# A message longer than the history budget is kept whole up to this many times the budget: the trigger of
# a long message can sit anywhere in it, and the system prompt (persona, guidelines) must stay.
LONG_MESSAGE_FACTOR = 4


def prompt_ids(tokenizer, snap: Snapshot, max_tokens: int = 1024, extra_guidelines: str = "") -> list[int]:
    """Token ids of the rendered prompt; drops the oldest history pairs until it fits `max_tokens`.

    `max_tokens` is a budget for the history: the system prompt and the final user message are never
    dropped. If the history-free prompt is still longer, it is kept whole up to `LONG_MESSAGE_FACTOR` x
    `max_tokens`; beyond that the message's middle is cut (its start and end are kept, joined by " ... ").
    Cutting the prompt's head instead, as this did before, removed the persona and the chat template's
    opening and, in a long message, the trigger itself (adversarial-v1's `buried` family).
    """
    turns = len(snap.history)
    while True:
        ids = _template_ids(tokenizer, render_messages(snap, extra_guidelines, history_turns=turns))
        if len(ids) <= max_tokens:
            return ids
        if turns == 0:
            break
        turns -= 2
    hard = LONG_MESSAGE_FACTOR * max_tokens
    if len(ids) <= hard:
        return ids
    msg = tokenizer(snap.message, add_special_tokens=False)["input_ids"]
    keep = len(msg)
    while True:
        keep = max(keep - (len(ids) - hard) - 8, 2)  # 8: room for the marker and re-tokenisation at the joins
        cut = snap.model_copy(update={"message": _middle_cut(tokenizer, msg, keep), "history": []})
        ids = _template_ids(tokenizer, render_messages(cut, extra_guidelines))
        if len(ids) <= hard or keep <= 2:
            return ids[-hard:]  # over the cap only when the system prompt alone is: then its head goes


def _middle_cut(tokenizer, ids: list[int], keep: int) -> str:
    """The text of `ids` with all but `keep` tokens cut from the middle (start and end kept)."""
    head = tokenizer.decode(ids[: keep - keep // 2])
    tail = tokenizer.decode(ids[len(ids) - keep // 2 :])
    return f"{head} ... {tail}"


def reply_ids(tokenizer, text: str, max_tokens: int) -> list[int]:
    """Token ids of an assistant reply followed by EOS, so the model also learns where to stop."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][: max_tokens - 1]
    return ids + [tokenizer.eos_token_id]
