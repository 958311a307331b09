"""The vLLM backend: the probe's requests served by a vLLM engine, adapters as per-request LoRAs.

One engine load serves the base model and any number of LoRA adapters: ``VLLMEngine`` owns the
engine, and each ``VLLMBackend`` is a view on it whose requests carry one adapter (or none), so
evaluate and study can probe every cell of a grid without reloading the model
(``backend.with_adapter(path)``). What makes its answers the transformers engine's answers:

* prompts go in as token ids, encoded and rendered exactly as the transformers backend does;
* generation stops where the transformers engine stops — at EOS, at ``max_new_tokens``, or once
  the answer line is complete (``span_complete``). vLLM stops at every newline token; when the
  line before it holds no answer yet (an empty line, a bare "Answer:"), the sequence continues
  as a new request from the tokens so far (the prefix cache holds them, so this costs one token);
* sampled answers come from vLLM's per-request generators seeded by the request's seed (child
  ``i`` of an ``n``-sample request draws from ``seed + i``), so a prompt's samples do not depend
  on its batch mates; all ``n`` share one prompt;
* prefix caching shares the few-shot prefixes between requests.
"""

from __future__ import annotations

import itertools
import logging
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from knowpack.errors import KnowpackError
from knowpack.models.loading import render_chat
from knowpack.probe.backends.base import ListFeed, Request
from knowpack.probe.backends.registry import register_backend
from knowpack.probe.backends.vllm_adapters import AdapterInfo, check_adapter, lora_rank_limit, read_adapter
from knowpack.probe.backends.vllm_engine import (EngineProcessScope, VLLMSettings, check_batch_invariance,
                                                 engine_arguments, gpu_present, require_vllm, vllm_importable)

logger = logging.getLogger(__name__)

__all__ = ["VLLMBackend", "VLLMEngine", "VLLMSettings"]

DEFAULT_MAX_MODEL_LEN = 2048  # few-shot prompts are a few hundred tokens; a longer cache costs memory


def _context_length(model_dir: Path) -> int | None:
    """The model's position limit from its config.json (None when it does not say)."""
    import json

    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = config.get("max_position_embeddings")
    return int(value) if isinstance(value, (int, float)) and value > 0 else None


_SEED_MASK = (1 << 62) - 1  # vLLM adds the sample index to the seed; keep the sum inside int64


def _model_parts(model: Any):
    """(source, tokenizer, model hash) of a LoadedModel or a model spec string."""
    from knowpack.models.loading import load_tokenizer, model_fingerprint, resolve_model_source

    if hasattr(model, "source") and hasattr(model, "tokenizer"):
        return model.source, model.tokenizer, model.model_hash
    source = resolve_model_source(str(model))
    return source, load_tokenizer(source), model_fingerprint(source)


def _weight_module_names(folder: Path) -> frozenset[str]:
    """Leaf names of the modules that own weights (``q_proj``, ``down_proj``, …), from the
    safetensors headers (no tensor is read)."""
    from safetensors import safe_open

    names = set()
    for weights in sorted(folder.glob("*.safetensors")):
        with safe_open(str(weights), framework="pt") as handle:
            for key in handle.keys():
                parts = key.split(".")
                if len(parts) >= 2:
                    names.add(parts[-2])
    return frozenset(names)


def _stop_ids(source_path: str, tokenizer) -> tuple[frozenset[int], frozenset[int]]:
    """(EOS ids, ids of tokens whose text contains a newline) — the transformers engine's stops."""
    import json

    from knowpack.probe.backends.hf import newline_token_mask

    eos = {int(tokenizer.eos_token_id)} if tokenizer.eos_token_id is not None else set()
    config_file = Path(source_path) / "generation_config.json"
    if config_file.is_file():
        extra = json.loads(config_file.read_text(encoding="utf-8")).get("eos_token_id")
        eos.update([int(extra)] if isinstance(extra, int) else [int(i) for i in extra or []])
    vocab = json.loads((Path(source_path) / "config.json").read_text(encoding="utf-8")).get("vocab_size")
    mask = newline_token_mask(tokenizer, int(vocab or len(tokenizer)))
    return frozenset(eos), frozenset(int(i) for i in mask.nonzero().flatten().tolist())


