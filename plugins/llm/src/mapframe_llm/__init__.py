"""mapframe-llm: Hugging Face language-model evaluators and streamed checkpoint merging for
mapframe.

Components (registered through the ``mapframe`` entry point ``llm``):

- ``causal_lm``: loss / perplexity per task of a causal LM on held-out text;
- ``text_classification``: accuracy per task of an encoder with one classification head
  per task;
- ``lm_eval``: one lm-evaluation-harness metric per task, the merged causal LM wrapped once
  in lm-eval's ``HFLM`` (lm-eval imported only when used).

All three read Hugging Face model directories (sharded safetensors) and PEFT LoRA adapters, and
merge into one resident model in place, streaming the checkpoints tensor by tensor.
"""

__version__ = "0.1.0"
