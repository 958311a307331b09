"""Training mixtures: n Unknown facts + k extras per fact, held-out evaluation sets, leakage checks."""

from knowpack.mix.build import build_mixture
from knowpack.mix.config import MixConfig

__all__ = ["MixConfig", "build_mixture"]
