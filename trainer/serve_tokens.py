"""The prompt's tokens for `trainer serve`: counted for every request, and handed to the backend.

Counting is on every request's path before its first token (the 400 for a prompt too long, the
usage in message_start), and Claude Code resends the whole conversation each turn:
`PrefixTokenizer` tokenizes only what follows the longest part of the prompt already seen (turn
boundaries), so a turn costs its new messages, not the history. The same token ids then go to
the model: llama.cpp's own tokenization of a ~400-token prompt cost ~1.4 ms of the time to
first token on 2 CPU cores, and the transformers backend tokenized the whole conversation again.
"""

from __future__ import annotations

import threading
from array import array
from collections import OrderedDict
from typing import Callable, Optional, Sequence

from trainer.chat_template import BEGIN_OF_TEXT, END_OF_TURN, START_HEADER, TOOL_CALL_OPEN, render

# Prompts longer than this many characters are counted a piece at a time (see count_bounded).
COUNT_CHUNK_CHARS = 32_768

Encode = Callable[[str], Sequence[int]]


def count_bounded(count: Callable[[str], int], text: str, limit: Optional[int], chunk: int = COUNT_CHUNK_CHARS) -> int:
    """Tokens in `text`, tokenizing at most about `limit` tokens' worth when it is longer.

    Chunk seams can add a token or two each (a word cut in half), so a prompt is called too long
    only past a margin of 16 per chunk; below that the whole prompt is counted exactly. Without a
    limit (count_tokens), a long text's count is the sum of its chunks: memory stays bounded and
    the count is within the seams' few tokens.
    """
    if len(text) <= chunk:
        return count(text)
    total = 0
    for k, start in enumerate(range(0, len(text), chunk), 1):
        total += count(text[start : start + chunk])
        if limit is not None and total > limit + 16 * k:
            return total
    return count(text) if limit is not None else total


