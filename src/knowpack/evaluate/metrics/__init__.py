"""Built-in metrics; each module registers itself with ``knowpack.evaluate.registry.metric``."""
