"""benchmarks/ablate_tiny.py: arms × seeds of `trainer run --demo`, a mean ± sd table and a plot."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
REPO = Path(__file__).resolve().parents[1]


def test_ablation_runs_each_arm_and_seed_and_reports_spread(tmp_path):
    out = tmp_path / "ablate"
    tiny = ["-o", "run.demo_traces=24", "-o", "run.demo_hidden=32", "-o", "run.demo_layers=1", "-o", "run.demo_heads=2",
            "-o", "run.demo_vocab=400", "-o", "sft.max_steps=2", "-o", "eval.max_examples=2",
            "-o", "eval.max_new_tokens=8", "-o", "eval.baselines=[]"]
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "ablate_tiny.py"), "--out", str(out), "--seeds", "0", "1",
         "--parallel", "2", "--arm", "no warm-up", "run.demo_copy_warmup_steps=0",
         "--arm", "span warm-up", "run.demo_copy_warmup_steps=3", "--", *tiny],
        capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = (out / "ablation.md").read_text().splitlines()
    assert table[0].startswith("| arm | first_tool_accuracy")
    assert [row.split("|")[1].strip() for row in table[2:]] == ["no warm-up (n=2)", "span warm-up (n=2)"]
    assert all("±" in row for row in table[2:])
    assert (out / "ablation.png").stat().st_size > 0
    # Each seed is its own run, with its own corpus: the seed reached the pipeline.
    for seed in (0, 1):
        record = (out / f"span_warm-up-seed{seed}" / "understudy_config.json").read_text()
        assert f'"seed": {seed}' in record
