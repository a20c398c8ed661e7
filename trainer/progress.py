"""What the training stages show while they run and leave behind: progress lines, config beside
each checkpoint, and curves as PNG. Shared by `trainer sft` (loss) and `trainer rl` (reward).

    callbacks = [SaveConfigBesideCheckpoint(cfg), ProgressLine(log, "loss", ["learning_rate", "epoch"])]
    plot_curves(path, "understudy SFT", "loss", [("train loss", points), ...])
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from transformers import TrainerCallback

# How each logged value is written on a progress line.
_FORMATS = {
    "loss": ("loss", "{:.4f}"),
    "learning_rate": ("lr", "{:.2e}"),
    "epoch": ("epoch", "{:.2f}"),
    "reward": ("reward", "{:.3f}"),
    "reward_std": ("±", "{:.3f}"),
    "kl": ("kl", "{:.4f}"),
}


class SaveConfigBesideCheckpoint(TrainerCallback):
    """Each checkpoint carries the resolved config that produced it (understudy_config.json)."""

    def __init__(self, cfg):
        self.cfg = cfg

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:  # several processes (accelerate launch): one writes
            return
        ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if ckpt.is_dir():
            self.cfg.save(ckpt)


def format_duration(seconds: float) -> str:
    """42s, 3m05s, 1h02m."""
    seconds = int(round(max(seconds, 0)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class ProgressLine(TrainerCallback):
    """One line per logging step: `step 40/150 · loss 0.8123 · lr 2.1e-04 · epoch 1.20 · 1m33s · ETA 3m55s`.

    Only logs that carry `key` make a line (the trainer's final summary log does not); `extra`
    values follow it when present. The ETA is the steps left at the mean pace of the steps this
    run has taken (a resumed run counts from where it resumed). Only the first process prints
    under a launcher. Replaces transformers' PrinterCallback, which dumps dicts.
    """

    def __init__(self, log: Callable[[str], None], key: str, extra: Sequence[str] = ()):
        self.log, self.key, self.extra = log, key, list(extra)
        self.t0 = time.monotonic()
        self.step0 = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.t0, self.step0 = time.monotonic(), state.global_step

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if self.key not in logs or not state.is_world_process_zero:
            return
        parts = [f"step {state.global_step}/{state.max_steps}"]
        for name in [self.key, *self.extra]:
            if name in logs:
                label, fmt = _FORMATS.get(name, (name, "{:.4g}"))
                parts.append(f"{label} {fmt.format(logs[name])}")
        elapsed = time.monotonic() - self.t0
        parts.append(format_duration(elapsed))
        done = state.global_step - self.step0
        if done > 0 and 0 < state.global_step < state.max_steps:
            parts.append(f"ETA {format_duration(elapsed / done * (state.max_steps - state.global_step))}")
        self.log("  " + " · ".join(parts))


def plot_curves(path: Path, title: str, ylabel: str, series: Sequence[tuple[str, list[tuple[float, float]], str]],
                ylim: Optional[tuple[float, float]] = None) -> Optional[Path]:
    """A PNG of (label, points, marker) series against the step; None when there is nothing to draw."""
    series = [s for s in series if s[1]]
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    for label, points, marker in series:
        ax.plot(*zip(*points), marker=marker, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if ylim:
        ax.set_ylim(*ylim)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def history_points(log_history: list[dict[str, Any]], key: str) -> list[tuple[float, float]]:
    """(step, value) for each logged entry that has `key`."""
    return [(h["step"], h[key]) for h in log_history if key in h and "step" in h]
