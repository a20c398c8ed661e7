"""A tiny byte-level BPE tokenizer trained on the fly, for offline tests and `trainer run --demo`.

It is built like a real model's: byte-level BPE, LLaMA-3 special tokens, BOS added by the
post-processor, `<|eot_id|>` as EOS. Saved with save_pretrained it reloads through
AutoTokenizer.from_pretrained, the same code path as a real model's tokenizer.

It splits text as SmolLM does (every digit alone, then GPT-2's regex: a word keeps at most a
leading space, never the punctuation before it), which llama.cpp knows as `smollm`. Llama 3's
regex glues one punctuation character to the word after it, so in a 1,500-token vocabulary
`/handlers`, `_handlers` and `"handlers` became different tokens and the student had to learn
each spelling of each name before it could copy a path's file into a test's name. Measured on
the demo (docs/learning.md §2b): argument match 0.751 → 0.830 (seed 0), 0.835 → 0.844 (seed 1).

    from trainer.tokenizer_tools import train_tiny_tokenizer
    tok = train_tiny_tokenizer(texts, vocab_size=2000)
    tok.save_pretrained("runs/tiny/tokenizer")
"""

from __future__ import annotations

from typing import Iterable

from trainer.chat_template import (
    BEGIN_OF_TEXT,
    CONTROL_TOKENS,
    END_OF_TURN,
    PAD_TOKEN,
    SPECIAL_TOKENS,
    TOOL_CALL_TOKENS,
    apply_chat_template,
)


def _plain(texts: Iterable[str]) -> Iterable[str]:
    # The special tokens become single ids; keep their spellings out of the merges.
    for text in texts:
        for token in SPECIAL_TOKENS:
            text = text.replace(token, "\n")
        yield text


def train_tiny_tokenizer(texts: Iterable[str], vocab_size: int = 2000):
    """Train a byte-level BPE on `texts` and wrap it as a transformers fast tokenizer.

    The special tokens take the first ids; the chat template is installed.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=True),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(CONTROL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_plain(texts), trainer=trainer)
    # The tool-call tags are single tokens but not control tokens (see chat_template.py).
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in TOOL_CALL_TOKENS])
    bos_id = tokenizer.token_to_id(BEGIN_OF_TEXT)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BEGIN_OF_TEXT}:0 $A:0",
        pair=f"{BEGIN_OF_TEXT}:0 $A:0 {BEGIN_OF_TEXT}:1 $B:1",
        special_tokens=[(BEGIN_OF_TEXT, bos_id)],
    )

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BEGIN_OF_TEXT,
        eos_token=END_OF_TURN,
        pad_token=PAD_TOKEN,
        model_max_length=8192,
        clean_up_tokenization_spaces=False,
    )
    added = apply_chat_template(fast)
    if added:
        raise RuntimeError(f"tiny tokenizer was missing {added} special tokens")  # a bug here, not the caller's
    return fast