class VLLMEngine:
    """One vLLM engine on one base model, serving it and any number of LoRA adapters.

    ``model``: a LoadedModel or a model spec (``default``, a folder of safetensors). Close it
    with ``close()`` or use it as a context manager: shutting down leaves no process, socket or
    temporary file behind.
    """

    def __init__(self, model: Any = "default", settings: VLLMSettings | None = None):
        require_vllm()
        self.settings = settings or VLLMSettings()
        self.source, self.tokenizer, self.model_hash = _model_parts(model)
        if self.source.kind not in ("default", "local"):
            raise KnowpackError(f"the vLLM backend serves local safetensors models; {self.source.spec!r} is a "
                                f"{self.source.kind} model", hint="convert it to a folder with `save_pretrained`, "
                                "or use the transformers backend (--backend hf)")
        if self.settings.max_model_len is None:  # vLLM refuses a length beyond the model's positions
            length = min(DEFAULT_MAX_MODEL_LEN, _context_length(Path(self.source.path)) or DEFAULT_MAX_MODEL_LEN)
            self.settings = self.settings.model_copy(update={"max_model_len": length})
        self.gpu = gpu_present()
        check_batch_invariance(self.settings, gpu=self.gpu)
        self.module_names = _weight_module_names(Path(self.source.path))
        self._adapters: dict[Path, tuple[AdapterInfo, Any]] = {}
        infos = [read_adapter(a) for a in self.settings.adapters]
        ranks = [info.rank for info in infos] + ([self.settings.max_lora_rank] if self.settings.max_lora_rank else [])
        self.max_lora_rank = lora_rank_limit(ranks) if ranks else None
        for info in infos:  # refused now, before the engine starts, rather than at first use
            check_adapter(info, max_lora_rank=self.max_lora_rank, model_hash=self.model_hash,
                          module_names=self.module_names)
        self.eos_ids, self.newline_ids = _stop_ids(self.source.path, self.tokenizer)
        self._ids = itertools.count()
        self._scope = EngineProcessScope(self.settings, gpu=self.gpu)
        self.llm = self._start()
        self._finalizer = weakref.finalize(self, _shutdown, self.llm, self._scope)

    def _start(self):
        import time

        started = time.perf_counter()
        with self._scope.starting():
            from vllm import LLM

            llm = LLM(**engine_arguments(self.settings, self.source.path, max_lora_rank=self.max_lora_rank,
                                         gpu=self.gpu))
        logger.info("vLLM engine on %s started in %.1f s (%s, %s)", self.source.spec, time.perf_counter() - started,
                    self.settings.dtype, "in process" if self._scope.in_process else "own processes")
        return llm

    # -- adapters ---------------------------------------------------------------------------
    def lora_request(self, adapter: str | Path | None):
        """The LoRARequest for ``adapter`` (None for the base model), checked before first use:
        an adapter the engine cannot serve raises KnowpackError and the engine keeps serving."""
        if adapter is None:
            return None
        path = Path(adapter).expanduser().resolve()
        if path not in self._adapters:
            info = read_adapter(path)
            check_adapter(info, max_lora_rank=self.max_lora_rank, model_hash=self.model_hash,
                          module_names=self.module_names)
            from vllm.lora.request import LoRARequest

            self._adapters[path] = (info, LoRARequest(lora_name=str(path), lora_int_id=len(self._adapters) + 1,
                                                      lora_path=str(path)))
        return self._adapters[path][1]

    def backend(self, adapter: str | Path | None = None, **options: Any) -> VLLMBackend:
        """A backend view on this engine whose requests carry ``adapter``."""
        return VLLMBackend(self, adapter=adapter, **options)

    # -- lifecycle --------------------------------------------------------------------------
    def next_id(self) -> str:
        return f"kp-{next(self._ids)}"

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def close(self) -> None:
        """Shut the engine down (idempotent)."""
        self._finalizer()

    def __enter__(self) -> VLLMEngine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _shutdown(llm, scope: EngineProcessScope) -> None:
    try:
        llm.llm_engine.engine_core.shutdown()
    finally:
        scope.close()


