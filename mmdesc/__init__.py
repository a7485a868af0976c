"""mmdesc: describe multimedia content with attention-based encoder-decoder networks."""

__version__ = "0.1.0"
