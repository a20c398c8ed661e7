"""The student behind `trainer serve`: transformers (a HF model dir) or llama.cpp (a GGUF, via xllamacpp).

A backend has `name`, `n_ctx` (the most tokens prompt and output may take together), and

    count(prompt, limit=None) -> int
        the prompt's tokens; with `limit`, a long prompt is tokenized a piece at a time and the
        count stops once it is surely over `limit` (a lower bound then), so a 10 MiB prompt is
        refused without tokenizing it whole.
    generate(prompt, params, cancel, emit) -> GenResult
        emit(text) is called in the generating thread once per token, before the next token is
        chosen: a caller that sets `cancel` inside emit (a stop sequence) stops it right there, so
        usage counts exactly the tokens up to the stop. `cancel` is also checked between chunks
        of the prompt (prefill), so a client that left stops costing time within one chunk
        (PREFILL_CHUNK_TOKENS: a forward pass here, a llama.cpp batch there).

The prompt is tokenized once, turn by turn with what earlier requests already tokenized kept
(trainer/serve_tokens.py): counting reads the count, generation the same token ids.

`params.constraint` (trainer/serve_constrain.py) carries tool_choice: a banned `<tool_call>` token
or a forced call, as a token filter (transformers) or a GBNF grammar (llama.cpp).
"""

from __future__ import annotations

import inspect
import json
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

from trainer.chat_template import BEGIN_OF_TEXT, END_OF_TEXT, END_OF_TURN, TOOL_CALL_CLOSE, TOOL_CALL_OPEN
from trainer.config import ConfigError
from trainer.serve_constrain import Constraint, TokenFilter, gbnf
from trainer.serve_tokens import PrefixTokenizer, probe_prompt, token_encoder

# Prompt tokens processed per forward pass before `cancel` is checked again.
PREFILL_CHUNK_TOKENS = 512


@dataclass
class GenParams:
    max_new_tokens: int
    temperature: float = 0.0
    top_p: Optional[float] = None
    top_k: Optional[int] = None
    constraint: Constraint = field(default_factory=Constraint)
    # When sampling: every token of a tool call the likeliest one, only the words around it sampled
    # (trainer/decoding.py's logits processor under transformers; phases of requests under llama.cpp).
    greedy_calls: bool = False
    # The prompt's length in tokens when the caller has counted it (serve has): a prompt of one
    # prefill batch gets no prompt-progress chunks from llama.cpp (see _complete).
    prompt_tokens: Optional[int] = None


@dataclass
class GenResult:
    finish: str  # "stop" (end of turn), "length", "cancelled"
    output_tokens: int


