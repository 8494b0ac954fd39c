"""The digits example's network, :class:`DigitsNet`: a small MLP whose backbone the
fine-tunes change and whose classification head they keep frozen.

``DigitsNet`` subclasses ``torch.nn.Module``, so it is built on first access
(:func:`_digits_net_class`): importing this module does not import torch.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, cast

from mapframe.examples.digits.data import _N_CLASSES, _N_PIXELS

if TYPE_CHECKING:
    import torch

    class DigitsNet(torch.nn.Module):
        """Typing stub; the real class is built on first access (see ``_digits_net_class``)."""

        fc1: torch.nn.Linear
        fc2: torch.nn.Linear
        head: torch.nn.Linear

        def __init__(self, hidden: int = ...) -> None: ...

        def forward(self, x: torch.Tensor) -> torch.Tensor: ...


__all__ = ["DEFAULT_HIDDEN", "DigitsNet"]

#: Width of :class:`DigitsNet`'s two hidden layers unless given (the trained checkpoints').
DEFAULT_HIDDEN = 256

# The module DigitsNet reports: the package, whose __getattr__ builds it (as pickle needs).
_PUBLIC_MODULE = "mapframe.examples.digits"


@functools.cache
def _digits_net_class() -> type[DigitsNet]:
    import torch

    class _DigitsNet(torch.nn.Module):
        """The example's MLP: ``fc1`` and ``fc2`` are the backbone, ``head`` the classifier.

        Parameter names (``fc1.weight``, ``fc1.bias``, ``fc2.*``, ``head.*``) are stable:
        checkpoints are this module's ``state_dict``. Inputs are flattened 8x8 images
        ``(..., 64)``; outputs are logits ``(..., 10)``.
        """

        def __init__(self, hidden: int = DEFAULT_HIDDEN) -> None:
            super().__init__()
            self.fc1 = torch.nn.Linear(_N_PIXELS, hidden)
            self.fc2 = torch.nn.Linear(hidden, hidden)
            self.head = torch.nn.Linear(hidden, _N_CLASSES)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.fc1(x))
            h = torch.relu(self.fc2(h))
            return self.head(h)

    _DigitsNet.__module__ = _PUBLIC_MODULE
    _DigitsNet.__name__ = _DigitsNet.__qualname__ = "DigitsNet"
    return cast("type[DigitsNet]", _DigitsNet)


def __getattr__(name: str) -> Any:
    # Build DigitsNet on first access so that importing this module does not import torch.
    if name == "DigitsNet":
        return _digits_net_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
