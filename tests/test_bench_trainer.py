"""benchmarks/bench_trainer.py runs and prints its side-by-side ratio (understudy's SFT against a
plain PyTorch loop). A smoke run with a few steps of a very small model: nothing here asserts a speed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("trl")

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_trainer.py"


def test_bench_trainer_prints_the_ratio_against_a_plain_loop():
    args = ["--traces", "60", "--steps", "2", "--batch", "2", "--hidden", "32", "--layers", "1"]
    proc = subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "understudy (trainer sft" in out and "plain PyTorch loop, same batches" in out, out
    ratio = re.search(r"ratio (\d+\.\d+)x of the plain loop", out)
    assert ratio and float(ratio.group(1)) > 0, out
    assert "token counts differ" not in out, out
