"""understudy's one chat template, and everything that decides what text the student sees.

The same template is used to build training examples (trainer build-dataset, trainer sft), to
prompt the student (trainer eval, trainer serve) and to export it (GGUF metadata, Ollama
Modelfile). The stock Llama 3.x templates render only the first of several tool calls and have
no `{% generation %}` markers, so TRL's `assistant_only_loss` cannot use them.

What a conversation looks like (LLaMA-3 special tokens):

    <|begin_of_text|><|start_header_id|>system<|end_header_id|>

    {system prompt}

    # Tools
    ...
    {"name": "Read", "description": "...", "parameters": {...}}<|eot_id|><|start_header_id|>user<|end_header_id|>

    {prompt}<|eot_id|><|start_header_id|>assistant<|end_header_id|>
    First I'll read the schema.
    <tool_call>{"name": "Read", "arguments": {"file_path": "db/schema.sql"}}</tool_call><|eot_id|><|start_header_id|>tool<|end_header_id|>

    {result}<|eot_id|><|start_header_id|>assistant<|end_header_id|>
    {final answer}<|eot_id|>

Portability rules the template keeps, so llama.cpp's Jinja engine renders it exactly as
transformers does: every piece of text is a string expression (no whitespace that depends on
trim_blocks/lstrip_blocks), the only filter is `tojson`, and tool-call arguments are stored as a
JSON string and printed verbatim (a dict, as some callers send, goes through `tojson`). Assistant
content plus its closing `<|eot_id|>` sit inside `{% generation %}` so the loss mask teaches the
model to stop; the assistant header is outside, because at inference the prompt supplies it.

The assistant header ends in one newline, not Llama 3's two, so that the prompt the student is
given ends on the same token it saw there in training. A GPT-2-style pre-tokenizer (SmolLM2's)
splits "\n\nLet" as "\n", "\n", "Let", but a prompt ending in "\n\n" as the one token "\n\n",
which no training example had before an assistant turn: the same SmolLM2 student scored first tool
0.375 prompted that way and 0.938 prompted with the tokens of training (docs/learning.md §3). One
newline is one token whatever follows it, with every tokenizer here (test_chat_template.py).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Optional

BEGIN_OF_TEXT = "<|begin_of_text|>"
END_OF_TEXT = "<|end_of_text|>"
START_HEADER = "<|start_header_id|>"
END_HEADER = "<|end_header_id|>"
END_OF_TURN = "<|eot_id|>"
TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
# Llama 3.1+ reserve this id for padding; other LLaMA-family tokenizers get it added.
PAD_TOKEN = "<|finetune_right_pad_id|>"

# Control tokens: never produced from plain text, hidden by skip_special_tokens.
CONTROL_TOKENS = [BEGIN_OF_TEXT, END_OF_TEXT, START_HEADER, END_HEADER, END_OF_TURN, PAD_TOKEN]
# The tool-call tags are single tokens but not "special": decode(skip_special_tokens=True) and
# llama.cpp's text output keep them, so a parser downstream can still find the calls.
TOOL_CALL_TOKENS = [TOOL_CALL_OPEN, TOOL_CALL_CLOSE]
SPECIAL_TOKENS = CONTROL_TOKENS + TOOL_CALL_TOKENS

DEFAULT_SYSTEM_PROMPT = (
    "You are a coding agent working in the user's repository. Use the tools to inspect and change "
    "files and run commands, explain briefly what you are doing, then answer the user."
)

CHAT_TEMPLATE = r"""{#- understudy chat template v2: see trainer/chat_template.py -#}
{{- '<|begin_of_text|>' -}}
{%- if messages and messages[0].role == 'system' -%}
  {%- set system_message = messages[0].content if messages[0].content is string else '' -%}
  {%- set loop_messages = messages[1:] -%}
{%- else -%}
  {%- set system_message = '' -%}
  {%- set loop_messages = messages -%}
{%- endif -%}
{%- if system_message or tools -%}
  {{- '<|start_header_id|>system<|end_header_id|>\n\n' + system_message -}}
  {%- if tools -%}
    {%- if system_message -%}{{- '\n\n' -}}{%- endif -%}
    {{- '# Tools\n\nTo call a tool, write on its own line <tool_call>{"name": <tool name>, "arguments": <JSON object>}</tool_call>. Several calls in one turn run in parallel; their results come back as tool messages.\n' -}}
    {%- for tool in tools -%}
      {%- set fn = tool.function if tool.function is defined else tool -%}
      {%- if fn.parameters is defined -%}
        {%- set params = fn.parameters -%}
      {%- elif fn.input_schema is defined -%}
        {%- set params = fn.input_schema -%}
      {%- else -%}
        {%- set params = {} -%}
      {%- endif -%}
      {%- set description = fn.description if fn.description is string else '' -%}
      {{- '\n{"name": ' + (fn.name | tojson) + ', "description": ' + (description | tojson) + ', "parameters": ' + (params | tojson) + '}' -}}
    {%- endfor -%}
  {%- endif -%}
  {{- '<|eot_id|>' -}}
{%- endif -%}
{%- for message in loop_messages -%}
  {%- set content = message.content if message.content is string else '' -%}
  {%- if message.role == 'assistant' -%}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n' -}}
    {%- generation -%}
      {{- content -}}
      {%- if message.tool_calls -%}
        {%- for call in message.tool_calls -%}
          {%- set fn = call.function if call.function is defined else call -%}
          {%- if content or not loop.first -%}{{- '\n' -}}{%- endif -%}
          {{- '<tool_call>{"name": ' + (fn.name | tojson) + ', "arguments": ' -}}
          {%- if fn.arguments is string -%}
            {{- fn.arguments -}}
          {%- elif fn.arguments is defined -%}
            {{- fn.arguments | tojson -}}
          {%- else -%}
            {{- '{}' -}}
          {%- endif -%}
          {{- '}</tool_call>' -}}
        {%- endfor -%}
      {%- endif -%}
      {{- '<|eot_id|>' -}}
    {%- endgeneration -%}
  {%- else -%}
    {{- '<|start_header_id|>' + message.role + '<|end_header_id|>\n\n' + content + '<|eot_id|>' -}}
  {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
  {{- '<|start_header_id|>assistant<|end_header_id|>\n' -}}
{%- endif -%}
"""

GENERATION_PROMPT = f"{START_HEADER}assistant{END_HEADER}\n"


# How Claude Code 2.1.328 shows the model a message the user typed while it worked: interactively
# as text after the tool results it arrived with, in the same user message; with `-p` as a system
# message (role "system" inside `messages`) after them. `trainer serve` makes either a user turn
# after the tool turns, so training shows the student the same words in the same place.
MID_TURN_MESSAGE = (
    "The user sent a new message while you were working:\n{text}\n\nThis is how Claude Code surfaces messages "
    "the user sends mid-turn \u2014 within the running turn, often alongside the next tool result, rather than as a "
    "separate conversation turn. Address the message above as you continue this turn."
)


def mid_turn_text(text: str) -> str:
    return MID_TURN_MESSAGE.format(text=text)


_MID_TURN_HEAD, _MID_TURN_TAIL = MID_TURN_MESSAGE.split("{text}")


def is_mid_turn_text(text: str) -> bool:
    """Whether `text` is Claude Code's wording of a message the user typed mid-turn."""
    return text.startswith(_MID_TURN_HEAD) and text.endswith(_MID_TURN_TAIL)


# How Claude Code (2.1.42, 2.1.328) words what a user's hook shows the model: a Stop hook's reason
# to go on is a user turn of its own ("Stop hook feedback:\n..."); a blocking hook's reason and a
# hook's additionalContext are reminders naming the hook ("PostToolUse:Bash hook additional
# context: ..."). Claude Code also names the blocking hook's command; the dataset leaves that local
# path out.
STOP_HOOK_FEEDBACK = "Stop hook feedback:\n{text}"  # a SubagentStop hook's too (2.1.328)
HOOK_BLOCKING_ERROR = "{hook} hook blocking error: {text}"
HOOK_ADDITIONAL_CONTEXT = "{hook} hook additional context: {text}"
HOOK_OUTPUT = "{hook} hook success: {text}"  # a UserPromptSubmit hook's plain stdout


def told_text(kind: str, text: str, hook: str | None = None) -> str:
    """A mid-turn message (schema.MidTurnMessage) as Claude Code shows it to the model."""
    if kind == "user":
        return mid_turn_text(text)
    text = text.strip()  # as serve reads Claude Code's request (exit 2's reason ends in stderr's newline)
    if kind == "hook_feedback" and hook in ("Stop", "SubagentStop"):
        return STOP_HOOK_FEEDBACK.format(text=text)
    template = {"hook_feedback": HOOK_BLOCKING_ERROR, "hook_output": HOOK_OUTPUT}.get(kind, HOOK_ADDITIONAL_CONTEXT)
    return template.format(hook=hook or "A", text=text)


def dump_arguments(arguments: Any) -> str:
    """Tool-call arguments as the JSON string the template prints verbatim.

    Every producer (dataset builder, server, tests) serializes through here so the model sees one
    spelling: `json.dumps` defaults, which is also what the template's `tojson` writes.
    """
    return json.dumps(arguments, ensure_ascii=False)


# ---------------------------------------------------------------------------------------------
# Applying the template to a tokenizer, and rendering without one.


def apply_chat_template(tokenizer) -> int:
    """Install CHAT_TEMPLATE on a Hugging Face tokenizer and make sure its tokens exist.

    Returns how many tokens were added; when it is not 0 the caller must
    `model.resize_token_embeddings(len(tokenizer))`. Sets a pad token when there is none.
    """
    from tokenizers import AddedToken

    vocab = tokenizer.get_vocab()
    missing_control = [t for t in CONTROL_TOKENS if t not in vocab]
    missing_tags = [t for t in TOOL_CALL_TOKENS if t not in vocab]
    added = 0
    if missing_control:
        added += tokenizer.add_tokens(
            [AddedToken(t, special=True, normalized=False) for t in missing_control], special_tokens=True
        )
    if missing_tags:
        added += tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in missing_tags])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = PAD_TOKEN
    tokenizer.chat_template = CHAT_TEMPLATE
    return added


