"""Small seeded decoders of six architectures, as ``file.py:factory`` for hone (tests only).

``initializer_range`` is raised above transformers' default so that the random models are confident:
greedy decoding then has clear margins and float-level differences cannot flip a token.
"""

from __future__ import annotations

import tokenizers
import torch
from tokenizers import decoders, models, pre_tokenizers, trainers
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
    PhiConfig,
    PhiForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

VOCAB = 320
SHARED = {"vocab_size": VOCAB, "initializer_range": 0.2, "eos_token_id": 0, "bos_token_id": 0}
ROPE = {"num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 64, "intermediate_size": 128}
ROPE["max_position_embeddings"] = 256


def gpt2() -> torch.nn.Module:
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=4, n_embd=64, n_positions=256, **SHARED)).eval()


def llama() -> torch.nn.Module:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(num_key_value_heads=2, **ROPE, **SHARED)).eval()


def qwen2() -> torch.nn.Module:
    torch.manual_seed(0)
    return Qwen2ForCausalLM(Qwen2Config(num_key_value_heads=2, **ROPE, **SHARED)).eval()


def phi() -> torch.nn.Module:
    torch.manual_seed(0)
    return PhiForCausalLM(PhiConfig(partial_rotary_factor=0.5, **ROPE, **SHARED)).eval()


def phi3() -> torch.nn.Module:
    """Phi-3 (Phi-3-mini, Phi-4-mini): one fused qkv projection, rotary sliced by cos's own width."""
    torch.manual_seed(0)
    return Phi3ForCausalLM(Phi3Config(num_key_value_heads=2, pad_token_id=0, **ROPE, **SHARED)).eval()


def neox() -> torch.nn.Module:
    """GPT-NeoX (Pythia): fused qkv per head, partial rotary, LayerNorm."""
    torch.manual_seed(0)
    return GPTNeoXForCausalLM(GPTNeoXConfig(rotary_pct=0.5, **ROPE, **SHARED)).eval()


def byte_tokenizer() -> tokenizers.Tokenizer:
    """A byte-level BPE (id 0 = <|endoftext|>) trained on a few sentences: fits VOCAB."""
    tokenizer = tokenizers.Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    text = ["the quick brown fox jumps over the lazy dog", "hello world, hello hone"] * 20
    tokenizer.train_from_iterator(text, trainer)
    return tokenizer


def gpt2_with_tokenizer() -> tuple[torch.nn.Module, tokenizers.Tokenizer]:
    return gpt2(), byte_tokenizer()
