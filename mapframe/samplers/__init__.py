"""Samplers: which coefficient vectors to evaluate."""

from mapframe.samplers.base import Sampler, SamplerContext
from mapframe.samplers.space_filling import (
    GridSampler,
    LatinHypercubeSampler,
    RandomSampler,
    SobolSampler,
)

__all__ = [
    "GridSampler",
    "LatinHypercubeSampler",
    "RandomSampler",
    "Sampler",
    "SamplerContext",
    "SobolSampler",
]
