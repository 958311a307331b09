"""Benchmark: the probe's fast path against a naive loop, in one process, on the default model.

(a) naive — one ``model.generate`` per prompt: greedy (EOS stop only, 32 new tokens), then
    ``num_return_sequences=n`` samples; no batching, no early exit, no prefix reuse.
(b) ``run_probe`` — continuous batching, stop at the end of the answer line, shared-prefix KV
    reuse, early exit, samples retracing the greedy path; run --fast-runs times, median counts.

Checks that greedy answer spans are identical wherever both computed them and that categories
agree wherever greedy decides them (HighlyKnown/MaybeKnown); the sample-decided split
WeaklyKnown/Unknown is random in both. Prints facts/s, model-FLOPs utilisation (tokens run
through the model × 2 × parameters ÷ wall time, over a large fp32 matmul's measured FLOP/s)
and, last, the speedup.

``--backend vllm``: instead of the naive loop, the same probe through knowpack's transformers
engine and through a vLLM engine (fp32, in the vLLM environment: ``make bench-vllm``). vLLM pins
an older transformers than knowpack's main environment, so the transformers side runs in its own
process under ``--hf-python`` (default: the repository's .venv); each side is timed inside its
own process, model loading and engine start-up excluded. Prints both facts/s, whether greedy
answer spans and the greedy-decided categories are identical, and, last, knowpack's engine's
speed over vLLM's.

    python bench/probe.py [--facts default|FILE] [--n 32] [--prompts 4] [--samples 4] [--fast-runs 3]
    .venv-vllm/bin/python bench/probe.py --backend vllm [--n 32] [--hf-python .venv/bin/python]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def matmul_flops(size: int = 2048, repeats: int = 6) -> float:
    """Measured fp32 FLOP/s of a large square matmul (the machine's practical ceiling)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size ** 3 * repeats / (time.perf_counter() - start)


def naive_probe(loaded, facts, shot_sets, config) -> tuple[dict, int]:
    """Greedy + samples for every fact and prompt, one ``generate`` call each; returns texts and
    the number of token positions the model computed."""
    from knowpack.models.loading import render_chat
    from knowpack.probe.backends.hf import encode_prompts
    from knowpack.probe.prompts import fewshot_messages

    model, tok = loaded.model, loaded.tokenizer
    out, tokens = {}, 0
    with torch.inference_mode():
        for fact in facts:
            greedy, samples = [], []
            for shots in shot_sets:
                prompt = render_chat(tok, fewshot_messages(fact.question, shots), add_generation_prompt=True)
                ids = torch.tensor(encode_prompts(tok, [prompt]))
                mask = torch.ones_like(ids)
                g = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, temperature=None,
                                   top_p=None, top_k=None, max_new_tokens=config.max_new_tokens,
                                   pad_token_id=tok.pad_token_id)
                greedy.append(tok.decode(g[0, ids.shape[1]:], skip_special_tokens=True))
                tokens += g.shape[1] - 1
                if config.samples:
                    s = model.generate(input_ids=ids, attention_mask=mask, do_sample=True,
                                       temperature=config.temperature, top_k=config.top_k, top_p=None,
                                       num_return_sequences=config.samples,
                                       max_new_tokens=config.max_new_tokens, pad_token_id=tok.pad_token_id)
                    samples.append([tok.decode(x[ids.shape[1]:], skip_special_tokens=True) for x in s])
                    tokens += config.samples * (s.shape[1] - 1)
            out[fact.id] = {"greedy": greedy, "samples": samples}
    return out, tokens


def conclude(ok: bool, mismatch: str, last_line: str) -> None:
    """Print the result line last (what the benchmark reports) and exit non-zero on a mismatch."""
    if not ok:
        print(mismatch, file=sys.stderr)
    print(last_line)
    if not ok:
        sys.exit(1)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--facts", default="default", help="fact file, or `default`")
    parser.add_argument("--n", type=int, default=32, help="facts to probe")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--model", default="default")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--fast-runs", type=int, default=3, help="runs of the fast path (its median counts)")
    parser.add_argument("--backend", choices=("naive", "vllm"), default="naive",
                        help="what knowpack's engine is compared with")
    parser.add_argument("--hf-python", default=str(Path(__file__).resolve().parents[1] / ".venv" / "bin" / "python"),
                        help="--backend vllm: the Python of knowpack's main environment")
    parser.add_argument("--kv-cache-gib", type=float, default=1.0, help="--backend vllm: vLLM's KV cache")
    parser.add_argument("--emit", choices=("hf",), help=argparse.SUPPRESS)  # internal: one side, as JSON
    return parser.parse_args()


