"""The one chat template: rendering, loss mask (with TRL), parsing, tokenizer setup."""

from __future__ import annotations

import json
import logging

import pytest

from trainer.chat_template import (
    CHAT_TEMPLATE,
    END_OF_TURN,
    GENERATION_PROMPT,
    SPECIAL_TOKENS,
    TOOL_CALL_CLOSE,
    TOOL_CALL_OPEN,
    apply_chat_template,
    compact_tools,
    dump_arguments,
    parse_assistant_output,
    render,
    trim_tool_result,
)
from trainer.dataset import DatasetConfig, trace_to_example
from trainer.teacher_corpus import TOOLS_OFFERED, generate_corpus
from trainer.tokenizer_tools import train_tiny_tokenizer

ASSISTANT_HEADER = "<|start_header_id|>assistant<|end_header_id|>\n"
TOOLS = compact_tools(TOOLS_OFFERED)


def call(id_, name, args):
    return {"id": id_, "type": "function", "function": {"name": name, "arguments": dump_arguments(args)}}


MESSAGES = [
    {"role": "system", "content": "You are a coding agent."},
    {"role": "user", "content": "Explain src/cache/ to me."},
    {
        "role": "assistant",
        "content": "First I'll list the files, then read two of them.",
        "tool_calls": [call("t1", "Glob", {"pattern": "src/cache/**/*.py"})],
    },
    {"role": "tool", "content": "src/cache/core.py\nsrc/cache/lru.py", "tool_call_id": "t1", "name": "Glob"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            call("t2", "Read", {"file_path": "src/cache/core.py"}),
            call("t3", "Read", {"file_path": "src/cache/lru.py", "limit": 40}),
        ],
    },
    {"role": "tool", "content": "     1\tclass Cache: ...", "tool_call_id": "t2", "name": "Read"},
    {"role": "tool", "content": "Error: file is locked", "tool_call_id": "t3", "name": "Read"},
    {"role": "assistant", "content": "The cache is an LRU over a dict. Ünïcode stays as is."},
]


@pytest.fixture(scope="module")
def tiny_tokenizer(tmp_path_factory):
    """Trained on the fly, saved and reloaded through AutoTokenizer: a real model's code path."""
    from transformers import AutoTokenizer

    config = DatasetConfig()
    texts = [render(ex["messages"], ex["tools"]) for ex in (trace_to_example(t, config) for t in generate_corpus(30, seed=5))]
    texts.append(render(MESSAGES, TOOLS))
    path = tmp_path_factory.mktemp("tok")
    train_tiny_tokenizer(texts, vocab_size=600).save_pretrained(path)
    return AutoTokenizer.from_pretrained(path)


def assistant_bodies(text: str) -> list[str]:
    """Each assistant turn's text after its header, up to and including its <|eot_id|>."""
    return [part.split(END_OF_TURN)[0] + END_OF_TURN for part in text.split(ASSISTANT_HEADER)[1:]]


def test_renders_tools_parallel_calls_and_tool_results():
    text = render(MESSAGES, json.dumps(TOOLS))
    assert text.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a coding agent.")
    for tool in ("Bash", "Read", "Edit", "Write", "Grep", "Glob"):
        assert f'{{"name": "{tool}", "description": ' in text
    assert '"required": ["file_path", "old_string", "new_string"]' in text
    # Both parallel calls sit in one assistant turn, each on its own line, then one tool turn each.
    bodies = assistant_bodies(text)
    assert len(bodies) == 3
    assert bodies[1] == (
        '<tool_call>{"name": "Read", "arguments": {"file_path": "src/cache/core.py"}}</tool_call>\n'
        '<tool_call>{"name": "Read", "arguments": {"file_path": "src/cache/lru.py", "limit": 40}}</tool_call>'
        + END_OF_TURN
    )
    assert bodies[0].startswith("First I'll list the files, then read two of them.\n<tool_call>")
    assert text.count("<|start_header_id|>tool<|end_header_id|>\n\n") == 3
    assert "<|start_header_id|>tool<|end_header_id|>\n\nError: file is locked<|eot_id|>" in text
    assert text.endswith("Ünïcode stays as is.<|eot_id|>")
    assert render(MESSAGES, TOOLS, add_generation_prompt=True) == render(MESSAGES, TOOLS) + GENERATION_PROMPT


def assert_prompts_end_on_training_tokens(tokenizer) -> None:
    """The student's prompt must end on the very tokens training put there: each assistant turn's
    generation prompt, tokenized alone, is a prefix of the conversation tokenized with that turn.
    (With a "\n\n" header a GPT-2-style tokenizer ended prompts on one token "\n\n" but split
    training's "\n\nLet" as "\n", "\n", "Let": SmolLM2's first tool fell from 0.938 to 0.375.)"""
    apply_chat_template(tokenizer)
    turns = [i for i, m in enumerate(MESSAGES) if m["role"] == "assistant"]
    openings = ["Let me look.", " leading space", "1. a list", "`code` first", "Ünïcode", "", "\tTab"]
    for i in turns:
        for opening in openings:
            turn = dict(MESSAGES[i], content=opening)
            prompt = render(MESSAGES[:i], TOOLS, add_generation_prompt=True)
            whole = render(MESSAGES[:i] + [turn], TOOLS)
            ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            whole_ids = tokenizer(whole, add_special_tokens=False)["input_ids"]
            assert whole_ids[: len(ids)] == ids, (opening, tokenizer.convert_ids_to_tokens(ids[-3:]),
                                                  tokenizer.convert_ids_to_tokens(whole_ids[len(ids) - 3 : len(ids) + 2]))


