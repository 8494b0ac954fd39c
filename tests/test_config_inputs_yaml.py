"""YAML-reading faults of the config loader: merge keys, duplicate keys."""

from __future__ import annotations

import pytest

from mapframe.config import load_spec
from mapframe.errors import ConfigError

EVALUATOR = 'evaluator: {name: callable, function: "x:y", tasks: [a, b]}\n'


def test_a_yaml_merge_key_with_an_inline_mapping_is_read(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("study:\n  <<: {name: t, budget: 12}\n  seed: 1\n" + EVALUATOR)
    spec = load_spec(path)
    assert (spec.study_name, spec.budget, spec.seed) == ("t", 12, 1)


def test_a_yaml_merge_key_with_an_anchor_is_read_and_own_keys_override(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("study:\n  <<: &base {budget: 12, seed: 3}\n  seed: 5\n"
                    + EVALUATOR)
    spec = load_spec(path)
    assert (spec.budget, spec.seed) == (12, 5)


def test_a_key_given_twice_next_to_a_merge_key_is_still_an_error(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("study:\n  <<: {budget: 12}\n  seed: 1\n  seed: 2\n" + EVALUATOR)
    with pytest.raises(ConfigError, match="duplicate key 'seed' at line 4"):
        load_spec(path)
