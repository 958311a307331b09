"""Deterministic scripted backends for probe tests (no model needed)."""

from __future__ import annotations

import hashlib
import random

import pytest

from knowpack.facts.schema import Fact


def fact_set(n: int = 40, relations: int = 4) -> list[Fact]:
    """Facts whose question says how the scripted backend answers: hk/mk/wk/uk/ref."""
    kinds = ["hk", "mk", "wk", "uk", "ref"]
    return [Fact(id=f"f{i:03d}", subject=f"Subject {i}", relation=f"rel{i % relations}",
                 question=f"[{kinds[i % 5]}] What is item {i}?", answer=f"Answer{i}",
                 tier=("head", "torso", "tail")[i % 3]) for i in range(n)]


def _target(prompt: str) -> tuple[str, str]:
    question = prompt.rsplit("Question: ", 1)[1].split("\n")[0]
    kind = question[1:question.index("]")]
    number = question.rsplit(" ", 1)[1].rstrip("?")
    return kind, f"Answer{number}"


def _h(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


class ScriptedBackend:
    """hk: always right; mk: right on about half of the prompts; wk: greedy wrong, 1 in 8 samples
    right; uk: always wrong; ref: refuses. Answers depend only on the prompt (and seed)."""

    # Every instance answers alike, so they share one identity (a resumed run may switch instances).
    model_hash = "scripted-backend"

    def __init__(self):
        self.greedy_calls = 0
        self.sample_calls = 0
        self.generated = 0

    def greedy(self, prompts, max_new_tokens):
        self.greedy_calls += 1
        self.generated += len(prompts)
        out = []
        for p in prompts:
            kind, gold = _target(p)
            right = kind == "hk" or (kind == "mk" and _h(p) % 2 == 0)
            if kind == "ref":
                out.append("Answer: I couldn't find any information about that.\n")
            else:
                out.append(f"Answer: {gold if right else 'Nothing'}\n")
        return out

    def sample(self, prompts, n, *, temperature, top_k, max_new_tokens, seeds):
        self.sample_calls += 1
        self.generated += n * len(prompts)
        out = []
        for p, seed in zip(prompts, seeds):
            kind, gold = _target(p)
            rng = random.Random(seed)
            out.append([f"Answer: {gold if kind == 'wk' and rng.random() < 0.125 else 'Nope'}\n"
                        for _ in range(n)])
        return out


class _TickingFeed:
    def __init__(self, feed, tick):
        self.feed, self.tick = feed, tick

    def take(self, rows, speculative):
        self.tick()
        return self.feed.take(rows, speculative)

    def finish(self, request, texts):
        self.feed.finish(request, texts)

    def wanted(self, request):
        return self.feed.wanted(request)


class CrashingBackend:
    """Wraps a backend and raises on its ``crash_at``-th generation call (a simulated kill)."""

    def __init__(self, inner, crash_at: int):
        self.inner, self.crash_at, self.calls = inner, crash_at, 0

    def _tick(self):
        self.calls += 1
        if self.calls == self.crash_at:
            raise KeyboardInterrupt("simulated kill")

    def __getattr__(self, name):
        attr = getattr(self.inner, name)
        if name == "stream":  # a streaming backend: crash when it asks its feed for work
            def stream(feed, **settings):
                return attr(_TickingFeed(feed, self._tick), **settings)
            return stream
        return attr

    def greedy(self, prompts, max_new_tokens):
        self._tick()
        return self.inner.greedy(prompts, max_new_tokens)

    def sample(self, prompts, n, **kw):
        self._tick()
        return self.inner.sample(prompts, n, **kw)


@pytest.fixture
def one_thread():
    """Run torch on one thread: tiny matmuls gain nothing from two, and on a busy 2-core box
    OpenMP spinning makes them tens of times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
