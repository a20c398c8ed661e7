"""A copy warm-up for a random tiny LLaMA: what pretraining gives a real base, in a few CPU minutes.

A workflow student mostly copies: the path named in the prompt is the path it reads, the table in
the question is the table it counts, the file a search found is the file it opens next. A
pretrained base does that from the start (induction heads: attend to where the current token
appeared before and write what followed it). A random tiny model does not, and fine-tuning on a
few thousand workflow examples teaches it the tool *choice* long before it learns to copy: it
writes the corpus's most frequent path instead of the prompt's (docs/learning.md). Three forms
(`run.demo_copy_warmup_form`), all on rows the workflow is not in:

- `span` (the demo's): a 48-token span and its repeat, loss on the repeat, half the spans cut
  from the run's own training texts, half random tokens. The repeat is always one span length
  later, so this teaches the copy circuit's output half (whatever a head attends to is passed
  through to the next-token logits), not where to look; SFT learns where to look for each
  argument. Measured: 300 SFT steps from it reach argument match 0.46 where a random base
  reaches 0.07, on names the corpus repeats; on `varied` names it does not help (§2c).
- `respell` (the demo's since it was measured): span rows, every second row of the batch
  replaced by lines of the corpus's own words written once as prose and once joined the way code
  joins names (" carts and orders =>carts|orders", "src/config => src config"), loss on the
  second spelling. A byte-level BPE gives " carts" and "carts" different ids, so a name the user
  wrote in a sentence is not a token the call can copy; a pretrained base has seen both
  spellings of every word side by side, a random one has not. A quarter of the lines are numbers
  among words, as a tool prints them and as an answer writes them ("carts 40055 => 40,055").
  Nothing of the workflow is in these rows either: no prompt, no call, no tool. Measured on the
  demo (docs/learning.md §2b): argument match 0.83 → 0.97 after the same SFT. The words come
  from the corpus's distinct lines (every rendered example repeats the same system prompt and
  tool list, two thirds of its words), and the warm-up checks respell accuracy on a fixed probe
  every `CHECK_EVERY` steps and stops once it reaches `RESPELL_DONE_ACCURACY` (`steps` is a
  ceiling, as for `recall`): with a fixed 600 steps over every example's words, one seed's
  warm-up learned the spellings far less than another's and its student recited the corpus's
  names instead of copying the prompt's (argument match 0.66 against 0.92; 0.98 with both
  changes; with the number lines 0.969 ± 0.020 over seeds 0-2, docs/learning.md §2b).
- `recall`: a window of random tokens, then a sub-span of it from a random place, loss on the
  sub-span after its first token. Only an induction head predicts that, and one forms abruptly:
  recall accuracy sits near chance for ~900 steps, then jumps to ~0.97 within fifty (hidden 128
  or 64, 2 layers). The warm-up checks recall on a fixed probe every `CHECK_EVERY` steps and stops
  once learned. Measured once on the demo, SFT from this base learned *less* in 600 steps than
  from the `span` base (docs/learning.md §2c), so it is not the default.

    from trainer.copy_warmup import copy_warmup
    report = copy_warmup(model, tokenizer, texts, steps=600, form="span")
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

_WORD = re.compile(r"[A-Za-z][A-Za-z0-9]*")

FORMS = ("span", "recall", "respell")
WARMUP_STEPS = 30
CHECK_EVERY = 50

# span: rows of 1 + 2 x 48 tokens, 32 to a batch.
SPAN_TOKENS = 48
SPAN_BATCH = 32
# Also respell's (run.demo_copy_warmup_learning_rate overrides it). Measured on the demo, seeds 0-2
# (docs/learning.md §2e): at 1e-3 the respell probe is reached in 750-850 steps instead of
# 1,100-1,200 (at 4e-3 not within 1,200), the whole run ~45 s shorter, argument match the same,
# but one seed's answers kept fewer of their facts (0.663 against 0.813); too few seeds to switch.
SPAN_LEARNING_RATE = 2e-3

# respell: every second row of a 16-row batch is names from the corpus written once as prose
# (" carts and orders") and again joined as code writes them ("carts|orders", "src/config"), or the
# other way; the rows between are span rows, every other one cut from the corpus. It was a quarter
# of a 32-row batch: the span rows, three quarters of the compute, are learned in a few hundred
# steps, while the probe (respell) decides when the warm-up ends. Half the rows, half of them
# respell: the probe's 0.88 in about as many steps at half the cost of each, the whole demo ~6
# minutes instead of 7.5-8 on a 2-core Xeon, argument match the same over seeds 0-2 (0.937 against
# 0.936, every seed over 0.90), answers' facts fewer (fact recall 0.70 against 0.80;
# docs/learning.md "Not done", Time).
SEPARATORS = ("/", "|", "_", ".", "-", ", ")
RESPELL_BATCH = 16
RESPELL_EVERY = 2
# A share of the respell lines are numbers: among 0-4 corpus words as a tool prints it, then as an
# answer writes it ("carts 40055 orders => 40,055"). Digits are single tokens in both spellings,
# but where a comma goes depends on how many digits are left, which a random model has never had
# to count, and the words around it make the rows teach finding the number, not just its place
# before " =>". Without these lines the demo student wrote none of the counts its queries returned
# into an answer (0 of 27 on seed 0; 17 of 27 with them, and also more of the line numbers a
# search found; docs/learning.md §2b).
NUMBER_SHARE = 0.25
NUMBER_DIGITS = (1, 7)  # lengths drawn evenly, so short and long numbers are as common
NUMBER_CONTEXT_WORDS = (0, 4)

# Respell accuracy on the probe at which the warm-up stops: reached in 1,100-1,200 steps on the
# demo (700-1,000 before the number lines), where it levels off at 0.90-0.91. Not 1: where a prose
# name becomes a joined one, which separator joins it is a free draw.
RESPELL_DONE_ACCURACY = 0.88
RESPELL_PROBE_ROWS = 32

# recall: rows of 1 + 48 + 16 tokens, 64 to a batch, lr 3e-3: the setting the induction head was
# seen to form in (~950 steps at hidden 128, ~850 at hidden 64; 2 layers, 4 heads).
WINDOW_TOKENS = 48
RECALL_TOKENS = 16
RECALL_BATCH = 64
RECALL_LEARNING_RATE = 3e-3
# Recall accuracy on the probe at which the circuit counts as learned (chance is 1 / vocabulary).
DONE_ACCURACY = 0.95
# The accuracy at which each checked form stops (span has no probe: it runs every step it is given).
DONE_AT = {"recall": DONE_ACCURACY, "respell": RESPELL_DONE_ACCURACY}


@dataclass
class WarmupReport:
    form: str
    steps: int
    first_loss: float
    last_loss: float
    seconds: float
    # recall and respell: greedy accuracy on the form's probe before and after.
    probe_before: Optional[float] = None
    probe_after: Optional[float] = None


def copy_rows(stream: Sequence[int], vocab: Sequence[int], rng: random.Random, rows: int = SPAN_BATCH,
              corpus_every: int = 2, corpus_at: int = 0) -> list[list[int]]:
    """A batch of `rows` span + span rows: row b cut from the corpus stream where b % corpus_every ==
    corpus_at (the span form: every other row), random tokens otherwise."""
    batch = []
    for b in range(rows):
        if b % corpus_every == corpus_at and len(stream) > SPAN_TOKENS:
            start = rng.randrange(0, len(stream) - SPAN_TOKENS)
            span = list(stream[start:start + SPAN_TOKENS])
        else:
            span = [rng.choice(vocab) for _ in range(SPAN_TOKENS)]
        batch.append(span + span)
    return batch


def corpus_words(texts: Sequence[str]) -> list[str]:
    """The words and identifiers of the corpus's distinct lines, in order (neighbours stay
    neighbours, as names in a prompt). Distinct: every rendered example repeats the same system
    prompt and tool list, which would otherwise be two thirds of what the respell rows respell."""
    lines = dict.fromkeys(line for text in texts for line in text.splitlines())
    return [w for line in lines for w in _WORD.findall(line)]


def respelled_number(words: Sequence[str], rng: random.Random) -> tuple[str, str]:
    """A number as a tool prints it, somewhere among neighbouring corpus words, and as an answer
    writes it: ("carts 40055 orders", " 40,055")."""
    digits = rng.randint(*NUMBER_DIGITS)
    number = rng.randrange(10 ** (digits - 1) if digits > 1 else 0, 10 ** digits)
    k = rng.randint(*NUMBER_CONTEXT_WORDS)
    start = rng.randrange(0, max(1, len(words) - k))
    around = list(words[start:start + k])
    around.insert(rng.randint(0, len(around)), str(number))
    return " ".join(around), f" {number:,}"


def respelled_names(words: Sequence[str], rng: random.Random) -> tuple[str, str]:
    """1-4 neighbouring corpus words, once as prose and once joined as code joins them, either way round."""
    n = rng.randint(1, 4)
    start = rng.randrange(0, max(1, len(words) - n))
    chosen = list(words[start:start + n])
    joined = rng.choice(SEPARATORS).join(chosen)
    prose = " " + " ".join(chosen)
    return (prose, joined) if rng.random() < 0.5 else (joined, prose)


def respelled_row(words: Sequence[str], tokenizer, rng: random.Random, length: int) -> tuple[list[int], list[int]]:
    """(ids, labels) of `length` tokens: "<source> =><the same respelled>" lines, loss on the respelling.

    In a byte-level BPE " carts" (prose) and "carts" (after "|" or "/") are different tokens, so
    copying a prompt's names into a pattern or a path is not the plain token copy the span rows
    teach. These rows teach the correspondence on the corpus's own names, and on numbers
    (`respelled_number`).
    """
    text, targets = "", []
    while len(text) < 16 * length:  # far more characters than `length` tokens need
        source, target = respelled_number(words, rng) if rng.random() < NUMBER_SHARE else respelled_names(words, rng)
        text += source + " =>"
        targets.append((len(text), len(text) + len(target)))
        text += target + "\n"
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = encoded["input_ids"][:length]
    labels = [-100] * len(ids)
    spans = iter(targets)
    span = next(spans)
    for i, (start, end) in enumerate(encoded["offset_mapping"][:length]):
        while span and start >= span[1]:
            span = next(spans, None)
        if span and start >= span[0] and end <= span[1]:
            labels[i] = ids[i]
    return ids, labels


def recall_batch(vocab: Sequence[int], bos: int, rng: random.Random, rows: int = RECALL_BATCH):
    """(input ids, labels): random windows, each followed by a sub-span of itself; labels on the
    sub-span after its first token (which no model can predict)."""
    import torch

    ids, labels = [], []
    for _ in range(rows):
        window = [rng.choice(vocab) for _ in range(WINDOW_TOKENS)]
        start = rng.randrange(0, WINDOW_TOKENS - RECALL_TOKENS)
        recall = window[start:start + RECALL_TOKENS]
        ids.append([bos] + window + recall)
        labels.append([-100] * (2 + WINDOW_TOKENS) + recall[1:])
    return torch.tensor(ids), torch.tensor(labels)


def respell_batch(words: Sequence[str], tokenizer, bos: int, rng: random.Random, rows: int = RESPELL_PROBE_ROWS):
    """(input ids, labels) of `rows` respell rows as the warm-up trains on them."""
    import torch

    made = [respelled_row(words, tokenizer, rng, 2 * SPAN_TOKENS) for _ in range(rows)]
    return torch.tensor([[bos] + row for row, _ in made]), torch.tensor([[-100] + lab for _, lab in made])


def labelled_loss(model, ids, labels):
    """`model(input_ids=ids, labels=labels).loss`, with the LM head and the cross-entropy computed
    at the labelled positions alone (about half of a warm-up row). Same loss and gradients; on the
    demo's tiny model forward and backward take 132 ms instead of 145 (about 3% of a whole step)."""
    import torch.nn.functional as F

    hidden = model.get_decoder()(input_ids=ids).last_hidden_state[:, :-1]
    target = labels[:, 1:]
    scored = target != -100
    logits = model.get_output_embeddings()(hidden[scored])
    return F.cross_entropy(logits.float(), target[scored])


