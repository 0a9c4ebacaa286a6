"""Hallucination metrics."""

from .chair import ChairResult, chair


__all__ = ["ChairResult", "chair"]