def _normalize_messages(messages: list[dict]) -> list[dict]:
    # transformers' apply_chat_template drops None-valued keys (Arrow fills absent keys with None),
    # so render() does the same to stay byte-identical with it.
    return [{k: v for k, v in m.items() if v is not None} for m in messages]


def load_tools(tools: Any) -> Optional[list[dict]]:
    """Tools as the template takes them, from a JSON string (the dataset column) or a list."""
    if tools is None or tools == "":
        return None
    if isinstance(tools, str):
        tools = json.loads(tools)
    return list(tools) or None


def render(messages: list[dict], tools_json: Any = None, add_generation_prompt: bool = False) -> str:
    """Render messages as text without a tokenizer, exactly as tokenizer.apply_chat_template does.

    `tools_json` is the dataset's `tools` column (a JSON string) or a list of tool schemas.
    """
    from transformers.utils.chat_template_utils import render_jinja_template

    rendered, _ = render_jinja_template(
        conversations=[_normalize_messages(messages)],
        tools=load_tools(tools_json),
        chat_template=CHAT_TEMPLATE,
        add_generation_prompt=add_generation_prompt,
    )
    return rendered[0]


# ---------------------------------------------------------------------------------------------
# Parsing what the model wrote.


@dataclass
class ParsedCall:
    name: Optional[str]
    arguments: dict
    raw: str
    valid_json: bool