def probe_accuracy(model, ids, labels) -> float:
    """Greedy accuracy on the labelled positions."""
    import torch

    was_training = model.training
    model.eval()
    with torch.no_grad():
        predicted = model(input_ids=ids).logits[:, :-1].argmax(-1)
    model.train(was_training)
    target = labels[:, 1:]
    scored = target != -100
    return ((predicted == target) & scored).sum().item() / scored.sum().item()


def copy_warmup(model, tokenizer, texts: Sequence[str], steps: int, seed: int = 0, form: str = "span",
                learning_rate: Optional[float] = None,
                log: Callable[[str], None] = lambda _: None) -> WarmupReport:
    """Train `model` in place to copy, for `steps` steps (`recall` and `respell`: at most, they stop
    once the probe says the form is learned), at `learning_rate` (default: the form's own)."""
    import torch

    if form not in FORMS:
        raise ValueError(f"Unknown copy warm-up form {form!r}; choose from {list(FORMS)}")
    torch.manual_seed(seed)
    # Random tokens come from the ordinary vocabulary: neither control tokens nor the tool tags.
    special = set(tokenizer.all_special_ids) | set(tokenizer.get_added_vocab().values())
    vocab = [i for i in range(len(tokenizer)) if i not in special]
    bos = tokenizer.bos_token_id
    stream: list[int] = []
    if form in ("span", "respell"):
        for text in texts:
            stream += tokenizer(text, add_special_tokens=False)["input_ids"]
    words = corpus_words(texts) if form == "respell" else []
    # The probe: rows of the form drawn once from their own generator, never trained on.
    probe = None
    if form == "recall":
        probe = recall_batch(vocab, bos, random.Random(seed + 1))
    elif form == "respell":
        probe = respell_batch(words, tokenizer, bos, random.Random(seed + 1))
    before = accuracy = probe_accuracy(model, *probe) if probe else None

    model.train()
    if learning_rate is None:
        learning_rate = RECALL_LEARNING_RATE if form == "recall" else SPAN_LEARNING_RATE
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / WARMUP_STEPS))
    rng = random.Random(seed)
    t0 = time.monotonic()
    first = last = float("nan")
    step = 0
    while step < steps:
        if form == "recall":
            ids, labels = recall_batch(vocab, bos, rng)
        else:
            # respell: span rows are drawn for every row and the even ones replaced, so the odd ones
            # alternate corpus (1, 5, ...) and random (3, 7, ...) spans.
            rows = copy_rows(stream, vocab, rng) if form == "span" else copy_rows(stream, vocab, rng, RESPELL_BATCH, 4, 1)
            ids = torch.tensor([[bos] + row for row in rows])
            labels = ids.clone()
            labels[:, : SPAN_TOKENS + 1] = -100  # the first copy cannot be predicted: no loss there
            if words:
                for b in range(0, RESPELL_BATCH, RESPELL_EVERY):
                    row, row_labels = respelled_row(words, tokenizer, rng, 2 * SPAN_TOKENS)
                    ids[b, 1:] = torch.tensor(row)
                    labels[b] = torch.tensor([-100] + row_labels)
        loss = labelled_loss(model, ids, labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        last = loss.item()
        if step == 1:
            first = last
        if probe and (step % CHECK_EVERY == 0 or step == steps):
            accuracy = probe_accuracy(model, *probe)
            if step % 100 == 0 or step == steps or accuracy >= DONE_AT[form]:
                log(f"  copy warm-up step {step}/{steps} · loss {last:.3f} · {form} {accuracy:.2f} · "
                    f"{time.monotonic() - t0:.0f}s")
            if accuracy >= DONE_AT[form]:
                break
        elif not probe and (step % 100 == 0 or step == steps):
            log(f"  copy warm-up step {step}/{steps} · loss {last:.3f} · {time.monotonic() - t0:.0f}s")
    model.eval()
    return WarmupReport(form=form, steps=step, first_loss=first, last_loss=last, seconds=time.monotonic() - t0,
                        probe_before=before, probe_after=accuracy)
