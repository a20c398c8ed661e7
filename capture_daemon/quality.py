"""The quality verdict: is a trace worth learning from?

Follows the capture guidelines users were given. KEEP multi-step workflows (3+ tools),
clear reasoning, database/RAG queries, tool chaining, problem solving, error recovery.
SKIP one-word answers, failed or incomplete traces, answers under 50 words, unclear tool
usage, errors without recovery.

Each rule below either fires or not. A firing rule adds one line to `quality.reasons`
("+ …" for a good sign, "- …" for a bad one) and moves the score by its weight
(`[quality.weights]` in config.toml):

    score = clamp(base_score + Σ weights of the positive rules that fired
                             − Σ weights of the negative rules that fired, 0, 1)
    accepted = no rule named in `hard_rejects` fired  and  score ≥ min_score

Positive rules (signals as defined in capture_daemon/signals.py):
    multi_step       ≥ min_tools (3) main-agent tool calls
    clear_reasoning  narration between or before the calls (any narration step)
    explicit_plan    the narration states a plan (`explicit_plan` is set)
    database         `used_database`
    retrieval        a RAG-style lookup: WebSearch, or an MCP tool whose name has a word
                     such as search, retrieve, rag, vector, embedding(s), semantic,
                     knowledge, pinecone, qdrant, chroma, weaviate
    tool_chaining    ≥ 2 distinct tools among the main-agent calls
    problem_solving  the `iterative` pattern, or a change followed by a successful run
                     (see signals: change, run)
    error_recovery   `error_recovery`
Negative rules:
    incomplete         `complete` is False (crashed, killed, idle timeout)
    no_answer          no final answer, or a blank one (a failed trace)
    one_word_answer    the final answer is one word
    short_answer       the final answer has 2 … min_answer_words-1 words
                       (words = runs of non-whitespace)
    no_tools           no tool calls at all (unclear tool usage)
    failed_calls       more than max_failed_fraction (0.5) of the main-agent calls failed
                       (unclear tool usage)
    unrecovered_error  a main-agent call failed and `error_recovery` is False
    lost_events        a hook event of this prompt was lost or set aside in capture
                       (`capture_losses`): a call or the stop may be missing

Defaults: base_score 0.4, min_score 0.5, hard_rejects = incomplete, no_answer,
one_word_answer, short_answer, lost_events (the guidelines' "skip"s that no amount of good work
makes up for). A hard-rejecting line ends in "(rejects)"; a trace that fails only on
score gets a last line "- score 0.35 below min_score 0.50".
"""

from __future__ import annotations

import hashlib
import logging
import re
from typing import TYPE_CHECKING, Any, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

from capture_daemon.schema import Quality, ReasoningSignals, Trace
from capture_daemon.signals import (
    EDIT_TOOLS,
    SignalRules,
    mcp_parts,
    compute_signals,
    is_change,
    is_run,
)

if TYPE_CHECKING:
    from capture_daemon.config import Config

log = logging.getLogger(__name__)

POSITIVE_RULES = (
    "multi_step",
    "clear_reasoning",
    "explicit_plan",
    "database",
    "retrieval",
    "tool_chaining",
    "problem_solving",
    "error_recovery",
)
NEGATIVE_RULES = (
    "incomplete",
    "no_answer",
    "one_word_answer",
    "short_answer",
    "no_tools",
    "failed_calls",
    "unrecovered_error",
    "lost_events",
)


class QualityWeights(BaseModel):
    """How far each rule moves the score; `[quality.weights]` in config.toml."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    multi_step: float = Field(0.2, ge=0)
    clear_reasoning: float = Field(0.1, ge=0)
    explicit_plan: float = Field(0.1, ge=0)
    database: float = Field(0.15, ge=0)
    retrieval: float = Field(0.1, ge=0)
    tool_chaining: float = Field(0.1, ge=0)
    problem_solving: float = Field(0.15, ge=0)
    error_recovery: float = Field(0.15, ge=0)
    incomplete: float = Field(0.5, ge=0)
    no_answer: float = Field(0.5, ge=0)
    one_word_answer: float = Field(0.5, ge=0)
    short_answer: float = Field(0.2, ge=0)
    no_tools: float = Field(0.3, ge=0)
    failed_calls: float = Field(0.3, ge=0)
    unrecovered_error: float = Field(0.2, ge=0)
    lost_events: float = Field(0.5, ge=0)


class QualityRules(BaseModel):
    """Thresholds and weights for `score_trace`; `[quality]` (and `[signals]`) in config.toml."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    # Accepted traces need at least this score (and no hard rejection).
    min_score: float = Field(0.5, ge=0, le=1)
    # The score before any rule fires.
    base_score: float = Field(0.4, ge=0, le=1)
    # Answers with fewer words fire `short_answer` (or `one_word_answer` / `no_answer`).
    min_answer_words: int = Field(50, ge=0)
    # Main-agent calls needed for `multi_step`.
    min_tools: int = Field(3, ge=1)
    # More than this fraction of failed main-agent calls fires `failed_calls`.
    max_failed_fraction: float = Field(0.5, ge=0, le=1)
    # Negative rules that reject a trace whatever its score.
    hard_rejects: tuple[str, ...] = ("incomplete", "no_answer", "one_word_answer", "short_answer", "lost_events")
    weights: QualityWeights = Field(default_factory=QualityWeights)
    # Filled from [signals]; not a key of [quality].
    signals: SignalRules = Field(default_factory=SignalRules)

    @field_validator("hard_rejects", mode="before")
    @classmethod
    def _known_rules(cls, value: Any) -> Any:
        if isinstance(value, list):
            value = tuple(value)
        if isinstance(value, tuple):
            for name in value:
                if name not in NEGATIVE_RULES:
                    raise ValueError(f"unknown rule {name!r}; choose from: {', '.join(NEGATIVE_RULES)}")
        return value

    @classmethod
    def load(cls, path=None) -> "QualityRules":
        """The rules from config.toml (defaults where the file or a key is missing)."""
        from capture_daemon.config import load_config

        return load_config(path).quality


