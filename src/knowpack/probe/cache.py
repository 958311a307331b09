"""Content-addressed probe cache: the base model's probe is computed once and reused by later stages."""

from __future__ import annotations

import os
from pathlib import Path

from knowpack.io import stable_hash
from knowpack.paths import knowpack_home
from knowpack.probe.config import ProbeConfig

def probe_cache_dir(model_hash: str, facts_digest: str, config: ProbeConfig, adapter_digest: str | None = None,
                    *, root: str | os.PathLike | None = None) -> Path:
    """``<root>/probes/<model_hash>/<facts-hash>-<config-hash>[-<adapter-hash>]/``."""

    base = Path(root) if root is not None else knowpack_home()
    name = f"{facts_digest[:12]}-{stable_hash(config.result_key())}"
    if adapter_digest:
        name += f"-{adapter_digest[:12]}"
    return base / "probes" / model_hash / name

def cached_probe(model_spec: str, facts_path: str, config: ProbeConfig, *, adapter: str | None = None,
                 root: str | os.PathLike | None = None, progress: bool = False) -> Path:
    """Run the probe once per (model, facts file, config, adapter) and return its folder.

    A finished probe in the cache is reused as is; an interrupted one resumes. ``batch_size``
    does not enter the key (it changes speed, not answers).
    """
    from knowpack.facts.io import facts_hash, read_facts
    from knowpack.models.adapters import adapter_hash
    from knowpack.models.loading import model_fingerprint, resolve_model_source
    from knowpack.probe.artifacts import is_done
    from knowpack.probe.runner import run_probe

    source = resolve_model_source(model_spec)
    folder = probe_cache_dir(model_fingerprint(source), facts_hash(facts_path), config,
                             adapter_hash(adapter) if adapter else None, root=root)
    if is_done(folder):
        return folder
    facts = read_facts(facts_path)
    run_probe(config, facts, model_spec, folder, adapter=adapter, progress=progress)
    return folder