def probe_setup(args):
    """(config, facts probed, the fact list the shots are held out from) of this benchmark."""
    from knowpack.facts.io import read_facts
    from knowpack.probe.config import ProbeConfig
    from knowpack.probe.prompts import select_spread
    from knowpack.probe.runner import plan_shots

    config = ProbeConfig(prompts=args.prompts, shots=4, samples=args.samples, batch_size=args.batch_size)
    all_facts = read_facts(args.facts)
    subset = select_spread(all_facts, min(len(all_facts), args.n + config.prompts * config.shots), seed=0)
    plan = plan_shots(config, subset)
    return config, plan.facts[:args.n], subset, plan


def timed_probe(config, subset, backend, n: int) -> tuple[float, list[dict]]:
    """Seconds and categories.jsonl rows of one probe run through ``backend``."""
    from knowpack.probe.runner import run_probe

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        run_probe(config, subset, backend, Path(tmp), limit=n, progress=False)
        seconds = time.perf_counter() - start
        rows = [json.loads(line) for line in (Path(tmp) / "categories.jsonl").read_text().splitlines()]
    return seconds, rows


def emit_hf(args) -> None:
    """The transformers side of --backend vllm: print its runs as one JSON line."""
    from knowpack.models import load_model
    from knowpack.probe.backends import get_backend

    config, facts, subset, _ = probe_setup(args)
    loaded = load_model(args.model)
    runs, rows, passes = [], None, 0
    for _ in range(args.fast_runs):
        backend = get_backend("hf", loaded, batch_size=config.batch_size, cache_prefixes=True)
        seconds, rows = timed_probe(config, subset, backend, len(facts))
        runs.append(seconds)
        passes = backend.forward_passes
    print(json.dumps({"runs": runs, "rows": rows, "forward_passes": passes, "threads": torch.get_num_threads()}))


