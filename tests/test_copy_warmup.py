"""The tiny base's copy warm-up really teaches copying, not the corpus's frequent tokens: the span
form copies fresh random spans, the recall form grows an induction head."""

from __future__ import annotations

import random

import pytest

torch = pytest.importorskip("torch")


def span_copy_accuracy(model, vocab: list[int], bos: int, rows: int = 16) -> float:
    """Greedy accuracy on the repeat of fresh random spans (chance: 1 / len(vocab)), from the
    repeat's first token on: the span form's rows, with tokens it never drew together."""
    from trainer.copy_warmup import SPAN_TOKENS

    rng = random.Random(123)
    spans = [[rng.choice(vocab) for _ in range(SPAN_TOKENS)] for _ in range(rows)]
    ids = torch.tensor([[bos] + s + s for s in spans])
    with torch.no_grad():
        predicted = model(input_ids=ids).logits[:, SPAN_TOKENS:-1].argmax(-1)
    return (predicted == ids[:, SPAN_TOKENS + 1:]).float().mean().item()


def _tiny(hidden: int = 64):
    import tempfile

    from transformers import LlamaForCausalLM

    from trainer.teacher_corpus import generate_corpus
    from trainer.tiny_model import build_tiny_model
    from trainer.tokenizer_tools import train_tiny_tokenizer

    texts = [t.prompt + "\n" + t.final_response for t in generate_corpus(60, seed=2)]
    tokenizer = train_tiny_tokenizer(texts, vocab_size=400)
    with tempfile.TemporaryDirectory() as tmp:
        model = LlamaForCausalLM.from_pretrained(build_tiny_model(tokenizer, tmp, hidden=hidden, layers=2, heads=4))
    special = set(tokenizer.all_special_ids) | set(tokenizer.get_added_vocab().values())
    vocab = [i for i in range(len(tokenizer)) if i not in special]
    return model, tokenizer, texts, vocab


@pytest.fixture(scope="module")
def span_warmed():
    """A tiny model before and after 300 steps of the span form: (model, tokenizer, texts, vocab, before, report)."""
    from trainer.copy_warmup import copy_warmup

    model, tokenizer, texts, vocab = _tiny()
    before = span_copy_accuracy(model, vocab, tokenizer.bos_token_id)
    report = copy_warmup(model, tokenizer, texts, steps=300, seed=0, form="span")
    return model, tokenizer, texts, vocab, before, report


def test_span_warmup_teaches_a_random_tiny_llama_to_copy(span_warmed):
    model, tokenizer, _, vocab, before, report = span_warmed
    after = span_copy_accuracy(model, vocab, tokenizer.bos_token_id)
    assert before < 0.05
    # Random tokens can only be predicted by copying them from the first half.
    assert after > 0.5, (before, after, report)
    assert report.last_loss < report.first_loss / 2 and report.steps == 300


def respell_accuracy(model, tokenizer, words: list[str], rows: int = 16) -> float:
    """Greedy accuracy on the respelled names of fresh respell rows (rows the warm-up never drew)."""
    from trainer.copy_warmup import probe_accuracy, respell_batch

    return probe_accuracy(model, *respell_batch(words, tokenizer, tokenizer.bos_token_id, random.Random(321), rows))


def test_respell_warmup_teaches_both_spellings_of_a_name_where_span_copying_does_not(span_warmed, monkeypatch):
    """" carts and orders =>carts|orders" and "carts 40055 => 40,055": after the respell form the
    tiny model writes the second spelling of names and numbers it is shown; the span form, same
    steps, copies tokens but not spellings."""
    import trainer.copy_warmup as cw

    span_model = span_warmed[0]
    model, tokenizer, texts, vocab = _tiny()  # the same tokenizer and texts, a fresh model
    cw.copy_warmup(model, tokenizer, texts, steps=300, seed=0, form="respell")
    words = cw.corpus_words(texts)
    span = respell_accuracy(span_model, tokenizer, words)
    respell = respell_accuracy(model, tokenizer, words)
    still_copies = span_copy_accuracy(model, vocab, tokenizer.bos_token_id)
    monkeypatch.setattr(cw, "NUMBER_SHARE", 1.0)  # probe rows of numbers only
    span_numbers = respell_accuracy(span_model, tokenizer, words)
    respell_numbers = respell_accuracy(model, tokenizer, words)
    print(f"respelled right: span form {span:.3f} (numbers {span_numbers:.3f}), respell form {respell:.3f} "
          f"(numbers {respell_numbers:.3f}); span copy {still_copies:.3f}")
    assert respell > span + 0.2, (span, respell)
    assert respell_numbers > span_numbers + 0.2, (span_numbers, respell_numbers)
    assert still_copies > 0.5, still_copies  # and it still copies random spans


