"""A study result's inputs (front index, coefficients to predict) are checked with a one-line
ConfigError, not left to numpy's own errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import mapframe
from mapframe import MergeStudy
from mapframe.errors import ConfigError
from tests.objectives import two_quadratics


@pytest.fixture(scope="module")
def result():
    return MergeStudy(objective=two_quadratics, task_names=["a", "b"], budget=8, seed=0,
                      sampler="sobol").run()


@pytest.mark.parametrize("index", [1.5, "0", True, np.float64(1.0), -1, 10_000])
def test_export_index_must_be_an_int_on_the_front(result, tmp_path, index):
    # merge_spec is only used after the index is checked: any object stands in for one
    with_spec = dataclasses.replace(result, merge_spec=object())
    with pytest.raises(ConfigError, match="front index") as info:
        with_spec.export(tmp_path / "m.safetensors", index=index)
    assert "\n" not in str(info.value)
    saved = mapframe.load_results(_saved(result, tmp_path))
    with pytest.raises(ConfigError, match="front index") as info:
        saved.export(tmp_path / "m.safetensors", index=index)
    assert "\n" not in str(info.value)


def _saved(result, tmp_path):
    d = tmp_path / "out"
    result.save(d, plot=False)
    return d


@pytest.mark.parametrize("coefficients", [[["a", "b"]], [[0.1, 0.2, 0.3]], [0.1],
                                          np.zeros((2, 2, 2)), [[0.1, 0.2], [0.3]], "ab",
                                          None])
def test_predict_needs_numbers_per_coefficient(result, coefficients):
    with pytest.raises(ConfigError, match=r"predict needs numbers in an array of shape "
                                          r"\(M, 2\) or \(2,\)") as info:
        result.predict(coefficients)
    assert "\n" not in str(info.value)


def test_predict_takes_a_matrix_or_one_flat_vector(result):
    assert result.predict([[0.1, 0.2], [0.3, 0.4]]).shape == (2, 2)
    assert result.predict(np.array([0.1, 0.2])).shape == (1, 2)
    np.testing.assert_allclose(result.predict([0.1, 0.2]), result.predict([[0.1, 0.2]]))
