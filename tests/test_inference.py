"""Batched inference (inference.py) against unbatched references computed here by hand on the tiny random Llama:
one forward pass per step, no padding, argmax."""

import pytest
import torch

TAG = "<guard>"


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    """The tiny Llama with its output layer scaled up: a random model's next-token distribution is nearly flat,
    and sharper logits keep greedy steps further from a tie, so padding's float noise does not flip an argmax."""
    from personaguard.models import load_model
    from personaguard.prompt import prompt_ids
    from personaguard.schema import Snapshot

    model, tok = load_model(tiny_model_dir)
    with torch.no_grad():
        model.lm_head.weight.mul_(8)
    model.eval()
    chat = [
        Snapshot(
            id="0",
            message="Who are you voting for in the election? What do you think of the president?",
            history=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello!"}],
        ),
        Snapshot(id="1", message="Coffee tomorrow?"),
    ]
    # different lengths in no sorted order, so batches reorder them; the short ones end on different tokens
    prompts = [prompt_ids(tok, chat[0], 256), [1, 7], prompt_ids(tok, chat[1], 256), [1, 5, 9, 12, 40]]
    return model, tok, prompts


def _first_logits(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0, -1].float()


def _greedy_ids(model, tok, ids: list[int], n: int, ban_first: tuple[int, ...] | list[int] = ()) -> list[int]:
    """Greedy decoding one token at a time, no cache, no padding; no token of `ban_first` comes first."""
    ids, out = list(ids), []
    for step in range(n):
        logits = _first_logits(model, ids)
        if step == 0:
            logits[list(ban_first)] = -torch.inf
        t = int(logits.argmax())
        out.append(t)
        ids.append(t)
        if t == tok.eos_token_id:
            break
    return out


def _greedy(model, tok, ids: list[int], n: int, ban_first: tuple[int, ...] | list[int] = ()) -> str:
    return tok.decode(_greedy_ids(model, tok, ids, n, ban_first), skip_special_tokens=True).strip()


def _single_token_tag(tok, token: int) -> str:
    from personaguard.inference import tag_token_ids

    tag = tok.decode([token])
    assert tag_token_ids(tok, tag) == [token], tag  # the token reads back as itself
    return tag


def test_tag_token_ids_are_the_tags_own_tokens_without_special_ones(lm, tiny_model_dir):
    from tokenizers.processors import TemplateProcessing
    from transformers import AutoTokenizer

    from personaguard.inference import tag_token_ids

    _, tok, prompts = lm
    ids = tag_token_ids(tok, TAG)
    assert len(ids) > 1 and tok.decode(ids) == TAG  # a multi-token tag, read back exactly
    assert tok.decode(prompts[2] + ids).endswith("assistant\n" + TAG)  # appended to a prompt, the reply starts with it
    # a tokenizer that adds a BOS token to every text: the tag's ids must still be the tag's alone
    bos_tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    bos_tok.backend_tokenizer.post_processor = TemplateProcessing(
        single="<|im_start|> $A", special_tokens=[("<|im_start|>", bos_tok.bos_token_id)]
    )
    assert bos_tok(TAG)["input_ids"] == [bos_tok.bos_token_id, *ids]
    assert tag_token_ids(bos_tok, TAG) == ids


def test_guard_pass_is_the_product_of_the_tag_tokens_probabilities(lm):
    import math

    from personaguard.inference import guard_pass, guard_scores, tag_token_ids

    model, tok, prompts = lm
    tag = tag_token_ids(tok, TAG)
    g = guard_pass(model, tok, prompts, TAG, batch_size=3)
    for p, score, greedy, first_lp in zip(prompts, g.scores, g.greedy, g.first_logps):
        with torch.no_grad():
            lp = torch.log_softmax(model(torch.tensor([p + tag])).logits[0].float(), -1)
        probs = [lp[len(p) - 1 + k, t].exp().item() for k, t in enumerate(tag)]  # P(tag token k | prompt, tag[:k])
        assert score == pytest.approx(math.prod(probs), rel=1e-4)
        assert first_lp == pytest.approx(lp[len(p) - 1, tag[0]].item(), abs=1e-4)
        assert greedy == (lp[len(p) - 1].argmax().item() == tag[0])
    assert len(set(g.scores)) == len(prompts)  # four different prompts, four different scores
    assert guard_scores(model, tok, prompts, TAG, batch_size=3)[0] == pytest.approx(g.scores, rel=1e-6)
    assert len(g.seconds) == len(prompts)


def test_guard_pass_greedy_is_whether_the_tags_first_token_is_the_argmax(lm):
    from personaguard.inference import guard_pass

    model, tok, prompts = lm
    firsts = [int(_first_logits(model, p).argmax()) for p in prompts]
    assert len(set(firsts)) > 1, firsts  # the prompts' greedy first tokens differ, so the check below has both answers
    for first in set(firsts):
        tag = _single_token_tag(tok, first)
        g = guard_pass(model, tok, prompts, tag, batch_size=3)
        assert g.greedy == [f == first for f in firsts]
        for p, score in zip(prompts, g.scores):
            prob = torch.softmax(_first_logits(model, p), -1)[first].item()
            assert score == pytest.approx(prob, rel=1e-4)  # a one-token tag: its probability alone


def test_generate_replies_is_a_greedy_loop(lm):
    from personaguard.inference import generate_replies

    model, tok, prompts = lm
    replies, secs = generate_replies(model, tok, prompts, 8, batch_size=3)
    assert replies == [_greedy(model, tok, p, 8) for p in prompts]
    assert len(set(replies)) > 1 and all(replies) and len(secs) == len(prompts)


