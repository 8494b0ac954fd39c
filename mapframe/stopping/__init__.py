"""Stopping rules: end an adaptive study before its budget when more evaluations stop helping.

With a stopping rule the ``budget`` becomes a *maximum*: the user says how much they can
afford, and the study stops as soon as the front it would return has settled. The study calls
the rule after every round of an adaptive sampler, with surrogates fitted on everything
evaluated so far; the rule answers with a reason to stop, or ``None``.

Rules must be a function of the rounds they have seen (no wall clock, no global random
state): a resumed study replays the same rounds from the store and must stop at the same one.
"""

from mapframe.stopping.base import RoundState, StoppingRule
from mapframe.stopping.plateau import PlateauStopping

__all__ = ["PlateauStopping", "RoundState", "StoppingRule"]
