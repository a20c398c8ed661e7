"""The pipeline config: file ← flags, unknown keys named, sources recorded, combinations checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainer.config import (
    CONFIG_FILE_NAME,
    ConfigError,
    check_config,
    load_config,
    parse_overrides,
)


def write(tmp_path: Path, text: str, name: str = "understudy.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_unknown_key_names_key_section_and_suggestion(tmp_path):
    path = write(tmp_path, "[sft]\nlerning_rate = 1e-4\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value) == "unknown key 'lerning_rate' in [sft]; did you mean 'learning_rate'?"


def test_unknown_section_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown section '\[sfft\]'.*did you mean '\[sft\]'"):
        load_config(write(tmp_path, "[sfft]\nmax_steps = 3\n"))


def test_unknown_key_in_a_flag_is_an_error():
    with pytest.raises(ConfigError, match="unknown key 'max_step' in \\[sft\\]; did you mean 'max_steps'"):
        load_config(overrides=[("sft.max_step", "3")])


def test_flags_override_file_and_sources_are_recorded(tmp_path):
    path = write(tmp_path, "[sft]\nlearning_rate = 1e-4\nmax_steps = 10\n\n[eval]\nmax_examples = 7\n")
    overrides = parse_overrides(["--sft.max_steps", "50", "-o", "eval.baselines=majority"])
    cfg = load_config(path, overrides)
    assert cfg.sft.learning_rate == 1e-4 and cfg.source("sft.learning_rate") == "file"
    assert cfg.sft.max_steps == 50 and cfg.source("sft.max_steps") == "flag"
    assert cfg.eval.max_examples == 7 and cfg.source("eval.max_examples") == "file"
    assert cfg.eval.baselines == ["majority"] and cfg.source("eval.baselines") == "flag"
    assert cfg.sft.lora_r == 16 and cfg.source("sft.lora_r") == "default"
    text = cfg.describe(["sft"])
    assert "  sft.max_steps = 50  (flag)" in text
    assert "  sft.learning_rate = 0.0001  (file)" in text
    assert "  sft.lora_r = 16  (default)" in text


def test_preset_sits_under_file_and_flags(tmp_path):
    path = write(tmp_path, "[sft]\nmax_steps = 10\n")
    cfg = load_config(path, [("sft.learning_rate", "0.5")], preset={"sft.max_steps": 99, "sft.learning_rate": 0.1, "sft.method": "full"})
    assert (cfg.sft.max_steps, cfg.source("sft.max_steps")) == (10, "file")
    assert (cfg.sft.learning_rate, cfg.source("sft.learning_rate")) == (0.5, "flag")
    assert (cfg.sft.method, cfg.source("sft.method")) == ("full", "preset")


def test_yaml_file(tmp_path):
    pytest.importorskip("yaml")
    cfg = load_config(write(tmp_path, "sft:\n  max_steps: 12\n", name="understudy.yaml"))
    assert cfg.sft.max_steps == 12


@pytest.mark.parametrize(
    "flag, message",
    [
        ("sft.max_steps=abc", "sft.max_steps must be an integer"),
        ("sft.method=qlorra", "sft.method must be one of"),
        ("sft.resume=maybe", "sft.resume must be true or false"),
    ],
)
def test_bad_flag_values_name_the_field(flag, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[flag])


def test_wrong_type_in_file_names_the_field(tmp_path):
    with pytest.raises(ConfigError, match="sft.max_steps must be an integer"):
        load_config(write(tmp_path, '[sft]\nmax_steps = "many"\n'))


def test_section_validation_runs_on_final_values():
    with pytest.raises(ConfigError, match=r"\[dataset\].*val_fraction"):
        load_config(overrides=["dataset.val_fraction=0.6", "dataset.test_fraction=0.5"])


def test_combination_checks_say_which_field_to_change():
    with pytest.raises(ConfigError, match="set sft.force_4bit = false or sft.method"):
        check_config(load_config(overrides=["sft.method=full", "sft.force_4bit=true"]), cuda=False)
    with pytest.raises(ConfigError, match="set one of them > 0"):
        check_config(load_config(overrides=["sft.max_steps=0", "sft.num_train_epochs=0"]), cuda=False)
    with pytest.raises(ConfigError, match="set sft.gradient_checkpointing = false"):
        check_config(load_config(overrides=["sft.gradient_checkpointing=true"]), cuda=False)
    with pytest.raises(ConfigError, match=r"run.demo_copy_warmup_learning_rate must be > 0 \(or unset"):
        check_config(load_config(overrides=["sft.method=full", "run.demo_copy_warmup_learning_rate=0"]), cuda=False)


def test_qlora_without_cuda_says_so_in_one_line():
    notes = check_config(load_config(), cuda=False)
    assert notes == ["No CUDA GPU: training plain LoRA in float32 on CPU (QLoRA needs CUDA)."]
    assert check_config(load_config(), cuda=True) == []
    assert check_config(load_config(overrides=["sft.force_4bit=true"]), cuda=False) == []


def test_saved_record_has_values_and_sources(tmp_path):
    cfg = load_config(overrides=["sft.max_steps=5"])
    path = cfg.save(tmp_path)
    assert path.name == CONFIG_FILE_NAME
    rec = json.loads(path.read_text())
    assert rec["config"]["sft"]["max_steps"] == 5
    assert rec["sources"]["sft"]["max_steps"] == "flag"
    assert rec["sources"]["sft"]["learning_rate"] == "default"


def test_cli_reports_unknown_key_without_traceback(tmp_path):
    from click.testing import CliRunner

    from trainer.cli import main

    path = write(tmp_path, "[sft]\nlerning_rate = 1e-4\n")
    result = CliRunner().invoke(main, ["sft", "--config", str(path)])
    assert result.exit_code == 1
    assert "Error: unknown key 'lerning_rate' in [sft]; did you mean 'learning_rate'?" in result.output
    result = CliRunner().invoke(main, ["run", "--sft.max_stepz", "3"])
    assert result.exit_code == 1
    assert "unknown key 'max_stepz' in [sft]; did you mean 'max_steps'?" in result.output


def test_run_header_names_a_warmup_learning_rate_only_when_one_is_set():
    from trainer.pipeline import DEMO_PRESET, settings_summary

    preset = ["run.traces=demo", *(f"{k}={v}" for k, v in DEMO_PRESET.items() if k.startswith("run.demo_"))]
    default = settings_summary(load_config(overrides=preset))
    assert "copy warm-up (respell) of up to 1200 steps)" in default
    chosen = settings_summary(load_config(overrides=[*preset, "run.demo_copy_warmup_learning_rate=1e-3"]))
    assert "copy warm-up (respell) of up to 1200 steps at lr 0.001)" in chosen


def test_run_header_says_what_rl_will_do_only_when_it_is_on():
    from trainer.pipeline import DEMO_PRESET, settings_summary

    demo = [f"{k}={v}" for k, v in DEMO_PRESET.items()]
    assert "after SFT" not in settings_summary(load_config(overrides=demo))
    header = settings_summary(load_config(overrides=[*demo, "rl.enabled=true"]))
    assert ("  after SFT   student-centred SFT, 3 DAgger rounds of 120 steps × batch 8, lr 0.0001; the RL student "
            "goes on only if it beats the SFT one on the whole validation split") in header
    grpo = settings_summary(load_config(overrides=[*demo, "rl.enabled=true", "rl.algorithm=grpo", "rl.select_examples=64"]))
    assert "after SFT   GRPO, 360 steps, lr 0.0005; the RL student goes on only if it beats the SFT one on the first 64 validation prompts" in grpo


def test_run_header_says_when_the_system_turn_trains_without_gradient():
    from trainer.pipeline import settings_summary

    plain = settings_summary(load_config(overrides=["sft.per_device_train_batch_size=2"]))
    assert "without gradient" not in plain
    frozen = settings_summary(load_config(overrides=["sft.per_device_train_batch_size=2", "sft.shared_prefix_gradient=false"]))
    assert "max_length 4096 tokens; system turn without gradient" in frozen
    # One example per device shares nothing: the setting does nothing there, and the header says nothing.
    single = settings_summary(load_config(overrides=["sft.per_device_train_batch_size=1", "sft.shared_prefix_gradient=false"]))
    assert "without gradient" not in single


def test_a_system_turn_without_gradient_that_cannot_apply_gets_a_note():
    from trainer.config import check_config

    note = "sft.shared_prefix_gradient = false does nothing without shared prefix batches"
    for overrides in (["sft.per_device_train_batch_size=1"], ["sft.shared_prefix_batches=false"]):
        notes = check_config(load_config(overrides=[*overrides, "sft.shared_prefix_gradient=false"]), cuda=False)
        assert any(note in n for n in notes), notes
    assert not any(note in n for n in check_config(load_config(overrides=["sft.shared_prefix_gradient=false"]), cuda=False))


def test_run_header_names_the_called_tool_set_and_a_bf16_evaluation():
    from unittest import mock

    from trainer.pipeline import settings_summary

    plain = settings_summary(load_config(None))
    assert "  tools " not in plain and "evaluation" not in plain
    header = settings_summary(load_config(overrides=["dataset.tool_set=called", "eval.precision=bf16", "eval.max_examples=64"]))
    assert "  tools       only those the teacher calls in the training split (dataset.tool_set)" in header
    assert "  evaluation  the first 64 held-out prompts, in bf16" in header
    named = settings_summary(load_config(overrides=["dataset.tool_set=called", 'dataset.tools=["Read", "Bash"]']))
    assert "  tools       only Read, Bash (dataset.tools)" in named, "an explicit list is what the student sees"
    with mock.patch("trainer.sft.cpu_bf16_is_native", return_value=False), mock.patch("torch.cuda.is_available", return_value=False):
        native = settings_summary(load_config(overrides=["eval.precision=native"]))
    assert "  evaluation  all held-out prompts, in float32 (no native bf16 here)" in native


def test_run_header_names_the_tool_form_of_the_tiny_preset():
    from trainer.pipeline import PRESETS, settings_summary

    header = settings_summary(load_config(None, preset=PRESETS["tiny"]))
    assert ("  tools       only those the teacher calls in the training split (dataset.tool_set); "
            "as name and required parameters (dataset.tool_schema); no descriptions") in header
    assert "a tiny random LLaMA built on the corpus" in header
    full = settings_summary(load_config(overrides=["dataset.tool_schema=full"]))
    assert "  tools       as JSON schemas (dataset.tool_schema)" in full