def token_encoder(tokenizer) -> Encode:
    """tokenizer(text, add_special_tokens=False)["input_ids"], through the Rust tokenizer itself
    when the tokenizer has one: the call through transformers' batch encoding cost ~0.4 ms of
    each request's time to first token on a busy machine, the direct one ~0.05 ms. The two are
    compared once on a probe with the template's tokens; any difference keeps the transformers
    call."""

    def slow(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or getattr(tokenizer, "split_special_tokens", False):
        return slow

    def fast(text: str) -> list[int]:
        return backend.encode(text, add_special_tokens=False).ids

    probe = f"{BEGIN_OF_TEXT}{START_HEADER}user<|end_header_id|>\n\n  Ünïcödé 🙂 {TOOL_CALL_OPEN}{{\"a\": 1}}{END_OF_TURN}"
    try:
        same = list(fast(probe)) == list(slow(probe)) and list(fast("")) == list(slow(""))
    except Exception:
        same = False
    return fast if same else slow


def probe_prompt() -> str:
    """A short conversation with every kind of turn, unicode, tabs and runs of spaces: where
    tokenizers that differ tend to show it."""
    return render(
        [
            {"role": "system", "content": "You are a probe. Ünïcödé, tabs\t and  spaces."},
            {"role": "user", "content": "List the files, then read setup.py"},
            {"role": "assistant", "content": "I'll list them.", "tool_calls": [
                {"id": "t1", "type": "function", "function": {"name": "Bash", "arguments": '{"command": "ls -la"}'}}]},
            {"role": "tool", "tool_call_id": "t1", "content": "setup.py\nREADME.md\n"},
            {"role": "user", "content": "  thanks 🙂\n\n"},
        ],
        add_generation_prompt=True,
    )


class PrefixTokenizer:
    """count(prompt, limit) and ids(prompt), remembering the tokens of the prompt's leading turns.

    A rendered prompt is a run of turns, each starting with `<|start_header_id|>`; the last is
    the generation prompt (with any assistant prefill). Each turn's ids and the count of every
    turn-boundary prefix are kept (keyed by a hash chain over the turns, so a lookup costs one
    pass over the text), and the next prompt only tokenizes what follows the longest prefix
    already known: the compact system prompt and tools are the same on every request, and each
    Claude Code turn is the previous conversation plus a few messages.

    Exact only where a tokenizer splits special tokens out before tokenizing the text between
    them (true of the byte-level BPE and SentencePiece vocabularies here). That is checked once
    on a probe conversation; a tokenizer that fails it has every prompt tokenized whole.
    """

    def __init__(self, encode: Encode, max_entries: int = 4096, max_tokens: int = 1 << 20):
        self._encode = encode
        self.max_entries = max_entries
        self.max_tokens = max_tokens  # ids kept, all turns together (4 bytes each)
        self._known: OrderedDict[int, int] = OrderedDict()  # chain key -> tokens through this turn
        self._ids: OrderedDict[int, array] = OrderedDict()  # chain key -> this turn's own ids
        self._kept = 0
        # Short last turns (the generation prompt: mostly the same few strings).
        self._last: OrderedDict[str, Sequence[int]] = OrderedDict()
        self._lock = threading.Lock()
        self.additive: Optional[bool] = None  # decided on first use

    @staticmethod
    def turns(prompt: str) -> list[str]:
        parts = prompt.split(START_HEADER)
        out = [parts[0]] if parts[0] else []
        return out + [START_HEADER + p for p in parts[1:]]

    @staticmethod
    def _keys(turns: list[str]) -> list[int]:
        keys, key = [], 0
        for turn in turns:
            key = hash((key, turn))
            keys.append(key)
        return keys

    def count_text(self, text: str) -> int:
        return len(self._encode(text))

    def _is_additive(self) -> bool:
        if self.additive is None:
            probe = probe_prompt()
            probe = probe[len(BEGIN_OF_TEXT):] if probe.startswith(BEGIN_OF_TEXT) else probe
            joined: list[int] = []
            for turn in self.turns(probe):
                joined += self._encode(turn)
            self.additive = joined == list(self._encode(probe))
        return self.additive

    def __call__(self, prompt: str, limit: Optional[int] = None) -> int:
        """The prompt's tokens; past `limit`, a lower bound found without tokenizing the rest."""
        if not self._is_additive():
            return count_bounded(self.count_text, prompt, limit)
        turns = self.turns(prompt)
        keys = self._keys(turns)
        k, total = -1, 0
        with self._lock:
            for i in range(len(keys) - 2, -1, -1):  # the last turn (the generation prompt) is counted anew
                if keys[i] in self._known:
                    k, total = i, self._known[keys[i]]
                    self._known.move_to_end(keys[i])
                    break
        exact = True
        for i in range(k + 1, len(turns) - 1):
            turn = turns[i]
            if len(turn) > COUNT_CHUNK_CHARS:
                # Counted a piece at a time and not kept: past the limit a lower bound, and without
                # one (count_tokens) the sum of its pieces, so no later prefix is exact either.
                total += count_bounded(self.count_text, turn, None if limit is None else max(0, limit - total))
                exact = exact and limit is not None
            else:
                ids = self._encode(turn)
                total += len(ids)
                if exact:
                    self._keep(keys[i], total, ids)
            if limit is not None and total > limit:
                return total  # too long already (a lower bound): the rest need not be counted
        return total + len(self._last_ids(turns[-1]))

    def ids(self, prompt: str) -> Optional[list[int]]:
        """The prompt's token ids, as the tokenizer gives them for the whole prompt; None when the
        tokenizer does not tokenize turn by turn (then the backend tokenizes the text itself)."""
        if not self._is_additive():
            return None
        turns = self.turns(prompt)
        keys = self._keys(turns)
        out: list[int] = []
        total = 0
        for key, turn in zip(keys[:-1], turns[:-1]):
            with self._lock:
                kept = self._ids.get(key)
                if kept is not None:
                    self._ids.move_to_end(key)
            ids = kept if kept is not None else self._encode(turn)
            out += ids
            total += len(ids)
            if kept is None:
                self._keep(key, total, ids)
        return out + list(self._last_ids(turns[-1]))

    def _keep(self, key: int, total: int, ids: Sequence[int]) -> None:
        with self._lock:
            self._known[key] = total
            self._known.move_to_end(key)
            if key not in self._ids:
                self._ids[key] = array("i", ids)
                self._kept += len(ids)
            while len(self._known) > self.max_entries:
                self._known.popitem(last=False)
            while self._ids and (len(self._ids) > self.max_entries or self._kept > self.max_tokens):
                self._kept -= len(self._ids.popitem(last=False)[1])

    def _last_ids(self, turn: str) -> Sequence[int]:
        if len(turn) > 256:
            return self._encode(turn)
        with self._lock:
            ids = self._last.get(turn)
        if ids is None:
            ids = tuple(self._encode(turn))
            with self._lock:
                self._last[turn] = ids
                while len(self._last) > 64:
                    self._last.popitem(last=False)
        return ids
