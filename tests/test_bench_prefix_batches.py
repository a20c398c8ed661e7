"""benchmarks/bench_prefix_batches.py runs and prints its side-by-side ratio for both batch shapes.
A smoke run of one step per arm: nothing here asserts a speed (tests/test_prefix_batches.py checks
that both arms compute the same loss and gradients)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_prefix_batches.py"


def test_bench_prefix_batches_prints_a_ratio_per_batch_shape():
    proc = subprocess.run([sys.executable, str(BENCH), "--rounds", "1", "--repeats", "1"], capture_output=True,
                          text=True, timeout=300, env=os.environ.copy())
    assert proc.returncode == 0, proc.stderr[-3000:]
    ratios = re.findall(r"^ *(demo|real CLI capture): .* (\d+\.\d+)x$", proc.stdout, re.M)
    assert [name for name, _ in ratios] == ["demo", "real CLI capture"], proc.stdout
    assert all(float(r) > 0 for _, r in ratios), proc.stdout
