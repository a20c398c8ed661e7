"""Keep freed tensor memory in the process instead of handing it back to the kernel on every free.

glibc's malloc serves any block above its mmap threshold (at most 32 MB) with a fresh `mmap` and
unmaps it on free. A training step on CPU allocates and frees the same large activations (SmolLM2's
logits alone are 2 x 880 x 49,152 floats) every step, so every step the kernel zeroes those pages
again: measured on 2 cores, 160,000 page faults a second and 80% of CPU time in the kernel during
SmolLM2 LoRA SFT. Raising the mmap and trim thresholds keeps the blocks in malloc's free lists for
the next step, as jemalloc or tcmalloc would. Side by side (one core each, same 6 steps of
`--preset smollm2-demo`'s SFT): 58 against 44 tokens/s (1.32x), kernel time 57 s against 116 s,
peak memory 8.6 GB against 8.2 GB. benchmarks/bench_allocator.py repeats the comparison.

The thresholds can only be set before the process starts (GLIBC_TUNABLES is read by the dynamic
loader), so the `trainer` command re-executes itself once with them for the stages that train or
generate. The price is memory: freed blocks stay in the process, and blocks of a new size each step
fragment them, so a run's memory climbs (SmolLM2's preset reached 17 GB and was killed for memory
on a 23 GB machine). Two things keep it bounded: SFT pads each batch to a multiple of
`sft.pad_to_multiple_of` tokens, so a few shapes recur and their blocks are reused whole, and
`trainer run` hands the free memory back between stages (release_free_memory), so evaluation does
not start on top of what training kept. Nothing changes when the C library is not glibc, when the user has
set GLIBC_TUNABLES themselves, or with UNDERSTUDY_SYSTEM_MALLOC=1.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Optional, Sequence

# 4 GiB: no tensor a CPU run makes is served by mmap. 16 GiB: the heap is never trimmed mid-run.
TUNABLES = "glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=17179869184"

# The stages whose steps allocate large tensors over and over. `serve` is left out: a long-lived
# server should give memory back after a burst of requests.
HEAVY_COMMANDS = frozenset({"run", "sft", "rl", "eval", "mine", "reward", "ab-test"})

OPT_OUT = "UNDERSTUDY_SYSTEM_MALLOC"


def _is_glibc() -> bool:
    return sys.platform == "linux" and platform.libc_ver()[0] == "glibc"


def retained_memory_env(argv: Sequence[str], environ: Optional[dict] = None) -> Optional[dict]:
    """The environment to re-execute `argv` with, or None when this process should run as it is."""
    environ = dict(os.environ if environ is None else environ)
    if environ.get(OPT_OUT) or "GLIBC_TUNABLES" in environ:
        return None  # opted out, the user's own tunables, or already re-executed
    if not _is_glibc():
        return None
    command = next((arg for arg in argv[1:] if not arg.startswith("-")), None)
    if command not in HEAVY_COMMANDS:
        return None
    environ["GLIBC_TUNABLES"] = TUNABLES
    return environ


def reexec_with_retained_memory(argv: Sequence[str]) -> None:
    """Replace this process with `python -m trainer.cli ...` under the tunables, when they apply."""
    environ = retained_memory_env(argv)
    if environ is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "trainer.cli", *argv[1:]], environ)


def release_free_memory() -> bool:
    """Return malloc's free memory to the kernel now (glibc's malloc_trim); False where there is
    no glibc. Called between stages: the retained blocks fit the stage that made them, not the next."""
    if not _is_glibc():
        return False
    import ctypes
    import gc

    gc.collect()  # tensors held only by reference cycles (a finished Trainer) are freed first
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        return False
    return True