def test_prompts_end_on_the_tokens_training_saw(tiny_tokenizer):
    assert_prompts_end_on_training_tokens(tiny_tokenizer)


def test_render_without_tools_or_system():
    text = render([{"role": "user", "content": "hi"}], None, add_generation_prompt=True)
    assert text == "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>" + GENERATION_PROMPT


def test_dict_arguments_render_like_json_strings():
    # TRL and some servers pass arguments as a dict; the template prints them the same way.
    as_dict = [dict(m) for m in MESSAGES]
    as_dict[4] = {**MESSAGES[4], "tool_calls": [
        {**c, "function": {**c["function"], "arguments": json.loads(c["function"]["arguments"])}}
        for c in MESSAGES[4]["tool_calls"]
    ]}
    assert render(as_dict, TOOLS) == render(MESSAGES, TOOLS)


def test_tokenizer_apply_chat_template_equals_render(tiny_tokenizer):
    assert tiny_tokenizer.chat_template == CHAT_TEMPLATE
    for gen in (False, True):
        via_tokenizer = tiny_tokenizer.apply_chat_template(MESSAGES, tools=TOOLS, tokenize=False, add_generation_prompt=gen)
        assert via_tokenizer == render(MESSAGES, json.dumps(TOOLS), add_generation_prompt=gen)


def test_tiny_tokenizer_special_tokens(tiny_tokenizer):
    assert tiny_tokenizer.bos_token == "<|begin_of_text|>"
    assert tiny_tokenizer.eos_token == END_OF_TURN
    assert tiny_tokenizer.pad_token is not None
    for token in SPECIAL_TOKENS:
        ids = tiny_tokenizer.encode(token, add_special_tokens=False)
        assert len(ids) == 1, token
    # Tool-call tags survive skip_special_tokens, so generated calls can be parsed after decoding.
    ids = tiny_tokenizer.encode(f'{TOOL_CALL_OPEN}{{"name": "Bash"}}{TOOL_CALL_CLOSE}{END_OF_TURN}', add_special_tokens=False)
    assert tiny_tokenizer.decode(ids, skip_special_tokens=True) == f'{TOOL_CALL_OPEN}{{"name": "Bash"}}{TOOL_CALL_CLOSE}'


def test_loss_mask_covers_each_assistant_turn_and_its_eot(tiny_tokenizer):
    tok = tiny_tokenizer
    out = tok.apply_chat_template(MESSAGES, tools=TOOLS, return_dict=True, return_assistant_tokens_mask=True, tokenize=True)
    ids, mask = out["input_ids"], out["assistant_masks"]
    assert len(mask) == len(ids) and any(mask)

    spans, current = [], []
    for token_id, m in zip(ids, mask):
        if m:
            current.append(token_id)
        elif current:
            spans.append(current)
            current = []
    if current:
        spans.append(current)

    text = render(MESSAGES, TOOLS)
    expected = assistant_bodies(text)
    # The masked spans are exactly the assistant bodies, each ending on its <|eot_id|> token.
    assert [tok.decode(s) for s in spans] == expected
    eot = tok.convert_tokens_to_ids(END_OF_TURN)
    assert all(s[-1] == eot for s in spans)
    # Nothing of the system prompt, user turn, tool results or headers is in the loss.
    unmasked = tok.decode([t for t, m in zip(ids, mask) if not m])
    rest = text
    for body in expected:
        rest = rest.replace(body, "", 1)
    assert unmasked == rest
    assert "Explain src/cache/" in unmasked and "file is locked" in unmasked and "ripgrep" in unmasked


def test_trl_sft_trainer_accepts_template_with_assistant_only_loss(tiny_tokenizer, tmp_path, caplog):
    import torch
    from datasets import Dataset
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl import SFTConfig, SFTTrainer

    tok = tiny_tokenizer
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=2048, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    ))
    examples = [trace_to_example(t, DatasetConfig()) for t in generate_corpus(2, seed=7)]
    dataset = Dataset.from_list([{"messages": e["messages"], "tools": e["tools"]} for e in examples])
    args = SFTConfig(
        output_dir=str(tmp_path / "out"), use_cpu=True, bf16=False, gradient_checkpointing=False,
        assistant_only_loss=True, max_steps=1, report_to=[], per_device_train_batch_size=2, logging_steps=1,
        save_strategy="no", max_length=4096,  # TRL defaults to 1024, shorter than these examples
    )
    with caplog.at_level(logging.WARNING):
        trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tok)
    assert trainer.chat_template is None, "TRL swapped in its own training template"
    assert "end-of-turn token in the loss mask" not in caplog.text

    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    eot = tok.convert_tokens_to_ids(END_OF_TURN)
    for row, example in enumerate(examples):
        ids, labels = batch["input_ids"][row].tolist(), batch["labels"][row].tolist()
        trained = [t for t, label in zip(ids, labels) if label != -100]
        assert all(label in (-100, t) for t, label in zip(ids, labels))
        n_assistant = sum(m["role"] == "assistant" for m in example["messages"])
        assert trained.count(eot) == n_assistant
        text = render(example["messages"], example["tools"])
        assert tok.decode(trained) == "".join(assistant_bodies(text))

    trainer.train()
    assert any("loss" in entry for entry in trainer.state.log_history)


