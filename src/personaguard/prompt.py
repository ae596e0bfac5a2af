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


def prompt_ids(tokenizer, snap: Snapshot, max_tokens: int = 1024, extra_guidelines: str = "") -> list[int]:
    """Token ids of the rendered prompt; drops the oldest history pairs until it fits `max_tokens`.

    If even the history-free prompt is too long, it keeps the last `max_tokens` ids (the final user
    message and the generation prompt matter most).
    """
    turns = len(snap.history)
    while True:
        ids = _template_ids(tokenizer, render_messages(snap, extra_guidelines, history_turns=turns))
        if len(ids) <= max_tokens or turns == 0:
            return ids[-max_tokens:]
        turns -= 2


def reply_ids(tokenizer, text: str, max_tokens: int) -> list[int]:
    """Token ids of an assistant reply followed by EOS, so the model also learns where to stop."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][: max_tokens - 1]
    return ids + [tokenizer.eos_token_id]
