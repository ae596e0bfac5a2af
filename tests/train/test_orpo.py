import math

import pytest
import torch

from personaguard.train.orpo import additive_mask, mean_reply_logps, odds_ratio_terms, orpo_loss, pack_pairs, packed_forward


def test_orpo_loss_matches_hand_computation():
    c = torch.tensor([-0.5, -1.0])
    r = torch.tensor([-2.0, -0.8])
    parts = orpo_loss(c, r, orpo_lambda=0.1)
    expected_or = []
    for ci, ri in zip(c.tolist(), r.tolist()):
        pc, pr = math.exp(ci), math.exp(ri)
        log_odds = math.log(pc / (1 - pc)) - math.log(pr / (1 - pr))
        expected_or.append(-math.log(1 / (1 + math.exp(-log_odds))))
    nll = -(c.mean().item())
    assert parts["nll"].item() == pytest.approx(nll)
    assert parts["or_loss"].item() == pytest.approx(sum(expected_or) / 2, rel=1e-5)
    assert parts["loss"].item() == pytest.approx(nll + 0.1 * sum(expected_or) / 2, rel=1e-5)


def test_row_mask_leaves_rows_out_of_the_loss():
    c, r = torch.tensor([-0.5, -1.0, -0.2]), torch.tensor([-2.0, -0.8, -3.0])
    rows = [orpo_loss(c[i : i + 1], r[i : i + 1], orpo_lambda=0.1)["loss"].item() for i in range(3)]
    masked = orpo_loss(c, r, orpo_lambda=0.1, row_mask=torch.tensor([True, False, True]))
    assert masked["loss"].item() == pytest.approx((rows[0] + rows[2]) / 2, rel=1e-6)
    assert masked["nll"].item() == pytest.approx(-(c[0] + c[2]).item() / 2)  # logged over the same rows
    assert orpo_loss(c, r, orpo_lambda=0.1, row_mask=torch.zeros(3, dtype=torch.bool))["loss"].item() == 0.0
    # a left-out row whose terms are not finite (chosen log-prob exactly 0) gives no NaN gradient
    c = torch.tensor([0.0, -1.0], requires_grad=True)
    orpo_loss(c, torch.tensor([-2.0, -0.8]), orpo_lambda=0.1, row_mask=torch.tensor([False, True]))["loss"].backward()
    assert torch.isfinite(c.grad).all() and c.grad[0] == 0


def test_odds_ratio_matches_trl():
    orpo_trainer = pytest.importorskip("trl.experimental.orpo.orpo_trainer")
    from types import SimpleNamespace

    c = torch.tensor([-0.3, -1.7, -0.01, -4.0])
    r = torch.tensor([-1.2, -0.9, -3.0, -4.5])
    beta = 0.1
    fake = SimpleNamespace(beta=beta, accelerator=SimpleNamespace(device="cpu"))
    losses, _, _, _, trl_log_odds = orpo_trainer.ORPOTrainer.odds_ratio_loss(fake, c, r)
    ours, log_odds = odds_ratio_terms(c, r)
    # TRL returns beta * log sigmoid(log_odds) and subtracts it; we return -log sigmoid(log_odds).
    torch.testing.assert_close(-beta * ours, losses)
    torch.testing.assert_close(log_odds.mean(), trl_log_odds)


def _tiny_model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
    )
    return LlamaForCausalLM(cfg).eval()


def _reference_logps(model, prompt, reply):
    ids = torch.tensor([prompt + reply])
    logp = torch.log_softmax(model(ids).logits[0].float(), -1)
    P = len(prompt)
    return torch.stack([logp[P - 1 + k, t] for k, t in enumerate(reply)]).mean()


