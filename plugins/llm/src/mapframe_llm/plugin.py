"""The ``mapframe`` entry point of this package (``llm = mapframe_llm.plugin``).

mapframe calls :func:`mapframe_register_components` once, when its registry is first
built; the evaluator classes (and torch, transformers) are imported only then.
"""

from __future__ import annotations

from mapframe.plugin import ComponentRegistry, hookimpl


@hookimpl
def mapframe_register_components(registry: ComponentRegistry) -> None:
    """Register the ``causal_lm`` and ``text_classification`` evaluators."""
    from mapframe_llm.causal import CausalLMEvaluator
    from mapframe_llm.classify import TextClassificationEvaluator

    registry.register(CausalLMEvaluator)
    registry.register(TextClassificationEvaluator)