@dataclass
class ParsedTurn:
    narration: str
    tool_calls: list[ParsedCall] = field(default_factory=list)


_CALL_RE = re.compile(re.escape(TOOL_CALL_OPEN) + r"(.*?)(?:" + re.escape(TOOL_CALL_CLOSE) + r"|$)", re.DOTALL)
_TRAILING_STOP_RE = re.compile(r"(?:\s*(?:" + "|".join(map(re.escape, [END_OF_TURN, END_OF_TEXT])) + r"))+\s*$")


def _parse_call(raw: str) -> ParsedCall:
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError):
        return ParsedCall(name=None, arguments={}, raw=raw, valid_json=False)
    if not isinstance(obj, dict):
        return ParsedCall(name=None, arguments={}, raw=raw, valid_json=False)
    name = obj.get("name") if isinstance(obj.get("name"), str) else None
    arguments = obj.get("arguments", {})
    if isinstance(arguments, str):  # some models double-encode the arguments
        try:
            arguments = json.loads(arguments)
        except ValueError:
            pass
    if not isinstance(arguments, dict):
        return ParsedCall(name=name, arguments={}, raw=raw, valid_json=False)
    return ParsedCall(name=name, arguments=arguments, raw=raw, valid_json=name is not None)


def parse_assistant_output(text: str) -> ParsedTurn:
    """Split an assistant turn into narration and tool calls. Never raises.

    A call whose JSON does not parse, lacks a string "name" or has non-object arguments comes back
    with valid_json=False; an unclosed `<tool_call>` (generation cut off) counts as malformed.
    """
    text = _TRAILING_STOP_RE.sub("", text or "")
    calls = [_parse_call(m.group(1).strip()) for m in _CALL_RE.finditer(text)]
    narration = _CALL_RE.sub("\n", text)
    narration = re.sub(r"\n{3,}", "\n\n", narration).strip()
    return ParsedTurn(narration=narration, tool_calls=calls)


