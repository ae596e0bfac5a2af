import math

import pytest
import torch

from personaguard.orpo import additive_mask, mean_reply_logps, odds_ratio_terms, orpo_loss, pack_pairs, packed_forward


def test_orpo_loss_matches_hand_computation():
    c = torch.tensor([-0.5, -1.0])
    r = torch.tensor([-2.0, -0.8])
    parts = orpo_loss(c, r, lam=0.1)
    expected_or = []
    for ci, ri in zip(c.tolist(), r.tolist()):
        pc, pr = math.exp(ci), math.exp(ri)
        log_odds = math.log(pc / (1 - pc)) - math.log(pr / (1 - pr))
        expected_or.append(-math.log(1 / (1 + math.exp(-log_odds))))
    nll = -(c.mean().item())
    assert parts["nll"].item() == pytest.approx(nll)
    assert parts["or_loss"].item() == pytest.approx(sum(expected_or) / 2, rel=1e-5)
    assert parts["loss"].item() == pytest.approx(nll + 0.1 * sum(expected_or) / 2, rel=1e-5)


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
    cfg = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2)
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
        out = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                    attention_mask=additive_mask(batch["allow"], torch.float32))
        chosen = mean_reply_logps(out.logits, batch["c_src"], batch["c_tgt"], batch["c_mask"])
        rejected = mean_reply_logps(out.logits, batch["r_src"], batch["r_tgt"], batch["r_mask"])
        parts = packed_forward(model, batch, lam=0.1)  # the decoder + head-on-scored-rows path
        assert parts["chosen_logp"].item() == pytest.approx(chosen.mean().item(), abs=1e-5)
        assert parts["rejected_logp"].item() == pytest.approx(rejected.mean().item(), abs=1e-5)
        for b, f in enumerate(feats):
            assert chosen[b].item() == pytest.approx(_reference_logps(model, f["prompt_ids"], f["chosen_ids"]).item(), abs=1e-5)
            assert rejected[b].item() == pytest.approx(_reference_logps(model, f["prompt_ids"], f["rejected_ids"]).item(), abs=1e-5)


def test_packed_forward_backpropagates():
    model = _tiny_model().train()
    feats = [{"prompt_ids": [1, 2, 3], "chosen_ids": [4, 5], "rejected_ids": [6]}]
    parts = packed_forward(model, pack_pairs(feats, 0), lam=0.1)
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
    assert weighted.tolist() == pytest.approx([(5 * tok[0][0] + tok[0][1] + tok[0][2]) / 7, (5 * tok[1][0] + tok[1][1]) / 6], rel=1e-6)
    assert mask.tolist() == [[True, True, True], [True, True, False]]  # the caller's mask is not modified