def compare_with_vllm(args) -> None:
    """knowpack's transformers engine against vLLM-CPU on the same probe."""
    from knowpack.probe.backends.vllm import VLLMEngine, VLLMSettings

    config, facts, subset, _ = probe_setup(args)
    print(f"{len(facts)} facts × {config.prompts} prompts × (1 greedy + {config.samples} samples), fp32, "
          f"torch threads {torch.get_num_threads()}")
    command = [args.hf_python, __file__, "--emit", "hf", *sys.argv[1:]]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1] / "src"),
                                                        os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        print(done.stderr[-3000:], file=sys.stderr)
        sys.exit(f"the transformers side failed under {args.hf_python}")
    hf = json.loads(done.stdout.strip().splitlines()[-1])
    start = time.perf_counter()
    with VLLMEngine(args.model, VLLMSettings(dtype="float32", kv_cache_gib=args.kv_cache_gib)) as engine:
        startup = time.perf_counter() - start
        vllm_runs, vllm_rows = [], None
        for _ in range(args.fast_runs):
            backend = engine.backend()
            seconds, vllm_rows = timed_probe(config, subset, backend, len(facts))
            vllm_runs.append(seconds)
    spans, span_diff, cats, cat_diff = 0, 0, 0, 0
    for ours, theirs in zip(hf["rows"], vllm_rows):
        for a, b in zip(ours["greedy_answers"], theirs["greedy_answers"]):
            spans += 1
            span_diff += a != b
        greedy_decided = {"HighlyKnown", "MaybeKnown"}
        if config.samples == 0 or ours["category"] in greedy_decided or theirs["category"] in greedy_decided:
            cats += 1
            cat_diff += ours["category"] != theirs["category"]
    n = len(facts)
    hf_s, vllm_s = statistics.median(hf["runs"]), statistics.median(vllm_runs)
    print(f"greedy answer spans compared: {spans}, different: {span_diff}")
    print(f"{'categories' if config.samples == 0 else 'greedy-decided categories'} compared: {cats}, "
          f"different: {cat_diff}")
    print(f"knowpack (transformers): {hf_s:.1f} s (median of {', '.join(f'{t:.1f}' for t in hf['runs'])}), "
          f"{n / hf_s:.3f} facts/s, {hf['forward_passes']} forward passes, torch threads {hf['threads']}")
    print(f"vLLM-CPU:                {vllm_s:.1f} s (median of {', '.join(f'{t:.1f}' for t in vllm_runs)}), "
          f"{n / vllm_s:.3f} facts/s, {backend.forward_passes} engine steps; engine start {startup:.1f} s")
    conclude(span_diff == 0 and cat_diff == 0, "MISMATCH between the transformers engine and vLLM",
             f"probe speedup vs vllm-cpu: {vllm_s / hf_s:.2f}x")


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.emit == "hf":
        emit_hf(args)
        return
    if args.backend == "vllm":
        compare_with_vllm(args)
        return

    from knowpack.models import load_model
    from knowpack.probe.backends import get_backend
    from knowpack.probe.matching import answer_span, is_correct
    from knowpack.probe.runner import run_probe
    from knowpack.probe.slick import categorize

    config, facts, subset, plan = probe_setup(args)
    loaded = load_model(args.model)
    params = sum(p.numel() for p in loaded.model.parameters())
    peak = matmul_flops()
    print(f"model {loaded.info['spec']} ({params / 1e6:.1f} M params), {len(facts)} facts × {config.prompts} "
          f"prompts × (1 greedy + {config.samples} samples), torch threads {torch.get_num_threads()}")
    print(f"fp32 matmul peak: {peak / 1e9:.1f} GFLOP/s")

    start = time.perf_counter()
    naive, naive_tokens = naive_probe(loaded, facts, plan.shot_sets, config)
    naive_s = time.perf_counter() - start

    # The fast side takes seconds, where machine noise (±15 % here) is large; it runs
    # --fast-runs times from scratch (new backend, nothing cached) and counts with its median.
    fast_runs, outputs = [], []
    for _ in range(args.fast_runs):
        backend = get_backend("hf", loaded, batch_size=config.batch_size, cache_prefixes=True)
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            run_probe(config, subset, backend, Path(tmp), limit=args.n, progress=False)
            fast_runs.append(time.perf_counter() - start)
            outputs.append((Path(tmp) / "categories.jsonl").read_text())
    if len(set(outputs)) != 1:
        print("fast runs disagree with each other", file=sys.stderr)
        sys.exit(1)
    fast_s = statistics.median(fast_runs)
    rows = [json.loads(line) for line in outputs[0].splitlines()]

    span_mismatch, span_total, cat_checked, cat_mismatch = 0, 0, 0, 0
    by_id = {f.id: f for f in facts}
    fast_counts: dict[str, int] = {}
    for row in rows:
        fact, ref = by_id[row["id"]], naive[row["id"]]
        for j, answer in enumerate(row["greedy_answers"]):
            span_total += 1
            span_mismatch += answer != answer_span(ref["greedy"][j])
        flags = [is_correct(t, fact.aliases, config.match) for t in ref["greedy"]]
        sampled = sum(is_correct(t, fact.aliases, config.match) for s in ref["samples"] for t in s)
        naive_cat = categorize(flags, sampled, config.prompts * config.samples)
        fast_counts[row["category"]] = fast_counts.get(row["category"], 0) + 1
        if naive_cat in ("HighlyKnown", "MaybeKnown") or row["category"] in ("HighlyKnown", "MaybeKnown"):
            cat_checked += 1
            cat_mismatch += naive_cat != row["category"]
    print(f"greedy answer spans compared: {span_total}, different: {span_mismatch}")
    print(f"greedy-decided categories compared: {cat_checked}, different: {cat_mismatch}")
    print(f"fast categories: {json.dumps(fast_counts, sort_keys=True)}")
    n = len(facts)
    naive_mfu = naive_tokens * 2 * params / naive_s / peak
    fast_mfu = backend.tokens_processed * 2 * params / fast_s / peak
    print(f"naive: {naive_s:.1f} s, {n / naive_s:.3f} facts/s, {naive_tokens} tokens, MFU {naive_mfu:.1%}")
    print(f"fast:  {fast_s:.1f} s (median of {', '.join(f'{t:.1f}' for t in fast_runs)}), {n / fast_s:.3f} facts/s, "
          f"{backend.tokens_processed} tokens, {backend.forward_passes} forward passes, MFU {fast_mfu:.1%}")
    conclude(span_mismatch == 0 and cat_mismatch == 0, "MISMATCH between naive and fast path",
             f"probe speedup vs naive: {naive_s / fast_s:.1f}x")


if __name__ == "__main__":
    main()
