"""The tools the student sees: which of the offered tools, and how much of each schema.

One mapping, used by the dataset builder (a trace's `tools_offered`), by evaluation (which reads
the dataset's `tools` column) and by `trainer serve` (the `tools` of a live Claude Code request),
so the student is prompted at serve time exactly as it was trained.

Claude Code offers 14 tools whose JSON schemas and guidance come to ~36k characters (~4.6k tokens
with a 4k-vocabulary BPE, 8.6k with SmolLM2's tokenizer): most of a training example, every step.
The student does not need the guidance (it learns how each tool is used from the teacher's calls);
it needs the names, what each is for, and the argument names. Three levels, `dataset.tool_schema`:

    "full"       JSON schemas with descriptions cut to dataset.tool_description_chars at every
                 level, JSON-schema noise dropped (what understudy did before this module)
    "signature"  name, the first sentence of the description (≤ tool_description_chars), and the
                 parameters as {"name": "type"}, optional ones suffixed "?", enums as "a|b|c"
                 (the default)
    "required"   as "signature" with only the required parameters

    {"name": "Read", "description": "Reads a file from the local filesystem.",
     "parameters": {"file_path": "string", "offset": "integer?", "limit": "integer?"}}

`dataset.tools` keeps only the named tools (empty: every tool offered). Measured on the real
14-tool request Claude Code 2.1 sends (tests/data/claude_code_tools.json), system block included:
see docs/learning.md and `python -m trainer.tool_context`.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterable, Optional

from trainer.chat_template import _shorten, compact_tools

TOOL_SCHEMAS = ("full", "signature", "required")
DEFAULT_TOOL_SCHEMA = "signature"


def _first_sentence(text: str) -> str:
    text = " ".join((text or "").split())
    m = re.search(r"(?<=[.!?])\s", text)
    return text[: m.start()] if m else text


def _type_of(schema: Any) -> str:
    if not isinstance(schema, dict):
        return "any"
    if "enum" in schema and isinstance(schema["enum"], list):
        return "|".join(str(v) for v in schema["enum"])
    t = schema.get("type")
    if isinstance(t, list):
        return "|".join(str(x) for x in t)
    if t == "array":
        return f"array of {_type_of(schema.get('items'))}" if isinstance(schema.get("items"), dict) and schema["items"].get("type") in ("string", "number", "integer", "boolean") else "array"
    if isinstance(t, str):
        return t
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list):
            return "|".join(_type_of(s) for s in schema[key])
    return "any"


def _signature(tool: dict, description_chars: int, required_only: bool) -> dict:
    fn = tool.get("function", tool)
    params = fn.get("parameters", fn.get("input_schema")) or {}
    # A captured or requested schema is data: malformed parts (`properties` not an object,
    # `required` not a list of names) are read as absent, never a crash.
    props = params.get("properties") if isinstance(params, dict) else None
    if not isinstance(props, dict):
        props = {}
    listed = params.get("required") if isinstance(params, dict) else None
    required = {n for n in listed if isinstance(n, str)} if isinstance(listed, list) else set()
    out: dict[str, str] = {}
    for name, sub in props.items():
        if name in required:
            out[name] = _type_of(sub)
        elif not required_only:
            out[name] = _type_of(sub) + "?"
    return {
        "type": "function",
        "function": {
            "name": fn["name"],
            "description": _shorten(_first_sentence(fn.get("description") or ""), description_chars),
            "parameters": out,
        },
    }


_JSON_TYPES = {"string", "number", "integer", "boolean", "object", "array", "null"}


def _schema_of(type_text: str) -> dict:
    if type_text == "any":
        return {}
    if type_text.startswith("array of "):
        return {"type": "array", "items": _schema_of(type_text[len("array of "):])}
    parts = type_text.split("|")
    if all(p in _JSON_TYPES for p in parts):
        return {"type": parts[0] if len(parts) == 1 else parts}
    return {"enum": parts}


def is_signature(params: Any) -> bool:
    """A "signature"/"required" parameter map ({"name": "type"}), not a JSON schema."""
    return (isinstance(params, dict) and "properties" not in params and params.get("type") != "object"
            and all(isinstance(v, str) for v in params.values()))


def signature_to_schema(params: dict) -> dict:
    """The JSON schema a signature stands for, so evaluation can still validate calls against it."""
    props, required = {}, []
    for name, type_text in params.items():
        optional = type_text.endswith("?")
        props[name] = _schema_of(type_text[:-1] if optional else type_text)
        if not optional:
            required.append(name)
    return {"type": "object", "properties": props, "required": required}


def student_tools(
    offered: Iterable[dict],
    schema: str = DEFAULT_TOOL_SCHEMA,
    description_chars: int = 160,
    only: Optional[Iterable[str]] = None,
) -> list[dict]:
    """Offered tools (Anthropic- or OpenAI-style) as the student sees them, in the offered order."""
    if schema not in TOOL_SCHEMAS:
        raise ValueError(f"tool_schema must be one of {', '.join(TOOL_SCHEMAS)}, got {schema!r}")
    keep = set(only or [])
    tools = [t for t in offered if not keep or t.get("function", t).get("name") in keep]
    if schema == "full":
        return compact_tools(tools, description_chars)
    return [_signature(t, description_chars, schema == "required") for t in tools]


def tools_for(offered: Iterable[dict], dataset_config) -> list[dict]:
    """`student_tools` with a DatasetConfig's settings: the call the dataset builder and serve make."""
    return student_tools(
        offered,
        getattr(dataset_config, "tool_schema", DEFAULT_TOOL_SCHEMA),
        dataset_config.tool_description_chars,
        getattr(dataset_config, "tools", None),
    )


def context_tokens(offered: list[dict], schema: str, description_chars: int, tokenizer=None,
                   system_prompt: str = "") -> int:
    """Tokens of the system turn (system prompt + tool block) the student would see."""
    from trainer.chat_template import count_tokens, render

    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    text = render(messages + [{"role": "user", "content": "x"}], student_tools(offered, schema, description_chars))
    return count_tokens(text.split("<|eot_id|>")[0], tokenizer)


def main(argv: Optional[list[str]] = None) -> None:  # pragma: no cover - a measuring aid
    """python -m trainer.tool_context TOOLS.json [TOKENIZER_DIR]: tokens of each level."""
    import sys

    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        sys.exit("usage: python -m trainer.tool_context TOOLS.json [TOKENIZER_DIR] (TOOLS.json: a request's "
                 "`tools`, e.g. tests/data/claude_code_tools.json)")
    offered = json.loads(open(argv[0]).read())
    tokenizer = None
    if len(argv) > 1:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(argv[1])
    for schema in TOOL_SCHEMAS:
        for chars in (80, 160, 400):
            print(f"{schema:9} description_chars={chars:3}: {context_tokens(offered, schema, chars, tokenizer)} tokens")


if __name__ == "__main__":  # pragma: no cover
    main()
