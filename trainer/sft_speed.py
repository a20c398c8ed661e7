"""Two kinds of work TRL's SFT step does on a CPU that the loss does not need, and how they are skipped.

Neither changes what is learned: the loss and its gradient are the same computation on the same
positions, only work whose result is thrown away is left out.

- **The padding mask.** TRL pads every batch on the right. A causal model's real tokens never
  attend to a later position, so a right-padded batch needs no mask beyond the causal one: the
  pad positions' outputs are garbage either way and their labels are -100. With a mask,
  transformers hands SDPA a dense 4-D mask and PyTorch's CPU kernel computes every query against
  every key; without one it takes the causal path and skips the upper triangle.
- **The LM head at unlabelled positions.** TRL's fused LM head scores (head, log-softmax,
  entropy, top-1) only the positions with a label on CUDA and XPU, but every position elsewhere
  (a fixed shape per batch suits compiled backends). On a CPU nothing is compiled, and with
  assistant-only loss about a third of a workflow example's positions have a label.

Measured on the `--demo`'s SFT (4-layer tiny LLaMA, batches of 4 x ~900 tokens, 2 cores, the
same 40 batches): 0.390 s a step as TRL runs it, 0.335 s without the mask, 0.251 s with both,
training loss 4.4145 in all three (benchmarks/bench_trainer.py measures the whole step against a
plain PyTorch loop).
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def is_right_padded(attention_mask) -> bool:
    """Whether each row of a 0/1 mask is ones, then zeros (or all ones)."""
    return bool((attention_mask[:, 1:] <= attention_mask[:, :-1]).all())


def _drop_right_padding_mask(module, args, kwargs):
    mask = kwargs.get("attention_mask")
    if module.training and mask is not None and mask.dim() == 2 and is_right_padded(mask):
        kwargs["attention_mask"] = None
    return args, kwargs


def causal_mask_for_right_padding(model) -> None:
    """Train `model` on right-padded batches with the causal mask alone.

    Only while training: generation pads on the left, and its masks are left as they are."""
    model.register_forward_pre_hook(_drop_right_padding_mask, with_kwargs=True)


def score_labelled_positions_only() -> bool:
    """Have TRL's fused LM head score only labelled positions on a CPU too (as it does on CUDA).

    TRL decides per call through `trl.trainer.utils._use_triton(device)`; this wraps that name
    there alone (the Triton kernels keep their own). Returns False, changing nothing, with a TRL
    that has no such switch: training is then as fast as that TRL makes it."""
    try:
        import trl.trainer.utils as trl_utils
    except ImportError:
        return False
    decide = getattr(trl_utils, "_use_triton", None)
    if decide is None or not hasattr(trl_utils, "add_fused_lm_head"):
        logger.debug("this TRL has no fused LM head switch; every position is scored on CPU")
        return False
    if getattr(decide, "understudy_compact_on_cpu", False):
        return True

    def compact_on_cpu_too(device) -> bool:
        return device.type == "cpu" or decide(device)

    compact_on_cpu_too.understudy_compact_on_cpu = True
    trl_utils._use_triton = compact_on_cpu_too
    return True
