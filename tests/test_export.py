"""`trainer export`: the GGUF really runs in llama.cpp and agrees with transformers.

The student is the tiny trained model of tests/student.py. llama.cpp is the prebuilt runtime from
PyPI (`xllamacpp`), loaded in-process with flash attention off and an F32 KV cache, so the
comparison measures the export, not the runtime's cache precision.

Tolerances on next-token log-probs against transformers in float32 (max abs difference over
the top-5 tokens of 3 prompts, and the same argmax), per file type, with what was measured here:
    f32   1e-4   (measured 2.4e-6: the conversion itself is exact)
    f16   5e-3   (measured 6.5e-4: llama.cpp's CPU f16 matmul rounds activations to f16 too, so
                  rounding only the weights in the reference does not get closer: 7.8e-4)
    q8_0  0.1    (measured 1.5e-2: 8-bit blocks of 32)
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import pytest

from tests.student import (
    FINAL_ANSWER,
    NARRATION,
    TARGET_CALL,
    shared_student,
    student_tools,
    target_conversation,
)
from trainer.chat_template import CHAT_TEMPLATE, compact_tools, parse_assistant_output, render
from trainer.config import ConfigError, load_config

xlc = pytest.importorskip("xllamacpp")
gguf = pytest.importorskip("gguf")


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    return shared_student(tmp_path_factory)


@pytest.fixture(scope="module")
def exported(student, tmp_path_factory):
    from trainer.export import run_export

    model_dir, _ = student
    out = tmp_path_factory.mktemp("export")
    cfg = load_config(
        overrides=[("export.model", str(model_dir)), ("export.output_dir", str(out)), ("export.quantizations", ["f32", "f16", "q8_0"])]
    )
    return run_export(cfg, log=lambda line: None)


def llama_server(path: Path):
    params = xlc.CommonParams()
    params.model.path = str(path)
    params.n_ctx = 2048
    params.n_parallel = 1
    params.warmup = False
    params.verbosity = -1
    params.cpuparams.n_threads = 2
    params.cpuparams_batch.n_threads = 2
    params.flash_attn_type = xlc.llama_flash_attn_type.LLAMA_FLASH_ATTN_TYPE_DISABLED
    params.cache_type_k = xlc.ggml_type.GGML_TYPE_F32
    params.cache_type_v = xlc.ggml_type.GGML_TYPE_F32
    params.use_jinja = True
    return xlc.Server(params)


@pytest.fixture(scope="module")
def servers(exported):
    made = {q: llama_server(p) for q, p in exported.gguf.items()}
    yield made
    made.clear()


def prompts(tools_json) -> list[str]:
    conv = target_conversation()
    return [
        render(conv[:2], tools_json, add_generation_prompt=True),
        render(conv[:4], tools_json, add_generation_prompt=True),
        render([{"role": "user", "content": "How many rows are in the users table of data/app.db?"}], None, True),
    ]


def llama_top_logprobs(server, ids: list[int], k: int = 5) -> dict[int, float]:
    out = server.handle_completions(
        {"prompt": ids, "n_predict": 1, "n_probs": k, "temperature": 0, "cache_prompt": False, "post_sampling_probs": False}
    )
    top = out["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
    return {t["id"]: t["logprob"] for t in top}


def hf_logprobs(model, ids: list[int]):
    import torch

    with torch.no_grad():
        return torch.log_softmax(model(torch.tensor([ids])).logits[0, -1].float(), -1)


def max_diff(server, model, tokenizer, texts) -> float:
    worst = 0.0
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        ref = hf_logprobs(model, ids)
        got = llama_top_logprobs(server, ids)
        assert max(got, key=got.get) == int(ref.argmax()), "llama.cpp and transformers disagree on the next token"
        worst = max(worst, max(abs(lp - float(ref[i])) for i, lp in got.items()))
    return worst


@pytest.fixture(scope="module")
def hf(exported):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(exported.hf_dir)
    model = AutoModelForCausalLM.from_pretrained(exported.hf_dir, dtype=torch.float32).eval()
    return tokenizer, model


# ---------------------------------------------------------------------------------------------


def test_gguf_metadata_and_tensor_types(exported):
    reader = gguf.GGUFReader(exported.gguf["q8_0"])

    def field(name):
        f = reader.fields[name]
        return f.contents()

    assert field("general.architecture") == "llama"
    assert field("tokenizer.ggml.model") == "gpt2" and field("tokenizer.ggml.pre") == "smollm"
    assert field("tokenizer.chat_template") == CHAT_TEMPLATE
    tokens, types = field("tokenizer.ggml.tokens"), field("tokenizer.ggml.token_type")
    assert types[tokens.index("<|eot_id|>")] == gguf.TokenType.CONTROL
    assert types[tokens.index("<|begin_of_text|>")] == gguf.TokenType.CONTROL
    assert types[tokens.index("<tool_call>")] == gguf.TokenType.USER_DEFINED
    assert field("tokenizer.ggml.eot_token_id") == tokens.index("<|eot_id|>")
    assert field("tokenizer.ggml.bos_token_id") == tokens.index("<|begin_of_text|>")
    assert len(field("tokenizer.ggml.merges")) > 100
    kinds = {t.name: t.tensor_type for t in reader.tensors}
    assert kinds["blk.0.attn_q.weight"] == gguf.GGMLQuantizationType.Q8_0
    assert kinds["blk.0.attn_norm.weight"] == gguf.GGMLQuantizationType.F32
    assert kinds["output.weight"] == gguf.GGMLQuantizationType.Q8_0
    f16 = {t.name: t.tensor_type for t in gguf.GGUFReader(exported.gguf["f16"]).tensors}
    assert f16["blk.1.ffn_down.weight"] == gguf.GGMLQuantizationType.F16 and f16["output_norm.weight"] == gguf.GGMLQuantizationType.F32
    assert (exported.hf_dir / "config.json").exists() and exported.modelfile.exists()


def test_logprob_parity_per_quantization(exported, servers, hf, student):
    tokenizer, model = hf
    texts = prompts(student_tools(student[1]))
    results = {q: max_diff(servers[q], model, tokenizer, texts) for q in ("f32", "f16", "q8_0")}
    print("max |Δ log-prob| over top-5:", json.dumps({k: f"{v:.2e}" for k, v in results.items()}))
    assert results["f32"] < 1e-4
    assert results["f16"] < 5e-3
    assert results["q8_0"] < 0.1


def test_llamacpp_renders_and_tokenizes_like_transformers(exported, servers, hf, student):
    import httpx

    tokenizer = hf[0]
    base = servers["f16"].listening_address
    tools = student_tools(student[1])
    conv = target_conversation()
    # The template at the points where the model generates (llama-server treats a trailing
    # assistant message as a prefill to continue), with parallel calls and without tools.
    cases = [
        (conv[:2], tools),
        (conv[:4], tools),
        (conv + [{"role": "user", "content": "thanks"}], tools),
        ([{"role": "user", "content": "hi"}], None),
        ([conv[0], conv[1], dict(conv[2], tool_calls=conv[2]["tool_calls"] * 2), conv[3], conv[3]], tools),
    ]
    with httpx.Client(timeout=30) as client:
        for messages, case_tools in cases:
            body = {"messages": messages}
            if case_tools:
                body["tools"] = case_tools
            got = client.post(base + "/apply-template", json=body).json()["prompt"]
            expected = render(messages, case_tools, add_generation_prompt=True)
            # llama.cpp drops the template's leading BOS text and adds the BOS token when tokenizing.
            assert "<|begin_of_text|>" + got == expected
            ids = client.post(base + "/tokenize", json={"content": expected, "parse_special": True}).json()["tokens"]
            assert ids == tokenizer(expected, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("qtype", ["f16", "q8_0"])
def test_gguf_generates_the_tool_call(servers, student, qtype):
    tools = student_tools(student[1])
    conv = target_conversation()
    prompt = render(conv[:2], tools, add_generation_prompt=True).removeprefix("<|begin_of_text|>")
    out = servers[qtype].handle_completions({"prompt": prompt, "n_predict": 48, "temperature": 0, "cache_prompt": False})
    text = out["choices"][0]["text"]
    parsed = parse_assistant_output(text)
    assert parsed.narration == NARRATION, text
    assert [(c.name, c.arguments) for c in parsed.tool_calls] == [(TARGET_CALL["name"], TARGET_CALL["arguments"])], text
    assert out["choices"][0]["finish_reason"] == "stop"  # it stopped at <|eot_id|> by itself
    # After the tool result, the final answer.
    prompt = render(conv[:4], tools, add_generation_prompt=True).removeprefix("<|begin_of_text|>")
    out = servers[qtype].handle_completions({"prompt": prompt, "n_predict": 48, "temperature": 0, "cache_prompt": False})
    assert out["choices"][0]["text"].strip() == FINAL_ANSWER


# ---------------------------------------------------------------------------------------------
# Quantization through llama-quantize, adapters, errors


def test_k_quants_need_llama_quantize(student, tmp_path, monkeypatch):
    from trainer.export import run_export

    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    cfg = load_config(overrides=[("export.model", str(student[0])), ("export.output_dir", str(tmp_path / "o")), ("export.quantizations", ["q8_0", "q4_k_m"])])
    with pytest.raises(ConfigError, match=r"Q4_K_M needs llama.cpp's quantize tool and `llama-quantize` is not on PATH"):
        run_export(cfg, log=lambda line: None)
    assert not (tmp_path / "o").exists()  # checked before any work
    with pytest.raises(ConfigError, match="unknown type 'q9_x'"):
        run_export(load_config(overrides=[("export.quantizations", ["q9_x"])]), log=lambda line: None)


def test_k_quants_with_llama_quantize_on_path(student, tmp_path, monkeypatch):
    """A stand-in llama-quantize (records its arguments, copies the file): the plumbing, not the quantizer."""
    from trainer.export import run_export

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "llama-quantize"
    tool.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/args\ncp "$1" "$2"\n')
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "o"
    cfg = load_config(overrides=[("export.model", str(student[0])), ("export.output_dir", str(out)), ("export.quantizations", ["q4_k_m"])])
    result = run_export(cfg, log=lambda line: None)
    assert set(result.gguf) == {"q4_k_m"} and (out / "student-q4_k_m.gguf").exists()
    assert not (out / "student-f16.gguf").exists()  # the intermediate f16 is removed
    assert (tmp_path / "args").read_text().split()[-1] == "Q4_K_M"
    assert "FROM ./student-q4_k_m.gguf" in (out / "Modelfile").read_text()


def test_lora_adapter_is_merged(student, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainer.export import run_export

    base_dir = student[0]
    peft_model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    peft_model.save_pretrained(tmp_path / "adapter")
    ids = AutoTokenizer.from_pretrained(base_dir)("list the files", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = peft_model(ids).logits
        plain = AutoModelForCausalLM.from_pretrained(base_dir)(ids).logits
    assert not torch.allclose(expected, plain, atol=1e-3)  # the adapter changes something

    cfg = load_config(overrides=[("export.model", str(base_dir)), ("export.adapter", str(tmp_path / "adapter")),
                                 ("export.output_dir", str(tmp_path / "o")), ("export.quantizations", ["f32"])])
    result = run_export(cfg, log=lambda line: None)
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(result.hf_dir)(ids).logits
    assert torch.allclose(merged, expected, atol=1e-4)


def test_llama3_rope_scaling_and_gqa_match(tmp_path):
    """A random tiny LLaMA with Llama 3.1-style RoPE scaling (rope_freqs tensor) and grouped KV heads."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from trainer.export import write_gguf
    from trainer.tokenizer_tools import train_tiny_tokenizer

    texts = [f"row {i} of table t{i % 7} has value {i * 13}" for i in range(300)]
    tokenizer = train_tiny_tokenizer(texts, vocab_size=400)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=512,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
        tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(1)
    model = LlamaForCausalLM(config).eval()
    hf_dir = tmp_path / "hf"
    model.save_pretrained(hf_dir)
    tokenizer.save_pretrained(hf_dir)
    path = write_gguf(model, AutoTokenizer.from_pretrained(hf_dir), hf_dir, tmp_path / "m.gguf", "f32")
    names = {t.name for t in gguf.GGUFReader(path).tensors}
    assert "rope_freqs.weight" in names and "output.weight" not in names  # tied: llama.cpp reuses token_embd
    server = llama_server(path)
    text = " ".join(texts[:12])  # long enough that the low-frequency (scaled) dimensions matter
    assert max_diff(server, model, tokenizer, [text, text[:80]]) < 1e-4


