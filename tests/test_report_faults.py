"""Report and plot faults found by an audit: plain (no browser) checks."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("plotly")

from mapframe.report.page import bundle_json  # noqa: E402


def test_f2_bundle_json_is_valid_json_and_safe_in_a_script():
    """F2: '<!--' became '<\\!--', not a JSON escape: JSON.parse (and /data.json) failed."""
    value = {"name": "x<!--y</script>&amp;", "n": [1, 2]}
    text = bundle_json(value)
    assert json.loads(text) == value
    assert "<" not in text and ">" not in text and "&" not in text
