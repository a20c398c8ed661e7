"""`trainer serve` speed, side by side with llama.cpp's own HTTP server on the same GGUF.

    .venv/bin/python benchmarks/bench_serve.py                      # tiny model, CPU, 5 requests each
    .venv/bin/python benchmarks/bench_serve.py -n 10 --max-tokens 128 --json out.json
    .venv/bin/python benchmarks/bench_serve.py --gguf runs/x/export/student-q8_0.gguf --n-gpu-layers 999
    .venv/bin/python benchmarks/bench_serve.py --transformers     # also the transformers backend

Arms, all measured through HTTP with streaming requests shaped like Claude Code's (a user prompt,
tool schemas, a long system prompt that serve replaces by the compact one):
    trainer serve     the FastAPI app (trainer.serve.create_app) with the llama.cpp backend under
                      uvicorn: validation, context mapping, counting, queue, assembler
    llama.cpp server  llama.cpp's own HTTP server (`/completion`, streaming), which xllamacpp
                      runs inside the same process on the same loaded model: sent the very
                      prompt trainer serve renders, so the difference is serve's own cost
Both servers run in a child process, as `trainer serve` does, and this process is only the
client: a client in the server's process would take the GIL from serve's event loop and worker
(never from llama.cpp's C++ server), which charged serve for the client's own Python.
Numbers:
    TTFT       request sent → first streamed token (prompt processing included)
    tokens/s   (output tokens - 1) / (end of stream - first token)
Goals (issue 13): TTFT ≤ 1.2× llama.cpp's, tokens/s ≥ 0.9× llama.cpp's. Each round times one
request per arm, in alternating order, each on a connection just checked alive (llama.cpp's
server closes idle ones, and a new connection costs it far more than the request) and after a
pause (--gap: llama.cpp is still busy for a while after a stream ends, which otherwise fell on
whichever arm came next), so drift in machine load hits both alike; the ratios are per round (paired), reported as median
and quartiles. Each request's user text is new (a counter, a different one per arm), so the
prompt cache covers only the shared system-and-tools prefix, alike for both. On a machine
shared with other work, `--threads 1` avoids llama.cpp's threads waiting on each other while
one is descheduled (it hits both arms, but swamps the difference).

Then load: --clients (16) concurrent clients, each sending --per-client requests to trainer
serve (serve.max_queue = clients - 1, so the bound is reached): p50/p99 latency, and how many
got 529 overloaded_error (the client does not retry here; Claude Code and the SDK would).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
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


def claude_code_like_request(max_tokens: int, i: int) -> dict:
    from trainer.teacher_corpus import TOOLS_OFFERED

    return {
        "model": "claude-opus-5-5",
        "max_tokens": max_tokens,
        "stream": True,
        "system": [{"type": "text", "text": "You are Claude Code. " * 400}],
        "tools": TOOLS_OFFERED,
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "<system-reminder>context</system-reminder>"},
            {"type": "text", "text": f"Request {i}: fix the failing test in tests/test_orders.py and run the suite."},
        ]}],
    }


def _timed_stream(client, url: str, body: dict, token_event) -> dict:
    """Stream one request; token_event(event, data) → tokens in this event (0 if none)."""
    # Encoded before the clock starts: the client's JSON encoding (serve's request is ~5x the
    # size of llama.cpp's) is neither server's cost.
    content = json.dumps(body, ensure_ascii=False).encode()
    headers = {"content-type": "application/json"}
    t0 = time.perf_counter()
    first = None
    tokens = 0
    with client.stream("POST", url, content=content, headers=headers) as r:
        r.raise_for_status()
        event = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                n = token_event(event, json.loads(line[6:]))
                if n:
                    first = first or time.perf_counter()
                    tokens += n
    end = time.perf_counter()
    first = first or end
    return {
        "ttft_s": first - t0,
        "total_s": end - t0,
        "output_tokens": tokens,
        # To the end of the stream, not the last delta: serve holds text back around a possible
        # tool call, so its deltas come in bursts.
        "tokens_per_s": (tokens - 1) / (end - first) if tokens > 1 and end > first else None,
    }


def warm(client, base_url: str) -> None:
    """A live keep-alive connection for the timed request (untimed): llama.cpp's server closes
    idle ones and ends one after so many requests, and a new connection costs it far more
    than the request itself."""
    import httpx

    for _ in range(4):
        try:
            r = client.get(base_url + "/health")
        except httpx.TransportError:
            continue  # closed under us: the next try opens a new one
        if r.headers.get("connection", "").lower() != "close":
            return


def measure_serve(client, base_url: str, body: dict) -> dict:
    usage = {}

    def tokens(event, data):
        if event == "message_delta":
            usage["n"] = data["usage"]["output_tokens"]
        return 1 if event == "content_block_delta" else 0

    out = _timed_stream(client, base_url + "/v1/messages", body, tokens)
    # Deltas hold back text around a possible tool call, so count the tokens from usage.
    out["output_tokens"] = n = usage.get("n", out["output_tokens"])
    decode = out["total_s"] - out["ttft_s"]
    out["tokens_per_s"] = (n - 1) / decode if n > 1 and decode > 0 else None
    return out


def measure_llamacpp(client, base_url: str, prompt: str, max_tokens: int) -> dict:
    body = {"prompt": prompt, "n_predict": max_tokens, "stream": True, "temperature": 0.0, "cache_prompt": True}
    return _timed_stream(client, base_url + "/completion", body, lambda event, data: 1 if data.get("content") else 0)


def summarize(runs: list[dict]) -> dict:
    def med(key):
        vals = [r[key] for r in runs if r[key] is not None]
        return statistics.median(vals) if vals else None

    return {"n": len(runs), "ttft_s": med("ttft_s"), "tokens_per_s": med("tokens_per_s"), "total_s": med("total_s"),
            "output_tokens": med("output_tokens")}


def spread(values: list[float]) -> dict:
    """Median and quartiles (the middle half of the rounds)."""
    values = sorted(v for v in values if v is not None)
    if not values:
        return {"median": None, "p25": None, "p75": None, "n": 0}
    q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return {"median": statistics.median(values), "p25": q[0], "p75": q[2], "n": len(values)}


def load_test(base_url: str, clients: int, per_client: int, max_tokens: int) -> dict:
    import httpx

    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()

    def client_loop(c: int):
        with httpx.Client(timeout=600) as http:
            for k in range(per_client):
                body = claude_code_like_request(max_tokens, 10_000 + c * 100 + k)
                body["stream"] = False
                t0 = time.perf_counter()
                r = http.post(base_url + "/v1/messages", json=body)
                with lock:
                    statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                    if r.status_code == 200:
                        latencies.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=client_loop, args=(c,)) for c in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    latencies.sort()

    def pct(p):
        return latencies[min(len(latencies) - 1, int(round(p / 100 * (len(latencies) - 1))))] if latencies else None

    return {"clients": clients, "requests": clients * per_client, "statuses": statuses, "wall_s": wall,
            "p50_s": pct(50), "p99_s": pct(99), "ok_per_s": len(latencies) / wall}


def child(args) -> int:
    """The servers, as `trainer serve` runs them: one process, llama.cpp in it via xllamacpp."""
    from trainer.serve import BackgroundServer, LlamaCppBackend, ServerSettings, TransformersBackend, create_app

    llama = LlamaCppBackend(args.gguf, n_ctx=4096, threads=args.threads, n_gpu_layers=args.n_gpu_layers)
    settings = ServerSettings(max_new_tokens=args.max_tokens, temperature=0.0, max_queue=max(0, args.clients - 1))
    urls = {"trainer serve": BackgroundServer(create_app(llama, settings)).__enter__().base_url}
    if args.transformers:
        tf = TransformersBackend(args.model, threads=args.threads)
        if args.device != "cpu":
            tf.model.to(args.device)
        urls["serve (transformers)"] = BackgroundServer(create_app(tf, settings)).__enter__().base_url
    urls["llama.cpp server"] = llama.server.listening_address
    print(json.dumps(urls), flush=True)
    sys.stdin.read()  # until the parent is done
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=5, help="timed rounds (after --warmup rounds)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    ap.add_argument("--gap", type=float, default=0.1, help="seconds between one timed request and the next")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--model", help="HF model dir (default: a tiny random LLaMA built here)")
    ap.add_argument("--gguf", help="GGUF file (default: q8_0 exported from --model)")
    ap.add_argument("--transformers", action="store_true", help="also time the transformers backend")
    ap.add_argument("--device", default="cpu", help="transformers device (cuda on a GPU machine)")
    ap.add_argument("--n-gpu-layers", type=int, default=0, help="llama.cpp layers to offload (GPU machines)")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads for the backends")
    ap.add_argument("--clients", type=int, default=16, help="concurrent clients in the load test (0: skip it)")
    ap.add_argument("--per-client", type=int, default=2, help="requests per client in the load test")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)

    import httpx

    from trainer.config import load_config
    from trainer.export import run_export
    from trainer.serve import LlamaCppBackend, ServerSettings, build_prompt

    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    model = Path(args.model) if args.model else None
    gguf = Path(args.gguf) if args.gguf else None
    if gguf is None:
        model = model or tiny_model(tmp)
        cfg = load_config(overrides=[("export.model", str(model)), ("export.output_dir", str(tmp / "export")),
                                     ("export.quantizations", ["q8_0"]), ("export.modelfile", False)])
        gguf = run_export(cfg, log=lambda line: None).gguf["q8_0"]
    if args.transformers and model is None:
        ap.error("--transformers needs --model (or no --gguf: the tiny model)")

    argv = [sys.executable, str(Path(__file__).resolve()), "--child", "--gguf", str(gguf), "--max-tokens", str(args.max_tokens),
            "--n-gpu-layers", str(args.n_gpu_layers), "--clients", str(args.clients)]
    argv += ["--threads", str(args.threads)] if args.threads else []
    argv += ["--transformers", "--model", str(model), "--device", args.device] if args.transformers else []
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    context = ServerSettings().context
    runs: dict[str, list[dict]] = {}
    prompt_tokens = 0
    load = None
    try:
        line = proc.stdout.readline()
        if not line:
            raise SystemExit("the server process did not start")
        urls = json.loads(line)
        runs = {name: [] for name in urls}
        clients = {name: httpx.Client(timeout=600) for name in urls}
        for i in range(args.warmup + args.n):
            # A request of its own for each arm (same length, another number): the one arm
            # must not find the other's whole prompt in llama.cpp's cache.
            body = claude_code_like_request(args.max_tokens, 1000 + i)
            own = claude_code_like_request(args.max_tokens, 2000 + i)
            prompt = LlamaCppBackend._prompt(build_prompt(own, context)[0])
            names = list(urls) if i % 2 == 0 else list(reversed(urls))
            timed = {}
            for name in names:
                warm(clients[name], urls[name])
                # llama.cpp still works after a stream has ended (slot release, prompt cache):
                # without a pause the arm that follows llama.cpp's own request paid for it.
                time.sleep(args.gap)
                if name == "llama.cpp server":
                    timed[name] = measure_llamacpp(clients[name], urls[name], prompt, args.max_tokens)
                else:
                    timed[name] = measure_serve(clients[name], urls[name], body)
            if i >= args.warmup:
                for name, result in timed.items():
                    runs[name].append(result)
        # The prompt's tokens as llama.cpp counts them (BOS included).
        tokenized = clients["llama.cpp server"].post(urls["llama.cpp server"] + "/tokenize",
                                                     json={"content": prompt, "add_special": True, "parse_special": True})
        prompt_tokens = len(tokenized.json()["tokens"])
        for c in clients.values():
            c.close()
        if args.clients:
            load = load_test(urls["trainer serve"], args.clients, args.per_client, args.max_tokens)
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)

    results = {name: summarize(r) for name, r in runs.items()}
    print(f"gguf {gguf} · prompt {prompt_tokens} tokens · max_tokens {args.max_tokens} · threads {args.threads or 'default'} · "
          f"n_gpu_layers {args.n_gpu_layers} · medians of {args.n} rounds")
    print(f"{'arm':<22} {'TTFT ms':>9} {'tokens/s':>10} {'total ms':>10} {'out tok':>8}")
    for name, s in results.items():
        tps = f"{s['tokens_per_s']:.0f}" if s["tokens_per_s"] else "-"
        print(f"{name:<22} {s['ttft_s'] * 1000:>9.1f} {tps:>10} {s['total_s'] * 1000:>10.1f} {s['output_tokens']:>8}")
    ours, theirs = runs["trainer serve"], runs["llama.cpp server"]
    ratios = {
        "ttft_ratio": spread([a["ttft_s"] / b["ttft_s"] for a, b in zip(ours, theirs)]),
        "tokens_per_s_ratio": spread([a["tokens_per_s"] / b["tokens_per_s"] for a, b in zip(ours, theirs)
                                      if a["tokens_per_s"] and b["tokens_per_s"]]),
        "ttft_extra_ms": spread([(a["ttft_s"] - b["ttft_s"]) * 1000 for a, b in zip(ours, theirs)]),
    }

    def show(r, unit="x"):
        return f"{r['median']:.2f}{unit} (quartiles {r['p25']:.2f}-{r['p75']:.2f})" if r["median"] is not None else "-"

    print(f"trainer serve / llama.cpp server, per round: TTFT {show(ratios['ttft_ratio'])} (goal <= 1.2x), "
          f"tokens/s {show(ratios['tokens_per_s_ratio'])} (goal >= 0.9x); "
          f"TTFT difference {show(ratios['ttft_extra_ms'], ' ms')}")
    if load:
        print(f"load: {load['clients']} clients x {args.per_client} requests, serve.max_queue {max(0, args.clients - 1)}: "
              f"p50 {load['p50_s'] * 1000:.0f} ms, p99 {load['p99_s'] * 1000:.0f} ms, "
              f"{load['ok_per_s']:.1f} ok/s, statuses {load['statuses']}")
    if args.json:
        args.json.write_text(json.dumps({"gguf": str(gguf), "threads": args.threads, "prompt_tokens": prompt_tokens,
                                         "results": results, "ratios": ratios, "load": load, "runs": runs}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