def test_smollm2_tokenizer_splits_in_llama_cpp_as_in_training(tmp_path):
    """A student on SmolLM2's tokenizer, exported, tokenizes in llama.cpp exactly as in training.

    Exported under Llama 3's pre-tokenizer (as export once did for every model) llama.cpp split
    "\\n" and the indentation after it into other tokens: every Read result differed.
    """
    import httpx
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from trainer.bases import SMOLLM2_135M, gguf_path
    from trainer.chat_template import apply_chat_template
    from trainer.export import write_gguf

    source = gguf_path(SMOLLM2_135M)
    tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    apply_chat_template(tokenizer)  # as SFT does: the project's template and its special tokens
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, max_position_embeddings=2048, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    hf_dir = tmp_path / "hf"
    LlamaForCausalLM(config).save_pretrained(hf_dir)
    tokenizer.save_pretrained(hf_dir)
    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    path = write_gguf(LlamaForCausalLM.from_pretrained(hf_dir), tokenizer, hf_dir, tmp_path / "m.gguf", "f32")
    assert gguf.GGUFReader(path).fields["tokenizer.ggml.pre"].contents() == "gpt-2"

    read_result = "     1\timport logging\n     2\t\n    12\tdef refresh_token(rows, rate=1.0):\n        if key is name:\n"
    texts = [
        render(target_conversation(), None, add_generation_prompt=True),
        read_result,
        'sqlite3 analytics.db "SELECT COUNT(*) FROM carts;"  -> 31751 rows (2024-01-15, 12.5%)',
        "I'm new here: what's in src/config/?  Don't  guess\r\n\n\n  tabs\t\tand   spaces  ",
        "Ünïcödé naïve café – 東京 🦙 ok",
    ]
    server = llama_server(path)
    with httpx.Client(base_url=server.listening_address, timeout=30) as client:
        for text in texts:
            got = client.post("/tokenize", json={"content": text, "add_special": False, "parse_special": True}).json()
            assert got["tokens"] == tokenizer(text, add_special_tokens=False)["input_ids"], text


