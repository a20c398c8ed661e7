"""`tool_choice` by constrained decoding: what the student may write when a call is forced or forbidden.

    none            the `<tool_call>` token is banned (its logit is -inf), so no call can start
    any             the turn is exactly `<tool_call>{"name": "<one of the tools>", "arguments": {JSON
                    object}}</tool_call>`, then more calls on new lines (or, with
                    disable_parallel_tool_use, nothing but the end of the turn)
    tool (name)     the same with the one name
    auto            unconstrained; disable_parallel_tool_use stops the turn after the first call

The forced language is the chat template's own call syntax, so a forced call reads to the student
as one it was trained to write, and every accepted output parses as a call (the API, too, writes
no text before a forced tool_use). The transformers backend checks candidate tokens against
`ToolCallValidator`, a character-level recognizer of that language (best-scoring tokens first,
so a step costs a handful of checks); the llama.cpp backend gets the same language as a GBNF
grammar (`gbnf()`), which llama.cpp's sampler enforces.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Optional

from trainer.chat_template import TOOL_CALL_CLOSE, TOOL_CALL_OPEN


@dataclass
class Constraint:
    """What a request allows: built from tool_choice by the server, read by the backends."""

    kind: str = "auto"  # auto | any | tool | none
    names: list[str] = field(default_factory=list)  # tools a forced call may name
    parallel: bool = True

    @property
    def forced(self) -> bool:
        return self.kind in ("any", "tool")

    def validator(self) -> Optional["ToolCallValidator"]:
        return ToolCallValidator(self.names, self.parallel) if self.forced else None


def _call_head(name: str) -> str:
    return TOOL_CALL_OPEN + '{"name": ' + json.dumps(name, ensure_ascii=False) + ', "arguments": '


_NUMBER_PREFIX = re.compile(r"-?(?:0|[1-9]\d*)?(?:(?<=\d)\.\d*)?(?:(?<=\d)[eE][+-]?\d*)?")
_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?")
_WS = " \t\n\r"
_LITERALS = ("true", "false", "null")


class ToolCallValidator:
    """Accepts exactly the prefixes of: call ("\\n" call)* (or one call without parallel calls).

    feed(text) returns False (and leaves the state unusable) as soon as `text` leaves the
    language; clone() is cheap, so a caller tries a candidate token on a copy.
    """

    def __init__(self, names: list[str], parallel: bool = True):
        self.heads = [_call_head(n) for n in names]
        self.parallel = parallel
        self.mode = "head"  # head | json | tail | between | done
        self.buf = ""  # the head or tail written so far
        self.stack: list[str] = []  # open JSON containers: "{" or "["
        self.state = "start"  # inside the JSON value
        self.token = ""  # current number or literal
        self.hex_left = 0

    def clone(self) -> "ToolCallValidator":
        other = object.__new__(ToolCallValidator)
        other.__dict__.update(self.__dict__)
        other.stack = list(self.stack)
        return other

    def can_end(self) -> bool:
        return self.mode == "between" or self.mode == "done"

    def feed(self, text: str) -> bool:
        for ch in text:
            if not self._char(ch):
                return False
        return True

    # -- one character

    def _char(self, ch: str) -> bool:
        mode = self.mode
        if mode == "head":
            self.buf += ch
            if not any(h.startswith(self.buf) for h in self.heads):
                return False
            if self.buf in self.heads:
                self.mode, self.buf, self.state = "json", "", "start"
            return True
        if mode == "json":
            return self._json(ch)
        if mode == "tail":
            self.buf += ch
            target = "}" + TOOL_CALL_CLOSE
            if not target.startswith(self.buf):
                return False
            if self.buf == target:
                self.mode, self.buf = ("between" if self.parallel else "done"), ""
            return True
        if mode == "between":  # another call must follow on its own line
            if ch != "\n":
                return False
            self.mode = "head"
            return True
        return False  # done: nothing may follow but the end of the turn

    def _close_value(self) -> None:
        if not self.stack:
            self.mode, self.buf = "tail", ""
        else:
            self.state = "after_value"

    def _end_token(self) -> bool:
        tok, self.token = self.token, ""
        if tok[0] in "-0123456789":
            return bool(_NUMBER.fullmatch(tok))
        return tok in _LITERALS

    def _json(self, ch: str) -> bool:
        s = self.state
        if s == "start":  # the arguments: an object, nothing else
            if ch != "{":
                return False
            self.stack.append("{")
            self.state = "key_or_close"
            return True
        if s in ("string", "key_string"):
            if ch == "\\":
                self.state = s + "_escape"
            elif ch == '"':
                if s == "key_string":
                    self.state = "colon"
                else:
                    self._close_value()
            elif ord(ch) < 0x20:
                return False
            return True
        if s.endswith("_escape"):
            base = s[: -len("_escape")]
            if ch == "u":
                self.state, self.hex_left = base + "_hex", 4
                return True
            if ch not in '"\\/bfnrt':
                return False
            self.state = base
            return True
        if s.endswith("_hex"):
            if ch not in "0123456789abcdefABCDEF":
                return False
            self.hex_left -= 1
            if self.hex_left == 0:
                self.state = s[: -len("_hex")]
            return True
        if s == "token":  # inside a number or literal
            candidate = self.token + ch
            if self.token[0] in "-0123456789":
                m = _NUMBER_PREFIX.match(candidate)
                if m and m.end() == len(candidate):
                    self.token = candidate
                    return True
            elif any(lit.startswith(candidate) for lit in _LITERALS):
                self.token = candidate
                return True
            if not self._end_token():
                return False
            self.state = "after_value"
            return self._json(ch)
        if ch in _WS:
            return True
        if s == "key_or_close":
            if ch == "}":
                return self._pop("{")
            if ch == '"':
                self.state = "key_string"
                return True
            return False
        if s == "key":
            if ch == '"':
                self.state = "key_string"
                return True
            return False
        if s == "colon":
            if ch == ":":
                self.state = "value"
                return True
            return False
        if s in ("value", "value_or_close"):
            if s == "value_or_close" and ch == "]":
                return self._pop("[")
            if ch == '"':
                self.state = "string"
            elif ch == "{":
                self.stack.append("{")
                self.state = "key_or_close"
            elif ch == "[":
                self.stack.append("[")
                self.state = "value_or_close"
            elif ch in "-0123456789" or ch in "tfn":
                self.token, self.state = ch, "token"
            else:
                return False
            return True
        if s == "after_value":
            top = self.stack[-1]
            if ch == ",":
                self.state = "key" if top == "{" else "value"
                return True
            if ch in "}]":
                return self._pop("{" if ch == "}" else "[")
            return False
        return False

    def _pop(self, opener: str) -> bool:
        if not self.stack or self.stack[-1] != opener:
            return False
        self.stack.pop()
        self._close_value()
        return True


def _gbnf_literal(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def gbnf(constraint: Constraint) -> str:
    """The forced-call language as a llama.cpp grammar (the same language ToolCallValidator accepts)."""
    heads = " | ".join(_gbnf_literal(_call_head(n)) for n in constraint.names)
    root = 'root ::= call ("\\n" call)*' if constraint.parallel else "root ::= call"
    return "\n".join(
        [
            root,
            f"call ::= ({heads}) object {_gbnf_literal('}' + TOOL_CALL_CLOSE)}",
            'object ::= "{" ws ( string ws ":" ws value ws ( "," ws string ws ":" ws value ws )* )? "}"',
            'array ::= "[" ws ( value ws ( "," ws value ws )* )? "]"',
            'value ::= object | array | string | number | "true" | "false" | "null"',
            'string ::= "\\"" ( [^"\\\\\\x00-\\x1f] | "\\\\" ( ["\\\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] ) )* "\\""',
            'number ::= "-"? ( "0" | [1-9] [0-9]* ) ( "." [0-9]+ )? ( [eE] [-+]? [0-9]+ )?',
            "ws ::= [ \\t\\n]*",
        ]
    ) + "\n"


class TokenFilter:
    """Picks the tokens a forced call allows, for the transformers backend (a logits processor).

    Token texts are decoded lazily and cached per id; special tokens are never part of a call,
    and the end-of-turn tokens are allowed only where the language may end.
    """

    def __init__(self, tokenizer, constraint: Constraint, stop_ids: list[int], prompt_len: int, top: int = 64):
        self.tokenizer = tokenizer
        self.validator = constraint.validator()
        self.stop_ids = set(stop_ids)
        self.special = set(tokenizer.all_special_ids) - self.stop_ids
        self.prompt_len = prompt_len
        self.seen = prompt_len
        self.top = top
        self.texts: dict[int, str] = {}

    def text(self, token_id: int) -> Optional[str]:
        if token_id in self.special:
            return None
        if token_id not in self.texts:
            self.texts[token_id] = self.tokenizer.decode([token_id], skip_special_tokens=False)
        return self.texts[token_id]

    def allowed(self, token_id: int) -> bool:
        if token_id in self.stop_ids:
            return self.validator.can_end()
        text = self.text(token_id)
        return bool(text) and self.validator.clone().feed(text)

    def __call__(self, input_ids, scores):
        import torch

        # Advance the validator by the token chosen at the previous step.
        for token_id in input_ids[0, self.seen:].tolist():
            if token_id not in self.stop_ids:
                self.validator.feed(self.text(token_id) or "")
        self.seen = input_ids.shape[1]
        order = torch.argsort(scores[0], descending=True).tolist()
        keep: list[int] = []
        for i, token_id in enumerate(order):
            if self.allowed(token_id):
                keep.append(token_id)
            if keep and (len(keep) >= self.top or i >= self.top * 4):
                break
        masked = torch.full_like(scores, float("-inf"))
        if keep:
            idx = torch.tensor(keep, device=scores.device)
            masked[0, idx] = scores[0, idx]
            if torch.isinf(masked[0, idx]).all():  # every allowed token was cut by top-k/top-p
                masked[0, keep[0]] = 0.0
        return masked
