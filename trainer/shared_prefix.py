"""Batched generation that reuses the key/value cache of prompt prefixes it has seen before.

Every prompt `trainer eval` (and the RL stages' rollouts) sends to a student begins with the system
turn and the tool list: on the compact context, 396 of a first turn's 429 tokens for SmolLM2. They
are the same for every turn of every workflow from one project; only the working directory, in the
system turn, differs between projects. So each row says how many of its leading tokens are such a
prefix; each distinct prefix is run through the model once and its cache kept (the least recently
used dropped past `max_prefixes`), and a batch starts from its rows' cached prefixes and runs only
the rows' own tokens:

    row i   [prefix i][.. to the longest prefix][pad ... pad][own tokens]
    mask     1 ... 1   0 ...                  0   0 ...   0   1 ...    1

Masked positions are skipped by attention and by the position ids (`generate` derives them from the
mask's running sum), so each token sits at the position it has in its own unpadded prompt and every
row computes what it would alone, up to floating-point rounding: as left padding does, with the
padding in the middle.

A workflow is generated turn by turn, and each turn's prompt is the last one with the teacher's turn
and its tool results appended (teacher forcing, trainer/evaluate.py). So the keys and values of each
row's prompt are kept after a call (until the next one), and a row that continues one of them
starts from it: a turn prefills only what was appended since, instead of the whole conversation
after the system turn again.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from typing import Any, Optional, Sequence

# Below this many tokens a prefix is not worth a cache entry and the copies it costs.
MIN_PREFIX_TOKENS = 32
# Distinct prefixes kept: one per project in a corpus (the scripted teacher has 9). A SmolLM2 prefix of
# ~400 tokens holds 18 MB of keys and values in float32.
MAX_PREFIXES = 16
# The last call's prompts kept for the rows that continue them, up to this many bytes of keys and
# values: 16 SmolLM2 rows of ~1,800 tokens are ~1.3 GB in float32. Rows past it are prefilled whole.
MAX_REMEMBERED_BYTES = 4 << 30


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens `a` and `b` share."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def shared_prefix_length(rows: Sequence[Sequence[int]]) -> int:
    """Tokens at the start of every row, leaving each row at least one token of its own (the
    model must run on something to produce the next token's logits)."""
    if not rows:
        return 0
    n = min(len(r) for r in rows) - 1
    for row in rows[1:]:
        n = min(n, common_prefix_length(rows[0], row))
    return max(n, 0)


class SharedPrefixGenerator:
    """`model.generate` over rows of token ids, each starting from the cache of its prefix."""

    def __init__(self, model, pad_token_id: int, min_prefix: int = MIN_PREFIX_TOKENS,
                 max_prefixes: int = MAX_PREFIXES, max_remembered_bytes: int = MAX_REMEMBERED_BYTES):
        self.model = model
        self.pad_token_id = pad_token_id
        self.min_prefix = min_prefix
        self.max_prefixes = max_prefixes
        self.max_remembered_bytes = max_remembered_bytes
        self.prefills = 0  # prefix forwards run: what the cache saved is visible to tests and benchmarks
        self.continued = 0  # rows that started from their last prompt's keys and values
        self._caches: OrderedDict[tuple[int, ...], list[tuple[Any, Any]]] = OrderedDict()
        # The last call's prompts, each with its keys and values (the rows' next turns continue them).
        self._prompts: dict[tuple[int, ...], list[tuple[Any, Any]]] = {}
        forward = inspect.signature(model.forward).parameters
        # transformers 5.x renamed generate's `past_key_values` to `cache` (the old name warns).
        self._cache_argument = "cache" if "cache" in forward else "past_key_values"
        # The prefix's forward needs no logits: skip the vocabulary projection for all but one token.
        self._logits_to_keep = {"logits_to_keep": 1} if "logits_to_keep" in forward else {}

    def _prefix_kv(self, prefix: tuple[int, ...]) -> list[tuple[Any, Any]]:
        """Per layer (keys, values) of `prefix`, each shaped (1, kv heads, len(prefix), head dim)."""
        import torch

        kv = self._caches.get(prefix)
        if kv is None:
            with torch.no_grad():
                out = self.model(input_ids=torch.tensor([prefix], device=self.model.device), use_cache=True,
                                 **self._logits_to_keep)
            cache = getattr(out, "cache", None)
            cache = cache if cache is not None else out.past_key_values
            kv = [(layer.keys, layer.values) for layer in cache.layers]
            self.prefills += 1
            self._caches[prefix] = kv
            while len(self._caches) > self.max_prefixes:
                self._caches.popitem(last=False)
        self._caches.move_to_end(prefix)
        return kv

    def _earlier_prompt(self, row: Sequence[int]) -> tuple[int, Optional[list[tuple[Any, Any]]]]:
        """The longest prompt of the last call that `row` continues (leaving it a token of its own):
        its length and keys and values, or (0, None)."""
        best, found = 0, None
        for prompt, kv in self._prompts.items():
            if best < len(prompt) < len(row) and tuple(row[: len(prompt)]) == prompt:
                best, found = len(prompt), kv
        return best, found

    def _remember_prompts(self, rows: Sequence[Sequence[int]], lengths: list[int], cache, end: int) -> None:
        """Keep each row's prompt from the cache `generate` filled: its prefix's positions and its own
        tokens' (which end at `end`, before the new tokens), without the padding between them."""
        import torch

        self._prompts = {}
        remembered = 0
        for i, (row, p) in enumerate(zip(rows, lengths)):
            start = end - (len(row) - p)
            # (A copy: a view would keep the whole batch's cache alive.)
            kv = [tuple(torch.cat([t[i : i + 1, :, :p], t[i : i + 1, :, start:end]], dim=2)
                        for t in (layer.keys, layer.values)) for layer in cache.layers]
            remembered += sum(k.nelement() * k.element_size() * 2 for k, _ in kv)
            if remembered > self.max_remembered_bytes:
                break
            self._prompts[tuple(row)] = kv

    def _batch_cache(self, per_row: list[Optional[list[tuple[Any, Any]]]], width: int):
        """A cache of `width` positions: row i holds its prefix's keys and values, zeros after."""
        import torch

        from trainer.kv_cache import growing_cache

        template = next(kv for kv in per_row if kv is not None)
        layers = []
        for layer, (k0, v0) in enumerate(template):
            keys, values = [], []
            for kv in per_row:
                k, v = kv[layer] if kv is not None else (k0[:, :, :0], v0[:, :, :0])
                pad = width - k.shape[2]
                keys.append(torch.nn.functional.pad(k, (0, 0, 0, pad)))
                values.append(torch.nn.functional.pad(v, (0, 0, 0, pad)))
            layers.append((torch.cat(keys), torch.cat(values)))
        return growing_cache(self.model.config, layers)

    def generate(self, rows: Sequence[Sequence[int]], prefix_lengths: Optional[Sequence[int]] = None,
                 **generate_kwargs: Any):
        """model.generate over `rows` (lists of token ids). Row i's first `prefix_lengths[i]` tokens
        are a prefix worth caching (default: the rows' common prefix). Returns (output ids, prompt
        width): each output row's new tokens start at column `prompt width`."""
        import torch

        if prefix_lengths is None:
            prefix_lengths = [shared_prefix_length(rows)] * len(rows)
        lengths = [min(p, len(r) - 1) for r, p in zip(rows, prefix_lengths)]
        lengths = [p if p >= self.min_prefix else 0 for p in lengths]
        # Each row's keys and values to start from: its last prompt's where it continues one, else its prefix's.
        per_row = []
        for i, row in enumerate(rows):
            earlier, kv = self._earlier_prompt(row)
            if kv is not None and earlier > lengths[i]:
                lengths[i] = earlier
                self.continued += 1
            else:
                kv = self._prefix_kv(tuple(row[: lengths[i]])) if lengths[i] else None
            per_row.append(kv)
        cached = max(lengths, default=0)
        width = max(len(r) - p for r, p in zip(rows, lengths))
        ids, mask = [], []
        for r, p in zip(rows, lengths):
            own = list(r[p:])
            gap = cached - p + width - len(own)
            ids.append(list(r[:p]) + [self.pad_token_id] * gap + own)
            mask.append([1] * p + [0] * gap + [1] * len(own))
        from trainer.kv_cache import growing_cache  # transformers: imported when first generating

        cache = self._batch_cache(per_row, cached) if cached else growing_cache(self.model.config)
        generate_kwargs[self._cache_argument] = cache
        with torch.no_grad():
            out = self.model.generate(input_ids=torch.tensor(ids, device=self.model.device),
                                      attention_mask=torch.tensor(mask, device=self.model.device), **generate_kwargs)
        self._remember_prompts(rows, lengths, cache, cached + width)
        return out, cached + width