def test_a_tokenizer_export_cannot_name_for_llama_cpp_is_refused_in_one_line():
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from trainer.gguf_pre_tokenizer import LLAMA3_SPLIT_REGEX, llama_cpp_pre_tokenizer
    from trainer.tokenizer_tools import train_tiny_tokenizer

    assert llama_cpp_pre_tokenizer(train_tiny_tokenizer(["a b c"] * 20, vocab_size=300)) == "smollm"
    llama3 = Tokenizer(models.BPE())
    llama3.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    assert llama_cpp_pre_tokenizer(PreTrainedTokenizerFast(tokenizer_object=llama3)) == "llama-bpe"
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    with pytest.raises(ConfigError, match="pre-tokenizer .* convert_hf_to_gguf.py") as err:
        llama_cpp_pre_tokenizer(PreTrainedTokenizerFast(tokenizer_object=raw))
    assert "\n" not in str(err.value)
    wordpiece = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wordpiece.normalizer = normalizers.Lowercase()
    with pytest.raises(ConfigError, match="not WordPiece with a normalizer; use llama.cpp's convert_hf_to_gguf.py"):
        llama_cpp_pre_tokenizer(PreTrainedTokenizerFast(tokenizer_object=wordpiece))


def test_permutation_matches_llama_cpp_layout():
    """permute_qk is convert_hf_to_gguf's `permute`: rows of each head interleave its two halves."""
    import numpy as np

    from trainer.export import permute_qk

    w = np.arange(8 * 2).reshape(8, 2)  # 2 heads of dim 4
    out = permute_qk(w, 2)
    assert out[:, 0].tolist() == [0, 4, 2, 6, 8, 12, 10, 14]