_RETRIEVAL_WORDS = frozenset({
    "search", "retrieve", "retrieval", "rag", "vector", "vectors", "embedding", "embeddings",
    "semantic", "knowledge", "pinecone", "qdrant", "chroma", "chromadb", "weaviate", "milvus",
})


def _uses_retrieval(trace: Trace) -> list[str]:
    tools = []
    for c in trace.tool_calls:
        if c.name == "WebSearch":
            tools.append(c.name)
            continue
        mcp = mcp_parts(c.name)
        if mcp and any(w in _RETRIEVAL_WORDS for w in re.split(r"[_\-.]+", f"{mcp[0]}_{mcp[1]}".lower())):
            tools.append(c.name)
    return list(dict.fromkeys(tools))


def answer_words(trace: Trace) -> int:
    return len((trace.final_response or "").split())


def _fired(trace: Trace, signals: ReasoningSignals, rules: QualityRules) -> list[tuple[str, str]]:
    """(rule, reason text) for every rule that fires, positives first, in rule order."""
    main = trace.main_calls()
    n_main = len(main)
    narration_gaps = signals.reasoning_steps - n_main
    fired: list[tuple[str, str]] = []

    if n_main >= rules.min_tools:
        fired.append(("multi_step", f"+ multi-step workflow ({n_main} tool calls)"))
    if narration_gaps > 0:
        where = "once" if narration_gaps == 1 else f"at {narration_gaps} points"
        fired.append(("clear_reasoning", f"+ clear reasoning (narrates its steps {where})"))
    if signals.explicit_plan:
        first_line = signals.explicit_plan.strip().splitlines()[0]
        short = first_line if len(first_line) <= 60 else first_line[:57] + "..."
        fired.append(("explicit_plan", f"+ states a plan (\"{short}\")"))
    if signals.used_database:
        fired.append(("database", "+ database query"))
    retrieval = _uses_retrieval(trace)
    if retrieval:
        fired.append(("retrieval", f"+ retrieval/RAG query ({', '.join(retrieval)})"))
    distinct = list(dict.fromkeys(c.name for c in main))
    if len(distinct) >= 2:
        fired.append(("tool_chaining", f"+ tool chaining ({len(distinct)} tools: {', '.join(distinct)})"))
    if "iterative" in signals.patterns:
        fired.append(("problem_solving", "+ problem solving (iterates: edit → run → edit, or retries)"))
    else:
        first_change = next((i for i, c in enumerate(main) if is_change(c)), None)
        if first_change is not None and any(c.success and is_run(c) and c.name not in EDIT_TOOLS
                                            for c in main[first_change + 1:]):
            fired.append(("problem_solving", "+ problem solving (changes, then verifies with a run)"))
    if signals.error_recovery:
        fired.append(("error_recovery", "+ error recovery (a failed call, then a different approach that worked)"))

    if not trace.complete:
        why = f" ({trace.incomplete_reason})" if trace.incomplete_reason else ""
        fired.append(("incomplete", f"- incomplete trace{why}"))
    words = answer_words(trace)
    if words == 0:
        fired.append(("no_answer", "- no final answer"))
    elif words == 1:
        fired.append(("one_word_answer", "- one-word answer"))
    elif words < rules.min_answer_words:
        fired.append(("short_answer", f"- answer under {rules.min_answer_words} words ({words})"))
    if not trace.tool_calls:
        fired.append(("no_tools", "- unclear tool usage: no tool calls"))
    failed = sum(1 for c in main if not c.success)
    if n_main and failed / n_main > rules.max_failed_fraction:
        fired.append(("failed_calls", f"- unclear tool usage: {failed} of {n_main} tool calls failed"))
    if failed and not signals.error_recovery:
        fired.append(("unrecovered_error", f"- error without recovery ({failed} failed call{'s' if failed > 1 else ''})"))
    if trace.capture_losses:
        kinds = ", ".join(sorted({loss.event for loss in trace.capture_losses}))
        fired.append(("lost_events", f"- {len(trace.capture_losses)} event(s) lost in capture ({kinds})"))
    return fired


