"""Surrogates: cheap per-task models of a metric over the coefficients."""

from mapframe.surrogates.base import Surrogate, SurrogateDiagnostics
from mapframe.surrogates.gp import GPSurrogate
from mapframe.surrogates.mean import GPQuadraticMeanSurrogate
from mapframe.surrogates.quadratic import (
    AutoSurrogate,
    QuadraticSurrogate,
    SigmoidQuadraticSurrogate,
    SoftplusQuadraticSurrogate,
    check_identifiable,
    n_quadratic_params,
    quadratic_features,
)

__all__ = [
    "AutoSurrogate",
    "GPQuadraticMeanSurrogate",
    "GPSurrogate",
    "QuadraticSurrogate",
    "SigmoidQuadraticSurrogate",
    "SoftplusQuadraticSurrogate",
    "Surrogate",
    "SurrogateDiagnostics",
    "check_identifiable",
    "n_quadratic_params",
    "quadratic_features",
]
