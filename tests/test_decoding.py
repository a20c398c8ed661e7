"""Sampled prose, greedy tool calls (trainer/decoding.py): the decoding a student is judged in."""

from __future__ import annotations

import json

import pytest
import torch

from tests.student_world import rows, student_world  # noqa: F401  (a fixture)
from trainer.decoding import GreedyToolCalls

OPEN, CLOSE = 3, 4


def test_only_the_likeliest_token_remains_between_the_call_tags():
    scores = torch.tensor([[0.1, 0.5, 0.2, 0.0, 0.3]] * 2)
    keep = GreedyToolCalls(OPEN, CLOSE)
    prompt = torch.tensor([[0, 0], [0, 0]])

    def step(ids):
        return keep(ids, scores.clone())

    assert torch.equal(step(prompt), scores)  # nothing generated yet: untouched
    ids = torch.cat([prompt, torch.tensor([[OPEN], [1]])], dim=1)
    out = step(ids)
    assert torch.isinf(out[0]).sum() == 4 and out[0, 1] == 0.5  # row 0 opened a call: argmax only
    assert torch.equal(out[1], scores[1])  # row 1 writes prose: sampled as it was
    ids = torch.cat([ids, torch.tensor([[2], [2]])], dim=1)
    assert torch.isinf(step(ids)[0]).sum() == 4  # still inside
    ids = torch.cat([ids, torch.tensor([[CLOSE], [OPEN]])], dim=1)
    out = step(ids)
    assert torch.equal(out[0], scores[0]) and torch.isinf(out[1]).sum() == 4  # closed / opened


def test_a_sampled_student_writes_other_words_but_the_likeliest_calls(student_world):  # noqa: F811
    """At a high temperature the narration differs from the greedy student's, yet every token
    inside <tool_call>…</tool_call> is the one the model ranks first given what came before."""
    from trainer.chat_template import TOOL_CALL_CLOSE, TOOL_CALL_OPEN
    from trainer.evaluate import ModelPolicy

    test_rows = rows(student_world, "test")[:12]
    greedy = ModelPolicy(str(student_world.sft_model), max_new_tokens=96)
    conversations = [(r["messages"][:2], r.get("tools")) for r in test_rows]
    torch.manual_seed(0)
    sampled = greedy.sampling(1.5)
    sampled.greedy_calls = True
    texts = sampled.generate(conversations)
    generated = sampled.last_ids
    assert sum(a != b for a, b in zip(texts, greedy.generate(conversations))) >= 3, "the prose was not sampled"

    tok, model = greedy.tokenizer, greedy.model
    open_id, close_id = tok.convert_tokens_to_ids([TOOL_CALL_OPEN, TOOL_CALL_CLOSE])
    checked = 0
    for (messages, tools), text, new in zip(conversations, texts, generated):
        prompt = greedy._token_ids(messages, json.loads(tools) if isinstance(tools, str) else tools,
                                   add_generation_prompt=True)
        new = [t for t in new if t != tok.pad_token_id]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prompt + new])).logits[0, len(prompt) - 1:-1]
        inside = False
        for position, token in enumerate(new):
            if inside:
                top2 = logits[position].topk(2).values
                if top2[0] - top2[1] > 1e-3:  # a near-tie may rank differently batched and alone
                    assert token == int(logits[position].argmax()), (text, position)
                    checked += 1
            inside = (inside or token == open_id) and token != close_id
    assert checked > 50, checked


@pytest.mark.parametrize("setting", [("prose_temperature", -0.5), ("prose_top_p", 0.0), ("prose_top_p", 1.5)])
def test_a_judged_decoding_out_of_range_is_one_line_naming_it(setting):
    from trainer.config import ConfigError, UnderstudyConfig
    from trainer.reward import judged_rollouts

    cfg = UnderstudyConfig()
    setattr(cfg.reward, *setting)
    with pytest.raises(ConfigError, match="reward.prose_temperature must be >= 0 and reward.prose_top_p in"):
        judged_rollouts(cfg, "no-model-needed", [])