def test_packed_pairs_equal_separate_sequences():
    model = _tiny_model()
    feats = [
        {"prompt_ids": [1, 2, 3, 4, 5], "chosen_ids": [6, 7, 8], "rejected_ids": [9, 10]},
        {"prompt_ids": [11, 12], "chosen_ids": [13], "rejected_ids": [14, 15, 16, 17]},
    ]
    batch = pack_pairs(feats, pad_id=0)
    with torch.no_grad():
        out = model(
            input_ids=batch["input_ids"],
            position_ids=batch["position_ids"],
            attention_mask=additive_mask(batch["allow"], torch.float32),
        )
        chosen = mean_reply_logps(out.logits, batch["c_src"], batch["c_tgt"], batch["c_mask"])
        rejected = mean_reply_logps(out.logits, batch["r_src"], batch["r_tgt"], batch["r_mask"])
        parts = packed_forward(model, batch, orpo_lambda=0.1)  # the decoder + head-on-scored-rows path
        assert parts["chosen_logp"].item() == pytest.approx(chosen.mean().item(), abs=1e-5)
        assert parts["rejected_logp"].item() == pytest.approx(rejected.mean().item(), abs=1e-5)
        for b, f in enumerate(feats):
            assert chosen[b].item() == pytest.approx(_reference_logps(model, f["prompt_ids"], f["chosen_ids"]).item(), abs=1e-5)
            assert rejected[b].item() == pytest.approx(
                _reference_logps(model, f["prompt_ids"], f["rejected_ids"]).item(), abs=1e-5
            )


def test_packed_forward_backpropagates():
    model = _tiny_model().train()
    feats = [{"prompt_ids": [1, 2, 3], "chosen_ids": [4, 5], "rejected_ids": [6]}]
    parts = packed_forward(model, pack_pairs(feats, 0), orpo_lambda=0.1)
    parts["loss"].backward()
    assert torch.isfinite(parts["loss"])
    assert model.model.embed_tokens.weight.grad.abs().sum() > 0