def test_respell_warmup_stops_once_its_probe_says_learned(monkeypatch):
    """`steps` is a ceiling for respell: the warm-up checks a fixed probe of respell rows it never
    trains on and stops at the first check that reaches the form's accuracy (lowered here so a
    64-wide model gets there within the test's budget)."""
    import trainer.copy_warmup as cw

    monkeypatch.setitem(cw.DONE_AT, "respell", 0.3)
    model, tokenizer, texts, _ = _tiny()
    lines: list[str] = []
    report = cw.copy_warmup(model, tokenizer, texts, steps=600, seed=0, form="respell", log=lines.append)
    assert report.probe_before < 0.05, report
    assert report.probe_after >= 0.3 and report.steps < 600 and report.steps % cw.CHECK_EVERY == 0, report
    assert f"respell {report.probe_after:.2f}" in lines[-1]
    # The probe measured the skill, not its own rows: fresh rows from another draw agree.
    fresh = respell_accuracy(model, tokenizer, cw.corpus_words(texts))
    assert fresh > 0.2, fresh


def test_the_learning_rate_given_is_the_one_the_warmup_steps_with():
    """run.demo_copy_warmup_learning_rate reaches the optimizer: at a rate of ~0 three steps leave
    the weights where they were, at the form's own they move."""
    from trainer.copy_warmup import copy_warmup

    moved = {}
    for lr in (1e-12, None):
        model, tokenizer, texts, _ = _tiny(hidden=16)
        before = [p.detach().clone() for p in model.parameters()]
        copy_warmup(model, tokenizer, texts, steps=3, form="span", learning_rate=lr)
        moved[lr] = max((p.detach() - b).abs().max().item() for p, b in zip(model.parameters(), before))
    assert moved[1e-12] < 1e-8 < 1e-4 < moved[None], moved


def test_unknown_form_is_refused():
    from trainer.copy_warmup import copy_warmup

    model, tokenizer, texts, _ = _tiny(hidden=16)
    with pytest.raises(ValueError, match="Unknown copy warm-up form 'induction'"):
        copy_warmup(model, tokenizer, texts, steps=1, form="induction")


def test_recall_rows_label_only_what_copying_can_predict():
    from trainer.copy_warmup import RECALL_TOKENS, WINDOW_TOKENS, recall_batch

    ids, labels = recall_batch(list(range(10, 60)), bos=1, rng=random.Random(0), rows=8)
    assert ids.shape == labels.shape == (8, 1 + WINDOW_TOKENS + RECALL_TOKENS)
    for row, lab in zip(ids.tolist(), labels.tolist()):
        window, recall = row[1:1 + WINDOW_TOKENS], row[1 + WINDOW_TOKENS:]
        assert any(window[s:s + RECALL_TOKENS] == recall for s in range(WINDOW_TOKENS - RECALL_TOKENS))
        # The first recalled token is a free choice: no loss on it, nor on the window.
        assert lab[:2 + WINDOW_TOKENS] == [-100] * (2 + WINDOW_TOKENS)
        assert lab[2 + WINDOW_TOKENS:] == recall[1:]


