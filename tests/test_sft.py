"""`trainer sft` on a tiny random LLaMA: LoRA, QLoRA (NF4 on CPU), full; resume after a kill.

Everything is offline: the base model and its tokenizer are built here, saved with
save_pretrained, and loaded back through the same code path a hub model takes.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from trainer.config import CONFIG_FILE_NAME, load_config  # noqa: E402
from trainer.sft import CPU_LORA_NOTE, build_trainer, cast_trainable_to_float32, train_sft  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    """A small teacher corpus → dataset, and a tiny random base model saved like a real one."""
    from tests.tiny_sft_world import build_tiny_sft_world

    root = tmp_path_factory.mktemp("sft_world")
    base, data = build_tiny_sft_world(root, traces=30, seed=1)
    return root, base, data


def _cfg(base: Path, **sft):
    overrides = {
        "sft.base_model": str(base),
        "sft.max_steps": 2,
        "sft.per_device_train_batch_size": 2,
        "sft.gradient_accumulation_steps": 1,
        "sft.learning_rate": 1e-2,
        "sft.logging_steps": 1,
        "sft.save_steps": 100,
        "sft.max_length": 1024,
        "sft.lora_r": 4,
        "sft.lora_alpha": 8,
    }
    overrides.update({f"sft.{k}": v for k, v in sft.items()})
    return load_config(overrides=list(overrides.items()))


def _snapshot(model, pred):
    return {n: p.detach().clone().float() for n, p in model.named_parameters() if pred(n)}


def _changed(before, model):
    params = dict(model.named_parameters())
    return {n for n, v in before.items() if not torch.equal(v, params[n].detach().float())}


def test_batches_are_drawn_from_one_system_turn_and_it_is_computed_once(tiny_world, tmp_path):
    """sft.shared_prefix_batches (trainer/prefix_batches.py): each whole batch is one project's
    examples, so its rows share the system turn; training runs with it; off, batches are random."""
    from collections import Counter

    from trainer.prefix_batches import PrefixGroupedSampler, system_turn_key
    from trainer.shared_prefix import shared_prefix_length

    _, base, data = tiny_world
    setup = build_trainer(_cfg(base, method="full"), data, tmp_path / "out", log=lambda _: None)
    trainer = setup.trainer
    sampler = trainer._get_train_sampler()
    assert isinstance(sampler, PrefixGroupedSampler)
    dataset = trainer.train_dataset
    keys = [system_turn_key(m, t) for m, t in zip(dataset["messages"], dataset["tools"])]
    assert Counter(sampler.keys) == Counter(keys) and len(set(keys)) > 1
    batches = [(b["input_ids"], b["attention_mask"]) for b in trainer.get_train_dataloader()]
    one_project = [ids for ids, _ in batches if len(ids) == 2 and shared_prefix_length(ids.tolist()) > 100]
    assert len(one_project) >= len(batches) - len(set(keys))  # only the projects' remainders mix
    assert getattr(trainer.model.get_decoder(), "understudy_shared_prefix", False)
    trainer.train()
    assert all(math.isfinite(h["loss"]) for h in trainer.state.log_history if "loss" in h)

    plain = build_trainer(_cfg(base, method="full", shared_prefix_batches=False), data, tmp_path / "plain",
                          log=lambda _: None)
    assert not isinstance(plain.trainer._get_train_sampler(), PrefixGroupedSampler)


def test_lora_trains_the_adapter_and_leaves_the_base(tiny_world, tmp_path):
    _, base, data = tiny_world
    lines = []
    setup = build_trainer(_cfg(base, method="lora"), data, tmp_path / "out", log=lines.append)
    assert setup.method == "lora"
    model = setup.trainer.model
    lora_b = _snapshot(model, lambda n: "lora_B" in n)
    frozen = _snapshot(model, lambda n: "lora_" not in n and "modules_to_save" not in n and "original_module" not in n)
    assert lora_b and frozen
    setup.trainer.train()
    assert any("loss" in h for h in setup.trainer.state.log_history)
    assert _changed(lora_b, model) == set(lora_b), "every LoRA B matrix moves off zero"
    assert _changed(frozen, model) == set(), "base weights stay frozen"
    assert any(line.startswith("  step 2/2 · loss ") for line in lines)


@pytest.mark.parametrize("multiple", [0, 64])
def test_batches_are_padded_to_a_multiple_of_sft_pad_to_multiple_of(tiny_world, tmp_path, multiple):
    """A few recurring batch shapes (trainer/allocator.py: kept memory is then reused whole);
    0 pads to the batch's longest example only. Padding is masked out of attention and loss."""
    _, base, data = tiny_world
    setup = build_trainer(_cfg(base, method="full", pad_to_multiple_of=multiple, shared_prefix_batches=False),
                          data, tmp_path / "out", log=lambda _: None)  # random batches: widths differ
    widths = set()
    for batch in setup.trainer.get_train_dataloader():
        width = batch["input_ids"].shape[1]
        longest = int(batch["attention_mask"].sum(1).max())
        widths.add(width)
        if multiple:
            assert width % multiple == 0 and longest <= width < longest + multiple
        else:
            assert width == longest
        assert bool((batch["labels"][batch["attention_mask"] == 0] == -100).all())
    assert len(widths) > 1 or multiple  # unpadded, the tiny world's batches differ in length


