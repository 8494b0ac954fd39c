"""Samplers: which coefficient vectors to evaluate."""

from mapframe.samplers.base import Sampler, SamplerContext
from mapframe.samplers.bins import BinSampler
from mapframe.samplers.botorch_sampler import BoTorchSampler
from mapframe.samplers.front import FrontSampler
from mapframe.samplers.gp import GPSampler
from mapframe.samplers.rounds import RoundsSampler
from mapframe.samplers.space_filling import (
    GridSampler,
    LatinHypercubeSampler,
    RandomSampler,
    SobolSampler,
)

__all__ = [
    "BinSampler",
    "BoTorchSampler",
    "FrontSampler",
    "GPSampler",
    "GridSampler",
    "LatinHypercubeSampler",
    "RandomSampler",
    "RoundsSampler",
    "Sampler",
    "SamplerContext",
    "SobolSampler",
]
