"""Ray's exceptions turned into mapframe's: the actor's own error without Ray's wrapping,
and short one-line descriptions of what was lost where (used by the ``ray`` executor)."""

from __future__ import annotations

import re

from mapframe.errors import EvaluationError, MapframeError

__all__ = ["cause", "first_line", "remote_error", "summary", "where"]


def cause(exc: BaseException) -> BaseException:
    """The exception raised inside the actor (``RayTaskError.cause``), or ``exc`` itself."""
    inner = getattr(exc, "cause", None)
    return inner if isinstance(inner, BaseException) else exc


def remote_error(exc: BaseException, actor: str) -> MapframeError:
    """The exception an actor raised, without Ray's wrapping, naming the actor."""
    inner = cause(exc)
    if isinstance(inner, MapframeError):
        text = str(inner)
        try:
            err = type(inner)(text if actor in text else f"ray actor {actor}: {text}")
        except Exception:
            err = EvaluationError(f"ray actor {actor}: {text}")
        return err
    return EvaluationError(f"ray actor {actor} failed: {type(inner).__name__}: {inner}")


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message (its type name when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def summary(exc: BaseException) -> str:
    """The first line of a Ray error, and its last (the root cause, e.g. an ImportError)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    return lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"


def where(exc: BaseException) -> str:
    """``@ip:pid`` from a Ray actor-death message, where it says."""
    text = str(exc)
    ip = re.search(r"^\s*ip: (\S+)", text, re.M)
    pid = re.search(r"^\s*pid: (\d+)", text, re.M)
    return f"@{ip.group(1)}:{pid.group(1)}" if ip and pid else ""