def test_begin_suppress_bans_the_tokens_at_the_first_step_only(lm):
    from personaguard.inference import generate_replies

    model, tok, prompts = lm
    first = int(_first_logits(model, prompts[0]).argmax())
    after_ban = _greedy_ids(model, tok, prompts[0], 6, ban_first=[first])
    later = after_ban[2]  # a token the reply writes once `first` is banned, but not first: it must stay allowed there
    assert later not in (first, after_ban[0])
    banned, _ = generate_replies(model, tok, prompts, 6, batch_size=3, begin_suppress=[first, later])
    assert banned == [_greedy(model, tok, p, 6, ban_first=[first, later]) for p in prompts]
    assert banned[0] == tok.decode(after_ban, skip_special_tokens=True).strip()  # `later` written at step 3
    assert banned[0] != _greedy(model, tok, prompts[0], 6)  # prompts[0] would have begun with `first`


def test_batching_gives_the_answers_of_batch_size_one(lm):
    from personaguard.inference import generate_replies, guard_pass

    model, tok, prompts = lm
    one = guard_pass(model, tok, prompts, TAG, batch_size=1)
    for bs in (2, 3, 16):
        g = guard_pass(model, tok, prompts, TAG, batch_size=bs)
        assert g.scores == pytest.approx(one.scores, rel=1e-4) and g.greedy == one.greedy
        assert g.first_logps == pytest.approx(one.first_logps, abs=1e-4)
    replies = generate_replies(model, tok, prompts, 6, batch_size=1)[0]
    assert generate_replies(model, tok, prompts, 6, batch_size=3)[0] == replies
    assert generate_replies(model, tok, prompts, 6, batch_size=16)[0] == replies


def test_decided_replies_keep_force_and_ban_the_tag(lm):
    """want = begin with the tag: an agreeing reply is kept as given, a disagreeing one is written again, with
    the tag first and the model continuing after it, or with the tag's first token banned at the first step."""
    from personaguard.inference import decided_replies, tag_token_ids

    model, tok, prompts = lm
    tag = tag_token_ids(tok, TAG)
    given = ["not what the model says", " <guard> kept as it is", "<guard> to be banned", "  plain, kept"]
    out = decided_replies(model, tok, prompts, [True, True, False, False], TAG, given, max_new_tokens=8, batch_size=3)
    assert out[0] == f"{TAG} {_greedy(model, tok, prompts[0] + tag, 8 - len(tag))}".strip()  # forced
    assert out[1] == given[1] and out[3] == given[3]  # kept, not generated again
    assert out[2] == _greedy(model, tok, prompts[2], 8, ban_first=tag[:1])  # banned
    assert out[0] != given[0] and not out[2].startswith(TAG)


def test_banning_changes_a_reply_the_model_would_begin_with_the_tag(lm):
    """A two-part tag whose first token is what the model writes first on prompt i: that token is banned."""
    from personaguard.inference import decided_replies, generate_replies, tag_token_ids

    model, tok, prompts = lm
    firsts = [int(_first_logits(model, p).argmax()) for p in prompts]
    # a first token without leading space (replies are compared lstripped), glued to the usual tag
    plain = [k for k, f in enumerate(firsts) if not tok.decode([f])[:1].isspace()]
    assert plain, [tok.decode([f]) for f in firsts]
    i = plain[0]
    tag = tok.decode([firsts[i]]) + TAG
    assert tag_token_ids(tok, tag) == [firsts[i], *tag_token_ids(tok, TAG)]
    greedy, _ = generate_replies(model, tok, prompts, 6)
    assert greedy[i].startswith(tok.decode([firsts[i]]))
    out = decided_replies(model, tok, prompts, [False] * 4, tag, [tag + " x"] * 4, max_new_tokens=6)
    assert out == [_greedy(model, tok, p, 6, ban_first=[firsts[i]]) for p in prompts]
    assert out[i] != greedy[i] and not out[i].startswith(tok.decode([firsts[i]]))


def test_gated_replies_tag_where_the_score_reaches_the_threshold(lm):
    from personaguard.inference import gated_replies, tag_token_ids

    model, tok, prompts = lm
    tag = tag_token_ids(tok, TAG)
    given = ["plain a", "<guard> kept", "<guard> x", "plain d"]
    out = gated_replies(model, tok, prompts, [0.9, 0.5, 0.49, 0.1], 0.5, TAG, given, max_new_tokens=8, batch_size=2)
    assert (
        out
        == [
            f"{TAG} {_greedy(model, tok, prompts[0] + tag, 8 - len(tag))}".strip(),  # 0.9: forced
            "<guard> kept",  # exactly at the threshold: tags, and the reply already does
            _greedy(model, tok, prompts[2], 8, ban_first=tag[:1]),  # 0.49: banned
            "plain d",
        ]
    )


def test_replies_with_tag_decided_continue_after_the_whole_tag(lm):
    from personaguard.inference import replies_with_tag_decided, tag_token_ids

    model, tok, prompts = lm
    tag = tag_token_ids(tok, TAG)
    tagged, secs = replies_with_tag_decided(model, tok, prompts, TAG, True, max_new_tokens=6, batch_size=3)
    assert tagged == [f"{TAG} {_greedy(model, tok, p + tag, 6 - len(tag))}".strip() for p in prompts]
    assert len(secs) == len(prompts)
    # a budget shorter than the tag still gets one token after it
    short, _ = replies_with_tag_decided(model, tok, prompts, TAG, True, max_new_tokens=2)
    assert short == [f"{TAG} {_greedy(model, tok, p + tag, 1)}".strip() for p in prompts]
    untagged, _ = replies_with_tag_decided(model, tok, prompts, TAG, False, max_new_tokens=6)
    assert untagged == [_greedy(model, tok, p, 6, ban_first=tag[:1]) for p in prompts]
