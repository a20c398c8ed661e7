"""Training batches whose examples share their system turn, and that turn computed once per batch.

Every example of a workflow corpus starts with the system turn: the system prompt, the working
directory and the tool list. Examples from one project share all of it, token for token: 384 of a
`--demo` example's ~890 tokens, ~1,300 of an example captured through the real Claude Code CLI.
A batch drawn at random mixes projects, so its rows share only the first few dozen tokens, and SFT
computes the same system turn again for every row.

Two parts, each useless without the other:

- `PrefixGroupedSampler` draws each batch from one system turn (one project): the group's examples
  are shuffled and cut into batches, the batches of all groups shuffled together; each group's
  remainder is pooled into mixed batches at the end of the shuffle. Every example is still seen
  once per epoch; what changes is which examples share a batch.
- `share_prefix_in_training` runs the tokens every row of a training batch starts with once, on one
  row, and the rest of each row against that row's keys and values (repeated for the batch). Each
  token attends to exactly what it attends to in the full batch, at the same position, so the loss
  and its gradient are the same computation up to floating-point rounding; the prefix's own outputs
  are used by nothing (system turns carry no labels), and its keys and values get the gradient of
  every row that read them. Batches with a padding mask, inputs given as embeddings, a cache, or
  gradient checkpointing (whose layers drop the cache) run as before.

With `gradient=False` (`sft.shared_prefix_gradient = false`) the shared tokens run without
gradient, and never past the first labelled position: the rows read keys and values computed with
the current weights, but nothing is learnt from how the system turn itself is encoded. The loss is
the same number, its gradient another one: an approximation that trades the system turn's backward
pass for speed, measured for what it costs in held-out accuracy (docs/learning.md §6).

Measured on the `--demo`'s SFT (docs/learning.md §6).
"""

from __future__ import annotations

import contextlib
import inspect
import random
from collections import defaultdict
from typing import Any, Hashable, Iterator, Sequence

import orjson

from trainer.shared_prefix import shared_prefix_length

# Below this many shared tokens the second forward costs more than the prefix it saves.
MIN_SHARED_TOKENS = 64


def system_turn_key(messages: Sequence[dict], tools: Any) -> bytes:
    """What an example's rendered system turn is made of: its system messages and its tool list."""
    system = [m.get("content") for m in messages if m.get("role") == "system"]
    return orjson.dumps([system, tools], option=orjson.OPT_SORT_KEYS)


