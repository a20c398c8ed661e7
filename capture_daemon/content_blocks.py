"""What a model reads in one Messages API content block, for every block that carries text.

Shared by transcript import (capture_daemon/transcript.py) and `trainer serve`, so a document or
a search result in a served request reads as it did in the traces the student learned from.
A block with nothing readable (an image, a PDF as base64, a URL) becomes a short marker: the
student learns that something was there, not what.
"""

from __future__ import annotations

from typing import Any


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [text for block in content if (text := block_text(block))]
    return []


def _marker(kind: str, title: Any) -> str:
    return f"[{kind}: {title}]" if isinstance(title, str) and title.strip() else f"[{kind}]"


def _document_text(block: dict) -> str:
    source = block.get("source")
    source = source if isinstance(source, dict) else {}
    if source.get("type") == "text" and isinstance(source.get("data"), str):
        body = [source["data"]]
    elif source.get("type") == "content":
        body = _texts(source.get("content"))
    else:  # base64 (a PDF), url, file: nothing here to read
        body = []
    return "\n".join([_marker("document", block.get("title")), *body])


def _search_result_text(block: dict) -> str:
    title = block.get("title")
    where = block.get("source")
    head = _marker("search result", f"{title} ({where})" if isinstance(title, str) and isinstance(where, str) else title)
    return "\n".join([head, *_texts(block.get("content"))])


# The block types `block_text` reads something from (the rest carry nothing a model reads).
READABLE_BLOCKS = ("text", "image", "document", "search_result", "tool_reference")


def block_text(block: Any) -> str:
    """The block's text ("" for one that carries none, or that is not a block at all)."""
    if not isinstance(block, dict):
        return ""
    kind = block.get("type")
    if kind == "text":
        text = block.get("text", "")
        return text if isinstance(text, str) else str(text)
    if kind == "image":
        return "[image]"
    if kind == "document":
        return _document_text(block)
    if kind == "search_result":
        return _search_result_text(block)
    if kind == "tool_reference":  # ToolSearch's result: the API loads that tool's definition
        return _marker("tool reference", block.get("tool_name"))
    return ""


# What stands in for base64 a hook payload carried (an image or PDF a tool returned): the model
# read a picture or a document there, never the characters, and a trace or the store has no use
# for them (a screenshot is megabytes).
BASE64_LEFT_OUT = "[base64 left out]"
# Read's tool_response `type` for a file it sent as a block, and the marker block_text gives it.
_READ_FILE_MARKERS = {"image": "[image]", "pdf": "[document]"}


def leave_out_base64(value: Any) -> Any:
    """`value` with each base64 payload replaced by BASE64_LEFT_OUT: Read's `file.base64`, a
    content block's `source.data` (source type base64) and an MCP block's `data` (type image or
    audio). Iterative: a payload nests as deep as spool.MAX_DEPTH allows."""
    root = [value]
    stack: list[tuple[Any, Any]] = [(root, 0)]
    while stack:
        parent, key = stack.pop()
        item = parent[key]
        if isinstance(item, dict):
            item = parent[key] = dict(item)
            for name in _base64_keys(item):
                item[name] = BASE64_LEFT_OUT
            stack.extend((item, k) for k, v in item.items() if isinstance(v, (dict, list)))
        elif isinstance(item, list):
            item = parent[key] = list(item)
            stack.extend((item, i) for i, v in enumerate(item) if isinstance(v, (dict, list)))
    return root[0]


def _base64_keys(item: dict) -> list[str]:
    keys = ["base64"] if isinstance(item.get("base64"), str) else []
    if isinstance(item.get("data"), str) and item.get("type") in ("base64", "image", "audio"):
        keys.append("data")
    return keys


def read_file_marker(response: Any) -> str | None:
    """The marker for Read's tool_response of an image or a PDF (sent to the model as a block,
    which a transcript reads as this marker); None for any other response."""
    if isinstance(response, dict) and isinstance(response.get("file"), dict) and "content" not in response["file"]:
        return _READ_FILE_MARKERS.get(response.get("type"))
    return None
