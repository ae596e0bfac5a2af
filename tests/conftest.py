"""Shared fixtures: a tiny random Llama with a tiny BPE tokenizer and a chat template, saved to a
folder and loaded by path exactly like a real model (no hub access)."""

from __future__ import annotations

import pytest

CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

CORPUS = [
    "You are a persona chatting with a user. Your traits: curious; kind. Guidelines: stay in character.",
    "<guard> I keep out of politics, but tell me about your week!",
    "Who are you voting for in the election? What do you think of the president?",
    "haha nice, I love baking bread and hiking with my dog on weekends",
    "Can we meet for coffee tomorrow? What is your phone number?",
    "Should I take ibuprofen for my headache? Is this contract legal?",
    "What remember user memories history assistant system traits expressions",
] * 20


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny-llama")
    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(CORPUS, trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(out)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.bos_token_id,
        tie_word_embeddings=False,
    )
    LlamaForCausalLM(cfg).save_pretrained(out)
    return str(out)


@pytest.fixture
def pg_home(tmp_path, monkeypatch):
    """Isolated PERSONAGUARD_HOME (user guardrails); models still resolve by path."""
    monkeypatch.setenv("PERSONAGUARD_HOME", str(tmp_path / "home"))
    return tmp_path / "home"