def _verdict(trace: Trace, signals: ReasoningSignals, rules: QualityRules) -> Quality:
    fired = _fired(trace, signals, rules)
    score = rules.base_score
    reasons = []
    hard = False
    for rule, reason in fired:
        weight = getattr(rules.weights, rule)
        if rule in POSITIVE_RULES:
            score += weight
        else:
            score -= weight
            if rule in rules.hard_rejects:
                hard = True
                reason += " (rejects)"
        reasons.append(reason)
    score = round(min(1.0, max(0.0, score)), 4)
    if not hard and score < rules.min_score:
        reasons.append(f"- score {score:.2f} below min_score {rules.min_score:.2f}")
    return Quality(score=score, accepted=not hard and score >= rules.min_score, reasons=reasons)


_config_cache: dict[str, Any] = {}


def _file_stamp(path) -> tuple:
    """What changes when the file is edited, replaced or deleted."""
    try:
        st = path.stat()
        return (str(path), st.st_mtime_ns, st.st_size)
    except OSError:
        return (str(path), None, None)


def _rules_from_config_file() -> QualityRules:
    """config.toml's rules, read again only when the file changes (analyze runs per trace)."""
    from capture_daemon import paths
    from capture_daemon.config import load_config

    path = paths.config_path()
    stamp = _file_stamp(path)
    if _config_cache.get("stamp") != stamp:
        _config_cache["rules"] = load_config(path).quality
        _config_cache["stamp"] = stamp
    return _config_cache["rules"]


class LiveRules:
    """config.toml's rules for the daemon, which runs for days: read again whenever the file
    changes, and while it is broken the rules read last stay in force (the defaults, if it never
    read a good one). With `analyze`'s "broken file raises", a typo saved mid-session failed every
    trace committed meanwhile, each retried four times and then quarantined. `status` names the
    broken file; `capture-daemon rescore` re-applies the rules once it is fixed.

        rules = LiveRules()
        trace = rules.analyze(trace)
    """

    def __init__(self, path=None):
        from capture_daemon import paths

        self.path = path or paths.config_path()
        self.stamp: tuple | None = None
        self.rules = QualityRules()
        self.current()  # now, while the file is the one the daemon was started with

    def current(self) -> QualityRules:
        from capture_daemon.config import ConfigError, load_config

        stamp = _file_stamp(self.path)
        if stamp != self.stamp:
            self.stamp = stamp
            try:
                self.rules = load_config(self.path).quality
            except ConfigError:  # (status names the file and its problem)
                log.warning("config.toml cannot be read; the quality rules read before stay in force until it is fixed")
        return self.rules

    def analyze(self, trace: Trace) -> Trace:
        return analyze(trace, self.current())


def _resolve(rules: Union[QualityRules, "Config", None]) -> QualityRules:
    if rules is None:
        return _rules_from_config_file()
    if isinstance(rules, QualityRules):
        return rules
    quality = getattr(rules, "quality", None)
    if isinstance(quality, QualityRules):
        return quality
    raise TypeError(f"expected QualityRules or Config, got {type(rules).__name__}")


def score_trace(trace: Trace, rules: Union[QualityRules, "Config", None] = None) -> Quality:
    """The quality verdict for `trace` (signals are computed afresh from its calls)."""
    rules = _resolve(rules)
    return _verdict(trace, compute_signals(trace, rules.signals), rules)


def analyze(trace: Trace, rules: Union[QualityRules, "Config", None] = None) -> Trace:
    """A copy of `trace` with `reasoning_signals` and `quality` filled in.

    `rules` None means the user's config.toml (defaults if there is none; read again only
    when the file changes; a broken file raises ConfigError). A trace without
    tool calls keeps the `tool_sequence` it came with (a manual capture may know its tools
    only by name); extra keys on the old signals are kept. The verdict is fresh:
    `duplicate_of` is left to the store, which sets it on every `put`.
    """
    rules = _resolve(rules)
    # Shallow: only the two fields below are replaced; a deep copy of the tool calls and
    # the offered tool schemas cost more than the analysis itself.
    out = trace.model_copy()
    old = out.reasoning_signals
    signals = compute_signals(out, rules.signals)
    if not out.tool_calls and old.tool_sequence:
        signals.tool_sequence = list(old.tool_sequence)
        signals.workflow = " → ".join(old.tool_sequence)
    for key, value in (old.model_extra or {}).items():
        setattr(signals, key, value)
    out.reasoning_signals = signals
    out.quality = _verdict(out, signals, rules)
    return out


def normalize_prompt(prompt: str) -> str:
    return " ".join((prompt or "").lower().split())


def duplicate_key(trace: Trace) -> str:
    """Same prompt (lowercased, whitespace collapsed) and same workflow → same key."""
    if trace.tool_calls:
        workflow = " → ".join(c.name for c in trace.main_calls())
    else:
        workflow = " → ".join(trace.reasoning_signals.tool_sequence)
    digest = hashlib.sha256(f"{normalize_prompt(trace.prompt)}\x00{workflow}".encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:32]