def _merged_settings(settings: VLLMSettings | None, fields: dict[str, Any]) -> VLLMSettings:
    """``settings`` with ``fields`` (the registry's keyword arguments) on top, validated."""
    from pydantic import ValidationError

    from knowpack.schema import invalid

    try:
        return VLLMSettings.model_validate({**(settings or VLLMSettings()).model_dump(), **fields})
    except ValidationError as exc:
        raise invalid("vLLM settings", exc, hint="see VLLMSettings for the engine's options") from None


@dataclass
class _Job:
    """One knowpack request in the engine: its prompt ids and each answer's tokens so far."""

    request: Request
    prompt_ids: list[int]
    tokens: list[list[int]]
    done: list[bool]
    # vLLM request ids still running for it -> the answer a continuation extends (None: the
    # request's first piece, whose completions carry their own index)
    pieces: dict[str, int | None] = field(default_factory=dict)


@register_backend("vllm")
class VLLMBackend:
    """The probe's backend protocol on a ``VLLMEngine``.

    Built by the registry (``get_backend("vllm", loaded, adapter=…, **settings)``) it owns a new
    engine; built by ``engine.backend()`` or ``with_adapter`` it shares one. ``stop_at_newline``:
    stop once the answer line is complete (off: run to EOS / ``max_new_tokens``).
    ``batch_size``, ``cache_prefixes`` and ``engine_config`` are accepted for the registry's
    common signature: vLLM batches by its own budget (``max_num_seqs``) and its prefix cache is
    keyed by content and adapter.
    """

    def __init__(self, engine: VLLMEngine | Any, adapter: str | Path | None = None, *,
                 settings: VLLMSettings | None = None, stop_at_newline: bool = True, batch_size: int = 32,
                 cache_prefixes: bool = True, engine_config: Any = None, **setting_fields: Any):
        del engine_config  # the transformers engine's scheduling knobs; vLLM schedules by its own settings
        self.owns_engine = not isinstance(engine, VLLMEngine)
        if self.owns_engine:
            settings = _merged_settings(settings, setting_fields)
            if adapter is not None and str(adapter) not in settings.adapters:
                settings.adapters.append(str(adapter))  # sizes max_lora_rank from it
            engine = VLLMEngine(engine, settings)
        elif setting_fields or settings is not None:
            raise KnowpackError("engine settings cannot change on a running engine",
                                hint="start another VLLMEngine with those settings")
        self.engine: VLLMEngine = engine
        self.tokenizer = engine.tokenizer
        self.model_hash = engine.model_hash
        self.adapter = None if adapter is None else str(adapter)
        self.lora = engine.lora_request(adapter)
        self.stop_at_newline = stop_at_newline
        self.max_rows = engine.settings.max_num_seqs
        # The engine's own limit (max_model_len), which a request may not exceed: the probe's
        # pre-check (knowpack.probe.limits) refuses too-long prompts with it before any work.
        self.context_length = int(engine.settings.max_model_len)
        self.tokens_processed = 0  # prompt tokens sent + generated (the prefix cache skips some)
        self.forward_passes = 0  # engine steps
        self._encoded: dict[str, list[int]] = {}

    def with_adapter(self, adapter: str | Path | None) -> VLLMBackend:
        """The same engine, serving ``adapter`` (None: the base model); checked before use."""
        return VLLMBackend(self.engine, adapter, stop_at_newline=self.stop_at_newline)

    def render(self, messages: list[dict[str, str]]) -> str:
        """Render chat messages with the model's chat template, generation prompt appended."""
        return render_chat(self.tokenizer, messages, add_generation_prompt=True)

    def close(self) -> None:
        """Shut the engine down if this backend started it."""
        if self.owns_engine:
            self.engine.close()

    def __enter__(self) -> VLLMBackend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- protocol -------------------------------------------------------------------------
    def greedy(self, prompts: list[str], max_new_tokens: int) -> list[str]:
        """One greedy answer per prompt."""
        feed = ListFeed([Request(p) for p in prompts])
        self.stream(feed, max_new_tokens=max_new_tokens)
        return [texts[0] for texts in feed.answers()]

    def sample(self, prompts: list[str], n: int, *, temperature: float, top_k: int,
               max_new_tokens: int, seeds: list[int]) -> list[list[str]]:
        """``n`` samples per prompt; the samples of prompt i depend on ``seeds[i]`` only."""
        if len(seeds) != len(prompts):
            raise ValueError("sample() needs one seed per prompt")
        if n <= 0:
            return [[] for _ in prompts]
        feed = ListFeed([Request(p, samples=n, seed=seed) for p, seed in zip(prompts, seeds)])
        self.stream(feed, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k)
        return feed.answers()

    def stream(self, feed, *, max_new_tokens: int, temperature: float = 1.0, top_k: int = 0) -> None:
        """Serve ``feed`` with vLLM's continuous batching: new requests join whenever half of the
        row budget is free; requests the feed no longer wants are aborted."""
        if self.engine.closed:
            raise KnowpackError("this vLLM engine has been shut down", hint="start a new VLLMEngine")
        engine = self.engine.llm.llm_engine
        settings = (max_new_tokens, temperature, top_k)
        jobs: dict[str, _Job] = {}  # vLLM request id -> its job
        rows = 0
        try:
            while True:
                if rows <= self.max_rows // 2:
                    for request in feed.take(self.max_rows - rows, True):
                        rows += self._submit_new(engine, jobs, request, settings)
                if not engine.has_unfinished_requests():
                    if not jobs:
                        return
                    raise RuntimeError("vLLM finished with knowpack requests still open")
                for output in engine.step():
                    if output.finished:
                        rows -= self._collect(engine, jobs, output, feed, settings)
                self.forward_passes += 1
                rows -= self._drop_unwanted(engine, jobs, feed)
        except BaseException:
            live = {piece for job in jobs.values() for piece in job.pieces}
            if live and not self.engine.closed:
                engine.abort_request(sorted(live))  # the engine keeps serving the next call
            raise

    # -- engine ---------------------------------------------------------------------------
    def _encode(self, prompt: str) -> list[int]:
        from knowpack.probe.backends.hf import encode_prompts

        if prompt not in self._encoded:
            if len(self._encoded) > 4096:
                self._encoded.clear()
            self._encoded[prompt] = encode_prompts(self.tokenizer, [prompt])[0]
        return self._encoded[prompt]

    def _params(self, request: Request, n: int, seed: int | None, budget: int, settings: tuple):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        _, temperature, top_k = settings
        stops = set(self.engine.eos_ids) | (set(self.engine.newline_ids) if self.stop_at_newline else set())
        common = {"n": n, "max_tokens": budget, "stop_token_ids": sorted(stops), "detokenize": False,
                  "output_kind": RequestOutputKind.FINAL_ONLY, "skip_special_tokens": True}
        if not request.samples:
            return SamplingParams(temperature=0.0, **common)
        return SamplingParams(temperature=temperature, top_k=top_k if top_k else 0, top_p=1.0,
                              seed=seed & _SEED_MASK, **common)

    def _add(self, engine, jobs: dict[str, _Job], job: _Job, params, index: int | None = None) -> None:
        from vllm.inputs import TokensPrompt

        piece = self.engine.next_id()
        tokens = [] if index is None else job.tokens[index]
        engine.add_request(piece, TokensPrompt(prompt_token_ids=job.prompt_ids + tokens), params,
                           lora_request=self.lora)
        jobs[piece] = job
        job.pieces[piece] = index

    def _submit_new(self, engine, jobs: dict[str, _Job], request: Request, settings: tuple) -> int:
        """Send a knowpack request to the engine (its samples as one n-sample request); its rows."""
        prompt_ids = self._encode(request.prompt)
        if len(prompt_ids) + 1 > self.engine.settings.max_model_len:
            raise KnowpackError(f"a prompt of {len(prompt_ids)} tokens does not fit the vLLM engine's "
                                f"max_model_len {self.engine.settings.max_model_len}",
                                hint="start the engine with a larger VLLMSettings.max_model_len")
        job = _Job(request, prompt_ids, [[] for _ in range(request.rows)], [False] * request.rows)
        self._add(engine, jobs, job, self._params(request, request.rows, request.seed, settings[0], settings))
        self.tokens_processed += len(prompt_ids)
        return request.rows

    def _collect(self, engine, jobs: dict[str, _Job], output, feed, settings: tuple) -> int:
        """Take a finished vLLM request's answers; continue those whose answer line is still
        empty; hand finished knowpack requests to the feed. Returns the rows freed."""
        job = jobs.pop(output.request_id, None)
        if job is None:  # aborted meanwhile
            return 0
        slot = job.pieces.pop(output.request_id)
        max_new_tokens = settings[0]
        freed = 0
        for completion in output.outputs:
            index = completion.index if slot is None else slot
            tokens = job.tokens[index]
            tokens.extend(int(t) for t in completion.token_ids)
            self.tokens_processed += len(completion.token_ids)
            if tokens and tokens[-1] in self.engine.eos_ids:
                tokens.pop()  # the transformers engine stops before EOS, never decodes it
                job.done[index] = True
            elif len(tokens) >= max_new_tokens or completion.finish_reason != "stop" \
                    or self._answer_complete(tokens):
                job.done[index] = True
            if job.done[index]:
                freed += 1
            else:
                self._continue(engine, jobs, job, index, settings)
        if all(job.done) and not job.pieces:
            feed.finish(job.request, [self.tokenizer.decode(t, skip_special_tokens=True) for t in job.tokens])
        return freed

    def _answer_complete(self, tokens: list[int]) -> bool:
        from knowpack.probe.backends.hf import span_complete

        return span_complete(self.tokenizer.decode(tokens, skip_special_tokens=True))

    def _continue(self, engine, jobs: dict[str, _Job], job: _Job, index: int, settings: tuple) -> None:
        """Decode answer ``index`` further: it stopped at a newline before any answer text."""
        from knowpack.io import stable_hash

        tokens = job.tokens[index]
        seed = None
        if job.request.samples:  # its own stream: seeded by (request seed, sample, length) only
            seed = int(stable_hash([str(job.request.seed), str(index), str(len(tokens))], length=15), 16)
        self._add(engine, jobs, job, self._params(job.request, 1, seed, settings[0] - len(tokens), settings), index)

    def _drop_unwanted(self, engine, jobs: dict[str, _Job], feed) -> int:
        """Abort the engine requests of knowpack requests whose answers can no longer matter."""
        unwanted = {id(job): job for job in jobs.values() if not feed.wanted(job.request)}
        freed = 0
        for job in unwanted.values():
            pieces = sorted(job.pieces)
            engine.abort_request(pieces)
            for piece in pieces:
                jobs.pop(piece, None)
            job.pieces.clear()
            freed += job.done.count(False)
        return freed


@register_backend("auto")
def auto_backend(loaded, adapter: str | None = None, **options: Any):
    """vLLM when it is installed and a GPU is present, else the transformers engine.

    An adapter vLLM cannot serve (DoRA, VeRA: vLLM applies plain LoRA deltas only) goes to the
    transformers engine too, with the reason logged: ``auto`` must give numbers, not an error.
    """
    from knowpack.probe.backends.registry import get_backend

    if vllm_importable() and gpu_present():
        try:
            if adapter is not None:
                read_adapter(adapter)
        except KnowpackError as exc:
            logger.warning("%s: probing it with the transformers engine instead", exc.message)
        else:
            return VLLMBackend(loaded, adapter, **options)
    return get_backend("hf", loaded, adapter=adapter, **{k: v for k, v in options.items()
                                                        if k in ("batch_size", "stop_at_newline", "cache_prefixes",
                                                                 "engine_config")})
