"""The transformers backend: batched greedy/sampled generation with a hand-rolled decode loop.

Why not ``model.generate``: the probe needs three things it does not offer together —
1. the few-shot prefix shared by a whole round of prompts is prefilled once and its KV cache
   reused by every batch (prefill of ≈145-token prompts is most of the cost on CPU);
2. a sequence stops as soon as its answer span (first non-empty line) is complete, and finished
   rows leave the batch instead of decoding padding;
3. sampled answers come from a per-sequence random generator, so a request's samples do not
   depend on its batch mates (needed for early exit and byte-identical resumes).
Only the last position goes through the LM head (``logits_to_keep=1``).
"""

from __future__ import annotations

import json
import weakref
from pathlib import Path
from typing import Any

import torch

from knowpack.errors import KnowpackError
from knowpack.io import stable_hash
from knowpack.models.loading import render_chat
from knowpack.probe.backends.base import register_backend
from knowpack.probe.matching import answer_span

_NEWLINE_TABLES: "weakref.WeakKeyDictionary[Any, torch.Tensor]" = weakref.WeakKeyDictionary()


def encode_prompts(tokenizer, prompts: list[str]) -> list[list[int]]:
    """Token ids of rendered chat prompts.

    Chat templates usually render the BOS token themselves; it is added only when the rendered
    text does not already start with it (adding it twice changes the answers).
    """
    bos = getattr(tokenizer, "bos_token", None)
    out = []
    for prompt in prompts:
        add = bool(bos) and not prompt.startswith(bos)
        out.append(tokenizer(prompt, add_special_tokens=add)["input_ids"])
    return out


def newline_token_mask(tokenizer, vocab_size: int) -> torch.Tensor:
    """Bool mask over the vocabulary: tokens whose decoded text contains a newline."""
    table = None
    try:
        table = _NEWLINE_TABLES.get(tokenizer)
    except TypeError:
        pass
    if table is None or table.numel() != vocab_size:
        n = min(len(tokenizer), vocab_size)
        texts = tokenizer.batch_decode([[i] for i in range(n)])
        table = torch.zeros(vocab_size, dtype=torch.bool)
        table[:n] = torch.tensor(["\n" in t for t in texts], dtype=torch.bool)
        try:
            _NEWLINE_TABLES[tokenizer] = table
        except TypeError:
            pass
    return table