def test_respelled_rows_label_the_respelling_of_the_names_before_it():
    """Each line is names, " =>", the same names respelled (prose ↔ joined), or a number among
    words as a tool prints it and as an answer writes it ("carts 40055 => 40,055"): loss on exactly
    the respelled tokens, so the row teaches " carts and orders" → "carts|orders", not the corpus."""
    from trainer.copy_warmup import SEPARATORS, corpus_words, respelled_row

    _, tokenizer, texts, _ = _tiny(hidden=16)
    words = corpus_words(texts)
    assert len(set(words)) > 50
    numbers = 0
    for seed in range(5):
        ids, labels = respelled_row(words, tokenizer, random.Random(seed), 96)
        assert len(ids) == len(labels) == 96
        text = tokenizer.decode(ids)
        lines = text.split("\n")[:-1]  # the last line may be cut
        assert lines and all(" =>" in line for line in lines)
        for line in lines:
            source, target = line.split(" =>", 1)
            digits = [w for w in source.split() if w.isdigit()]
            if digits:  # a number among corpus words (which start with a letter)
                assert len(digits) == 1 and target == f" {int(digits[0]):,}", line
                numbers += 1
                continue
            names = source.split() if source.startswith(" ") else _split(source, SEPARATORS)
            respelled = target.split() if target.startswith(" ") else _split(target, SEPARATORS)
            assert names == respelled, line
        labelled = tokenizer.decode([i for i, lab in zip(ids, labels) if lab != -100])
        targets = "".join(line.split(" =>", 1)[1] for line in lines)
        assert labelled.startswith(targets), (labelled, targets)
    assert numbers >= 3  # about a quarter of the lines


def test_respell_words_come_from_distinct_lines_so_boilerplate_does_not_crowd_out_names():
    """Every rendered example repeats its system prompt and tool list; the respell rows draw from
    each distinct line once, in first-seen order, so the prompts' names are most of what they respell."""
    from trainer.copy_warmup import corpus_words

    boilerplate = "You are a coding agent.\nTools: Bash Read Edit"
    texts = [f"{boilerplate}\nCount the carts in var/shop.db", f"{boilerplate}\nFix parse_date in src/auth/core.py"]
    assert corpus_words(texts) == ["You", "are", "a", "coding", "agent", "Tools", "Bash", "Read", "Edit",
                                   "Count", "the", "carts", "in", "var", "shop", "db",
                                   "Fix", "parse", "date", "in", "src", "auth", "core", "py"]


def _split(joined: str, separators) -> list[str]:
    for sep in separators:
        joined = joined.replace(sep, " ")
    return joined.split()


def test_copy_warmup_grows_an_induction_head_in_a_random_tiny_llama():
    """Recall of random spans at a distance that changes from row to row: only an induction head
    (find the previous token earlier on, copy what followed) predicts them. The accuracy sits near
    chance for several hundred steps, then jumps to ~1 within about fifty; the warm-up stops there."""
    from trainer.copy_warmup import DONE_ACCURACY, copy_warmup, probe_accuracy, recall_batch

    model, tokenizer, texts, vocab = _tiny()
    ceiling = 1500
    report = copy_warmup(model, tokenizer, texts, steps=ceiling, seed=0, form="recall")
    assert report.probe_before < 0.05, report
    assert report.probe_after >= DONE_ACCURACY and report.steps < ceiling, report

    # On rows it never trained on, drawn from another seed: the circuit, not the probe, was learned.
    fresh = recall_batch(vocab, tokenizer.bos_token_id, random.Random(999))
    assert probe_accuracy(model, *fresh) > 0.9


def test_the_warmup_loss_at_labelled_positions_is_the_models_own_loss():
    """labelled_loss skips the LM head where no label is: the same loss and the same gradients as
    the model's own forward over every position."""
    from trainer.copy_warmup import labelled_loss

    model, _, _, vocab = _tiny()
    rng = random.Random(5)
    ids = torch.tensor([[rng.choice(vocab) for _ in range(40)] for _ in range(3)])
    labels = ids.clone()
    labels[:, :20] = -100
    labels[1, 30:] = -100  # rows label different spans, as span and respell rows do

    own = model(input_ids=ids, labels=labels).loss
    own.backward()
    own_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    ours = labelled_loss(model, ids, labels)
    ours.backward()

    assert ours.item() == pytest.approx(own.item(), rel=1e-5)
    for theirs, mine in zip(own_grads, (p.grad for p in model.parameters())):
        assert torch.allclose(theirs, mine, atol=1e-6, rtol=1e-4)
