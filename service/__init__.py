"""GenSen sentence embeddings served from ONNX Runtime behind a dynamic-batching REST API."""

__version__ = "0.1.0"