def eos_token_ids(model, tokenizer) -> set[int]:
    """Every id that ends a generation: the tokenizer's EOS and the generation config's."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(gen_eos, int):
        ids.add(gen_eos)
    elif gen_eos:
        ids.update(int(i) for i in gen_eos)
    return ids


def span_complete(text: str) -> bool:
    """The answer span can no longer change: a non-empty answer line is followed by a newline."""
    head, sep, _ = text.rpartition("\n")
    return bool(sep) and bool(answer_span(head))


def _check_adapter_manifest(adapter: Path, model_hash: str) -> None:
    # knowpack's trainer stamps the base model hash into the adapter's manifest; when present it
    # catches an adapter trained on a same-shaped but different model, which PEFT cannot see.
    for folder in (adapter, adapter.parent):
        manifest = folder / "manifest.json"
        if not manifest.is_file():
            continue
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return
        expected = data.get("model_hash") or (data.get("inputs") or {}).get("model_hash")
        if expected and expected != model_hash:
            raise KnowpackError(
                f"adapter {adapter} was trained on model {expected}, not on the loaded model {model_hash}",
                hint="pass the --model the adapter was trained on")
        return


def attach_adapter(model, adapter: str | None, *, model_hash: str | None = None):
    """Wrap ``model`` with the PEFT adapter in folder ``adapter`` (or return it unchanged).

    Raises KnowpackError when the folder is not an adapter or does not fit the model (other
    architecture, other shapes, missing target modules). Note: PEFT injects the adapter layers
    into ``model`` in place.
    """
    if adapter is None:
        return model
    path = Path(adapter).expanduser()
    if not (path / "adapter_config.json").is_file():
        raise KnowpackError(f"{path} is not a PEFT adapter folder (no adapter_config.json)",
                            hint="pass a folder written by `knowpack train` or `save_pretrained`")
    from peft import PeftModel

    if isinstance(model, PeftModel):
        raise KnowpackError("the model already carries an adapter; pass either the wrapped model or --adapter")
    if model_hash:
        _check_adapter_manifest(path, model_hash)
    try:
        wrapped = PeftModel.from_pretrained(model, str(path), is_trainable=False)
    except Exception as exc:  # PEFT raises ValueError/RuntimeError/KeyError for misfits
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise KnowpackError(f"adapter {path} does not fit this model: {first[:300]}",
                            hint="use the base model the adapter was trained on") from None
    wrapped.eval()
    return wrapped


def _seed_int(*parts: object) -> int:
    return int(stable_hash([str(p) for p in parts], length=15), 16)


def _common_prefix_len(seqs: list[list[int]]) -> int:
    first = seqs[0]
    limit = min(len(s) for s in seqs) - 1  # every row keeps ≥1 own token, whose logits we need
    n = 0
    while n < limit and all(s[n] == first[n] for s in seqs):
        n += 1
    return n


@register_backend("hf")
class HFBackend:
    """Batched generation on a transformers causal LM (optionally wrapped by PEFT).

    ``loaded``: a LoadedModel; its ``model`` may already be a ``PeftModel`` (the trainer probes
    its in-memory adapter). ``batch_size``: sequences per forward pass. ``stop_at_newline``:
    stop once the answer line is complete (off = run to EOS / ``max_new_tokens``).
    ``sample_batch_size``: sequences per forward pass while sampling (default 4 × batch_size,
    since the n samples of a request share one prefill and are cheap to decode together).
    ``cache_prefixes``: keep shared-prefix KV caches across calls. Only valid while the weights
    do not change (the probe runner turns it on for one run); off by default so a backend held
    by a trainer never serves stale caches.
    """

    _MAX_CACHED_PREFIXES = 32

    def __init__(self, loaded, adapter: str | None = None, *, batch_size: int = 32,
                 stop_at_newline: bool = True, sample_batch_size: int | None = None,
                 prefix_reuse: bool = True, cache_prefixes: bool = False):
        self.tokenizer = loaded.tokenizer
        self.model = attach_adapter(loaded.model, adapter, model_hash=getattr(loaded, "model_hash", None))
        self.batch_size = max(1, int(batch_size))
        self.sample_batch_size = max(1, int(sample_batch_size or 4 * self.batch_size))
        self.stop_at_newline = stop_at_newline
        self.prefix_reuse = prefix_reuse
        self._prefixes: dict[tuple[int, ...], list] | None = {} if cache_prefixes else None
        self.eos_ids = eos_token_ids(self.model, self.tokenizer)
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else min(self.eos_ids or {0}))
        self.device = next(self.model.parameters()).device
        vocab = self.model.get_output_embeddings().weight.shape[0] if hasattr(
            self.model, "get_output_embeddings") and self.model.get_output_embeddings() is not None \
            else len(self.tokenizer)
        self._newline = newline_token_mask(self.tokenizer, vocab).tolist()
        self.model_hash = getattr(loaded, "model_hash", None)
        self.tokens_processed = 0  # prompt + generated tokens run through the model (for MFU)

    def render(self, messages: list[dict[str, str]]) -> str:
        """Render chat messages with the model's chat template, generation prompt appended."""
        return render_chat(self.tokenizer, messages, add_generation_prompt=True)

    # -- protocol -------------------------------------------------------------------------
    def greedy(self, prompts: list[str], max_new_tokens: int) -> list[str]:
        """One greedy answer per prompt (argmax decoding)."""
        return [texts[0] for texts in self._generate(prompts, 1, max_new_tokens, sampling=None)]

    def sample(self, prompts: list[str], n: int, *, temperature: float, top_k: int,
               max_new_tokens: int, seeds: list[int]) -> list[list[str]]:
        """``n`` samples per prompt at ``temperature`` with ``top_k``; sample i of request r
        draws from a generator seeded by (seeds[r], i) only."""
        if len(seeds) != len(prompts):
            raise ValueError("sample() needs one seed per prompt")
        if n <= 0:
            return [[] for _ in prompts]
        return self._generate(prompts, n, max_new_tokens,
                              sampling={"temperature": temperature, "top_k": top_k, "seeds": seeds})

    # -- internals ------------------------------------------------------------------------
    def _generate(self, prompts: list[str], n: int, max_new_tokens: int,
                  sampling: dict | None) -> list[list[str]]:
        if not prompts:
            return []
        ids = encode_prompts(self.tokenizer, prompts)
        was_training = self.model.training
        self.model.eval()  # dropout off even when the trainer hands over a model in train mode
        try:
            with torch.inference_mode():
                prefix_len = _common_prefix_len(ids) if self.prefix_reuse else 0
                prefix = self._prefix(tuple(ids[0][:prefix_len])) if prefix_len else None
                # Similar lengths share a batch (less padding); the order is a pure function of
                # the prompts, so a given request always meets the same batch mates.
                order = sorted(range(len(ids)), key=lambda i: (len(ids[i]), i))
                per_batch = max(1, (self.sample_batch_size if sampling else self.batch_size) // n)
                results: list[list[str]] = [[] for _ in prompts]
                for start in range(0, len(order), per_batch):
                    batch = order[start:start + per_batch]
                    seeds = None
                    if sampling:
                        seeds = [_seed_int(sampling["seeds"][r], i) for r in batch for i in range(n)]
                    texts = self._run_batch([ids[r][prefix_len:] for r in batch], prefix, prefix_len,
                                            n, max_new_tokens, sampling, seeds)
                    for k, r in enumerate(batch):
                        results[r] = texts[k * n:(k + 1) * n]
                return results
        finally:
            self.model.train(was_training)

    def _forward(self, input_ids, attention_mask, position_ids, cache):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         cache=cache, use_cache=True, logits_to_keep=1)
        self.tokens_processed += int(attention_mask.shape[0] * input_ids.shape[1])
        return out.logits[:, -1, :].float()

    def _new_cache(self):
        from transformers import DynamicCache

        config = getattr(self.model, "config", None)
        try:
            return DynamicCache(config=config)
        except TypeError:
            return DynamicCache()

    def _prefix(self, prefix_ids: tuple[int, ...]):
        if self._prefixes is None:
            return self._prefill_prefix(prefix_ids)
        if prefix_ids not in self._prefixes:
            if len(self._prefixes) >= self._MAX_CACHED_PREFIXES:
                self._prefixes.pop(next(iter(self._prefixes)))  # oldest first
            self._prefixes[prefix_ids] = self._prefill_prefix(prefix_ids)
        return self._prefixes[prefix_ids]

    def _prefill_prefix(self, prefix_ids: tuple[int, ...]):
        """KV tensors (per layer) of the shared prefix, computed once for a whole call."""
        cache = self._new_cache()
        input_ids = torch.tensor([list(prefix_ids)], device=self.device)
        mask = torch.ones_like(input_ids)
        positions = torch.arange(len(prefix_ids), device=self.device).unsqueeze(0)
        self._forward(input_ids, mask, positions, cache)
        return [(layer.keys, layer.values) for layer in cache.layers]

    def _run_batch(self, suffixes: list[list[int]], prefix, prefix_len: int, n: int,
                   max_new_tokens: int, sampling: dict | None, seeds: list[int] | None) -> list[str]:
        b, width = len(suffixes), max(len(s) for s in suffixes)
        input_ids = torch.full((b, width), self.pad_id, dtype=torch.long)
        suffix_mask = torch.zeros((b, width), dtype=torch.long)
        for row, suffix in enumerate(suffixes):  # left padding: answers start at the same column
            input_ids[row, width - len(suffix):] = torch.tensor(suffix)
            suffix_mask[row, width - len(suffix):] = 1
        # Layout [shared prefix | padding | own suffix]; positions continue after the prefix.
        attention = torch.cat([torch.ones((b, prefix_len), dtype=torch.long), suffix_mask], dim=1)
        positions = prefix_len + (suffix_mask.cumsum(dim=1) - 1).clamp(min=0)
        cache = self._new_cache()
        if prefix is not None:
            for layer_idx, (keys, values) in enumerate(prefix):
                cache.update(keys.expand(b, -1, -1, -1), values.expand(b, -1, -1, -1), layer_idx)
        logits = self._forward(input_ids.to(self.device), attention.to(self.device),
                               positions.to(self.device), cache)
        last_pos = positions[:, -1]
        if n > 1:  # n samples of one request share its prefill
            logits = logits.repeat_interleave(n, dim=0)
            attention = attention.repeat_interleave(n, dim=0)
            last_pos = last_pos.repeat_interleave(n, dim=0)
            cache.batch_repeat_interleave(n)
        rows = b * n
        generators = None
        if sampling:
            generators = []
            for seed in seeds:
                g = torch.Generator()
                g.manual_seed(seed)
                generators.append(g)
        tokens: list[list[int]] = [[] for _ in range(rows)]
        alive = list(range(rows))  # original row index of each live batch row
        for step in range(max_new_tokens):
            chosen = self._pick(logits, sampling, [generators[r] for r in alive] if generators else None)
            keep = []
            for k, r in enumerate(alive):
                tok = chosen[k]
                if tok in self.eos_ids:
                    continue
                tokens[r].append(tok)
                if self.stop_at_newline and self._newline[tok] and span_complete(
                        self.tokenizer.decode(tokens[r], skip_special_tokens=True)):
                    continue
                keep.append(k)
            if not keep or step == max_new_tokens - 1:
                break
            if len(keep) < len(alive):
                index = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(index)
                attention, last_pos = attention[keep], last_pos[keep]
                alive = [alive[k] for k in keep]
            next_ids = torch.tensor([[tokens[r][-1]] for r in alive], device=self.device)
            attention = torch.cat([attention, torch.ones((len(alive), 1), dtype=torch.long)], dim=1)
            last_pos = last_pos + 1
            logits = self._forward(next_ids, attention.to(self.device),
                                   last_pos.unsqueeze(1).to(self.device), cache)
        return [self.tokenizer.decode(t, skip_special_tokens=True) for t in tokens]

    @staticmethod
    def _pick(logits: torch.Tensor, sampling: dict | None, generators) -> list[int]:
        if sampling is None:
            return logits.argmax(dim=-1).tolist()
        scaled = logits / sampling["temperature"]
        k = sampling["top_k"]
        if k and k < scaled.shape[-1]:
            values, index = scaled.topk(k, dim=-1)  # sorted, deterministic
        else:
            values, index = scaled, None
        cdf = torch.softmax(values, dim=-1).cumsum(dim=-1)
        # One uniform per row from that row's own generator: inverse-CDF sampling.
        u = torch.tensor([[torch.rand(1, generator=g).item()] for g in generators], dtype=cdf.dtype)
        choice = torch.searchsorted(cdf.cpu(), u * cdf[:, -1:].cpu()).clamp(max=values.shape[-1] - 1)
        if index is not None:
            choice = index.cpu().gather(1, choice)
        return choice.squeeze(1).tolist()