# ---------------------------------------------------------------------------------------------
# The Ollama Modelfile: its Go template renders the training prompt


def go_template_render(template: str, data: dict) -> str:
    """A small evaluator for the Go text/template subset ollama_template() uses.

    Supported: text, `{{-`/`-}}` trimming, string literals, fields (`.A.B`, `$v.A`), `if`/`else
    if`/`else`/`end`, `range PIPE` and `range $i, $x := PIPE`, and the functions `json` (Go's
    json.Marshal: compact, sorted keys, <>& escaped), `eq`, `or`, `not`. Anything else raises, so
    the test fails loudly if the template grows beyond what is checked here.
    """
    pieces = re.split(r"(\{\{.*?\}\})", template, flags=re.S)
    items: list = []
    for piece in pieces:
        if piece.startswith("{{"):
            inner = piece[2:-2]
            ltrim, rtrim = inner.startswith("- "), inner.endswith(" -")
            inner = inner[2 if ltrim else 0 : len(inner) - (2 if rtrim else 0)].strip()
            if ltrim and items and items[-1][0] == "text":
                items[-1] = ("text", items[-1][1].rstrip())
            items.append(("action", inner, rtrim))
        else:
            if items and items[-1][0] == "action" and items[-1][2]:
                piece = piece.lstrip()
            items.append(("text", piece))

    def parse(pos, stop):
        nodes = []
        while pos < len(items):
            item = items[pos]
            if item[0] == "text":
                nodes.append(("text", item[1]))
                pos += 1
                continue
            action = item[1]
            head = action.split(" ", 1)[0]
            if head in stop or action.startswith("else"):
                return nodes, pos
            if head == "if":
                branches, pos = [], pos
                cond = action[3:]
                while True:
                    body, pos = parse(pos + 1, {"end", "else"})
                    branches.append((cond, body))
                    a = items[pos][1]
                    if a == "end":
                        break
                    cond = a[8:] if a.startswith("else if ") else None
                    if cond is None:
                        body, pos = parse(pos + 1, {"end"})
                        branches.append((None, body))
                        break
                nodes.append(("if", branches))
                pos += 1
            elif head == "range":
                spec = action[6:]
                m = re.fullmatch(r"\$(\w+), \$(\w+) := (.+)", spec)
                body, pos = parse(pos + 1, {"end"})
                nodes.append(("range", (m.group(1), m.group(2), m.group(3)) if m else (None, None, spec), body))
                pos += 1
            else:
                nodes.append(("print", action))
                pos += 1
        return nodes, pos

    tree, _ = parse(0, set())

    def go_json(value):
        text = json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
        return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")

    def truthy(v):
        return bool(v) if not isinstance(v, (int, float)) or isinstance(v, bool) else v != 0

    def tokens(expr):
        return re.findall(r'"(?:\\.|[^"\\])*"|\(|\)|[^\s()]+', expr)

    def value(tok, dot, env):
        if tok.startswith('"'):
            return json.loads(tok)
        if tok.startswith("$"):
            name, _, rest = tok[1:].partition(".")
            v = env[name] if name else env[""]
            path = rest
        elif tok.startswith("."):
            v, path = dot, tok[1:]
        else:
            raise ValueError(f"unsupported token {tok!r}")
        for part in [p for p in path.split(".") if p]:
            v = v.get(part) if isinstance(v, dict) else None
        return v

    def call(expr, dot, env):
        toks = tokens(expr)
        fn, args = toks[0], toks[1:]
        if fn in ("json", "eq", "or", "not"):
            vals = [value(a, dot, env) for a in args]
            if fn == "json":
                return go_json(vals[0])
            if fn == "eq":
                return vals[0] == vals[1]
            if fn == "not":
                return not truthy(vals[0])
            return next((v for v in vals if truthy(v)), vals[-1])
        if len(toks) != 1:
            raise ValueError(f"unsupported pipeline {expr!r}")
        return value(fn, dot, env)

    def run(nodes, dot, env, out):
        for node in nodes:
            if node[0] == "text":
                out.append(node[1])
            elif node[0] == "print":
                v = call(node[1], dot, env)
                out.append("" if v is None else str(v))
            elif node[0] == "if":
                for cond, body in node[1]:
                    if cond is None or truthy(call(cond, dot, env)):
                        run(body, dot, env, out)
                        break
            elif node[0] == "range":
                (iname, vname, expr), body = node[1], node[2]
                for i, element in enumerate(call(expr, dot, env) or []):
                    scope = dict(env)
                    if iname:
                        scope[iname], scope[vname] = i, element
                    run(body, element, scope, out)

    out: list[str] = []
    run(tree, data, {"": data}, out)
    return "".join(out)


