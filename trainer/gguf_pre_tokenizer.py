"""Which llama.cpp pre-tokenizer splits text the way a Hugging Face tokenizer does.

A GGUF names its pre-tokenizer (`tokenizer.ggml.pre`) and llama.cpp splits text with that type's
built-in regexes before applying the BPE merges. If the name does not match the tokenizer the
student was trained with, llama.cpp feeds the served student token sequences it never saw (a
SmolLM2 student exported as `llama-bpe` got indentation after a newline as different tokens:
every Read result). So the name is read off the tokenizer's own pre-tokenizer, and a tokenizer
whose split this module does not recognise is refused rather than exported wrong.

    llama_cpp_pre_tokenizer(tokenizer)  # "llama-bpe", "gpt-2" or "smollm"
"""

from __future__ import annotations

import json
from typing import Any

from trainer.config import ConfigError

# Llama 3's pre-tokenizer split (tokenizer.json of meta-llama/Llama-3.2-1B).
LLAMA3_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# The steps of a tokenizer.json pre_tokenizer that decide where text splits, as llama.cpp's
# llama-vocab.cpp spells the same regexes per type.
_KNOWN: dict[tuple, str] = {
    # Llama 3: the Llama 3 regex, then bytes.
    (("split", LLAMA3_SPLIT_REGEX), ("byte_level", False)): "llama-bpe",
    # GPT-2's regex inside ByteLevel: SmolLM2 as transformers converts it from its GGUF.
    (("byte_level", True),): "gpt-2",
    # Every digit on its own, then GPT-2's regex: SmolLM's tokenizer.json and understudy's tiny one.
    (("digits", True), ("byte_level", True)): "smollm",
}


def _step(step: dict[str, Any]) -> tuple:
    kind = step.get("type")
    if kind == "Split":
        pattern = step.get("pattern") or {}
        return ("split", pattern.get("Regex", pattern.get("String")))
    if kind == "ByteLevel":
        return ("byte_level", bool(step.get("use_regex", True)))
    if kind == "Digits":
        return ("digits", bool(step.get("individual_digits", False)))
    return (str(kind),)


def split_signature(tokenizer) -> tuple:
    """The pre-tokenizer's splitting steps, in order, as comparable tuples."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    pre = spec.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    return tuple(_step(s) for s in steps if s)


def llama_cpp_pre_tokenizer(tokenizer) -> str:
    """The `tokenizer.ggml.pre` value under which llama.cpp tokenizes exactly as `tokenizer` does."""
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(
            "export needs a fast (tokenizer.json) tokenizer to write a GGUF; use llama.cpp's convert_hf_to_gguf.py on hf/"
        )
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    kind = (spec.get("model") or {}).get("type")
    if kind != "BPE" or spec.get("normalizer") is not None:
        what = f"{kind} with a normalizer" if spec.get("normalizer") is not None else str(kind)
        raise ConfigError(
            f"export writes byte-level BPE tokenizers (Llama 3, SmolLM2, understudy's tiny one), not {what}; "
            "use llama.cpp's convert_hf_to_gguf.py on hf/"
        )
    signature = split_signature(tokenizer)
    name = _KNOWN.get(signature)
    if name is None:
        raise ConfigError(
            f"export does not know llama.cpp's name for this tokenizer's pre-tokenizer {signature}; a GGUF would "
            "split text differently from training. Use llama.cpp's convert_hf_to_gguf.py on hf/"
        )
    return name