# ---------------------------------------------------------------------------------------------
# Context shaping shared by training and serving, so the student sees the same compact context.


def _shorten(text: str, max_chars: int) -> str:
    text = " ".join(text.split())
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    # Prefer ending on a sentence, else a word boundary.
    stop = cut.rfind(". ")
    if stop >= max_chars // 2:
        return cut[: stop + 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > 0 else cut).rstrip(" ,;:") + "…"


_SCHEMA_NOISE = {"$schema", "additionalProperties", "title", "examples", "default"}


def _compact_schema(schema: Any, description_chars: int) -> Any:
    if isinstance(schema, list):
        return [_compact_schema(s, description_chars) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key in _SCHEMA_NOISE:
            continue
        if key == "description" and isinstance(value, str):
            out[key] = _shorten(value, description_chars)
        elif key == "properties" and isinstance(value, dict):
            # Property names are data here, not schema keywords: keep every one.
            out[key] = {name: _compact_schema(sub, description_chars) for name, sub in value.items()}
        else:
            out[key] = _compact_schema(value, description_chars)
    return out


def compact_tools(tools: list[dict], description_chars: int = 160) -> list[dict]:
    """Tool schemas as the student sees them: `{"type": "function", "function": {name, description, parameters}}`.

    Accepts Anthropic-style `{"name", "description", "input_schema"}` (what traces and Claude
    Code's requests carry) or the OpenAI/transformers style. Descriptions, at every level, are cut
    to `description_chars`; JSON-schema noise ($schema, additionalProperties, title, ...) is dropped;
    property names, types, enums and `required` are kept.
    """
    out = []
    for tool in tools:
        fn = tool.get("function", tool)
        params = fn.get("parameters", fn.get("input_schema")) or {"type": "object", "properties": {}}
        out.append(
            {
                "type": "function",
                "function": {
                    "name": fn["name"],
                    "description": _shorten(fn.get("description") or "", description_chars),
                    "parameters": _compact_schema(params, description_chars),
                },
            }
        )
    return out


def count_tokens(text: str, tokenizer=None) -> int:
    """Tokens in `text` with the tokenizer, else an estimate of 4 characters per token."""
    if tokenizer is not None:
        return len(tokenizer.encode(text, add_special_tokens=False))
    return (len(text) + 3) // 4


def trim_tool_result(text: str, max_tokens: int, tokenizer=None) -> tuple[str, int]:
    """Cut a tool result to about `max_tokens`, keeping its head and tail around a visible marker.

    Returns (text, tokens trimmed). The tail is kept because that is where test runners and
    compilers print their summary.
    """
    total = count_tokens(text, tokenizer)
    if max_tokens <= 0 or total <= max_tokens:
        return text, 0
    head_n = (max_tokens * 3) // 4
    tail_n = max_tokens - head_n
    trimmed = total - head_n - tail_n
    if tokenizer is not None:
        ids = tokenizer.encode(text, add_special_tokens=False)
        head = tokenizer.decode(ids[:head_n])
        tail = tokenizer.decode(ids[len(ids) - tail_n :]) if tail_n else ""
    else:
        head = text[: head_n * 4]
        tail = text[len(text) - tail_n * 4 :] if tail_n else ""
    return f"{head}\n[... trimmed {trimmed} tokens ...]\n{tail}", trimmed
