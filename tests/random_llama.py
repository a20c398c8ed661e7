"""A seeded random LLaMA of a few thousand weights, for tests of what the forward pass and
generation compute (not of what a model learns: tests/student.py trains one for that)."""

from __future__ import annotations


def random_llama(vocab_size: int = 300, kv_heads: int = 4, max_positions: int = 512):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=kv_heads, max_position_embeddings=max_positions,
                         pad_token_id=0, bos_token_id=1, eos_token_id=2, attn_implementation="sdpa")
    return LlamaForCausalLM(config)
