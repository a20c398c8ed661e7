"""Attention in float32 while the rest of a CPU training step runs in bf16 autocast.

On a CPU that computes bf16 (AMX, AVX512-BF16) bf16 autocast makes the matrix products several
times faster, but PyTorch's CPU flash attention is slower in bf16 than in float32, its backward
most of all: under autocast, SDPA casts the query (float32 after the rotary embedding), keys and
values to bf16. Measured with torch 2.13 on a 2-core Xeon with AMX, one thread: on the `--demo`'s SFT
batches the attention backward took 3.65 s of 12 steps' 8.35 s in bf16 and 1.62 s of 6.02 s in
float32, and a copy warm-up step (16 rows of 97 tokens) 107 ms with float32 attention against
150-184 ms all in float32 and 158-172 ms all in bf16 (docs/learning.md §6). `trainer sft` uses it
with `sft.float32_attention = true` when it trains in bf16 on a CPU: off by default, since the
demo's students trained so differ by rounding and one seed's of three missed the argument-match
goal (0.843; 0.921 without). The demo's copy warm-up stays float32 for the same reason.

`float32_attention_under_cpu_autocast()` has the "sdpa" attention run its inputs in float32 with
autocast off, whenever CPU autocast is on; everywhere else (CUDA, inference, float32 training) the
function it wraps runs unchanged, so installing it is harmless to anything else in the process.
The result is the attention of the float32 values, more exact than bf16's; the layer after it
(`o_proj`) casts it back under autocast.
"""

from __future__ import annotations

from typing import Any

_WRAPPED_MARK = "_understudy_float32_on_cpu_autocast"


def _float32_on_cpu_autocast(inner):
    import torch

    def attention(module, query, key, value, attention_mask, *args: Any, **kwargs: Any):
        if query.device.type != "cpu" or not torch.is_autocast_enabled("cpu"):
            return inner(module, query, key, value, attention_mask, *args, **kwargs)
        if attention_mask is not None and attention_mask.is_floating_point():
            attention_mask = attention_mask.float()  # an additive mask must match the query's dtype
        with torch.autocast("cpu", enabled=False):
            return inner(module, query.float(), key.float(), value.float(), attention_mask, *args, **kwargs)

    setattr(attention, _WRAPPED_MARK, True)
    return attention


def float32_attention_under_cpu_autocast() -> None:
    """Wrap transformers' "sdpa" attention as the module docstring says (once per process)."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    current = ALL_ATTENTION_FUNCTIONS["sdpa"]
    if not getattr(current, _WRAPPED_MARK, False):
        ALL_ATTENTION_FUNCTIONS["sdpa"] = _float32_on_cpu_autocast(current)