def naive_generate(loaded, prompts: list[str], *, max_new_tokens: int = 32, samples: int = 0,
                   temperature: float = 0.5, top_k: int = 40) -> list[dict[str, Any]]:
    """Reference implementation: one ``model.generate`` call per prompt, EOS stop only.

    Used by tests and the benchmark as ground truth for the fast path; returns per prompt
    ``{"greedy": text, "samples": [texts]}`` (no batching, no early exit, no prefix reuse).
    """
    model, tokenizer = loaded.model, loaded.tokenizer
    out = []
    with torch.inference_mode():
        for ids in encode_prompts(tokenizer, prompts):
            input_ids = torch.tensor([ids], device=next(model.parameters()).device)
            mask = torch.ones_like(input_ids)
            g = model.generate(input_ids=input_ids, attention_mask=mask, do_sample=False,
                               max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                               temperature=None, top_p=None, top_k=None)
            row: dict[str, Any] = {"greedy": tokenizer.decode(g[0, len(ids):], skip_special_tokens=True)}
            if samples:
                s = model.generate(input_ids=input_ids, attention_mask=mask, do_sample=True,
                                   temperature=temperature, top_k=top_k, top_p=None,
                                   num_return_sequences=samples, max_new_tokens=max_new_tokens,
                                   pad_token_id=tokenizer.pad_token_id)
                row["samples"] = [tokenizer.decode(x[len(ids):], skip_special_tokens=True) for x in s]
            out.append(row)
    return out
