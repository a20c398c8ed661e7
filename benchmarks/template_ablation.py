"""Does a pretrained base learn the workflow better in its own chat format than in understudy's?

issue 11 item 1 asks this for SmolLM2-135M-Instruct, which was instruction-tuned in ChatML
(`<|im_start|>role\\n ... <|im_end|>`). understudy trains every base in its one template
(trainer/chat_template.py): LLaMA-3 role headers and `<tool_call>` as single tokens, eight tokens
SmolLM2 does not have, added with their embeddings started at their pieces' mean and trained in full
(LoRA's `modules_to_save`). The alternative arm, "chatml", is the base's own format: SmolLM2's role
tokens, which it already knows, and the tool-call tags as plain text, so nothing is added and LoRA
trains the linear layers only. Everything else (the tool list, the `{% generation %}` markers, the
data, the recipe, the metrics) is the same.

Only the stages a `trainer run` goes through (dataset, sft, eval) read the template from
trainer/chat_template.py at call time, so this script patches that module for its own process and
then runs `trainer run` in it; serving and export know one template and are not part of the question.

    .venv/bin/python benchmarks/template_ablation.py --template chatml -- \\
        --preset smollm2-demo -o run.out=/tmp/chatml-s0 -o run.seed=0 -o sft.seed=0

`--template understudy` runs the pipeline unpatched (the control). Then the table (mean ± sd per
arm) and ablate_tiny's plot, from the finished runs:

    .venv/bin/python benchmarks/template_ablation.py --report docs/ablation-template.png \\
        --arm understudy /tmp/u-s0 /tmp/u-s1 /tmp/u-s2 --arm chatml /tmp/chatml-s0 /tmp/chatml-s1 /tmp/chatml-s2

docs/learning.md §3 has the table.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from contextlib import contextmanager, nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # ablate_tiny, beside this file

CHATML_START = "<|im_start|>"
CHATML_END = "<|im_end|>"
CHATML_TEXT_END = "<|endoftext|>"

# (the understudy template's text, what the ChatML arm writes instead, how many times it occurs)
_CHATML_EDITS = [
    ("{{- '<|begin_of_text|>' -}}\n", "", 1),  # ChatML has no BOS: SmolLM2's own template writes none
    ("'<|start_header_id|>system<|end_header_id|>\\n\\n'", "'<|im_start|>system\\n'", 1),
    ("{{- '<|eot_id|>' -}}\n{%- endif -%}\n{%- for", "{{- '<|im_end|>\\n' -}}\n{%- endif -%}\n{%- for", 1),
    ("'<|start_header_id|>assistant<|end_header_id|>\\n'", "'<|im_start|>assistant\\n'", 2),
    # The assistant's end-of-turn stays inside {% generation %} (the loss teaches it to stop); the
    # newline ChatML puts between turns comes after, untrained, as SmolLM2's template has it.
    ("{{- '<|eot_id|>' -}}\n    {%- endgeneration -%}", "{{- '<|im_end|>' -}}\n    {%- endgeneration -%}\n    {{- '\\n' -}}", 1),
    ("'<|start_header_id|>' + message.role + '<|end_header_id|>\\n\\n' + content + '<|eot_id|>'",
     "'<|im_start|>' + message.role + '\\n' + content + '<|im_end|>\\n'", 1),
]


def chatml_template(template: str) -> str:
    """understudy's template with ChatML's role markers; fails loudly if the template moved on."""
    for old, new, times in _CHATML_EDITS:
        found = template.count(old)
        if found != times:
            raise SystemExit(f"template_ablation: expected {times} of {old!r} in CHAT_TEMPLATE, found {found}; update _CHATML_EDITS")
        template = template.replace(old, new)
    leftover = re.findall(r"<\|(?:begin_of_text|start_header_id|end_header_id|eot_id)\|>", template)
    if leftover:
        raise SystemExit(f"template_ablation: LLaMA-3 markers left in the ChatML template: {sorted(set(leftover))}")
    return template


_PATCHED = ("CHAT_TEMPLATE", "BEGIN_OF_TEXT", "START_HEADER", "END_HEADER", "END_OF_TURN", "END_OF_TEXT", "PAD_TOKEN",
            "CONTROL_TOKENS", "TOOL_CALL_TOKENS", "SPECIAL_TOKENS", "GENERATION_PROMPT", "_TRAILING_STOP_RE",
            "apply_chat_template")


@contextmanager
def chatml_format():
    """trainer.chat_template speaks ChatML inside the block (the stages import from it lazily)."""
    import trainer.chat_template as ct

    saved = {name: getattr(ct, name) for name in _PATCHED}
    original_apply = ct.apply_chat_template

    def apply_chatml(tokenizer) -> int:
        missing = [t for t in (CHATML_START, CHATML_END, CHATML_TEXT_END) if t not in tokenizer.get_vocab()]
        if missing:
            raise SystemExit(f"template_ablation: the base has no {missing}: the chatml arm is for ChatML bases (SmolLM2)")
        added = original_apply(tokenizer)
        # SmolLM2 pads with <|im_end|>, its end of turn; pad with <|endoftext|> so no id means both.
        tokenizer.pad_token = CHATML_TEXT_END
        return added

    ct.CHAT_TEMPLATE = chatml_template(ct.CHAT_TEMPLATE)
    ct.BEGIN_OF_TEXT = ""
    ct.START_HEADER = CHATML_START
    ct.END_HEADER = ""
    ct.END_OF_TURN = CHATML_END
    ct.END_OF_TEXT = CHATML_TEXT_END
    ct.PAD_TOKEN = CHATML_TEXT_END
    ct.CONTROL_TOKENS = [CHATML_START, CHATML_END, CHATML_TEXT_END]
    ct.TOOL_CALL_TOKENS = []  # plain text: SmolLM2 spells <tool_call> in pieces it already has
    ct.SPECIAL_TOKENS = list(ct.CONTROL_TOKENS)
    ct.GENERATION_PROMPT = f"{CHATML_START}assistant\n"
    ct._TRAILING_STOP_RE = re.compile(r"(?:\s*(?:" + "|".join(map(re.escape, [CHATML_END, CHATML_TEXT_END])) + r"))+\s*$")
    ct.apply_chat_template = apply_chatml
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(ct, name, value)


def report(arms: dict[str, list[Path]], png: Path) -> str:
    """The arms' held-out student metrics as mean ± sd over their runs, and ablate_tiny's plot."""
    from ablate_tiny import METRICS, markdown_table, plot

    summaries = {name: [json.loads((run / "eval" / "eval.json").read_text())["summary"]["student"] for run in runs]
                 for name, runs in arms.items()}
    metrics = [*METRICS, "answer_similarity"]  # the final answer's prose, where the formats differed
    stats = {name: {m: [s[m] for s in runs if s.get(m) is not None] for m in metrics} for name, runs in summaries.items()}
    plot(stats, png)
    return markdown_table(stats)


def main(argv: list[str]) -> int:
    cut = argv.index("--") if "--" in argv else len(argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--template", choices=["understudy", "chatml"], help="run `trainer run` (its arguments after --) in this format")
    p.add_argument("--report", type=Path, metavar="PNG", help="tabulate finished runs (--arm) and plot them to PNG")
    p.add_argument("--arm", nargs="+", action="append", metavar=("NAME", "RUN_DIR"), help="with --report: an arm's name and run folders")
    args = p.parse_args(argv[:cut])
    if args.report:
        print(report({arm[0]: [Path(d) for d in arm[1:]] for arm in args.arm or []}, args.report), end="")
        return 0
    if not args.template:
        p.error("give --template (to run) or --report (to tabulate)")
    from trainer.pipeline import run_command

    with chatml_format() if args.template == "chatml" else nullcontext():
        return run_command.main(args=argv[cut + 1:], prog_name="trainer run", standalone_mode=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
