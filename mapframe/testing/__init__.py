"""Contract tests that every component implementation must pass.

Subclass the contract for your component kind in your own test suite and provide the
factory method; pytest then runs the same checks mapframe runs on its built-ins::

    from mapframe.testing import SamplerContract

    class TestMySampler(SamplerContract):
        def make_sampler(self):
            return MySampler(alpha=0.5)

The contracts need ``pytest`` (and ``torch`` for merge strategies, model evaluators and
pairing rules).
"""

from mapframe.testing import contracts as _contracts
from mapframe.testing.contracts import *  # noqa: F403  (the names in contracts.__all__)

__all__ = list(_contracts.__all__)
