"""The workflow trace: what understudy captures for each user prompt.

Later stages (analysis, trainer, users' scripts) depend on these names, and
`capture-daemon export` writes them as they are. Change them only with a new
SCHEMA_VERSION and a store migration.
"""

from __future__ import annotations

import functools
import hashlib
from datetime import datetime
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

# 2: `mid_turn_messages`. A version-1 trace has none recorded even where the user sent one
# (they were dropped), so a reader can tell "none sent" from "not captured".
# 3: `mid_turn_messages` also hold what the user's own hooks showed the model (`kind`
# "hook_feedback" / "hook_context"); a version-2 trace has none of those even where a hook sent one.
SCHEMA_VERSION = 3

Source = Literal["hook", "import", "manual"]
Pattern = Literal["linear", "parallel", "exploratory", "iterative"]
# Who put a mid-turn text in front of the model: the user typing, or one of the user's own hooks
# (not understudy's) blocking (a Stop hook's reason to go on, a PostToolUse hook's objection to a
# result), adding context (`additionalContext`) or, for UserPromptSubmit, printing plain text on
# stdout ("hook_output": Claude Code shows it as the hook's success output).
MidTurnKind = Literal["user", "hook_feedback", "hook_context", "hook_output"]


@functools.lru_cache(maxsize=4096)  # the ingest asks once per event, for a handful of prompts at a time
def make_trace_id(session_id: str, prompt_id: str) -> str:
    """Deterministic, so replaying the spool or importing a transcript never duplicates a trace."""
    return hashlib.sha256(f"{session_id}\x00{prompt_id}".encode()).hexdigest()[:32]


class _Model(BaseModel):
    # Unknown keys are kept, so a trace written by a newer understudy survives a round trip.
    model_config = ConfigDict(extra="allow")


class ToolCall(_Model):
    tool_use_id: str
    name: str
    input: dict[str, Any] = Field(default_factory=dict)
    # The tool result as the model saw it (text), or a JSON rendering of the hook's response.
    output: Optional[str] = None
    # Set when `output` was cut to fit: the length before cutting, in characters.
    output_original_chars: Optional[int] = None
    success: bool = True
    error: Optional[str] = None
    is_interrupt: bool = False
    duration_ms: Optional[int] = None
    started_at: Optional[datetime] = None
    # None for the main agent; a subagent's id and type otherwise.
    agent_id: Optional[str] = None
    agent_type: Optional[str] = None
    # Calls issued together in one assistant message share a group number (0, 1, 2, ...
    # in order of issue, counted per agent).
    parallel_group: int = 0


class TextStep(_Model):
    """Narration or thinking, placed among the calls.

    `position` is the number of tool calls (of any agent, in `tool_calls` order) issued
    before this text: 0 means before the first call; len(tool_calls) means after the last.
    """

    text: str
    position: int
    agent_id: Optional[str] = None


class MidTurnMessage(_Model):
    """Text that reached the model within the running turn, from outside it: a message the user
    typed while the prompt was being worked on, which Claude Code delivered with the next tool
    result (`kind` "user"), or what a user's own hook showed the model (`kind` "hook_feedback":
    a Stop hook blocking the stop with its reason, a PostToolUse hook blocking; "hook_context":
    a hook's `additionalContext`, e.g. UserPromptSubmit's with the prompt; "hook_output": what a
    UserPromptSubmit hook printed as plain text, which Claude Code adds likewise). The model's next
    steps react to it, so it is part of the workflow.

    `position` counts tool calls as `TextStep.position` does: the calls issued before the
    message arrived. At an equal position it comes after the first `after_text` main-agent
    narration steps there and before the rest, the thinking and the calls: the model read it
    before writing them. (`after_text` is not 0 only where the model had written text and
    stopped, and a Stop hook sent it on.)
    """

    text: str
    position: int
    kind: MidTurnKind = "user"
    # The hook that sent it, as Claude Code names it ("Stop", "PostToolUse:Bash",
    # "UserPromptSubmit"); None for the user's own messages.
    hook: Optional[str] = None
    after_text: int = 0
    # None for the main agent; a subagent's id for what its hooks told it (a SubagentStop hook
    # that blocks). `after_text` then counts that agent's narration.
    agent_id: Optional[str] = None


class SubagentRun(_Model):
    agent_id: str
    agent_type: Optional[str] = None
    description: Optional[str] = None
    prompt: Optional[str] = None
    final_response: Optional[str] = None
    # The parent's Agent tool call that spawned it.
    spawned_by: Optional[str] = None
    complete: bool = False


class SelfCorrection(_Model):
    text: str
    position: int


class ReasoningSignals(_Model):
    """How the work was done. `tool_sequence` is filled at capture; the rest by analysis."""

    tool_sequence: list[str] = Field(default_factory=list)
    workflow: str = ""
    reasoning_steps: int = 0
    exploration_depth: Optional[Literal["minimal", "moderate", "thorough"]] = None
    multi_step_reasoning: bool = False
    used_database: bool = False
    used_subagents: bool = False
    files_read: list[str] = Field(default_factory=list)
    files_changed: list[str] = Field(default_factory=list)
    explicit_plan: Optional[str] = None
    pattern: Optional[Pattern] = None
    patterns: list[Pattern] = Field(default_factory=list)
    error_recovery: bool = False
    self_corrections: list[SelfCorrection] = Field(default_factory=list)


class Quality(_Model):
    score: float = 0.0
    accepted: bool = False
    reasons: list[str] = Field(default_factory=list)
    # Set when another stored trace has the same prompt and workflow.
    duplicate_of: Optional[str] = None


class CaptureLoss(_Model):
    """A hook event whose payload could not be kept (too big to reduce within the hook's
    deadline, not JSON, or stdin never closed): the trace knows the event happened and what
    was lost, even where the transcript cannot fill the gap. Also a reply a safety classifier
    stopped (event "Refusal"): capture leaves its content out, and says so here."""

    event: str
    tool_use_id: Optional[str] = None
    agent_id: Optional[str] = None
    original_bytes: Optional[int] = None
    reason: Optional[str] = None


class Trace(_Model):
    schema_version: int = SCHEMA_VERSION
    trace_id: str
    session_id: str
    prompt_id: str
    prompt: str
    final_response: Optional[str] = None
    model: Optional[str] = None
    cwd: Optional[str] = None
    started_at: Optional[datetime] = None
    ended_at: Optional[datetime] = None
    complete: bool = False
    # Why a trace is not complete ("idle_timeout", "session_ended", ...); None when complete.
    incomplete_reason: Optional[str] = None
    source: Source = "hook"
    tool_calls: list[ToolCall] = Field(default_factory=list)
    assistant_text: list[TextStep] = Field(default_factory=list)
    thinking: list[TextStep] = Field(default_factory=list)
    mid_turn_messages: list[MidTurnMessage] = Field(default_factory=list)
    subagents: list[SubagentRun] = Field(default_factory=list)
    # JSON schemas of the tools the model was offered: {"name", "description", "input_schema"}.
    tools_offered: list[dict[str, Any]] = Field(default_factory=list)
    # Token usage summed over the prompt's API calls (main agent and subagents).
    usage: dict[str, int] = Field(default_factory=dict)
    reasoning_signals: ReasoningSignals = Field(default_factory=ReasoningSignals)
    quality: Optional[Quality] = None
    transcript_path: Optional[str] = None
    # Events that reached the spool cut or empty (see CaptureLoss); empty when nothing was lost.
    capture_losses: list[CaptureLoss] = Field(default_factory=list)

    def main_calls(self) -> list[ToolCall]:
        return [c for c in self.tool_calls if c.agent_id is None]
