"""`trainer sft` in two processes through `accelerate launch` on CPU (DDP over gloo): the path a
multi-GPU user takes (README, trainer/sft.py), run for real, not just documented.

`accelerate launch --cpu` alone starts one process (several need mpirun); `--multi_gpu` on a
machine without CUDA starts them through torch.distributed.run and accelerate picks the gloo
backend (DistributedType.MULTI_CPU). The tiny base and dataset are built with the project's own
code, as in tests/test_sft.py.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")
pytest.importorskip("accelerate")

REPO = Path(__file__).resolve().parents[1]
ACCELERATE = Path(sys.executable).parent / "accelerate"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    from tests.tiny_sft_world import build_tiny_sft_world

    return build_tiny_sft_world(tmp_path_factory.mktemp("mp_world"), traces=30, seed=1)


@pytest.mark.skipif(not ACCELERATE.exists(), reason="the accelerate CLI is not installed in this venv")
def test_two_cpu_processes_train_one_model_over_gloo(tiny_world, tmp_path):
    base, data = tiny_world
    out = tmp_path / "sft"
    steps, batch = 3, 2
    cmd = [
        str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--num_cpu_threads_per_process", "1",
        "--main_process_port", str(_free_port()),
        "-m", "trainer.cli", "sft", "--data", str(data), "--out", str(out), "--base-model", str(base),
        "--method", "full", "--max-steps", str(steps),
        "--sft.per_device_train_batch_size", str(batch), "--sft.gradient_accumulation_steps", "1",
        "--sft.learning_rate", "1e-2", "--sft.logging_steps", "1", "--sft.save_steps", str(steps),
        "--sft.max_length", "1024",
    ]  # fmt: skip
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    # One process prints: each progress line once, the config once, and it says how it ran.
    assert proc.stdout.count("Resolved config [sft]:") == 1, proc.stdout
    assert proc.stdout.count(f"step 1/{steps} ·") == 1, proc.stdout
    assert "in 2 processes (gloo)" in proc.stdout, proc.stdout

    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["distributed_backend"] == "gloo"
    assert summary["global_step"] == steps
    assert summary["last_loss"] is not None and math.isfinite(summary["last_loss"])

    # Both ranks consumed data: each step took 2 × batch examples, so the epoch reached is about
    # twice what one process would (steps × batch / examples).
    state = json.loads((out / "checkpoints" / f"checkpoint-{steps}" / "trainer_state.json").read_text())
    n_train = summary["splits"]["train"]
    assert state["epoch"] >= 1.5 * steps * batch / n_train, (state["epoch"], n_train)
    assert (out / "checkpoints" / f"checkpoint-{steps}" / "understudy_config.json").is_file()

    # The saved model loads and gives finite logits.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out / "final")
    model = AutoModelForCausalLM.from_pretrained(out / "final", dtype=torch.float32)
    ids = tok("List the files.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=ids).logits).all()
