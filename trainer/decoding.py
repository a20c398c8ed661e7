"""Sampled prose, greedy tool calls: how a student is decoded to be judged against its teacher.

The teacher's traces are samples: the Messages API samples at temperature 1 unless asked
otherwise, and the scripted teacher draws each narration from several phrasings. A greedy
student writes the single likeliest phrasing every time, and a discriminator learns exactly
that: of 199 held-out pairs whose calls and final answer were the teacher's to the character,
it told the greedy student apart in 151, by its narration alone (docs/learning.md §5b).
Sampling everything would cost the calls (one unlikely digit in a path is a wrong call), so
`GreedyToolCalls` keeps every token between `<tool_call>` and `</tool_call>` the likeliest one
while the words around the calls are sampled.

    from trainer.decoding import GreedyToolCalls
    model.generate(..., do_sample=True, temperature=1.0, logits_processor=[GreedyToolCalls(open_id, close_id)])
"""

from __future__ import annotations

from transformers import LogitsProcessor


class GreedyToolCalls(LogitsProcessor):
    """A transformers logits processor: inside an open tool call only the likeliest token remains.

    One instance per `generate` call (generate calls it once per step): it follows each row from
    the first step on (the prompt ends outside any call), updating from the token each step appended.
    """

    def __init__(self, open_id: int, close_id: int):
        self.open_id = open_id
        self.close_id = close_id
        self.inside = None

    def __call__(self, input_ids, scores):
        import torch

        if self.inside is None:  # the first step: nothing generated yet
            self.inside = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        else:
            last = input_ids[:, -1]
            self.inside = (self.inside | (last == self.open_id)) & (last != self.close_id)
        if self.inside.any():
            best = scores.argmax(dim=-1, keepdim=True)
            only_best = torch.full_like(scores, float("-inf")).scatter(1, best, scores.gather(1, best))
            scores = torch.where(self.inside.unsqueeze(1), only_best, scores)
        return scores
