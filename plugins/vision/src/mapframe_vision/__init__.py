"""mapframe-vision: zero-shot CLIP (open_clip) and torchvision ResNet evaluators for mapframe.

Install beside mapframe (``pip install ./plugins/vision``); the evaluators are then found
through the ``mapframe`` entry-point group as ``clip`` and ``resnet``. Importing this package
is cheap: torch, torchvision and open_clip load when an evaluator is built.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["ClipEvaluator", "ResNetEvaluator", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "ClipEvaluator":
        from mapframe_vision.clip import ClipEvaluator

        return ClipEvaluator
    if name == "ResNetEvaluator":
        from mapframe_vision.resnet import ResNetEvaluator

        return ResNetEvaluator
    raise AttributeError(f"module 'mapframe_vision' has no attribute {name!r}")
