"""The scripted teacher: deterministic, distinct policies per kind, arguments derivable from the prompt."""

from __future__ import annotations

import re
from collections import Counter, defaultdict

import pytest

from trainer.teacher_corpus import (BUGS, FAILURES, KINDS, NAME_POOLS, PROMPTS, SCRIPT_TASKS, NamePools, generate_corpus,
                                    write_corpus_jsonl)

EXPECTED_SEQUENCES = {
    "compare": ["Read", "Grep", "Bash", "Bash"],
    "fix_bug": ["Read", "Edit", "Bash"],
    "investigate": ["Bash", "Grep", "Read"],
    "explore": ["Glob", "Read", "Read"],
    "db_question": ["Bash"],
    "write_file": ["Write", "Bash"],
}


@pytest.fixture(scope="module", params=NAME_POOLS)
def names(request):
    """Every property of the teacher holds with either set of names."""
    return request.param


@pytest.fixture(scope="module")
def corpus(names):
    return generate_corpus(300, seed=0, names=names)


def test_deterministic_by_seed():
    a = [t.model_dump_json() for t in generate_corpus(40, seed=4)]
    assert a == [t.model_dump_json() for t in generate_corpus(40, seed=4)]
    assert a != [t.model_dump_json() for t in generate_corpus(40, seed=5)]


def test_phrasing_twin_changes_only_the_narration(corpus, names):
    twin = generate_corpus(300, seed=0, phrasing_seed=1, names=names)
    for a, b in zip(corpus, twin):
        assert (a.trace_id, a.prompt, a.final_response) == (b.trace_id, b.prompt, b.final_response)
        assert [(c.name, c.input, c.output) for c in a.tool_calls] == [(c.name, c.input, c.output) for c in b.tool_calls]
        assert [s.position for s in a.assistant_text] == [s.position for s in b.assistant_text]
    differing = sum(a.assistant_text != b.assistant_text for a, b in zip(corpus, twin))
    assert differing > 250  # three phrasings per step: nearly every trace words something differently


def test_size_kinds_and_policies(corpus):
    assert len(corpus) == 300
    kinds = Counter(t.kind for t in corpus)
    assert set(kinds) == set(KINDS) and len(KINDS) >= 5
    assert max(kinds.values()) - min(kinds.values()) <= 1
    for trace in corpus:
        assert [c.name for c in trace.tool_calls] == EXPECTED_SEQUENCES[trace.kind]
        assert trace.reasoning_signals.tool_sequence == EXPECTED_SEQUENCES[trace.kind]
        assert trace.reasoning_signals.pattern is not None
        assert trace.quality.accepted and trace.complete
        assert len(trace.final_response.split()) >= 50
        assert len(trace.assistant_text) == len({c.parallel_group for c in trace.tool_calls})
        assert {t["name"] for t in trace.tools_offered} == {"Bash", "Read", "Edit", "Write", "Grep", "Glob"}
    assert len({tuple(s) for s in EXPECTED_SEQUENCES.values()}) == len(EXPECTED_SEQUENCES)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_bug_failure_and_script_comes_up_equally_often(seed):
    """A variant the corpus rarely shows is one the student cannot learn: drawn independently, one bug
    kind came up 4 times in 50 fixes, and the student's invalid held-out calls were its Edits."""
    corpus = generate_corpus(300, seed=seed, names="varied")
    calls = lambda kind, name: [c.input for t in corpus if t.kind == kind for c in t.tool_calls if c.name == name]
    bugs = Counter(edit["old_string"].strip().split("(")[0] for edit in calls("fix_bug", "Edit"))
    errors = Counter(t.tool_calls[0].error.splitlines()[-1].split(":")[0]
                     for t in corpus if t.kind == "investigate")
    scripts = Counter(w["file_path"].rsplit("/", 1)[1] for w in calls("write_file", "Write"))
    for counts, variants in ((bugs, BUGS), (errors, FAILURES), (scripts, SCRIPT_TASKS)):
        assert len(counts) == len(variants), counts
        assert max(counts.values()) - min(counts.values()) <= 1, counts


def test_parallel_reads_and_error_recovery(corpus):
    explore = next(t for t in corpus if t.kind == "explore")
    groups = [c.parallel_group for c in explore.tool_calls]
    assert groups == [0, 1, 1] and explore.reasoning_signals.pattern == "parallel"
    investigate = next(t for t in corpus if t.kind == "investigate")
    failed = investigate.tool_calls[0]
    assert not failed.success and failed.error.startswith("Exit code 1")
    assert investigate.reasoning_signals.error_recovery