class TransformersBackend:
    """The student through transformers' generate(), stopping at <|eot_id|>."""

    name = "transformers"

    def __init__(self, model_path: str, threads: Optional[int] = None, n_ctx: int = 4096):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from trainer.chat_template import apply_chat_template

        if threads:
            torch.set_num_threads(threads)
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        apply_chat_template(self.tokenizer)
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
        if self.model.get_input_embeddings().weight.shape[0] < len(self.tokenizer):
            # A base never fine-tuned here lacks the template's tokens (<tool_call>, ...), which
            # apply_chat_template just added: give them rows, as `trainer sft` does before training.
            self.model.resize_token_embeddings(len(self.tokenizer))
        self.model.eval()
        max_positions = getattr(self.model.config, "max_position_embeddings", None) or n_ctx
        self.n_ctx = min(n_ctx, max_positions)
        vocab = self.tokenizer.get_vocab()
        self.stop_ids = [vocab[t] for t in (END_OF_TURN, END_OF_TEXT) if t in vocab]
        self.tool_open_id = vocab.get(TOOL_CALL_OPEN)
        self.tool_close_id = vocab.get(TOOL_CALL_CLOSE)
        # transformers >= 5.2x calls the KV cache argument `cache` (`past_key_values` before).
        self.cache_arg = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"
        self.lock = threading.Lock()
        self._tokens = PrefixTokenizer(token_encoder(self.tokenizer))

    def _count(self, text: str) -> int:
        return self._tokens.count_text(text)

    def count(self, prompt: str, limit: Optional[int] = None) -> int:
        return self._tokens(prompt, limit)

    def generate(self, prompt: str, params: GenParams, cancel: threading.Event, emit: Callable[[str], None]) -> GenResult:
        import torch
        from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

        from trainer.kv_cache import growing_cache

        tokenizer = self.tokenizer
        known = self._tokens.ids(prompt)  # the turns counted before generation: not tokenized again
        if known is not None:
            ids = torch.tensor([known], dtype=torch.long)
        else:
            ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
        n_prompt = ids.shape[1]

        class EmitThenCheck(StoppingCriteria):
            """Streams each new token and checks `cancel` in the same step (generate calls stopping
            criteria right after appending a token, before choosing the next)."""

            def __init__(self):
                self.done: list[int] = []
                self.pending: list[int] = []

            def __call__(self, input_ids, scores, **kwargs):
                self.pending.append(int(input_ids[0, -1]))
                context = self.done[-4:]
                base = tokenizer.decode(context, skip_special_tokens=True)
                text = tokenizer.decode(context + self.pending, skip_special_tokens=True)
                new = text[len(base):] if text.startswith(base) else tokenizer.decode(self.pending, skip_special_tokens=True)
                if not new.endswith("\ufffd"):  # else a character is split across tokens: wait for the rest
                    self.done += self.pending
                    self.pending = []
                    if new:
                        emit(new)
                return cancel.is_set()

        class Ban(LogitsProcessor):
            def __init__(self, token_ids):
                self.token_ids = token_ids

            def __call__(self, input_ids, scores):
                scores[:, self.token_ids] = float("-inf")
                return scores

        processors = []
        constraint = params.constraint
        if constraint.kind == "none" and self.tool_open_id is not None:
            processors.append(Ban([self.tool_open_id]))
        elif constraint.forced:
            processors.append(TokenFilter(tokenizer, constraint, self.stop_ids, n_prompt))

        sample = params.temperature > 0
        if sample and params.greedy_calls and None not in (self.tool_open_id, self.tool_close_id):
            from trainer.decoding import GreedyToolCalls

            processors.append(GreedyToolCalls(self.tool_open_id, self.tool_close_id))
        kwargs: dict[str, Any] = dict(
            max_new_tokens=params.max_new_tokens,
            do_sample=sample,
            eos_token_id=self.stop_ids,
            pad_token_id=tokenizer.pad_token_id,
            stopping_criteria=StoppingCriteriaList([EmitThenCheck()]),
            logits_processor=LogitsProcessorList(processors),
        )
        if sample:
            kwargs["temperature"] = params.temperature
            if params.top_p is not None:
                kwargs["top_p"] = params.top_p
            if params.top_k:
                kwargs["top_k"] = params.top_k
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        with self.lock, torch.no_grad():
            # Prefill all but the last prompt token in chunks, checking `cancel` between them;
            # generate() then continues from the cache.
            cache = {self.cache_arg: growing_cache(self.model.config)}
            for start in range(0, n_prompt - 1, PREFILL_CHUNK_TOKENS):
                if cancel.is_set():
                    return GenResult(finish="cancelled", output_tokens=0)
                end = min(start + PREFILL_CHUNK_TOKENS, n_prompt - 1)
                self.model(input_ids=ids[:, start:end], use_cache=True, **cache)
            if cancel.is_set():
                return GenResult(finish="cancelled", output_tokens=0)
            out = self.model.generate(ids, attention_mask=torch.ones_like(ids), **cache, **kwargs)
        new = out[0, n_prompt:].tolist()
        if cancel.is_set():
            finish = "cancelled"
        elif new and new[-1] in self.stop_ids:
            finish = "stop"
        else:
            finish = "length"
        return GenResult(finish=finish, output_tokens=len(new))


