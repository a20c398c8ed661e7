"""`trainer export`: the student as a Hugging Face checkpoint, GGUF files and an Ollama Modelfile.

    trainer export --model runs/x/sft/final --out runs/x/export                # f16 + q8_0 GGUF
    trainer export --model meta-llama/Llama-3.2-1B-Instruct --adapter runs/x/sft/adapter --out runs/x/export
    trainer export --model runs/x/sft/final --quant f16,q8_0,q4_k_m           # Q4_K_M needs llama-quantize
    ollama create my-student -f runs/x/export/Modelfile

Output directory:
    hf/                     the merged model and its tokenizer (understudy's chat template installed)
    student-f16.gguf        every 2-D weight in float16, norms in float32
    student-q8_0.gguf       2-D weights in Q8_0 (written here with the `gguf` package's quantizer)
    student-q4_k_m.gguf     ... only with llama.cpp's `llama-quantize` on PATH (or export.llama_quantize)
    Modelfile               for `ollama create`; FROM the first GGUF in export.quantizations order
                            that is not f32/f16 when there is one
    export_summary.json

The GGUF is written the way llama.cpp's own `convert_hf_to_gguf.py` writes a Llama: the `gguf`
package's LLaMA tensor-name map, Q and K projections permuted from Hugging Face's rotate-half
RoPE layout to llama.cpp's interleaved one, `rope_freqs` for Llama 3 RoPE scaling, and a BPE
tokenizer (`tokenizer.ggml.model = gpt2`; the pre-tokenizer that splits text as the student's own
tokenizer does, `llama-bpe` for Llama 3, `gpt-2` for SmolLM2, `smollm` for the tiny one, see
trainer/gguf_pre_tokenizer.py; merges; token types with added special tokens as CONTROL and the
`<tool_call>` tags as USER_DEFINED) carrying
understudy's chat template. llama.cpp (`llama-server --jinja`) renders that template itself, so
the GGUF path sees exactly the training prompt. The test suite checks next-token log-probs
against transformers on the same tokens (tests/test_export.py).

Ollama does not run Jinja: the Modelfile carries the same template written in Go-template
syntax (`ollama_template()`). It prints every piece of fixed text byte for byte as the training
template does; what Ollama itself serializes (tool schemas and tool-call arguments, through Go's
`json.Marshal`) comes out compact with sorted keys, where training used `json.dumps` spacing. The
test compares the two prompts exactly for conversations without tools, and with the JSON
values compared as values otherwise.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import click

from trainer.chat_template import (
    CHAT_TEMPLATE,
    END_OF_TEXT,
    END_OF_TURN,
    TOOL_CALL_CLOSE,
    TOOL_CALL_OPEN,
    apply_chat_template,
)
from trainer.config import STAGE_CONTEXT, ConfigError, UnderstudyConfig, resolve_cli_config
from trainer.gguf_pre_tokenizer import llama_cpp_pre_tokenizer

# Written by this module with the gguf package; everything else goes through llama-quantize.
NATIVE_QUANTS = ("f32", "f16", "q8_0")
# llama-quantize type names (its `--help` lists them), lower-cased as export.quantizations takes them.
LLAMA_QUANTIZE_TYPES = (
    "q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k_s", "q3_k_m", "q3_k_l", "q4_k_s", "q4_k_m",
    "q5_k_s", "q5_k_m", "q6_k", "iq4_nl", "iq4_xs", "bf16",
)
GGUF_STEM = "student"


@dataclass
class ExportResult:
    output_dir: Path
    hf_dir: Path
    gguf: dict[str, Path] = field(default_factory=dict)
    modelfile: Optional[Path] = None
    skipped: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


# ---------------------------------------------------------------------------------------------
# Loading and merging


def _resolve_model_dir(model: str) -> str:
    """An sft output dir means its final/ model; anything else is passed to from_pretrained."""
    path = Path(model)
    if path.is_dir() and not (path / "config.json").exists() and (path / "final" / "config.json").exists():
        return str(path / "final")
    return model


def load_merged(model: str, adapter: Optional[str] = None):
    """(model in float32, tokenizer with understudy's chat template): the adapter merged when given.

    Merging happens in full precision: a LoRA merged into 4-bit weights would be rounded away.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = _resolve_model_dir(model)
    tokenizer_source = adapter if adapter and (Path(adapter) / "tokenizer_config.json").exists() else model
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    apply_chat_template(tokenizer)
    hf = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    if hf.get_input_embeddings().weight.shape[0] < len(tokenizer):
        hf.resize_token_embeddings(len(tokenizer))
    if adapter:
        from peft import PeftModel

        hf = PeftModel.from_pretrained(hf, adapter).merge_and_unload()
    hf.eval()
    return hf, tokenizer


# ---------------------------------------------------------------------------------------------
# GGUF


def permute_qk(weights, n_head: int, n_head_kv: Optional[int] = None):
    """Hugging Face's rotate-half Q/K rows → llama.cpp's interleaved RoPE pairs (convert_hf_to_gguf's `permute`)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _rope_parameters(config) -> dict[str, Any]:
    """transformers 5 keeps theta and scaling in `rope_parameters`; 4.x in rope_theta/rope_scaling."""
    params = dict(getattr(config, "rope_parameters", None) or {})
    scaling = getattr(config, "rope_scaling", None) or {}
    params = {**scaling, **params}
    params.setdefault("rope_theta", getattr(config, "rope_theta", None) or 10000.0)
    params.setdefault("rope_type", params.get("type", "default"))
    return params


def llama3_rope_factors(rope: dict[str, Any], head_dim: int):
    """The `rope_freqs` tensor llama.cpp applies for Llama 3.1+ RoPE scaling (as convert_hf_to_gguf computes it)."""
    import numpy as np

    base = float(rope["rope_theta"])
    freqs = 1.0 / (base ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))
    factor = float(rope.get("factor", 8.0))
    low = float(rope.get("low_freq_factor", 1.0))
    high = float(rope.get("high_freq_factor", 4.0))
    old_ctx = float(rope.get("original_max_position_embeddings", 8192))
    low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
    out = []
    for freq in freqs:
        wavelen = 2 * math.pi / float(freq)
        if wavelen < high_wavelen:
            out.append(1.0)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.asarray(out, dtype=np.float32)


def _vocab(tokenizer, vocab_size: int):
    """Tokens and token types as convert_hf_to_gguf's get_vocab_base writes them."""
    import gguf

    reverse = {i: t for t, i in tokenizer.get_vocab().items()}
    added = tokenizer.get_added_vocab()
    decoder = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        token = reverse[i]
        if token in added:
            looks_special = token.startswith("<|") and token.endswith("|>")
            if decoder[i].special or looks_special:
                types.append(gguf.TokenType.CONTROL)
            else:
                types.append(gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
        tokens.append(token)
    return tokens, types


def write_gguf(model, tokenizer, hf_dir: Path, out_path: Path, qtype: str, name: str = "understudy-student") -> Path:
    """Write `model` (a LlamaForCausalLM) as a GGUF file of type f32, f16 or q8_0."""
    import gguf
    import numpy as np

    if qtype not in NATIVE_QUANTS:
        raise ValueError(f"write_gguf writes {', '.join(NATIVE_QUANTS)}; {qtype} goes through llama-quantize")
    cfg = model.config
    if getattr(cfg, "model_type", "llama") != "llama":
        raise ConfigError(
            f"export writes LLaMA-architecture GGUF files; this model is '{cfg.model_type}'. "
            "Use llama.cpp's convert_hf_to_gguf.py on the hf/ checkpoint instead."
        )
    n_layers = cfg.num_hidden_layers
    n_head = cfg.num_attention_heads
    n_head_kv = getattr(cfg, "num_key_value_heads", None) or n_head
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_head
    vocab_size = cfg.vocab_size
    rope = _rope_parameters(cfg)
    file_type = {
        "f32": gguf.LlamaFileType.ALL_F32,
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    }[qtype]

    out_path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(out_path, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_block_count(n_layers)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head_kv)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_rope_freq_base(float(rope["rope_theta"]))
    writer.add_rope_dimension_count(head_dim)
    writer.add_vocab_size(vocab_size)
    writer.add_file_type(file_type)
    if head_dim != cfg.hidden_size // n_head:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    rope_type = str(rope.get("rope_type", "default")).lower()
    if rope_type == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
    elif rope_type not in ("default", "llama3"):
        raise ConfigError(f"RoPE scaling '{rope_type}' is not supported by export; use llama.cpp's converter on hf/")

    # Tokenizer: byte-level BPE as llama.cpp's "gpt2" model, split by the pre-tokenizer training used.
    tokens, types = _vocab(tokenizer, vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(llama_cpp_pre_tokenizer(tokenizer))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    # SpecialVocab warns about the pair template's second BOS, which llama.cpp never uses.
    logging.getLogger("gguf.vocab").setLevel(logging.ERROR)
    special = gguf.SpecialVocab(hf_dir, load_merges=True, n_vocab=vocab_size)
    special.chat_template = None  # written below, from the one template
    special.add_to_gguf(writer, quiet=True)
    writer.add_chat_template(CHAT_TEMPLATE)
    eot = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    if eot is not None and eot != tokenizer.unk_token_id:
        writer.add_eot_token_id(eot)

    # Tensors.
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layers)
    state = model.state_dict()
    tied = bool(getattr(cfg, "tie_word_embeddings", False))
    if rope_type == "llama3":
        writer.add_tensor(
            gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight", llama3_rope_factors(rope, head_dim)
        )
    for hf_name, tensor in state.items():
        if hf_name.endswith("rotary_emb.inv_freq") or (tied and hf_name == "lm_head.weight"):
            continue
        data = tensor.detach().to("cpu").float().numpy()
        if hf_name.endswith("self_attn.q_proj.weight"):
            data = permute_qk(data, n_head, n_head)
        elif hf_name.endswith("self_attn.k_proj.weight"):
            data = permute_qk(data, n_head, n_head_kv)
        gguf_name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise ConfigError(f"no GGUF name for tensor '{hf_name}': not a plain LLaMA checkpoint?")
        if data.ndim <= 1 or qtype == "f32":
            writer.add_tensor(gguf_name, data.astype(np.float32))
        elif qtype == "q8_0" and data.shape[-1] % gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0] == 0:
            quantized = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(gguf_name, quantized, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(gguf_name, data.astype(np.float16))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out_path


def find_llama_quantize(configured: str = "") -> Optional[str]:
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    return shutil.which("llama-quantize") or shutil.which("quantize")


def llama_quantize(binary: str, source: Path, out_path: Path, qtype: str) -> Path:
    proc = subprocess.run([binary, str(source), str(out_path), qtype.upper()], capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise click.ClickException(f"llama-quantize {qtype.upper()} failed ({proc.returncode}): " + " | ".join(tail))
    return out_path


# ---------------------------------------------------------------------------------------------
# Ollama


def ollama_template() -> str:
    """The training template in Go-template syntax, for a Modelfile's TEMPLATE.

    Every action opens with `{{-`, so the layout of this source adds no text: all text comes
    from string literals, as in the Jinja template. Ollama passes `.System` (the system
    messages), `.Tools` and `.Messages` (each with `.Role`, `.Content`, `.ToolCalls`); the
    prompt always ends with the assistant header, as add_generation_prompt does.
    """
    tools_intro = (
        '# Tools\\n\\nTo call a tool, write on its own line <tool_call>{\\"name\\": <tool name>, '
        '\\"arguments\\": <JSON object>}</tool_call>. Several calls in one turn run in parallel; '
        "their results come back as tool messages.\\n"
    )
    lines = [
        '{{- "<|begin_of_text|>" }}',
        "{{- if or .System .Tools }}",
        '{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}{{- .System }}',
        "{{- if .Tools }}",
        '{{- if .System }}{{- "\\n\\n" }}{{- end }}',
        f'{{{{- "{tools_intro}" }}}}',
        "{{- range .Tools }}",
        '{{- "\\n{\\"name\\": " }}{{- json .Function.Name }}'
        '{{- ", \\"description\\": " }}{{- json .Function.Description }}'
        '{{- ", \\"parameters\\": " }}{{- json .Function.Parameters }}{{- "}" }}',
        "{{- end }}",
        "{{- end }}",
        '{{- "<|eot_id|>" }}',
        "{{- end }}",
        "{{- range $i, $m := .Messages }}",
        '{{- if eq $m.Role "system" }}',
        '{{- else if eq $m.Role "assistant" }}',
        '{{- "<|start_header_id|>assistant<|end_header_id|>\\n" }}{{- $m.Content }}',
        "{{- range $j, $c := $m.ToolCalls }}",
        '{{- if or $m.Content $j }}{{- "\\n" }}{{- end }}',
        '{{- "<tool_call>{\\"name\\": " }}{{- json $c.Function.Name }}'
        '{{- ", \\"arguments\\": " }}{{- json $c.Function.Arguments }}{{- "}</tool_call>" }}',
        "{{- end }}",
        '{{- "<|eot_id|>" }}',
        "{{- else }}",
        '{{- "<|start_header_id|>" }}{{- $m.Role }}{{- "<|end_header_id|>\\n\\n" }}{{- $m.Content }}{{- "<|eot_id|>" }}',
        "{{- end }}",
        "{{- end }}",
        '{{- "<|start_header_id|>assistant<|end_header_id|>\\n" }}',
    ]
    return "\n".join(lines)


def modelfile_text(gguf_name: str, system_prompt: str, num_ctx: int) -> str:
    if '"""' in system_prompt:
        raise ConfigError('dataset.system_prompt contains """, which a Modelfile cannot quote')
    return "\n".join(
        [
            "# understudy student, written by `trainer export`.",
            "# Create it with: ollama create <name> -f Modelfile",
            f"FROM ./{gguf_name}",
            "",
            'TEMPLATE """' + ollama_template() + '"""',
            "",
            "# The compact system prompt the student was trained with (dataset.system_prompt).",
            'SYSTEM """' + system_prompt + '"""',
            "",
            f'PARAMETER stop "{END_OF_TURN}"',
            f'PARAMETER stop "{END_OF_TEXT}"',
            f"PARAMETER num_ctx {num_ctx}",
            "",
            f"# Tool calls: the model writes {TOOL_CALL_OPEN}{{\"name\": ..., \"arguments\": {{...}}}}{TOOL_CALL_CLOSE}",
            "# on their own lines; Ollama finds them from the TEMPLATE's tool-call block.",
            "",
        ]
    )


# ---------------------------------------------------------------------------------------------
# The stage


def check_quantizations(quants: list[str], llama_quantize_path: str) -> Optional[str]:
    """Raise ConfigError for unknown types, or for K-quants without llama-quantize; return its path."""
    binary = None
    for q in quants:
        if q in NATIVE_QUANTS:
            continue
        if q not in LLAMA_QUANTIZE_TYPES:
            raise ConfigError(
                f"export.quantizations: unknown type '{q}'; use {', '.join(NATIVE_QUANTS)} "
                f"or a llama-quantize type ({', '.join(LLAMA_QUANTIZE_TYPES)})"
            )
        binary = binary or find_llama_quantize(llama_quantize_path)
        if binary is None:
            where = f"export.llama_quantize = {llama_quantize_path!r} is not executable" if llama_quantize_path else (
                "`llama-quantize` is not on PATH"
            )
            raise ConfigError(
                f"{q.upper()} needs llama.cpp's quantize tool and {where}. Install llama.cpp "
                "(e.g. `brew install llama.cpp`, or build it and put build/bin on PATH), set "
                f"export.llama_quantize to its path, or drop {q} from export.quantizations "
                f"({', '.join(NATIVE_QUANTS)} are written without it)."
            )
    return binary


def run_export(cfg: UnderstudyConfig, log: Callable[[str], None] = click.echo) -> ExportResult:
    ex = cfg.export
    started = time.monotonic()
    model_source = ex.model or str(Path(cfg.sft.output_dir or Path(cfg.run.out) / "sft") / "final")
    out = Path(ex.output_dir or Path(cfg.run.out) / "export")
    quants = [q.lower() for q in ex.quantizations]
    if not quants:
        raise ConfigError("export.quantizations is empty: name at least one of f16, q8_0")
    binary = check_quantizations(quants, ex.llama_quantize)
    if Path(model_source).exists() is False and "/" not in model_source:
        raise ConfigError(f"export.model '{model_source}' does not exist")

    log(f"Loading {model_source}" + (f" + adapter {ex.adapter}" if ex.adapter else ""))
    try:
        model, tokenizer = load_merged(model_source, ex.adapter or None)
    except (OSError, ValueError) as e:  # no model there (transformers says OSError), or not one it can read
        from trainer.sft import student_load_error

        if ex.adapter and not Path(ex.adapter).is_dir():
            raise ConfigError(student_load_error(ex.adapter, e, "export.adapter", "--adapter")) from None
        raise ConfigError(student_load_error(model_source, e, "export.model")) from None
    hf_dir = out / "hf"
    model.save_pretrained(hf_dir)
    tokenizer.save_pretrained(hf_dir)
    log(f"Hugging Face checkpoint → {hf_dir}")
    result = ExportResult(output_dir=out, hf_dir=hf_dir)

    # llama-quantize starts from the f16 file; write it when only a K-quant was asked for.
    native = [q for q in quants if q in NATIVE_QUANTS]
    needs_f16 = any(q not in NATIVE_QUANTS for q in quants) and "f16" not in native
    for q in native + (["f16"] if needs_f16 else []):
        path = write_gguf(model, tokenizer, hf_dir, out / f"{GGUF_STEM}-{q}.gguf", q, name=ex.name)
        result.gguf[q] = path
        log(f"GGUF {q} → {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    for q in quants:
        if q in NATIVE_QUANTS:
            continue
        path = llama_quantize(binary, result.gguf["f16"], out / f"{GGUF_STEM}-{q}.gguf", q)
        result.gguf[q] = path
        log(f"GGUF {q} (llama-quantize) → {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    if needs_f16:
        result.gguf.pop("f16").unlink()

    if ex.modelfile:
        preferred = [q for q in quants if q not in ("f32", "f16")] or quants
        gguf_file = result.gguf[preferred[0]]
        result.modelfile = out / "Modelfile"
        result.modelfile.write_text(modelfile_text(gguf_file.name, cfg.dataset.system_prompt, ex.num_ctx))
        log(f"Ollama Modelfile → {result.modelfile} (FROM {gguf_file.name}); run: ollama create <name> -f {result.modelfile}")

    result.seconds = time.monotonic() - started
    summary = {
        "model": model_source,
        "adapter": ex.adapter or None,
        "hf_dir": str(hf_dir),
        "gguf": {q: str(p) for q, p in result.gguf.items()},
        "modelfile": str(result.modelfile) if result.modelfile else None,
        "seconds": round(result.seconds, 2),
        "config": cfg.to_dict()["export"],
    }
    (out / "export_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return result


@click.command("export", context_settings=STAGE_CONTEXT)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="understudy.toml or YAML.")
@click.option("--model", help="Full model: HF id, local dir, or an sft output dir (export.model).")
@click.option("--adapter", type=click.Path(file_okay=False), help="LoRA adapter to merge into --model (export.adapter).")
@click.option("--out", "output_dir", type=click.Path(file_okay=False), help="Output directory (export.output_dir).")
@click.option("--quant", help="Comma-separated, e.g. f16,q8_0,q4_k_m (export.quantizations).")
@click.option("--num-ctx", type=int, help="Ollama context length (export.num_ctx).")
@click.pass_context
def command(ctx, config_path, model, adapter, output_dir, quant, num_ctx):
    """Write the student as a HF checkpoint, GGUF files (f16, q8_0; K-quants with llama-quantize) and an Ollama Modelfile.

    Any config value can be set as --SECTION.KEY VALUE or -o SECTION.KEY=VALUE.
    """
    cfg = resolve_cli_config(
        config_path,
        ctx.args,
        [
            ("export.model", model),
            ("export.adapter", adapter),
            ("export.output_dir", output_dir),
            ("export.quantizations", quant),
            ("export.num_ctx", num_ctx),
        ],
    )
    click.echo("Resolved config [export]:")
    click.echo(cfg.describe(["export"]))
    try:
        result = run_export(cfg)
    except ConfigError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"Done in {result.seconds:.1f} s → {result.output_dir}")
