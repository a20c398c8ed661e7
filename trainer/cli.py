"""The `trainer` command: one subcommand per stage, each defined beside its stage's code.

    trainer build-dataset   traces → train/validation/test chat examples      (trainer/pipeline.py)
    trainer sft             fine-tune the student (QLoRA / LoRA / full)        (trainer/sft.py)
    trainer eval            held-out workflow evaluation against baselines     (trainer/evaluate.py)
    trainer run             all of the above from one config; --demo on CPU    (trainer/pipeline.py)
    trainer export          HF checkpoint, GGUF (f16, q8_0, K-quants), Ollama Modelfile (trainer/export.py)
    trainer serve           Anthropic Messages API for Claude Code; A/B rollout (trainer/serve.py)
    trainer reward          behavioural reward: per-term similarity + discriminator (trainer/reward.py)
    trainer rl              GRPO from the SFT student with that reward           (trainer/rl.py)
    trainer mine            prompts where the student is easiest to spot; over-sampled next round (trainer/mine.py)
    trainer ab-test         blind teacher-vs-student pairs: automatic judges, judging page, report (trainer/abtest.py)

A new stage adds its command with one `main.add_command(...)` line here. Modules import their heavy
dependencies (torch, transformers) inside functions, so `trainer --help` stays fast.
"""

from __future__ import annotations

import logging
import os
import warnings

import click

from trainer import abtest, evaluate, export, mine, pipeline, reward, rl, serve, sft


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="understudy")
def main():
    """Train an open model to work the way Claude Code worked in your captured traces."""
    # Each stage prints one line per step of its own; the libraries' per-map and per-load
    # progress bars would bury them. Set these to 0 to bring the bars back.
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # bitsandbytes warns on every CPU with AVX512-BF16 that an optional 4-bit CPU kernel from the
    # hub is missing; CPU training here doesn't use 4-bit, and the hub is never asked.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    # PEFT and TRL still read transformers' old `is_gradient_checkpointing` name; the deprecation
    # is theirs to act on, and it printed two lines into every LoRA run.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    # PEFT saving the resized embeddings with the adapter is what the template's new tokens need;
    # it said so on every checkpoint.
    warnings.filterwarnings("ignore", message=".*save_embedding_layers.*", category=UserWarning)


main.add_command(pipeline.build_dataset_command)
main.add_command(sft.command)
main.add_command(evaluate.command)
main.add_command(pipeline.run_command)
main.add_command(export.command)
main.add_command(serve.command)
main.add_command(reward.command)
main.add_command(rl.command)
main.add_command(mine.command)
main.add_command(abtest.command)


def entry() -> None:
    """The `trainer` console command: the stages that train re-execute once with malloc tuned for them."""
    import sys

    from trainer.allocator import reexec_with_retained_memory

    reexec_with_retained_memory(sys.argv)
    main()


if __name__ == "__main__":  # `python -m trainer.cli`, and `accelerate launch -m trainer.cli sft ...`
    entry()