def test_sessions(corpus):
    per_session = Counter(t.session_id for t in corpus)
    assert 1 in per_session.values() and max(per_session.values()) in (2, 3)
    assert len({t.trace_id for t in corpus}) == len(corpus)
    projects = defaultdict(set)
    for t in corpus:
        projects[t.session_id].add(t.cwd)
    assert all(len(p) == 1 for p in projects.values())


# Checked in this order: a keyword rule that recovers the kind from the prompt alone.
KIND_KEYWORDS = [
    ("compare", r"\bcompar|bigger|more records than"),
    ("fix_bug", r"\bbug\b|\bfix\b|repair"),
    ("investigate", r"fail|broke|stopped working"),
    ("explore", r"explain|overview|organized|structured|main pieces"),
    ("db_question", r"how many|count|number of"),
    ("write_file", r"\bwrite\b|\bcreate\b|new file|need a script"),
]


def classify(prompt: str) -> str:
    return next(kind for kind, pattern in KIND_KEYWORDS if re.search(pattern, prompt, re.IGNORECASE))


def test_prompt_decides_kind(corpus):
    assert all(len(templates) >= 4 for templates in PROMPTS.values())
    assert all(len({t.prompt for t in corpus if t.kind == k}) > 30 for k in KINDS)
    assert [classify(t.prompt) for t in corpus] == [t.kind for t in corpus]


def test_arguments_come_from_the_prompt(corpus):
    for t in corpus:
        first = t.tool_calls[0].input
        if t.kind in ("compare", "fix_bug"):
            assert first["file_path"] in t.prompt
        if t.kind == "fix_bug":
            assert t.tool_calls[1].input["file_path"] in t.prompt
            assert t.tool_calls[1].input["old_string"] in t.tool_calls[0].output  # the edit fixes what was read
            assert re.search(r"tests/test_\w+\.py", t.tool_calls[2].input["command"])
        if t.kind == "investigate":
            assert f"`{first['command']}`" in t.prompt
        if t.kind == "explore":
            assert first["pattern"].split("/")[1] in t.prompt
        if t.kind == "write_file":
            assert first["file_path"] in t.prompt and first["file_path"] in t.tool_calls[1].input["command"]
        if t.kind == "db_question":
            command = first["command"]
            target = command.split()[1] if command.startswith("sqlite3") else command.split()[2]
            assert target in t.prompt
            assert re.search(r"FROM (\w+)", command).group(1) in t.prompt
        if t.kind == "compare":
            for call in t.tool_calls[2:]:
                assert re.search(r"FROM (\w+)", call.input["command"]).group(1) in t.prompt


def test_write_corpus_jsonl(tmp_path):
    from capture_daemon.schema import Trace

    path = write_corpus_jsonl(tmp_path / "sub" / "corpus.jsonl", n=10, seed=0)
    lines = path.read_text().splitlines()
    assert len(lines) == 10
    assert Trace.model_validate_json(lines[0]).model_dump() == generate_corpus(10, seed=0)[0].model_dump()


def _named_targets(traces) -> list[str]:
    """What each task is about: the file a fix reads, the database a count queries, the package explored."""
    out = []
    for t in traces:
        first = t.tool_calls[0].input
        if t.kind in ("compare", "fix_bug", "write_file"):
            out.append(first["file_path"])
        elif t.kind in ("explore", "db_question"):
            out.append(first.get("pattern") or first["command"])
    return out


def test_varied_names_make_held_out_targets_new():
    """With `varied` names a later prompt almost never names what an earlier one did, so copying
    from the prompt is the only way to the right arguments; with `fixed` names most repeat."""
    def repeated(names: str) -> float:
        targets = _named_targets(generate_corpus(600, seed=0, names=names))
        train, test = targets[: len(targets) * 4 // 5], targets[len(targets) * 4 // 5:]
        return sum(t in set(train) for t in test) / len(test)

    assert repeated("fixed") > 0.5
    assert repeated("varied") < 0.1


def test_fixed_names_are_the_default_and_unknown_names_fail():
    assert generate_corpus(20, seed=3)[5].prompt == generate_corpus(20, seed=3, names="fixed")[5].prompt
    with pytest.raises(ValueError, match="Unknown names 'exotic'"):
        NamePools("exotic")