def ollama_data(messages: list[dict], tools) -> dict:
    """What Ollama hands a template: .System, .Messages (Role, Content, ToolCalls), .Tools."""
    def tool_calls(m):
        return [
            {"Function": {"Name": c["function"]["name"], "Arguments": json.loads(c["function"]["arguments"])}}
            for c in m.get("tool_calls") or []
        ]

    return {
        "System": "\n\n".join(m["content"] for m in messages if m["role"] == "system"),
        "Messages": [{"Role": m["role"], "Content": m.get("content") or "", "ToolCalls": tool_calls(m)} for m in messages],
        "Tools": [
            {"Type": "function", "Function": {"Name": t["function"]["name"], "Description": t["function"]["description"],
                                              "Parameters": t["function"]["parameters"]}}
            for t in tools or []
        ],
    }


def canonical_json_spans(prompt: str) -> str:
    """Each JSON value Ollama serializes (tool lines, tool-call bodies) in one canonical spelling."""
    def canon(text):
        try:
            return json.dumps(json.loads(text), sort_keys=True)
        except ValueError:
            return text

    prompt = re.sub(r"(?m)^(\{.*\})(?=<\|eot_id\|>|$)", lambda m: canon(m.group(1)), prompt)
    return re.sub(r"<tool_call>(.*?)</tool_call>", lambda m: "<tool_call>" + canon(m.group(1)) + "</tool_call>", prompt)


