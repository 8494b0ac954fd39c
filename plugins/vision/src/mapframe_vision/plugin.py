"""The ``mapframe`` entry point of this package (``vision = mapframe_vision.plugin``).

mapframe calls :func:`mapframe_register_components` once, when its registry is first
built; the evaluator classes (and torch, torchvision, open_clip) are imported only then.
"""

from __future__ import annotations

from mapframe.plugin import ComponentRegistry, hookimpl


@hookimpl
def mapframe_register_components(registry: ComponentRegistry) -> None:
    """Register the ``clip`` and ``resnet`` evaluators."""
    from mapframe_vision.clip import ClipEvaluator
    from mapframe_vision.resnet import ResNetEvaluator

    registry.register(ClipEvaluator)
    registry.register(ResNetEvaluator)
