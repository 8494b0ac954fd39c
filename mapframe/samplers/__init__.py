"""Samplers: which coefficient vectors to evaluate."""

from mapframe.samplers.base import Sampler
from mapframe.samplers.space_filling import (
    GridSampler,
    LatinHypercubeSampler,
    RandomSampler,
    SobolSampler,
)

__all__ = ["GridSampler", "LatinHypercubeSampler", "RandomSampler", "Sampler", "SobolSampler"]