def grouped_batches(keys: Sequence[Hashable], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Indices of `keys` cut into batches of `batch_size`, each from one key where the key has that
    many examples left; the leftovers of every key pooled into mixed batches. Batches shuffled."""
    groups: dict[Hashable, list[int]] = defaultdict(list)
    for index, key in enumerate(keys):
        groups[key].append(index)
    batches, leftovers = [], []
    for key in sorted(groups, key=repr):  # a fixed order, so a seed gives the same batches
        members = groups[key]
        rng.shuffle(members)
        whole = len(members) - len(members) % batch_size
        batches += [members[i:i + batch_size] for i in range(0, whole, batch_size)]
        leftovers += members[whole:]
    rng.shuffle(leftovers)
    batches += [leftovers[i:i + batch_size] for i in range(0, len(leftovers), batch_size)]
    rng.shuffle(batches)
    return batches


class PrefixGroupedSampler:
    """A torch sampler: `grouped_batches` flattened, new batches each epoch, the same for a seed.

    The data loader cuts its indices into batches of `batch_size` again, so the grouped batches come
    out whole: only the last one can be short, and it is last."""

    def __init__(self, keys: Sequence[Hashable], batch_size: int, seed: int = 0):
        self.keys = list(keys)
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.keys)

    def __iter__(self) -> Iterator[int]:
        batches = grouped_batches(self.keys, self.batch_size, random.Random(f"{self.seed}:{self.epoch}"))
        # Full batches first, the one short batch (if any) last: a loader cuts at multiples of batch_size.
        batches.sort(key=lambda b: len(b) < self.batch_size)
        self.epoch += 1  # a trainer that never calls set_epoch still gets a new order each epoch
        return iter([i for batch in batches for i in batch])


def share_prefix_in_training(model, min_shared: int = MIN_SHARED_TOKENS, gradient: bool = True) -> bool:
    """Patch `model`'s backbone (the decoder under the LM head, under PEFT's wrapper too) so a training
    batch's shared leading tokens run once; with `gradient=False`, also without gradient, up to the
    batch's first labelled position (read from the `labels` `model` is called with: a batch without
    them runs with gradient). Returns False, changing nothing, for a model whose backbone takes no cache."""
    import torch
    from transformers.modeling_outputs import BaseModelOutputWithPast

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone = getattr(inner, "base_model", None)
    if backbone is None or backbone is inner:
        return False
    if getattr(backbone, "understudy_shared_prefix", False):
        return True  # patched already
    # The position of this call's first label, for the part run without gradient to stop before.
    labelled = {"first": None}
    if not gradient:
        def remember_first_label(module, args, kwargs):
            labels = kwargs.get("labels")
            labelled["first"] = None
            if isinstance(labels, torch.Tensor) and labels.dim() == 2:
                columns = (labels != -100).any(dim=0).nonzero()
                # A batch with no label at all: nothing to protect.
                labelled["first"] = int(columns[0]) if len(columns) else labels.shape[1]

        model.register_forward_pre_hook(remember_first_label, with_kwargs=True)
    original = backbone.forward
    parameters = inspect.signature(original).parameters
    # transformers 5 names the cache argument `cache`, 4.x `past_key_values`.
    cache_argument = "cache" if "cache" in parameters else "past_key_values"
    if cache_argument not in parameters:
        return False

    def forward(input_ids=None, attention_mask=None, position_ids=None, inputs_embeds=None, use_cache=None, **kwargs):
        plain = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                     inputs_embeds=inputs_embeds, use_cache=use_cache, **kwargs)
        if (not backbone.training or input_ids is None or input_ids.dim() != 2 or input_ids.shape[0] < 2
                or attention_mask is not None or position_ids is not None or inputs_embeds is not None
                or kwargs.get(cache_argument) is not None or kwargs.get("past_key_values") is not None
                or any(getattr(m, "gradient_checkpointing", False) for m in backbone.modules())):
            return original(**plain)
        rows = input_ids.shape[0]
        shared = shared_prefix_length(input_ids.tolist())  # each row keeps a token of its own
        if shared < min_shared:
            return original(**plain)
        frozen = not gradient and labelled["first"] is not None
        if frozen:
            # The hidden state before a label predicts it, so it keeps its gradient.
            shared = min(shared, labelled["first"] - 1)
            if shared < min_shared:
                return original(**plain)
        kwargs = {k: v for k, v in kwargs.items() if k not in (cache_argument, "past_key_values")}  # None, above
        with torch.no_grad() if frozen else contextlib.nullcontext():
            head = original(input_ids=input_ids[:1, :shared], use_cache=True, **kwargs)
        cache = head.cache if getattr(head, "cache", None) is not None else head.past_key_values
        cache.batch_repeat_interleave(rows)
        tail = original(input_ids=input_ids[:, shared:], use_cache=True, **{cache_argument: cache}, **kwargs)
        hidden = head.last_hidden_state.expand(rows, -1, -1)
        return BaseModelOutputWithPast(last_hidden_state=torch.cat([hidden, tail.last_hidden_state], dim=1))

    backbone.forward = forward
    backbone.understudy_shared_prefix = True
    return True


def prefix_grouped(trainer_class):
    """`trainer_class` (a transformers Trainer) drawing its training batches with
    `PrefixGroupedSampler`, keyed by each example's `messages` and `tools`."""

    class PrefixGroupedTrainer(trainer_class):
        def _get_train_sampler(self, train_dataset=None):
            # The data loader passes the dataset with the columns the model does not take removed
            # (`messages` among them): the same rows in the same order, so the keys come from ours.
            dataset = self.train_dataset
            columns = getattr(dataset, "column_names", None) or []
            if "messages" not in columns or (train_dataset is not None and len(train_dataset) != len(dataset)):
                return super()._get_train_sampler(train_dataset)
            tools = dataset["tools"] if "tools" in columns else [None] * len(dataset)
            keys = [system_turn_key(m, t) for m, t in zip(dataset["messages"], tools)]
            return PrefixGroupedSampler(keys, self.args.per_device_train_batch_size, seed=self.args.seed)

    PrefixGroupedTrainer.__name__ = f"PrefixGrouped{trainer_class.__name__}"
    return PrefixGroupedTrainer