def test_qlora_path_loads_nf4_on_cpu_and_trains(tiny_world, tmp_path):
    """sft.force_4bit: the QLoRA path (bitsandbytes NF4 + prepare_model_for_kbit_training) on CPU."""
    import bitsandbytes as bnb

    _, base, data = tiny_world
    setup = build_trainer(_cfg(base, method="qlora", force_4bit=True), data, tmp_path / "out", log=lambda _: None)
    assert setup.method == "qlora"
    model = setup.trainer.model
    four_bit = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert four_bit, "the base's linear layers are NF4"
    assert four_bit[0].weight.quant_state.quant_type == "nf4"
    lora = _snapshot(model, lambda n: "lora_B" in n)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n and not p.requires_grad}
    setup.trainer.train()
    assert _changed(lora, model) == set(lora)
    params = dict(model.named_parameters())
    assert all(torch.equal(v, params[n].detach()) for n, v in frozen.items()), "4-bit base weights unchanged"
    # After training a 4-bit model generate() needs the trainable parameters back in float32.
    cast_trainable_to_float32(model)
    ids = setup.tokenizer("Fix the bug", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == ids["input_ids"].shape[1] + 3


def test_qlora_without_cuda_falls_back_to_lora_with_one_line(tiny_world, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: QLoRA runs for real")
    _, base, data = tiny_world
    lines = []
    setup = build_trainer(_cfg(base), data, tmp_path / "out", log=lines.append)
    assert setup.method == "lora"
    assert lines.count(CPU_LORA_NOTE) == 1


def test_full_sft_writes_model_card_loss_curve_and_config(tiny_world, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, base, data = tiny_world
    out = tmp_path / "out"
    result = train_sft(_cfg(base, method="full", max_steps=4, save_steps=2), data, out, log=lambda _: None)
    assert result.global_step == 4 and result.tokens_seen > 0
    for name in ("loss.png", "README.md", "train_summary.json", CONFIG_FILE_NAME):
        assert (out / name).is_file(), name
    assert (out / "final" / "config.json").is_file() and (out / "model" / "config.json").is_file()
    AutoModelForCausalLM.from_pretrained(out / "final")
    assert AutoTokenizer.from_pretrained(out / "final").chat_template
    card = (out / "README.md").read_text()
    assert f"base_model: {base}" in card and "| learning_rate | `0.01` |" in card
    for step in (2, 4):
        rec = json.loads((out / "checkpoints" / f"checkpoint-{step}" / CONFIG_FILE_NAME).read_text())
        assert rec["config"]["sft"]["max_steps"] == 4
        assert rec["sources"]["sft"]["max_steps"] == "flag"


def test_lora_merges_into_final(tiny_world, tmp_path):
    _, base, data = tiny_world
    out = tmp_path / "out"
    train_sft(_cfg(base, method="lora"), data, out, log=lambda _: None)
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert (out / "final" / "config.json").is_file()
    assert not (out / "final" / "adapter_config.json").exists(), "final/ is merged, loadable without peft"


def _sft_cmd(base: Path, data: Path, out: Path, max_steps: int, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "trainer.cli", "sft",
        "--base-model", str(base), "--data", str(data), "--out", str(out),
        "--method", "full", "--max-steps", str(max_steps),
        "--sft.save_steps", "2", "--sft.logging_steps", "1", "--sft.per_device_train_batch_size", "1",
        "--sft.gradient_accumulation_steps", "1", "--sft.learning_rate", "1e-3", "--sft.max_length", "1024",
        *extra,
    ]  # fmt: skip


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_resume_after_kill_continues_from_the_checkpoint(tiny_world, tmp_path):
    _, base, data = tiny_world
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    log1 = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(_sft_cmd(base, data, out, 400), cwd=REPO, env=env, stdout=log1, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 480
    try:
        # understudy_config.json is written after the checkpoint is complete (on_save). Any complete
        # checkpoint will do: on a fast machine checkpoint-2 is rotated away (save_total_limit)
        # between two polls.
        while not any((out / "checkpoints").glob(f"checkpoint-*/{CONFIG_FILE_NAME}")):
            assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 480 s"
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        log1.close()
    first = (tmp_path / "first.log").read_text()
    assert not (out / "final").exists(), "killed before the end"
    killed_at = max(int(p.name.split("-")[1]) for p in (out / "checkpoints").glob("checkpoint-*"))
    assert killed_at >= 2

    target = killed_at + 3
    second = subprocess.run(
        _sft_cmd(base, data, out, target, "--resume"), cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    text = second.stdout + second.stderr
    print(f"killed at checkpoint-{killed_at}; resumed to step {target}")
    assert f"Resuming from {out / 'checkpoints' / f'checkpoint-{killed_at}'}." in text
    steps = [int(line.split("step ")[1].split("/")[0]) for line in text.splitlines() if line.startswith("  step ")]
    assert steps and min(steps) > killed_at, f"restarted from 0: logged steps {steps}"
    assert max(steps) == target
    state = json.loads((out / "checkpoints" / f"checkpoint-{target - target % 2}" / "trainer_state.json").read_text())
    assert state["global_step"] >= killed_at
    assert json.loads((out / "train_summary.json").read_text())["global_step"] == target
    assert "step 1/400" in first


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_real_qlora_on_cuda(tiny_world, tmp_path):
    """The default path on a GPU: sft.method = qlora, NF4 on CUDA, bf16 compute."""
    import bitsandbytes as bnb

    _, base, data = tiny_world
    lines = []
    out = tmp_path / "out"
    setup = build_trainer(_cfg(base), data, out, log=lines.append)
    assert setup.method == "qlora" and CPU_LORA_NOTE not in lines
    model = setup.trainer.model
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    assert next(p for p in model.parameters() if p.requires_grad).device.type == "cuda"
    lora = _snapshot(model, lambda n: "lora_B" in n)
    setup.trainer.train()
    assert _changed(lora, model) == set(lora)
    result = train_sft(_cfg(base), data, tmp_path / "out2", log=lambda _: None)
    assert (result.final_dir / "config.json").is_file()


def test_sft_cli_without_a_dataset_says_what_to_run(tmp_path):
    from click.testing import CliRunner

    from trainer.cli import main

    result = CliRunner().invoke(main, ["sft", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "no training data at" in result.output and "run `trainer build-dataset`" in result.output
    assert "Traceback" not in result.output


def test_qlora_on_cpu_writes_a_merged_unquantized_final(tiny_world, tmp_path):
    from transformers import AutoModelForCausalLM

    _, base, data = tiny_world
    out = tmp_path / "out"
    result = train_sft(_cfg(base, method="qlora", force_4bit=True), data, out, log=lambda _: None)
    assert result.method == "qlora"
    assert (out / "adapter" / "adapter_config.json").is_file()
    model = AutoModelForCausalLM.from_pretrained(out / "final")
    assert getattr(model.config, "quantization_config", None) is None
    assert next(model.parameters()).dtype == torch.float32


@pytest.mark.parametrize("tied", [False, True])
def test_added_template_tokens_start_at_the_mean_of_their_base_pieces(tmp_path, tied):
    """A base whose tokenizer lacks the template's tokens (like SmolLM2): each added row, input and
    output, starts as the mean of the rows of the pieces the base tokenizer splits its text into."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from trainer.chat_template import SPECIAL_TOKENS
    from trainer.sft import load_base_model, load_tokenizer

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.train_from_iterator(["<tool_call> start_header end_of_text eot_id"] * 20, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<eos>").save_pretrained(tmp_path)
    base_tok = AutoTokenizer.from_pretrained(tmp_path)
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(base_tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, tie_word_embeddings=tied)).save_pretrained(tmp_path)

    tokenizer, added = load_tokenizer(str(tmp_path))
    assert added == len(SPECIAL_TOKENS) and len(tokenizer) == len(base_tok) + added
    model = load_base_model(str(tmp_path), four_bit=False, cuda=False, tokenizer=tokenizer)
    emb, out = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    assert emb.shape[0] == out.shape[0] == len(tokenizer) and (out is emb) == tied
    for tid in range(len(base_tok), len(tokenizer)):
        pieces = base_tok.encode(tokenizer.convert_ids_to_tokens(tid), add_special_tokens=False)
        assert len(pieces) > 1 and max(pieces) < len(base_tok)
        torch.testing.assert_close(emb[tid], emb[pieces].mean(0))
        torch.testing.assert_close(out[tid], out[pieces].mean(0))
    assert not torch.equal(emb[-1], emb[-2])  # each token its own pieces, not one shared row


def test_latest_checkpoint_skips_one_a_kill_left_half_written(tmp_path):
    """Killed mid-save: the newest folder lacks the config written once a checkpoint is
    complete, and resuming from it fails on its half-written files."""
    from trainer.config import CONFIG_FILE_NAME
    from trainer.sft import latest_checkpoint

    for step in (2, 4, 6):
        (tmp_path / f"checkpoint-{step}").mkdir()
    for step in (2, 4):
        (tmp_path / f"checkpoint-{step}" / CONFIG_FILE_NAME).write_text("{}")
    (tmp_path / "checkpoint-6" / "trainer_state.json").write_text("")
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-4"
    assert latest_checkpoint(tmp_path / "none") is None


def test_bf16_precision_on_cpu_trains_under_autocast(tiny_world, tmp_path):
    """sft.precision = "bf16" on a CPU: the Trainer runs bf16 autocast, weights stay float32."""
    _, base, data = tiny_world
    setup = build_trainer(_cfg(base, method="lora", precision="bf16"), data, tmp_path / "out", log=lambda _: None)
    assert setup.trainer.args.bf16
    setup.trainer.train()
    losses = [h["loss"] for h in setup.trainer.state.log_history if "loss" in h]
    assert losses and all(math.isfinite(v) for v in losses)
    assert {p.dtype for p in setup.trainer.model.parameters() if p.requires_grad} == {torch.float32}


@pytest.mark.parametrize("precision,cuda,expected", [
    ("auto", False, False), ("fp32", False, False), ("bf16", False, True), ("fp32", True, False),
])
def test_precision_setting(precision, cuda, expected):
    from trainer.sft import uses_bf16

    assert uses_bf16(precision, cuda) is expected


@pytest.mark.parametrize("native", [True, False])
def test_native_precision_is_bf16_only_where_the_cpu_computes_it(monkeypatch, native):
    """sft.precision = "native" (the presets'): bf16 autocast on a CPU with AVX512-BF16 or AMX,
    float32 on one without (where bf16 is emulated and slower), and the run's settings say which."""
    from trainer.pipeline import settings_summary
    from trainer.sft import uses_bf16

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert uses_bf16("native", cuda=False) is native
    summary = settings_summary(load_config(overrides=[("sft.precision", "native"), ("sft.method", "full")]))
    method_line = next(line for line in summary.splitlines() if line.lstrip().startswith("method"))
    assert method_line.endswith(", bf16" if native else ", float32 (no native bf16 here)"), method_line


def test_bf16_on_a_cpu_without_native_bf16_says_so(monkeypatch):
    from trainer.config import check_config

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    notes = check_config(load_config(overrides=[("sft.precision", "bf16"), ("sft.method", "lora")]), cuda=False)
    assert any("no native bf16" in n and 'sft.precision = "fp32"' in n for n in notes), notes
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    notes = check_config(load_config(overrides=[("sft.precision", "bf16"), ("sft.method", "lora")]), cuda=False)
    assert not any("native bf16" in n for n in notes)


def test_a_student_of_called_tools_records_them_and_serve_shows_only_those(tiny_world, tmp_path):
    """With dataset.tool_set = "called" the student's understudy_config.json names the tools its
    examples showed (the dataset's stats.json), and `trainer serve`, adopting that record, shows a
    live request only those: the context it was trained on."""
    import shutil

    from trainer.serve import ContextSettings, adopt_trained_context, to_chat

    _, base, data = tiny_world
    called = tmp_path / "data"
    shutil.copytree(data, called)
    stats = json.loads((called / "stats.json").read_text())
    (called / "stats.json").write_text(json.dumps({**stats, "tools_shown": ["Read", "Bash"]}))
    cfg = _cfg(base, method="full", max_steps=1)
    cfg.dataset.tool_set = "called"
    out = tmp_path / "out"
    train_sft(cfg, called, out, log=lambda _: None)
    record = json.loads((out / CONFIG_FILE_NAME).read_text())
    assert record["config"]["dataset"]["tools"] == ["Read", "Bash"] and record["sources"]["dataset"]["tools"] == "dataset"
    assert cfg.dataset.tools == [], "the run's own config is left as set"

    serving = load_config(None)
    assert "tools" in adopt_trained_context(serving, str(out / "final"), lambda _: None)
    request = {"model": "m", "max_tokens": 64, "messages": [{"role": "user", "content": "read a.py"}],
               "tools": [{"name": name, "description": f"{name}.", "input_schema": {"type": "object", "properties": {}}}
                         for name in ("Agent", "Bash", "Read", "WebFetch")]}
    _, tools, _ = to_chat(request, ContextSettings.from_config(serving))
    assert [t.get("name") or t["function"]["name"] for t in tools] == ["Bash", "Read"]
