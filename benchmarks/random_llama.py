"""A random LlamaForCausalLM of a given shape, for the benchmarks that time a training step.

Saved and loaded back, so that it runs as training runs a checkpoint (`from_pretrained` picks the
"sdpa" attention that a model built in memory does not)."""

from __future__ import annotations

import tempfile


def random_llama(**config):
    """A LlamaForCausalLM with LlamaConfig(**config), seeded 0, as `from_pretrained` loads it."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        LlamaForCausalLM(LlamaConfig(**config)).save_pretrained(tmp)
        return LlamaForCausalLM.from_pretrained(tmp)
