"""The generation-backend protocol (one small seam, lm-eval style): requests, feeds, rounds.

Backends are found by name in ``registry`` (``knowpack.probe.backends`` hands both on); this
module defines only the protocol, so it imports neither the registry nor any backend.
"""

from __future__ import annotations

import sys
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

__all__ = ["Backend", "ListFeed", "Request", "RequestFeed", "run_feed"]


@runtime_checkable
class Backend(Protocol):
    """Generates answers for rendered prompt strings.

    Both methods must be deterministic per request: the answer to a prompt may not depend on
    which other prompts share its batch (greedy is argmax; ``sample`` draws from per-request
    ``seeds``), which is what makes early exit and resuming leave results unchanged.
    """

    def greedy(self, prompts: list[str], max_new_tokens: int) -> list[str]:
        """One greedy answer per prompt."""
        ...

    def sample(self, prompts: list[str], n: int, *, temperature: float, top_k: int,
               max_new_tokens: int, seeds: list[int]) -> list[list[str]]:
        """``n`` sampled answers per prompt; request ``i`` draws from ``seeds[i]`` only."""
        ...


@dataclass(frozen=True, eq=False)
class Request:
    """One generation request: a greedy answer (``samples == 0``) or ``samples`` sampled answers.

    ``prefix``: text the prompt starts with that many requests share (the few-shot part), so a
    backend may compute it once. ``followup``: on a greedy request, the sampled request for the
    same prompt that may come later; a backend may keep what the samples can reuse (the prompt's
    cache, the greedy path's distributions). ``tag``: the caller's handle. Requests compare by
    identity.
    """

    prompt: str
    samples: int = 0
    seed: int | None = None
    prefix: str | None = None
    followup: Request | None = None
    tag: Any = None

    @property
    def rows(self) -> int:
        """Sequences this request occupies in a batch."""
        return max(1, self.samples)


class RequestFeed(Protocol):
    """Where a streaming backend gets work and returns results.

    ``take(rows, speculative)``: requests ready now, at most ``rows`` sequences in total (but at
    least one when any is ready); with ``speculative`` also requests that may turn out unneeded.
    ``finish(request, texts)``: the answers (one greedy text, or the samples in order).
    ``wanted(request)``: False once a taken request's answer can no longer matter.
    """

    def take(self, rows: int, speculative: bool) -> list[Request]: ...

    def finish(self, request: Request, texts: list[str]) -> None: ...

    def wanted(self, request: Request) -> bool: ...


def run_feed(backend: Backend, feed: RequestFeed, *, max_new_tokens: int, temperature: float = 1.0,
             top_k: int = 0) -> None:
    """Serve every request ``feed`` produces until it has no more.

    A backend with a ``stream`` method (continuous batching) gets the feed itself; any other
    backend is driven in rounds: all requests ready now go into one ``greedy`` call and one
    ``sample`` call per sample count, and their answers may make the next round's requests ready.
    """
    stream = getattr(backend, "stream", None)
    if stream is not None:
        stream(feed, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k)
        return
    while requests := feed.take(sys.maxsize, False):
        greedy = [r for r in requests if r.samples == 0]
        if greedy:
            for request, text in zip(greedy, backend.greedy([r.prompt for r in greedy], max_new_tokens)):
                feed.finish(request, [text])
        by_count: dict[int, list[Request]] = defaultdict(list)
        for request in requests:
            if request.samples:
                by_count[request.samples].append(request)
        for n, group in sorted(by_count.items()):
            drawn = backend.sample([r.prompt for r in group], n, temperature=temperature, top_k=top_k,
                                   max_new_tokens=max_new_tokens, seeds=[r.seed for r in group])
            for request, texts in zip(group, drawn):
                feed.finish(request, texts)


class ListFeed:
    """A fixed list of requests, all ready at once; collects the answers in request order."""

    def __init__(self, requests: list[Request]):
        self.pending = deque(requests)
        self.results: dict[int, list[str]] = {}
        self._index = {id(r): i for i, r in enumerate(requests)}

    def take(self, rows: int, speculative: bool) -> list[Request]:
        taken, used = [], 0
        while self.pending and (not taken or used + self.pending[0].rows <= rows):
            used += self.pending[0].rows
            taken.append(self.pending.popleft())
        return taken

    def finish(self, request: Request, texts: list[str]) -> None:
        self.results[self._index[id(request)]] = texts

    def wanted(self, request: Request) -> bool:
        return True

    def answers(self) -> list[list[str]]:
        """The answers of every request, in the order the requests were given."""
        return [self.results[i] for i in range(len(self._index))]
