"""knowpack: how many new facts can you pack into a LoRA adapter, and what does it break?"""

__version__ = "0.1.0"
