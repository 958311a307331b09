"""What the engine needs from a tokenizer, as plain Python: prompt ids, decoding and when an answer stops.

Kept free of torch so the scheduler, which decides when rows finish, can run on fake token
streams in tests.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from knowpack.probe.matching import answer_span

_NEWLINE_TABLES: "weakref.WeakKeyDictionary[Any, tuple[bool, ...]]" = weakref.WeakKeyDictionary()
_MAX_ENCODED = 4096  # prompts remembered per backend (a chunk's prompts are encoded several times)


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


def newline_tokens(tokenizer, vocab_size: int) -> tuple[bool, ...]:
    """Per vocabulary id: does the token's decoded text contain a newline?

    Decoding the whole vocabulary takes a while, so the table is remembered per tokenizer.
    """
    table = None
    try:
        table = _NEWLINE_TABLES.get(tokenizer)
    except TypeError:  # a tokenizer that cannot be weakly referenced is simply not remembered
        pass
    if table is None or len(table) != vocab_size:
        n = min(len(tokenizer), vocab_size)
        texts = tokenizer.batch_decode([[i] for i in range(n)])
        table = tuple("\n" in text for text in texts) + (False,) * (vocab_size - n)
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


@dataclass
class TokenRules:
    """Encoding, decoding and the stop rule of one model, as the scheduler sees them.

    ``newline``: per vocabulary id, whether the token contains a newline — only then can the
    answer line be complete, so the (slow) decode runs on those tokens alone.
    ``stop_at_newline``: stop once the answer line is complete (off: run to EOS / the budget).
    """

    encode: Callable[[str], list[int]]  # a rendered prompt's ids (BOS as the template wants it)
    decode: Callable[[list[int]], str]
    eos_ids: set[int]
    newline: Sequence[bool]
    pad_id: int
    stop_at_newline: bool = True
    _memo: dict[str, list[int]] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, tokenizer, model, vocab_size: int, *, stop_at_newline: bool = True) -> TokenRules:
        """The rules of a transformers tokenizer and model (pad: the tokenizer's, else an EOS id)."""
        eos = eos_token_ids(model, tokenizer)
        pad = tokenizer.pad_token_id
        return cls(encode=lambda text: encode_prompts(tokenizer, [text])[0],
                   decode=lambda ids: tokenizer.decode(ids, skip_special_tokens=True), eos_ids=eos,
                   newline=newline_tokens(tokenizer, vocab_size),
                   pad_id=int(pad if pad is not None else min(eos or {0})), stop_at_newline=stop_at_newline)

    def ids(self, text: str) -> list[int]:
        """``encode`` remembered: a chunk's prompts and prefixes come back many times."""
        if text not in self._memo:
            if len(self._memo) > _MAX_ENCODED:
                self._memo.clear()
            self._memo[text] = self.encode(text)
        return self._memo[text]

    def advance(self, tokens: list[int], token: int, max_new_tokens: int) -> bool:
        """Add ``token`` to an answer's ``tokens``; True when the answer is complete (EOS is not added)."""
        if token in self.eos_ids:
            return True
        tokens.append(token)
        return len(tokens) >= max_new_tokens or (self.stop_at_newline and self.newline[token]
                                                 and span_complete(self.decode(tokens)))
