"""The `trainer` command re-executes its training stages with glibc's malloc told to keep big blocks."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest

from trainer import allocator

glibc_only = pytest.mark.skipif(sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")


@glibc_only
@pytest.mark.parametrize("argv", [["trainer", "sft", "--max-steps", "3"], ["trainer", "run", "--demo"],
                                  ["trainer", "ab-test", "--help"]])
def test_training_stages_get_the_tunables(argv):
    env = allocator.retained_memory_env(argv, {"PATH": "/usr/bin"})
    assert env is not None and env["GLIBC_TUNABLES"] == allocator.TUNABLES
    assert env["PATH"] == "/usr/bin"


@pytest.mark.parametrize("argv", [["trainer"], ["trainer", "--help"], ["trainer", "serve", "--model", "m"],
                                  ["trainer", "export", "--model", "m"], ["trainer", "build-dataset"]])
def test_other_commands_run_as_they_are(argv):
    assert allocator.retained_memory_env(argv, {}) is None


@pytest.mark.parametrize("environ", [{"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, {"UNDERSTUDY_SYSTEM_MALLOC": "1"}])
def test_the_users_own_tunables_or_opt_out_win(environ):
    assert allocator.retained_memory_env(["trainer", "sft"], environ) is None


@glibc_only
def test_entry_reexecutes_itself_once_as_python_m_trainer_cli(monkeypatch):
    calls = []
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    monkeypatch.delenv(allocator.OPT_OUT, raising=False)
    monkeypatch.setattr(allocator.os, "execve", lambda path, args, env: calls.append((path, args, env)))
    allocator.reexec_with_retained_memory(["/venv/bin/trainer", "sft", "--max-steps", "3"])
    [(path, args, env)] = calls
    assert path == sys.executable
    assert args == [sys.executable, "-m", "trainer.cli", "sft", "--max-steps", "3"]
    # The re-executed process sees the tunables and so does not re-execute again.
    assert allocator.retained_memory_env(args[2:], env) is None


@glibc_only
def test_the_tunables_stop_the_page_faults_of_a_training_like_loop():
    """The string is one this glibc honours: once warm, a 64 MB result is made in reused memory.

    (The first rounds still fault: freed blocks are fragmented until the heap has room for the
    pattern, as in the first steps of training.)"""
    loop = (
        "import resource, torch\n"
        "torch.set_num_threads(1)\n"
        "x, w = torch.randn(512, 64), torch.randn(64, 32768)\n"
        "[(x @ w).sum() for _ in range(30)]\n"  # warm-up
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "[(x @ w).sum() for _ in range(10)]\n"  # each product is 64 MB, above any default threshold
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)\n"
    )

    def faults(extra_env: dict) -> int:
        out = subprocess.run([sys.executable, "-c", loop], env={"PATH": "/usr/bin", **extra_env},
                             capture_output=True, text=True, check=True)
        return int(out.stdout)

    plain, tuned = faults({}), faults({"GLIBC_TUNABLES": allocator.TUNABLES})
    assert plain > 10 * 16_384 * 0.9  # glibc maps every product afresh: its 16k pages fault in again
    assert tuned < plain / 10


@glibc_only
def test_release_free_memory_hands_what_the_tunables_kept_back_to_the_kernel():
    """Under the tunables a freed 256 MB tensor stays in the process; release_free_memory, which
    `trainer run` calls between stages, returns it, so evaluation does not start on top of it."""
    code = (
        "import sys, torch\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})\n"
        "from trainer.allocator import release_free_memory\n"
        "def rss():\n"
        "    return int(next(l for l in open('/proc/self/status') if l.startswith('VmRSS')).split()[1]) // 1024\n"
        "x = torch.ones(64 * 1024 * 1024)\n"  # 256 MB, every page touched
        "del x\n"
        "kept = rss()\n"
        "assert release_free_memory()\n"
        "print(kept, rss())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env={"PATH": "/usr/bin", "GLIBC_TUNABLES": allocator.TUNABLES},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    kept, after = map(int, out.stdout.split())
    assert kept - after > 200, (kept, after)


@glibc_only
def test_bench_allocator_prints_each_arm_against_the_default():
    """benchmarks/bench_allocator.py runs its arms in fresh processes and prints the table (no speed asserted)."""
    bench = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_allocator.py"
    args = ["--layers", "1", "--steps", "1", "--rounds", "1", "--tokens", "32", "--threads", "1", "--arms", "default,retain"]
    proc = subprocess.run([sys.executable, str(bench), *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {line.split()[0]: line.split() for line in proc.stdout.splitlines() if line.startswith(("default ", "retain "))}
    assert rows["default"][2] == "1.00x" and rows["retain"][2].endswith("x"), proc.stdout