def test_modelfile_template_renders_the_training_prompt(exported, student):
    from trainer.export import ollama_template

    modelfile = exported.modelfile.read_text()
    assert 'FROM ./student-q8_0.gguf' in modelfile
    assert 'PARAMETER stop "<|eot_id|>"' in modelfile and "PARAMETER num_ctx 4096" in modelfile
    template = re.search(r'TEMPLATE """(.*?)"""', modelfile, re.S).group(1)
    assert template == ollama_template()

    conv = target_conversation()
    plain = [conv[0], {"role": "user", "content": "hi <there> & you"}, {"role": "assistant", "content": "Hello."},
             {"role": "user", "content": "Bye\n\n  now"}]
    # Without tools: byte for byte.
    for messages in (plain, plain[1:], plain[:2]):
        assert go_template_render(template, ollama_data(messages, None)) == render(messages, None, add_generation_prompt=True)

    # With tools and tool calls: the fixed text byte for byte; the JSON Ollama serializes itself
    # (Go's compact json.Marshal, sorted keys) equal as values.
    tools = student_tools(student[1]) + compact_tools([{"name": "Read", "description": "Reads <a> file & more",
                                                        "input_schema": {"type": "object", "properties": {"file_path": {"type": "string"}}}}])
    two_calls = dict(conv[2], content="", tool_calls=conv[2]["tool_calls"] * 2)
    for messages in (conv[:2], conv[:4], [conv[0], conv[1], two_calls, conv[3], conv[3]]):
        go = go_template_render(template, ollama_data(messages, tools))
        jinja = render(messages, tools, add_generation_prompt=True)
        assert go != jinja  # whitespace inside the JSON differs, as documented
        assert canonical_json_spans(go) == canonical_json_spans(jinja)
