"""Inference backends of the feedback stages: transformers (default) and vLLM."""
