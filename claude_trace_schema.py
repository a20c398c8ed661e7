"""The trace schema and storage names from understudy's quick-start guide, over capture_daemon.

    from claude_trace_schema import TraceStorage
    for trace in TraceStorage().load_traces()[-10:]:
        print(" → ".join(trace.reasoning_signals.tool_sequence))

`Trace` and friends are capture_daemon.schema's models; `TraceStorage` reads and writes
the one store ($UNDERSTUDY_HOME/traces.db) that the capture daemon fills.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Optional, Union

from capture_daemon.schema import (  # noqa: F401  (re-exported names)
    SCHEMA_VERSION,
    MidTurnMessage,
    Quality,
    ReasoningSignals,
    SelfCorrection,
    SubagentRun,
    TextStep,
    ToolCall,
    Trace,
)

__all__ = ["TraceStorage", "Trace", "ToolCall", "TextStep", "ReasoningSignals", "Quality", "SelfCorrection",
           "SubagentRun", "MidTurnMessage", "SCHEMA_VERSION"]


class TraceStorage:
    """The trace store, for scripts. Each call opens and closes the SQLite file."""

    def __init__(self, path: Union[str, Path, None] = None):
        self.path = Path(path) if path is not None else None

    def load_traces(self, accepted: Optional[bool] = None, pattern: Optional[str] = None, tool: Optional[str] = None,
                    since: Union[datetime, str, None] = None, project: Optional[str] = None) -> list[Trace]:
        """Stored traces, oldest first (so `[-10:]` are the latest ten)."""
        from capture_daemon.store import TraceStore

        with TraceStore.open(self.path) as store:
            return list(store.iter_traces(accepted=accepted, pattern=pattern, tool=tool, since=since,
                                          project=project))

    def get_trace(self, trace_id: str) -> Optional[Trace]:
        """A trace by id (or a unique prefix of it); None if there is none."""
        from capture_daemon.store import TraceStore

        with TraceStore.open(self.path) as store:
            return store.get(trace_id)

    def save_trace(self, trace: Trace) -> Trace:
        """Redact, analyze and store a trace (replacing one with the same trace_id)."""
        from capture_daemon.manual import save

        return save(trace, self.path)

    def count(self, accepted: Optional[bool] = None) -> int:
        from capture_daemon.store import TraceStore

        with TraceStore.open(self.path) as store:
            return store.count(accepted=accepted)

    def delete_trace(self, trace_id: str) -> bool:
        from capture_daemon.store import TraceStore

        with TraceStore.open(self.path) as store:
            return store.delete_trace(trace_id)
