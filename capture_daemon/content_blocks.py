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