def test_parse_round_trips_rendered_turn():
    text = render(MESSAGES, TOOLS)
    for message, body in zip([m for m in MESSAGES if m["role"] == "assistant"], assistant_bodies(text)):
        parsed = parse_assistant_output(body)
        assert parsed.narration == message["content"]
        expected = [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in message.get("tool_calls", [])]
        assert [(c.name, c.arguments) for c in parsed.tool_calls] == expected
        assert all(c.valid_json for c in parsed.tool_calls)


@pytest.mark.parametrize(
    "text, names, valid",
    [
        ("", [], []),
        ("Just an answer.<|eot_id|>", [], []),
        ('<tool_call>{"name": "Read", "arguments": {"file_path": "a"</tool_call>', [None], [False]),
        ('<tool_call>{"name": "Bash", "arguments": {"command": "ls"}}', ["Bash"], [True]),  # cut before the close
        ('<tool_call>{"name": "Bash", "arguments": {"comm', [None], [False]),
        ('<tool_call>["Bash"]</tool_call>', [None], [False]),
        ('<tool_call>{"arguments": {}}</tool_call>', [None], [False]),
        ('<tool_call>{"name": "Bash", "arguments": [1]}</tool_call>', ["Bash"], [False]),
        ('<tool_call>{"name": "Bash", "arguments": "{\\"command\\": \\"ls\\"}"}</tool_call>', ["Bash"], [True]),
        ('<tool_call>not json</tool_call>\n<tool_call>{"name": "Glob", "arguments": {}}</tool_call>', [None, "Glob"], [False, True]),
    ],
)
def test_parse_is_tolerant(text, names, valid):
    parsed = parse_assistant_output(text)
    assert [c.name for c in parsed.tool_calls] == names
    assert [c.valid_json for c in parsed.tool_calls] == valid
    assert TOOL_CALL_OPEN not in parsed.narration and END_OF_TURN not in parsed.narration


def test_parse_keeps_narration_around_calls():
    parsed = parse_assistant_output('Let me look.\n<tool_call>{"name": "Glob", "arguments": {"pattern": "*"}}</tool_call>\nThen more.<|eot_id|>')
    assert parsed.narration == "Let me look.\n\nThen more."
    assert parsed.tool_calls[0].raw == '{"name": "Glob", "arguments": {"pattern": "*"}}'


def test_apply_chat_template_adds_missing_tokens():
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.train_from_iterator(["plain text without any special tokens"] * 5, trainers.BpeTrainer(vocab_size=300, show_progress=False))
    tok = PreTrainedTokenizerFast(tokenizer_object=raw)
    assert apply_chat_template(tok) == len(SPECIAL_TOKENS)
    assert apply_chat_template(tok) == 0
    assert tok.chat_template == CHAT_TEMPLATE and tok.pad_token is not None
    ids = tok.apply_chat_template(MESSAGES, tools=TOOLS, tokenize=True, return_dict=False)
    assert ids.count(tok.convert_tokens_to_ids(END_OF_TURN)) == len(MESSAGES)


def test_compact_tools():
    long = {
        "name": "Bash",
        "description": "Runs a command. " + "Very long guidance. " * 50,
        "input_schema": {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "command": {"type": "string", "description": "The command. " + "More. " * 60},
                "description": {"type": "string"},  # a property *named* description is kept as a property
            },
            "required": ["command"],
        },
    }
    (tool,) = compact_tools([long], description_chars=80)
    fn = tool["function"]
    assert tool["type"] == "function" and fn["name"] == "Bash"
    assert len(fn["description"]) <= 81 and fn["description"].startswith("Runs a command.")
    assert "$schema" not in fn["parameters"] and "additionalProperties" not in fn["parameters"]
    assert fn["parameters"]["properties"]["description"] == {"type": "string"}
    assert len(fn["parameters"]["properties"]["command"]["description"]) <= 81
    assert fn["parameters"]["required"] == ["command"]
    # Already-compact OpenAI-style tools pass through unchanged.
    assert compact_tools([tool], description_chars=80) == [tool]


def test_trim_tool_result():
    text = "\n".join(f"line {i}: " + "x" * 40 for i in range(200))
    trimmed, n = trim_tool_result(text, 100)
    assert n > 0 and f"[... trimmed {n} tokens ...]" in trimmed
    assert trimmed.startswith("line 0:") and trimmed.endswith(text[-40:])
    assert trim_tool_result("short", 100) == ("short", 0)
