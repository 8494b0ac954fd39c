"""The ``mapframe`` entry point of this package (``llm = mapframe_llm.plugin``).

mapframe calls :func:`mapframe_register_components` once, when its registry is first
built; the evaluator classes (and torch, transformers) are imported only then.
"""

from __future__ import annotations

from mapframe.plugin import ComponentRegistry, hookimpl


@hookimpl
def mapframe_register_components(registry: ComponentRegistry) -> None:
    """Register the ``causal_lm``, ``text_classification`` and ``lm_eval`` evaluators
    (``lm_eval`` imports lm-evaluation-harness only when it is used)."""
    from mapframe_llm.causal import CausalLMEvaluator
    from mapframe_llm.classify import TextClassificationEvaluator
    from mapframe_llm.harness import LMEvalHarnessEvaluator

    registry.register(CausalLMEvaluator)
    registry.register(TextClassificationEvaluator)
    registry.register(LMEvalHarnessEvaluator)
