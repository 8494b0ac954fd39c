"""Built-in, fully offline examples that run real merges end to end.

:mod:`mapframe.examples.digits` trains a small MLP on scikit-learn's bundled 8x8 digits, fine-tunes
it on eight task variants (rotated, mirrored, inverted images; permuted labels) and evaluates
merges of those fine-tunes, vectorised over the batch. ``mapframe example`` runs it.
"""
