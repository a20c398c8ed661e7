"""A tiny stdio MCP server for end-to-end tests: JSON-RPC 2.0, one message a line.

Tools: `lookup` (text result with structuredContent), `explode` (isError result), `snapshot`
(an image result, a 1x1 PNG). Run by Claude Code through `--mcp-config`.
"""

import json
import sys

PNG_1X1 = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")
TOOLS = [
    {"name": "lookup", "description": "Look up a substation by name",
     "inputSchema": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}},
    {"name": "explode", "description": "Always fails", "inputSchema": {"type": "object", "properties": {}}},
    {"name": "snapshot", "description": "A picture of the panel", "inputSchema": {"type": "object", "properties": {}}},
]


def call(name: str, args: dict) -> dict:
    if name == "lookup":
        found = {"name": args.get("name"), "voltage_kv": 33, "feeders": 4}
        return {"content": [{"type": "text", "text": f"SUBSTATION {found['name']}: 33kV, 4 feeders"}],
                "structuredContent": found}
    if name == "explode":
        return {"content": [{"type": "text", "text": "EXPLODE-FAILED: the panel is offline"}], "isError": True}
    if name == "snapshot":
        return {"content": [{"type": "text", "text": "PANEL-SNAPSHOT taken"},
                            {"type": "image", "data": PNG_1X1, "mimeType": "image/png"}]}
    raise KeyError(name)


def answer(message: dict):
    method, mid = message.get("method"), message.get("id")
    if mid is None:
        return None  # a notification
    if method == "initialize":
        result = {"protocolVersion": message["params"].get("protocolVersion", "2025-06-18"),
                  "capabilities": {"tools": {}}, "serverInfo": {"name": "grid", "version": "1.0"}}
    elif method == "tools/list":
        result = {"tools": TOOLS}
    elif method == "tools/call":
        result = call(message["params"]["name"], message["params"].get("arguments") or {})
    else:
        result = {}
    return {"jsonrpc": "2.0", "id": mid, "result": result}


for line in sys.stdin:
    if line.strip():
        reply = answer(json.loads(line))
        if reply is not None:
            sys.stdout.write(json.dumps(reply) + "\n")
            sys.stdout.flush()
