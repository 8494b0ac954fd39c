"""Checks of a component's constructor settings, each failing with a one-line
:class:`~mapframe.errors.ConfigError` that names the component, the setting, what it must be
and what it got.

Components take their settings from Python and from YAML configs alike, so a check accepts
what either gives for a valid value (Python and numpy integers; an integral float such as
``40.0`` for an integer setting) and rejects the rest, booleans included (``True`` is an
``int`` to Python, never a count to a user)::

    self.batch = int_setting(batch, "batch", 1, who="front sampler")
    self.initial = int_setting(initial, "initial", 2, who="front sampler", auto=True)
    self.tolerance = number_setting(tolerance, "tolerance", 0.0, 1.0, open_low=True,
                                    open_high=True)
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal, overload

import numpy as np

from mapframe.errors import ConfigError

__all__ = ["bool_setting", "int_setting", "number_setting", "refuse_number_string"]


def _prefix(who: str | None) -> str:
    return f"{who}: " if who else ""


def _real(value: Any) -> float | None:
    """``value`` as a float when it is a real number (not a bool), else None."""
    if isinstance(value, (bool, np.bool_)):
        return None
    if not isinstance(value, (int, float, np.integer, np.floating)):
        return None
    return float(value)


# A number in exponent form: YAML 1.1 (PyYAML) reads it as a float only with a dot in the
# mantissa and a sign on the exponent, so `1e-6` and `1.0e6` arrive as strings.
_EXPONENT_FORM = re.compile(r"([-+]?)(\d*)(?:\.(\d*))?[eE]([-+]?)(\d+)")


def _string_hint(text: str) -> str:
    """How to write the number ``text`` so that YAML (and Python) read a number."""
    m = _EXPONENT_FORM.fullmatch(text.strip())
    sign, whole, frac, exp_sign, exp = m.groups() if m else ("", "", "", "+", "")
    missing = [what for what, absent in (("a dot", frac is None),
                                         ("a sign in the exponent", not exp_sign)) if absent]
    if not missing:  # YAML would have read it as a number: it was quoted
        return "write the number without quotes"
    fixed = f"{sign}{whole or '0'}.{frac or '0'}e{exp_sign or '+'}{exp}"
    return f"YAML reads {text.strip()} without {' and '.join(missing)} as text: write {fixed}"


def string_number_hint(value: str) -> str | None:
    """For a string that reads as a finite number, how to write it so that YAML reads a
    number (``None`` for any other string)."""
    try:
        number = float(value)
    except ValueError:
        return None
    return _string_hint(value) if math.isfinite(number) else None


def refuse_number_string(value: Any, name: str, *, who: str | None = None,
                         what: str = "a number") -> None:
    """Raise ``ConfigError("<who>: <name> must be <what>, got the string '1e-6' (YAML reads
    1e-6 without a dot as text: write 1.0e-6)")`` when ``value`` is a string that reads as a
    finite number; return otherwise. A number setting never converts a string: the check
    names the cause (a quoted number, or YAML's reading of ``1e-6``) and the fix."""
    hint = string_number_hint(value) if isinstance(value, str) else None
    if hint is not None:
        raise ConfigError(f"{_prefix(who)}{name} must be {what}, got the string {value!r} "
                          f"({hint})")


@overload
def int_setting(value: Any, name: str, minimum: int, *, who: str | None = None,
                auto: Literal[False] = False) -> int: ...


@overload
def int_setting(value: Any, name: str, minimum: int, *, who: str | None = None,
                auto: Literal[True]) -> int | Literal["auto"]: ...


def int_setting(value: Any, name: str, minimum: int, *, who: str | None = None,
                auto: bool = False) -> int | Literal["auto"]:
    """``value`` as an ``int`` of at least ``minimum`` (or ``"auto"`` where ``auto``), else
    ``ConfigError("<who>: <name> must be an integer >= <minimum>[ or "auto"], got ...")``."""
    if auto and isinstance(value, str) and value == "auto":
        return "auto"
    extra = ' or "auto"' if auto else ""
    refuse_number_string(value, name, who=who, what=f"an integer >= {minimum}{extra}")
    v = _real(value)
    if v is None or not math.isfinite(v) or not v.is_integer() or v < minimum:
        raise ConfigError(f"{_prefix(who)}{name} must be an integer >= {minimum}{extra}, "
                          f"got {value!r}")
    return int(v)


def number_setting(value: Any, name: str, low: float, high: float = math.inf, *,
                   who: str | None = None, open_low: bool = False, open_high: bool = False,
                   meaning: str = "") -> float:
    """``value`` as a finite ``float`` between ``low`` and ``high`` (each bound included
    unless ``open_low`` / ``open_high``), else a one-line ``ConfigError`` stating the range
    (and ``meaning``, a short parenthesis on what the number is, where given); a string
    that reads as a number is refused with :func:`refuse_number_string`'s message."""
    refuse_number_string(value, name, who=who)
    v = _real(value)
    ok = v is not None and math.isfinite(v)
    if ok:
        assert v is not None
        ok = (v > low if open_low else v >= low) and (v < high if open_high else v <= high)
    if not ok:
        if math.isinf(high) and math.isinf(low):
            allowed = "a finite number"
        elif math.isinf(high):
            allowed = f"a finite number {'>' if open_low else '>='} {low:g}"
        elif not open_low and not open_high:
            allowed = f"a number from {low:g} to {high:g}"
        else:
            allowed = (f"a number in {'(' if open_low else '['}{low:g}, {high:g}"
                       f"{')' if open_high else ']'}")
        about = f" ({meaning})" if meaning else ""
        raise ConfigError(f"{_prefix(who)}{name} must be {allowed}{about}, got {value!r}")
    assert v is not None
    return v


def bool_setting(value: Any, name: str, *, who: str | None = None) -> bool:
    """``value`` as a ``bool`` (Python's or numpy's), else a one-line ``ConfigError``."""
    if not isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"{_prefix(who)}{name} must be true or false, got {value!r}")
    return bool(value)
