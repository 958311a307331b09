"""Head-to-Tail question builder: knowledge-graph triples + templates → balanced head/torso/tail facts.

Follows the DBpedia method of Sun et al. (2024) as used by Pletenev et al. (2025, §4.1):

* popularity of an entity = number of triples it appears in (as subject or object);
* tiers from cumulative thirds of that popularity over all entities (:mod:`knowpack.facts.tiers`),
  and a fact's tier is its subject's tier;
* only (subject, relation) pairs with exactly one object become questions, and only for
  relations with a template (``_`` marks the subject: "_ was born in which place?");
* cleaning: no category/isPartOf relations, no ``__`` in names, no "List of" subjects, no generic
  answers, no answer contained in the subject, URL answers only for page/homepage/webcast;
* candidates the fact-file checks would reject (an answer that can never match such as "!!!", a
  multi-line or over-long literal, invisible characters) are dropped, and ids equal up to case
  or invisible characters count as the same subject, so a built file always reads back;
* at most K facts per (tier, relation), and the same number in every tier of a relation
  (the minimum over tiers), drawn with a seeded RNG.

The released script also pre-thins candidates with probability 10000/count to save memory on
the full DBpedia dump; that changes nothing in expectation and is not needed here.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
from collections import Counter
from pathlib import Path
from urllib.parse import unquote

from pydantic import BaseModel, ConfigDict, Field

from knowpack.errors import KnowpackError, ValidationFailed
from knowpack.facts.checks import id_key, record_problems_of
from knowpack.facts.schema import TIERS, Fact
from knowpack.facts.sources.common import make_aliases
from knowpack.facts.tiers import h2t_cutpoints, tier_of

logger = logging.getLogger(__name__)

DEFAULT_DOMAIN = "open"
DROPPED_RELATIONS = frozenset({"category", "ispartof"})
URL_RELATIONS = frozenset({"page", "homepage", "webcast"})
# Answers that name a kind of thing rather than a fact about the subject.
GENERIC_ANSWERS = frozenset({"cross-platform", "death", "unknown", "none", "other", "various"})
GENERIC_ANSWER_PREFIXES = ("list of ", "military ranks ")

_NT_LINE = re.compile(
    r'^\s*<([^>]*)>\s+<([^>]*)>\s+(<[^>]*>|"(?:[^"\\]|\\.)*"(?:@[A-Za-z0-9-]+|\^\^<[^>]*>)?)\s*\.\s*$')


class HeadToTailConfig(BaseModel):
    """Options of the Head-to-Tail builder (``knowpack facts build --triples … --templates …``)."""

    model_config = ConfigDict(extra="forbid")

    per_tier_relation: int = Field(30, ge=1, description="at most K facts per (tier, relation); "
                                   "the paper uses 30, the original Head-to-Tail script 10")
    seed: int = 42


class Triple(BaseModel):
    """One triple: ``*_id`` identify entities (full URI or TSV text), labels are readable names."""

    model_config = ConfigDict(frozen=True)

    subject_id: str
    relation: str
    object_id: str
    object_is_entity: bool = True


class RelationTemplates(BaseModel):
    """Question templates of one relation (first = question, others = paraphrases)."""

    model_config = ConfigDict(extra="forbid")

    templates: list[str] = Field(min_length=1)
    domain: str = DEFAULT_DOMAIN


def local_name(uri: str) -> str:
    """The last segment of a URI, CURIE or name ("http://…/ontology/birthPlace" → "birthPlace")."""
    return re.split(r"[/#:]", uri.rstrip("/#"))[-1] or uri


def label(identifier: str) -> str:
    """Readable label of an entity: URL-unquoted local name with ``_`` as space."""
    return " ".join(unquote(local_name(identifier)).replace("_", " ").split())


def _literal_value(token: str) -> str:
    body = token[1:token.rindex('"')]
    return json.loads(f'"{body}"') if "\\" in body else body


def parse_ntriples(path: Path) -> list[Triple]:
    """Parse an N-Triples file (``<s> <p> <o> .``); every malformed line is reported."""
    triples, problems = [], []
    with open(path, encoding="utf-8", errors="strict") as fh:
        try:
            lines = list(fh)
        except UnicodeDecodeError as exc:
            raise KnowpackError(f"{path}: not valid UTF-8 (byte offset {exc.start})") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _NT_LINE.match(line)
        if match is None:
            problems.append(f"{path}:{number}: not an N-Triples line (expected `<s> <p> <o> .`)")
            continue
        subject, predicate, obj = match.groups()
        is_entity = obj.startswith("<")
        triples.append(Triple(subject_id=subject, relation=local_name(predicate),
                              object_id=obj[1:-1] if is_entity else _literal_value(obj),
                              object_is_entity=is_entity))
    if problems:
        raise ValidationFailed(problems, what=str(path))
    return triples


def parse_tsv(path: Path) -> list[Triple]:
    """Parse ``subject<TAB>relation<TAB>object`` lines (an optional header row is skipped)."""
    triples, problems = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        cells = [c.strip() for c in line.split("\t")]
        if number == 1 and [c.lower() for c in cells] == ["subject", "relation", "object"]:
            continue
        if len(cells) != 3 or not all(cells):
            problems.append(f"{path}:{number}: expected 3 non-empty tab-separated columns, got {len(cells)}")
            continue
        subject, relation, obj = (c[1:-1] if c.startswith("<") and c.endswith(">") else c for c in cells)
        triples.append(Triple(subject_id=subject, relation=local_name(relation), object_id=obj))
    if problems:
        raise ValidationFailed(problems, what=str(path))
    return triples


def read_triples(path: str | os.PathLike) -> list[Triple]:
    """Read triples from N-Triples (.nt, .ttl) or TSV (.tsv, .txt) by extension."""
    path = Path(path)
    if not path.is_file():
        raise KnowpackError(f"triples file not found: {path}",
                            hint="pass N-Triples (`<s> <p> <o> .`, .nt) or TSV (subject, relation, object)")
    if path.suffix.lower() in (".nt", ".ttl"):
        return parse_ntriples(path)
    if path.suffix.lower() in (".tsv", ".txt"):
        return parse_tsv(path)
    raise KnowpackError(f"unsupported triples file: {path.name}", hint="use .nt/.ttl (N-Triples) or .tsv")


def read_templates(path: str | os.PathLike) -> dict[str, RelationTemplates]:
    """Read ``relation → template(s)`` from JSON or YAML; keys may be URIs, CURIEs or local names.

    A value is one template string, a list of them, or ``{"templates": [...], "domain": "..."}``.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise KnowpackError(f"templates file not found: {path}",
                            hint='JSON/YAML mapping relation → template(s), e.g. {"birthPlace": "_ was born in which place?"}')
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise KnowpackError(f"cannot parse templates file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ValidationFailed([f"{path}: expected a mapping relation → template(s)"], what=str(path))
    out, problems = {}, []
    for key, value in data.items():
        entry = {"templates": [value]} if isinstance(value, str) else (
            {"templates": value} if isinstance(value, list) else value)
        try:
            spec = RelationTemplates.model_validate(entry)
        except Exception as exc:  # pydantic ValidationError: report it per relation
            problems.append(f"{path}: relation {key!r}: {str(exc).splitlines()[-1].strip()}")
            continue
        bad = [t for t in spec.templates if "_" not in t or not t.strip()]
        if bad:
            problems.append(f"{path}: relation {key!r}: template without the `_` subject slot: {bad[0]!r}")
            continue
        out[local_name(str(key))] = spec
    if problems:
        raise ValidationFailed(problems, what=str(path))
    return out


def entity_popularity(triples: list[Triple]) -> Counter:
    """Number of triples each entity appears in, as subject or as (entity) object."""
    counts: Counter = Counter()
    for t in triples:
        counts[t.subject_id] += 1
        if t.object_is_entity:
            counts[t.object_id] += 1
    return counts


def _is_generic(answer: str) -> bool:
    low = answer.casefold()
    return low in GENERIC_ANSWERS or low.startswith(GENERIC_ANSWER_PREFIXES)


def keep_candidate(t: Triple) -> bool:
    """The Head-to-Tail cleaning rules for one single-object (subject, relation) triple."""
    if t.relation.casefold() in DROPPED_RELATIONS:
        return False
    raw_subject = unquote(local_name(t.subject_id))
    raw_object = unquote(local_name(t.object_id)) if t.object_is_entity else t.object_id
    if "__" in raw_subject or "__" in raw_object:
        return False
    subject, answer = label(t.subject_id), (label(t.object_id) if t.object_is_entity else t.object_id.strip())
    if not answer or subject.casefold().startswith("list of") or _is_generic(answer):
        return False
    if re.match(r"https?://", answer) and t.relation.casefold() not in URL_RELATIONS:
        return False
    return answer.casefold() not in subject.casefold()


def render(template: str, subject: str) -> str:
    """Fill the ``_`` slot and apply the released script's text fix (" the the " → " the ")."""
    return template.replace("_", subject).replace(" the the ", " the ")


def _answer_aliases(answer: str) -> tuple[str, ...]:
    """The answer, without a trailing "(disambiguation)", and ASCII folds."""
    bare = re.sub(r"\s*\([^)]*\)$", "", answer).strip()
    return make_aliases(answer, [bare if bare and bare != answer else None])


def candidate_facts(triples: list[Triple], templates: dict[str, RelationTemplates]) -> list[Fact]:
    """Every fact the Head-to-Tail rules allow, before balanced sampling (sorted by id).

    Tiers come from cumulative thirds of entity popularity over *all* entities of the graph; a
    fact's tier is its subject's.
    """
    if not triples:
        raise KnowpackError("no triples given")
    popularity = entity_popularity(triples)
    cuts = h2t_cutpoints(list(popularity.values()))
    objects: dict[tuple[str, str], set[tuple[str, bool]]] = {}
    for t in triples:
        objects.setdefault((t.subject_id, t.relation), set()).add((t.object_id, t.object_is_entity))
    facts: list[Fact] = []
    seen_ids: set[str] = set()
    unusable = 0
    for (subject_id, relation), objs in sorted(objects.items()):
        if len(objs) != 1 or relation not in templates:
            continue
        (object_id, is_entity), = objs
        triple = Triple(subject_id=subject_id, relation=relation, object_id=object_id,
                        object_is_entity=is_entity)
        if not keep_candidate(triple):
            continue
        fact = _candidate_fact(triple, templates[relation], popularity[subject_id], cuts)
        if fact is None:
            unusable += 1
            continue
        if id_key(fact.id) in seen_ids:  # two URIs with the same label: the question would be ambiguous
            continue
        seen_ids.add(id_key(fact.id))
        facts.append(fact)
    if unusable:
        logger.info("head-to-tail: dropped %d candidate(s) a fact file may not hold "
                    "(unmatchable, multi-line or over-long text)", unusable)
    return sorted(facts, key=lambda f: f.id)


def _candidate_fact(triple: Triple, spec: RelationTemplates, popularity: int, cuts) -> Fact | None:
    """The fact of one kept triple, or None when the fact-file checks would reject it."""
    subject = label(triple.subject_id)
    answer = label(triple.object_id) if triple.object_is_entity else triple.object_id.strip()
    question, *paraphrases = [render(t, subject) for t in spec.templates]
    record = dict(id=f"{triple.relation}/{subject}", subject=subject, relation=triple.relation,
                  question=question, answer=answer, aliases=list(_answer_aliases(answer)),
                  popularity=float(popularity), tier=tier_of(popularity, cuts),
                  paraphrases=paraphrases, domain=spec.domain)
    return None if record_problems_of(record) else Fact(**record)


def build_head_to_tail(triples_path: str | os.PathLike, templates_path: str | os.PathLike,
                       config: HeadToTailConfig | None = None) -> list[Fact]:
    """Build a balanced head/torso/tail fact set from a triples file and a templates file."""
    config = config or HeadToTailConfig()
    facts = balanced_sample(candidate_facts(read_triples(triples_path), read_templates(templates_path)),
                            config)
    if not facts:
        raise KnowpackError(
            "no facts survived the Head-to-Tail rules",
            hint="each relation needs single-object candidates in all three tiers and a template")
    return facts


def balanced_sample(facts: list[Fact], config: HeadToTailConfig) -> list[Fact]:
    """min(K, smallest tier) facts per (tier, relation), seeded; relations missing a tier drop out."""
    by_stratum: dict[tuple[str, str], list[Fact]] = {}
    for fact in sorted(facts, key=lambda f: f.id):
        by_stratum.setdefault((fact.relation, fact.tier or ""), []).append(fact)
    rng = random.Random(config.seed)
    chosen: list[Fact] = []
    for relation in sorted({r for r, _ in by_stratum}):
        per_tier = min(config.per_tier_relation, *(len(by_stratum.get((relation, t), [])) for t in TIERS))
        for tier in TIERS:
            if per_tier:
                chosen += rng.sample(by_stratum[(relation, tier)], per_tier)
    return sorted(chosen, key=lambda f: f.id)
