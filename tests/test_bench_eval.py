"""benchmarks/bench_eval.py runs on a trained student and prints its side-by-side ratio and whether
the prefix cache changed any turn. Nothing here asserts a speed."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("torch")

from benchmarks.bench_eval import main  # noqa: E402
from tests.student_world import student_world  # noqa: F401,E402  (a fixture)


def test_bench_eval_prints_the_ratio_and_that_no_turn_changed(student_world, capsys):
    args = ["--model", str(student_world.sft_model), "--data", str(student_world.data_dir),
            "--examples", "4", "--batch", "4", "--max-new-tokens", "48", "--max-turns", "3"]
    assert main(args) == 0
    out = capsys.readouterr().out
    for arm in ("system turn cached alone", "plain left padding"):
        ratio = re.search(rf"ratio (\d+\.\d+)x faster than {arm}", out)
        assert ratio and float(ratio.group(1)) > 0, out
    assert re.search(r"prefixes prefilled: [1-9]", out), out
    assert re.search(r"turns that continued their last prompt: [1-9]", out), out
    assert "every turn identical in all arms" in out, out


def test_bench_eval_bf16_arm_prints_its_ratio_and_how_many_workflows_came_out_alike(student_world, capsys):
    args = ["--model", str(student_world.sft_model), "--data", str(student_world.data_dir),
            "--examples", "3", "--batch", "3", "--max-new-tokens", "24", "--max-turns", "2", "--bf16"]
    assert main(args) == 0
    out = capsys.readouterr().out
    found = re.search(r"ratio (\d+\.\d+)x faster in bf16 than in float32; (\d) of 3 workflows written alike", out)
    assert found and float(found.group(1)) > 0, out
    assert "trainer eval in bf16 (eval.precision)" in out
    assert "every turn identical in all arms" in out, "the exact arms stay compared among themselves"


def test_bench_eval_says_what_is_missing(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--run", str(tmp_path)])
    assert "no test split" in capsys.readouterr().err