def test_decision_token_weight_weights_the_first_reply_token():
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 11)
    src = torch.tensor([[1, 2, 3], [2, 3, 0]])
    tgt = torch.tensor([[4, 5, 6], [7, 8, 0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    logp = torch.log_softmax(logits, -1)
    tok = [[logp[b, s, t].item() for s, t in zip(src[b].tolist(), tgt[b].tolist())] for b in range(2)]
    plain = mean_reply_logps(logits, src, tgt, mask)
    assert plain.tolist() == pytest.approx([sum(tok[0]) / 3, sum(tok[1][:2]) / 2], rel=1e-6)
    assert mean_reply_logps(logits, src, tgt, mask, 1.0).tolist() == plain.tolist()
    weighted = mean_reply_logps(logits, src, tgt, mask, 5.0)
    assert weighted.tolist() == pytest.approx(
        [(5 * tok[0][0] + tok[0][1] + tok[0][2]) / 7, (5 * tok[1][0] + tok[1][1]) / 6], rel=1e-6
    )
    assert mask.tolist() == [[True, True, True], [True, True, False]]  # the caller's mask is not modified


def _tiny_peft():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(_tiny_model(), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    for n, p in model.named_parameters():
        if "lora_B" in n:  # move the adapter away from the base (LoRA starts as an exact no-op)
            torch.nn.init.normal_(p, std=0.5)
    return model


ANCHOR_FEATS = [
    {"prompt_ids": [1, 2, 3, 4], "chosen_ids": [5, 6, 7], "rejected_ids": [8, 9], "neutral": False},
    {"prompt_ids": [11, 12], "chosen_ids": [13, 14], "rejected_ids": [15, 16, 17], "neutral": True},
]


def test_anchor_scores_neutral_rows_against_the_base_model():
    model = _tiny_peft().eval()
    batch = pack_pairs(ANCHOR_FEATS, 0)
    assert batch["neutral"].tolist() == [False, True]
    with torch.no_grad():
        orpo = packed_forward(model, batch, orpo_lambda=0.1, decision_token_weight=3.0)
        anchored = packed_forward(
            model,
            batch,
            orpo_lambda=0.1,
            decision_token_weight=3.0,
            neutral_loss="anchor",
            anchor_weight=2.0,
            tag_anchor_weight=0.5,
        )
        kl_only = packed_forward(
            model, batch, orpo_lambda=0.1, decision_token_weight=3.0, neutral_loss="anchor", tag_anchor_weight=0.0
        )
        # reference: the neutral row's prompt + chosen alone, adapter on and off, full-vocabulary KL per reply token
        f = ANCHOR_FEATS[1]
        ids = torch.tensor([f["prompt_ids"] + f["chosen_ids"]])
        P, C = len(f["prompt_ids"]), len(f["chosen_ids"])
        lp_a = torch.log_softmax(model(ids).logits[0, P - 1 : P + C - 1], -1)
        with model.disable_adapter():
            lp_b = torch.log_softmax(model(ids).logits[0, P - 1 : P + C - 1], -1)
        kl_tok = (lp_b.exp() * (lp_b - lp_a)).sum(-1)
        kl = (3.0 * kl_tok[0] + kl_tok[1:].sum()) / (3.0 + C - 1)
        # the rejected reply's first token (the tag, in real data) at the reply's start: its log-prob shift
        shift = lp_a[0, f["rejected_ids"][0]] - lp_b[0, f["rejected_ids"][0]]
        huber = torch.nn.functional.huber_loss(shift, torch.zeros(()), delta=1.0)
        trig = orpo_loss(
            *[
                packed_forward(model, pack_pairs(ANCHOR_FEATS[:1], 0), 0.1, 3.0)[k][None]
                for k in ("chosen_logp", "rejected_logp")
            ],
            orpo_lambda=0.1,
        )["loss"]
    assert kl.item() > 1e-3 and abs(shift.item()) > 1e-3  # the adapter differs from the base: the anchor has work to do
    assert anchored["anchor_kl"].item() == pytest.approx(kl.item(), rel=1e-4)
    assert anchored["tag_shift"].item() == pytest.approx(shift.item(), rel=1e-4)
    assert anchored["loss"].item() == pytest.approx((trig.item() + 2.0 * (kl.item() + 0.5 * huber.item())) / 2, rel=1e-4)
    assert kl_only["loss"].item() == pytest.approx((trig.item() + kl.item()) / 2, rel=1e-4)
    # ORPO parts are logged over the triggering row only; plain ORPO ignores the flag
    assert anchored["nll"].item() == pytest.approx(trig.item() - 0.1 * anchored["or_loss"].item(), rel=1e-4)
    assert "anchor_kl" not in orpo and orpo["loss"].item() != pytest.approx(anchored["loss"].item())


@pytest.mark.parametrize("neutral_loss", ["orpo", "anchor"])
def test_row_mask_in_a_packed_batch_counts_only_those_rows(neutral_loss):
    model = _tiny_peft().eval()
    both = pack_pairs(ANCHOR_FEATS, 0)
    both["row_mask"] = both["neutral"].clone()  # a neutral-only step of joint training: the triggering row drops out
    with torch.no_grad():
        weighted = packed_forward(model, both, orpo_lambda=0.1, decision_token_weight=3.0, neutral_loss=neutral_loss)
        alone = packed_forward(
            model, pack_pairs(ANCHOR_FEATS[1:], 0), orpo_lambda=0.1, decision_token_weight=3.0, neutral_loss=neutral_loss
        )
        unweighted = packed_forward(
            model, pack_pairs(ANCHOR_FEATS, 0), orpo_lambda=0.1, decision_token_weight=3.0, neutral_loss=neutral_loss
        )
    assert weighted["loss"].item() == pytest.approx(alone["loss"].item(), rel=1e-5)
    assert weighted["loss"].item() != pytest.approx(unweighted["loss"].item(), rel=1e-3)
    assert weighted["nll"].item() == pytest.approx(alone["nll"].item(), rel=1e-5)  # logged over the kept row


def test_anchor_is_zero_for_an_untrained_adapter_and_trains_only_the_adapter():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(_tiny_model(), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear")).train()
    neutral_only = pack_pairs([dict(ANCHOR_FEATS[1])], 0)
    parts = packed_forward(model, neutral_only, orpo_lambda=0.1, neutral_loss="anchor")
    assert parts["anchor_kl"].item() == pytest.approx(0.0, abs=1e-6)  # LoRA B = 0: the adapter is the base model
    model = _tiny_peft().train()
    parts = packed_forward(model, neutral_only, orpo_lambda=0.1, neutral_loss="anchor")
    parts["loss"].backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert all("lora_" in n for n in grads) and any(g is not None and g.abs().sum() > 0 for g in grads.values())