class LlamaCppBackend:
    """The exported GGUF through llama.cpp (xllamacpp's in-process server)."""

    name = "llamacpp"

    def __init__(self, gguf_path: str, n_ctx: int = 4096, threads: Optional[int] = None, n_gpu_layers: int = 0):
        try:
            import xllamacpp as xlc
        except ImportError:
            raise ConfigError("serve.backend = 'llamacpp' needs xllamacpp: pip install 'understudy[export]'") from None
        params = xlc.CommonParams()
        params.model.path = str(gguf_path)
        params.n_ctx = n_ctx
        params.n_parallel = 1
        params.warmup = False
        params.verbosity = -1
        params.n_gpu_layers = n_gpu_layers
        # The prompt is processed a batch at a time, and with `return_progress` llama.cpp streams
        # a progress chunk after each batch, so `cancel` is seen between batches. Its default
        # logical batch is 2048 tokens made of 512-token micro-batches: making the two equal
        # keeps the same compute, with a cancellation point every 512 tokens.
        params.n_batch = PREFILL_CHUNK_TOKENS
        params.n_ubatch = min(params.n_ubatch, PREFILL_CHUNK_TOKENS)
        if threads:
            params.cpuparams.n_threads = threads
            params.cpuparams_batch.n_threads = threads
        self.server = xlc.Server(params)
        self.n_ctx = n_ctx
        self.lock = threading.Lock()
        self._http = None
        # `trainer export` writes the same tokenizer beside its GGUFs (hf/); tokenizing with it in
        # process saves the HTTP round trip to llama.cpp's /tokenize on every request.
        self._tokenizer = None
        encode: Callable[[str], Sequence[int]] = self._llama_tokenize
        hf = Path(gguf_path).parent / "hf"
        if (hf / "tokenizer.json").exists():
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(hf)
            encode = token_encoder(self._tokenizer)
        self._tokens = PrefixTokenizer(encode)
        self._lead = self._ids_lead(encode)

    @staticmethod
    def _prompt(prompt: str) -> str:
        # llama.cpp adds BOS itself when it tokenizes a text prompt.
        return prompt[len(BEGIN_OF_TEXT):] if prompt.startswith(BEGIN_OF_TEXT) else prompt

    def _llama_tokenize(self, text: str, add_special: bool = False) -> list[int]:
        """llama.cpp's own tokenizer, through its loopback HTTP endpoint: no lock, no prompt processing."""
        import httpx

        if self._http is None:
            self._http = httpx.Client(base_url=self.server.listening_address, timeout=60)
        r = self._http.post("/tokenize", json={"content": text, "add_special": add_special, "parse_special": True})
        r.raise_for_status()
        return r.json()["tokens"]

    def _ids_lead(self, encode) -> Optional[list[int]]:
        """What llama.cpp puts before a text prompt's tokens (BOS, or nothing) when `encode` gives
        the very tokens llama.cpp would for the rest (checked on a probe conversation); None when
        it does not, and prompts then go to llama.cpp as text, for it to tokenize."""
        probe = self._prompt(probe_prompt())
        try:
            theirs, ours = self._llama_tokenize(probe, add_special=True), list(encode(probe))
        except Exception:
            return None
        lead = theirs[: len(theirs) - len(ours)]
        return lead if len(lead) <= 1 and theirs[len(lead):] == ours else None

    def _count(self, text: str) -> int:
        return self._tokens.count_text(text)

    def count(self, prompt: str, limit: Optional[int] = None) -> int:
        return self._tokens(self._prompt(prompt), limit)

    def _prompt_tokens(self, text: str) -> Union[str, list[int]]:
        """The prompt as token ids when they are llama.cpp's own (the turns `count` tokenized are
        kept: nothing is tokenized twice), else as text. llama.cpp tokenizing the text itself cost
        ~1.4 ms of a ~10 ms time to first token on the tiny student (2 CPU cores)."""
        if self._lead is None:
            return text
        ids = self._tokens.ids(text)
        return text if ids is None else self._lead + ids

    def generate(self, prompt: str, params: GenParams, cancel: threading.Event, emit: Callable[[str], None]) -> GenResult:
        text = self._prompt(prompt)
        first = self._prompt_tokens(text)
        if not (params.temperature > 0 and params.greedy_calls) or params.constraint.kind == "none":
            return self._complete(first, params, cancel, emit)[0]
        if params.constraint.forced:  # the whole turn is a call: all of it greedy
            return self._complete(first, replace(params, temperature=0.0), cancel, emit)[0]
        # llama.cpp samples a request with one sampler throughout, so the turn is written in phases:
        # sampled words up to a `<tool_call>`, then the call greedy up to its `</tool_call>`, then
        # sampled again. Each phase is a request continuing the text so far; the prompt cache keeps
        # the keys and values of everything already written, so a phase costs only its own tokens.
        written, tokens, greedy = "", 0, False
        while True:
            budget = params.max_new_tokens - tokens
            if budget <= 0:
                return GenResult(finish="length", output_tokens=tokens)
            phase = replace(params, max_new_tokens=budget, temperature=0.0 if greedy else params.temperature)
            result, piece = self._complete(text + written if written else first, phase, cancel, emit,
                                           until=TOOL_CALL_CLOSE if greedy else TOOL_CALL_OPEN)
            written, tokens = written + piece, tokens + result.output_tokens
            if result.finish != "until":
                return GenResult(finish=result.finish, output_tokens=tokens)
            greedy = not greedy

    def _complete(self, prompt: Union[str, list[int]], params: GenParams, cancel: threading.Event,
                  emit: Callable[[str], None], until: Optional[str] = None) -> tuple[GenResult, str]:
        """One llama.cpp completion of a text or token-id prompt, streamed through `emit`: (result,
        the text it wrote). With `until`, it stops right after writing that text, with finish "until"."""
        request: dict[str, Any] = {
            "prompt": prompt,
            "n_predict": params.max_new_tokens,
            "stream": True,
            "temperature": params.temperature,
            "cache_prompt": True,
            # A chunk when prompt processing starts and after each batch of it: the points where
            # on_chunk can stop a request whose client left, before its first token. A prompt of
            # one batch has no point between batches, and each chunk is a call into Python
            # before the first token (time to first token).
            "return_progress": params.prompt_tokens is None or params.prompt_tokens > PREFILL_CHUNK_TOKENS,
        }
        if params.top_p is not None:
            request["top_p"] = params.top_p
        if params.top_k is not None:
            request["top_k"] = params.top_k
        # llama.cpp's own min_p (0.05) would drop every token under a twentieth of the likeliest
        # one before the temperature applies: a confident student then samples like a greedy one at
        # any temperature. The request's temperature, top_p and top_k are what shape the sampling
        # here, as under the transformers backend.
        request["min_p"] = 0.0
        if params.constraint.kind == "none":
            request["logit_bias"] = [[TOOL_CALL_OPEN, False]]
        elif params.constraint.forced:
            request["grammar"] = gbnf(params.constraint)
        state: dict[str, Any] = {"finish": "stop", "tokens": 0, "error": None, "text": [], "tail": ""}

        def on_chunk(chunk):
            if isinstance(chunk, str):
                chunk = json.loads(chunk)
            if isinstance(chunk, dict) and "error" in chunk:
                state["error"] = chunk["error"]
                return True
            if "prompt_progress" in chunk and not any(c.get("text") for c in chunk.get("choices") or []):
                return cancel.is_set()  # prompt processing: between batches
            for choice in chunk.get("choices") or [chunk]:
                text = choice.get("text") or choice.get("content") or ""
                if text:
                    state["tokens"] += 1
                    state["text"].append(text)
                    emit(text)
                    if until is not None:
                        # A tag the tokenizer does not keep whole arrives over several chunks.
                        seen = state["tail"] + text
                        if until in seen:
                            state["finish"] = "until"
                            return True
                        state["tail"] = seen[-len(until):]
                reason = choice.get("finish_reason") or choice.get("stop_type")
                if reason:
                    state["finish"] = "length" if reason in ("length", "limit") else "stop"
            usage = chunk.get("usage")
            if usage and usage.get("completion_tokens") is not None and not cancel.is_set():
                state["tokens"] = usage["completion_tokens"]
            # A true return value asks llama.cpp to stop this generation.
            return cancel.is_set()

        with self.lock:
            if cancel.is_set():
                return GenResult(finish="cancelled", output_tokens=0), ""
            result = self.server.handle_completions(request, on_chunk)
        error = state["error"] or (result.get("error") if isinstance(result, dict) else None)
        if error and not cancel.is_set():  # a client that left is owed no error
            raise RuntimeError(error.get("message", str(error)) if isinstance(error, dict) else str(error))
        finish = "cancelled" if cancel.is_set() else state["finish"]
        return GenResult(finish=finish, output_tokens=state["tokens"]), "".join(state["text"])


def load_backend(model: str, backend: str = "", n_ctx: int = 4096):
    if not model:
        raise ConfigError("serve.model is empty: pass --model (a HF model dir or a .gguf file)")
    if not backend:
        backend = "llamacpp" if model.endswith(".gguf") else "transformers"
    if backend == "llamacpp":
        if not Path(model).is_file():
            raise ConfigError(f"serve.model '{model}' is not a GGUF file (the llamacpp backend loads a .gguf)")
        return LlamaCppBackend(model, n_ctx=n_ctx)
    if model.endswith(".gguf"):
        raise ConfigError("serve.model is a .gguf file: set serve.backend = 'llamacpp' (or pass --backend llamacpp)")
    try:
        return TransformersBackend(model, n_ctx=n_ctx)
    except (OSError, ValueError) as e:  # no model there (transformers says OSError), or not one it can read
        from trainer.sft import student_load_error

        raise ConfigError(student_load_error(model, e, "serve.model")) from None
