import numpy as np
import pytest

from personaguard.errors import PersonaguardError
from personaguard.evaluate.baselines import (
    EmbeddingClassifier,
    LlamaGuardClient,
    embedding_inputs,
    llama_guard_prompt,
    llama_guard_raw_prompt,
    parse_llama_guard,
)
from personaguard.guardrails import Guardrail
from personaguard.schema import Message, Persona, Snapshot
from tests.scripted_openai import ScriptedOpenAI

GUARD = Guardrail(
    name="politics",
    trigger="The user asks for the persona's political views: elections, parties, politicians.",
    resolution="Begin the reply with the tag, then say kindly that you keep out of politics.",
)


def snap(message: str, history: tuple[str, ...] = (), label: str = "none", i: int = 0) -> Snapshot:
    hist = [Message(role="user" if k % 2 == 0 else "assistant", content=t) for k, t in enumerate(history)]
    return Snapshot(
        id=f"s{i}",
        persona=Persona(name="Mia", traits=["cheerful"]),
        memories=["has a dog"],
        history=hist,
        message=message,
        label=label,
    )


SNAP = snap("Who are you voting for?", ("hey!", "Hi! How's your day?"), "politics")


@pytest.fixture
def server():
    with ScriptedOpenAI() as s:
        yield s


# ---------------------------------------------------------------- Llama Guard prompt and parsing


def test_llama_guard_prompt_has_the_category_and_the_conversation():
    (msg,) = llama_guard_prompt(GUARD, SNAP)
    text = msg["content"]
    assert msg["role"] == "user"
    assert f"<BEGIN UNSAFE CONTENT CATEGORIES>\nS1: Politics.\n{GUARD.trigger}\n<END UNSAFE CONTENT CATEGORIES>" in text
    conv = text.split("<BEGIN CONVERSATION>")[1].split("<END CONVERSATION>")[0]
    assert conv.strip() == "User: hey!\n\nAgent: Hi! How's your day?\n\nUser: Who are you voting for?"
    assert text.startswith("Task: Check if there is unsafe content in 'User' messages")
    assert "ONLY THE LAST User message" in text and "First line must read 'safe' or 'unsafe'." in text
    assert "S2:" not in text and "has a dog" not in text  # one category; persona system text is not moderated


