"""`trainer serve` latency: time to first token and tokens/s, transformers vs the GGUF in llama.cpp.

    .venv/bin/python benchmarks/bench_serve.py                      # tiny model, CPU, 5 requests each
    .venv/bin/python benchmarks/bench_serve.py -n 10 --max-tokens 128 --json out.json
    .venv/bin/python benchmarks/bench_serve.py --model runs/x/sft/final --gguf runs/x/export/student-q8_0.gguf

Each backend is served by the same FastAPI app (trainer.serve.create_app) on uvicorn in this
process, and measured through HTTP with streaming requests shaped like Claude Code's (a user
prompt, tool schemas, system prompt replaced by the compact one). Numbers:
    TTFT       request sent → first text or tool_use delta (prompt processing included)
    tokens/s   output tokens (from message_delta usage) / (last event - first delta)
    total      request sent → message_stop
Requests alternate between backends, so drift in machine load hits them alike. The tiny model
is random (it rarely stops early), so every request generates --max-tokens tokens. The same
request repeats: llama.cpp reuses its prompt KV cache across requests (as it would for the
shared prefix of a Claude Code session), transformers recomputes the prompt each time, so the
TTFT column favours llama.cpp beyond raw speed.

On a GPU machine (not run here): pass --model a 1B-class student directory and --device cuda;
for the GGUF pass --n-gpu-layers 999 (xllamacpp wheels with CUDA offload the layers).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def tiny_model(root: Path) -> Path:
    from trainer.chat_template import render
    from trainer.dataset import DatasetConfig, trace_to_example
    from trainer.teacher_corpus import generate_corpus
    from trainer.tiny_model import make_tiny_base

    texts = [render(e["messages"], e["tools"]) for e in (trace_to_example(t, DatasetConfig()) for t in generate_corpus(40, 0))]
    return make_tiny_base(root / "tiny", texts, vocab_size=2000, hidden=64, layers=2, heads=4)


def claude_code_like_request(max_tokens: int) -> dict:
    from trainer.teacher_corpus import TOOLS_OFFERED

    return {
        "model": "claude-opus-5-5",
        "max_tokens": max_tokens,
        "stream": True,
        "system": [{"type": "text", "text": "You are Claude Code. " * 400}],
        "tools": TOOLS_OFFERED,
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "<system-reminder>context</system-reminder>"},
            {"type": "text", "text": "Fix the failing test in tests/test_orders.py and run the suite."},
        ]}],
    }


def measure(client, base_url: str, body: dict) -> dict:
    t0 = time.perf_counter()
    first = last = None
    output_tokens = 0
    with client.stream("POST", base_url + "/v1/messages", json=body) as r:
        r.raise_for_status()
        event = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                now = time.perf_counter()
                if event == "content_block_delta" and first is None:
                    first = now
                if event == "message_delta":
                    output_tokens = json.loads(line[6:])["usage"]["output_tokens"]
                if event == "message_stop":
                    last = now
    first = first or last
    decode = (last - first) if last and first and last > first else None
    return {
        "ttft_s": first - t0,
        "total_s": last - t0,
        "output_tokens": output_tokens,
        "tokens_per_s": (output_tokens - 1) / decode if decode and output_tokens > 1 else None,
    }


def summarize(runs: list[dict]) -> dict:
    def med(key):
        vals = [r[key] for r in runs if r[key] is not None]
        return statistics.median(vals) if vals else None

    return {"n": len(runs), "ttft_s": med("ttft_s"), "tokens_per_s": med("tokens_per_s"), "total_s": med("total_s"),
            "output_tokens": med("output_tokens")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=5, help="timed requests per backend (after one warm-up)")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--model", help="HF model dir (default: a tiny random LLaMA built here)")
    ap.add_argument("--gguf", action="append", help="GGUF file(s) (default: f16 and q8_0 exported from --model)")
    ap.add_argument("--device", default="cpu", help="transformers device (cuda on a GPU machine)")
    ap.add_argument("--n-gpu-layers", type=int, default=0, help="llama.cpp layers to offload (GPU machines)")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads for both backends")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()

    import httpx
    import torch

    from trainer.config import load_config
    from trainer.export import run_export
    from trainer.serve import (
        BackgroundServer,
        LlamaCppBackend,
        ServerSettings,
        TransformersBackend,
        build_prompt,
        create_app,
    )

    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    model = Path(args.model) if args.model else tiny_model(tmp)
    ggufs = [Path(g) for g in args.gguf or []]
    if not ggufs:
        cfg = load_config(overrides=[("export.model", str(model)), ("export.output_dir", str(tmp / "export")),
                                     ("export.quantizations", ["f16", "q8_0"]), ("export.modelfile", False)])
        ggufs = list(run_export(cfg, log=lambda line: None).gguf.values())

    backends = {}
    tf = TransformersBackend(str(model), threads=args.threads)
    if args.device != "cpu":
        tf.model.to(args.device)
    backends["transformers"] = tf
    for path in ggufs:
        backend = LlamaCppBackend(str(path), n_ctx=4096, threads=args.threads, n_gpu_layers=args.n_gpu_layers)
        backends[f"llama.cpp {path.stem.split('-')[-1]}"] = backend

    settings = ServerSettings(max_new_tokens=args.max_tokens, temperature=0.0)
    servers = {name: BackgroundServer(create_app(b, settings)).__enter__() for name, b in backends.items()}
    body = claude_code_like_request(args.max_tokens)
    runs: dict[str, list[dict]] = {name: [] for name in servers}
    try:
        with httpx.Client(timeout=600) as client:
            for name, server in servers.items():
                measure(client, server.base_url, body)  # warm-up
            for _ in range(args.n):
                for name, server in servers.items():
                    runs[name].append(measure(client, server.base_url, body))
    finally:
        for server in servers.values():
            server.__exit__(None, None, None)

    results = {name: summarize(r) for name, r in runs.items()}
    prompt_tokens = tf.count(build_prompt(body, settings.context)[0])
    print(f"model {model} · prompt {prompt_tokens} tokens · max_tokens {args.max_tokens} · "
          f"torch threads {torch.get_num_threads()} · device {args.device} · medians of {args.n}")
    print(f"{'backend':<18} {'TTFT ms':>9} {'tokens/s':>10} {'total ms':>10} {'out tok':>8}")
    for name, s in results.items():
        tps = f"{s['tokens_per_s']:.0f}" if s["tokens_per_s"] else "-"
        print(f"{name:<18} {s['ttft_s'] * 1000:>9.1f} {tps:>10} {s['total_s'] * 1000:>10.1f} {s['output_tokens']:>8}")
    if args.json:
        args.json.write_text(json.dumps({"prompt_tokens": prompt_tokens, "results": results, "runs": runs}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