def test_llama_guard_prompt_can_shorten_history_and_raw_prompt_wraps_it():
    text = llama_guard_prompt(GUARD, SNAP, history_turns=0)[0]["content"]
    assert "hey!" not in text and "User: Who are you voting for?" in text
    raw = llama_guard_raw_prompt(GUARD, SNAP)
    assert raw.startswith("<|start_header_id|>user<|end_header_id|>\n\nTask:")
    assert raw.endswith("<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
    assert "<|begin_of_text|>" not in raw


@pytest.mark.parametrize(
    "text, triggered",
    [
        ("unsafe\nS1", True),
        ("\n  Unsafe  \nS1", True),
        ("unsafe", True),
        ("safe", False),
        ("safe\nunsafe", False),
        ("", False),
        (None, False),
        ("I cannot help with that.", False),
    ],
)
def test_parse_llama_guard(text, triggered):
    assert parse_llama_guard(text) is triggered


# ---------------------------------------------------------------- Llama Guard client


def test_client_sends_the_raw_prompt_to_completions(server):
    server.completion("unsafe\nS1").completion("safe")
    lg = LlamaGuardClient(server.base_url, "llama-guard-3")
    trig, secs = lg.classify(GUARD, SNAP)
    assert trig is True and secs > 0
    assert lg.classify(GUARD, snap("I baked bread today!"))[0] is False
    req = server.requests[0]
    assert req["path"] == "/v1/completions"
    assert req["json"]["prompt"] == llama_guard_raw_prompt(GUARD, SNAP)
    assert req["json"]["model"] == "llama-guard-3" and req["json"]["max_tokens"] == 10


def test_client_chat_mode_sends_the_messages(server):
    server.chat("unsafe\nS1")
    lg = LlamaGuardClient(server.base_url, "llama-guard-3", api="chat")
    assert lg.classify(GUARD, SNAP)[0] is True
    req = server.requests[0]
    assert req["path"] == "/v1/chat/completions" and req["json"]["messages"] == llama_guard_prompt(GUARD, SNAP)


def test_client_retries_a_server_error(server):
    server.error(502).completion("unsafe\nS1")
    sleeps = []
    lg = LlamaGuardClient(server.base_url, "llama-guard-3", sleep=sleeps.append)
    assert lg.classify(GUARD, SNAP)[0] is True
    assert len(server.requests) == 2 and len(sleeps) == 1


def test_client_gives_up_on_a_rejected_request_at_once(server, monkeypatch):
    key = "sk-lg-s3cr3t-0123456789"
    monkeypatch.setenv("PG_LG_KEY", key)
    server.error(404, f"model not found (key {key})")
    sleeps = []
    lg = LlamaGuardClient(server.base_url, "llama-guard-3", "PG_LG_KEY", sleep=sleeps.append)
    with pytest.raises(PersonaguardError, match="refused the request \\(404") as info:
        lg.classify(GUARD, SNAP)
    assert key not in str(info.value) and sleeps == [] and len(server.requests) == 1


def test_client_needs_a_url_or_a_folder():
    with pytest.raises(PersonaguardError, match="base_url"):
        LlamaGuardClient(None, "meta-llama/Llama-Guard-3-8B")
    with pytest.raises(PersonaguardError, match="api"):
        LlamaGuardClient("http://127.0.0.1:9/v1", "x", api="responses")


def test_client_runs_a_local_folder(tiny_model_dir):
    lg = LlamaGuardClient(None, tiny_model_dir)
    trig, secs = lg.classify(GUARD, SNAP)
    assert isinstance(trig, bool) and secs > 0  # random tiny model: the answer itself is noise
    assert lg.classify(GUARD, snap("hello"))[1] > 0  # model loaded once, reused


# ---------------------------------------------------------------- embedding classifier

POLITICAL = [
    "Who are you voting for in the next election?",
    "What do you think of the president's new tax policy?",
    "Are you a Democrat or a Republican?",
    "Should the government ban protests outside parliament?",
    "Which party do you support, left or right?",
    "What's your opinion on the prime minister's immigration law?",
    "Do you think socialism is better than capitalism?",
    "Who should win the senate race this year?",
]
NEUTRAL = [
    "I baked sourdough bread this morning!",
    "My dog chased a squirrel at the park today.",
    "What's your favourite kind of pizza?",
    "I'm so tired, work was long today.",
    "Have you seen any good movies lately?",
    "I just got back from a hike in the mountains.",
    "Do you like rainy days or sunny ones more?",
    "My sister is visiting next weekend, so excited.",
]
HELD_OUT_POLITICAL = [
    "Do you agree with the opposition leader about the budget?",
    "Did you vote in the referendum?",
    "What's your take on the war between those two countries?",
    "Is the new abortion law fair in your view?",
]
HELD_OUT_NEUTRAL = [
    "I'm learning to play the guitar, it's hard!",
    "What did you have for breakfast?",
    "My cat knocked a glass off the table again lol",
    "I love the smell of coffee in the morning.",
]


@pytest.fixture(scope="module")
def fitted():
    train = [snap(t, label="politics", i=i) for i, t in enumerate(POLITICAL)]
    train += [snap(t, i=100 + i) for i, t in enumerate(NEUTRAL)]
    labels = [s.label == "politics" for s in train]
    return EmbeddingClassifier(batch_size=4).fit(train, labels)


def test_embedding_classifier_separates_held_out_sentences(fitted):
    test = [snap(t, ("hi", "Hey! What's up?")) for t in HELD_OUT_POLITICAL + HELD_OUT_NEUTRAL]
    probs, secs = fitted.predict_proba(test)
    pos, neg = probs[: len(HELD_OUT_POLITICAL)], probs[len(HELD_OUT_POLITICAL) :]
    assert min(pos) > max(neg), (pos, neg)
    assert sum(p > 0.5 for p in pos) + sum(p < 0.5 for p in neg) >= 7
    assert len(secs) == len(test) and all(s > 0 for s in secs)


def test_embedding_inputs_are_final_message_and_previous_assistant_turn(fitted):
    assert embedding_inputs(SNAP) == ("Who are you voting for?", "Hi! How's your day?")
    assert embedding_inputs(snap("hello")) == ("hello", "")
    feats = fitted.embed([SNAP, snap("hello")])
    dim = feats.shape[1] // 2
    assert feats.shape == (2, 768)
    assert np.linalg.norm(feats[0, dim:]) == pytest.approx(1.0, abs=1e-4)  # context embedded
    assert not feats[1, dim:].any()  # no history: zero context


def test_embedding_classifier_refuses_bad_input(fitted):
    with pytest.raises(PersonaguardError, match="both classes"):
        EmbeddingClassifier().fit([snap("a"), snap("b")], [0, 0])
    with pytest.raises(PersonaguardError, match="labels"):
        EmbeddingClassifier().fit([snap("a"), snap("b")], [0])
    with pytest.raises(PersonaguardError, match="before fit"):
        EmbeddingClassifier().predict_proba([snap("a")])
    with pytest.raises(PersonaguardError, match="not found"):
        EmbeddingClassifier(model_path="/nonexistent/minilm").encoder()
