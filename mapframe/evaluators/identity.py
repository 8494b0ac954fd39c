"""What a Python callable computes, as a stable digest: :func:`callable_digest`.

A black-box objective that cannot be re-imported by name (a lambda, a closure, a function
defined inside another, a ``functools.partial``, a callable instance, anything defined in a
script's ``__main__``) is fingerprinted by what it computes, so that two different ones never
share stored evaluations: its code (bytecode, constants, names, nested code objects), its
default arguments, the values its closure captured, the values of the module-level names it
reads, and for a partial or an instance the bound arguments or attributes. Captured lists,
dicts and sets count by their type only (a function may append to them as it runs, e.g. a
call log): to make constants part of the identity, capture them as tuples, numbers,
strings or arrays. Other values count by their contents: arrays and tensors by their bytes,
a torch model by its ``state_dict`` (its repr is the architecture only), any other object
by its pickle (with arrays and tensors inside it hashed by their bytes: torch's own pickle
of a tensor differs between processes), or by its attributes where it cannot be pickled.
A repr is used only for an object that neither pickles nor has attributes, and only when
it shows neither a memory address nor an abbreviation (``...``). An object holding a set of
strings pickles in an order that differs between processes (hash randomisation), so a
study reading one is a new setup in each process, as it was when such values counted by
their repr: capture a tuple (or a sorted list) instead.

A value without a stable identity (an object whose only description is its memory address
and that cannot be pickled) makes the callable *unidentifiable*: :func:`callable_digest`
returns ``None``, and a study refuses to reuse stored evaluations for it.

A function importable by name (``module:function``) is identified by that name alone, so that
editing it does not orphan its stored evaluations; :func:`code_digest` is what its code was
when they were stored, so that a resume can warn when it changed since.

Both count the module-level names a function *loads* (``LOAD_GLOBAL``, and ``LOAD_NAME`` in
a class body it defines). Earlier mapframe versions counted every name of its code, attribute
names too (``C.shape`` read the module's ``shape``, so changing an unrelated ``shape``
changed the digest). Their digests are unchanged for a function none of whose attribute
names is also a module-level name; for one that has such a name, :func:`legacy_digest_matches`
tells whether a stored digest is what that earlier algorithm computed for the same function,
so that its study still resumes.
"""

from __future__ import annotations

import contextvars
import dis
import functools
import hashlib
import pickle
import sys
import threading
import types
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["callable_digest", "code_digest", "legacy_digest_matches", "value_digest"]

_MAX_DEPTH = 8

#: Whether the digest being computed is the earlier algorithm's (:func:`_global_names`).
_LEGACY: contextvars.ContextVar[bool] = contextvars.ContextVar("_LEGACY", default=False)
#: The opcodes that read a module-level name.
_GLOBAL_LOADS = frozenset(op for op in ("LOAD_GLOBAL", "LOAD_NAME", "LOAD_FROM_DICT_OR_GLOBALS")
                          if op in dis.opmap)


class _Unidentifiable(Exception):
    pass


def callable_digest(fn: Callable[..., Any]) -> str | None:
    """A hex digest of what ``fn`` computes, or ``None`` when part of it has no stable
    identity."""
    digest = _callable_digest(fn)
    if digest is not None:
        _remember(digest, _callable_digest, fn)
    return digest


def _callable_digest(fn: Callable[..., Any]) -> str | None:
    h = hashlib.sha256()
    try:
        _feed_callable(h, fn, 0, set())
    except (_Unidentifiable, RecursionError):
        return None
    return h.hexdigest()[:20]


def code_digest(fn: Callable[..., Any]) -> str | None:
    """A hex digest of the code of ``fn``, a function importable by name: its bytecode
    (nested functions included; not its docstring, comments or line numbers), its default
    arguments, and what it reads from its module: numbers, strings and tuples of them by
    value, and the code of the module's own functions it calls (recursively). Other values it
    reads (a model, a data set) are left out, so nothing large is hashed on every run. A
    callable instance counts by its class's ``__call__``. ``None`` for anything else, or a
    default argument without a stable identity."""
    digest = _code_digest(fn)
    if digest is not None:
        _remember(digest, _code_digest, fn)
    return digest


def _code_digest(fn: Callable[..., Any]) -> str | None:
    if not isinstance(fn, types.FunctionType):
        call = type(fn).__call__ if callable(fn) else None
        if not isinstance(call, types.FunctionType):
            return None
        fn = call
    h = hashlib.sha256()
    try:
        _feed_function_code(h, fn, 0, set())
    except (_Unidentifiable, RecursionError):
        return None
    return h.hexdigest()[:20]


#: For each digest :func:`callable_digest` or :func:`code_digest` returned in this process,
#: the callables it was computed for (weakly) and the function that computed it: what
#: :func:`legacy_digest_matches` digests again the earlier way.
_ORIGINS: dict[str, list[tuple[Callable[[Any], str | None], weakref.ref[Any]]]] = {}
_ORIGINS_LOCK = threading.Lock()


def _remember(digest: str, algorithm: Callable[[Any], str | None], fn: Any) -> None:
    try:
        ref = weakref.ref(fn)
    except TypeError:  # e.g. an instance of a class with __slots__: no legacy match
        return
    with _ORIGINS_LOCK:
        live = [(a, r) for a, r in _ORIGINS.get(digest, ()) if r() is not None]
        if not any(r() is fn and a is algorithm for a, r in live):
            live.append((algorithm, ref))
        _ORIGINS[digest] = live
        for key in [k for k, v in _ORIGINS.items() if not any(r() is not None for _, r in v)]:
            del _ORIGINS[key]


def legacy_digest_matches(stored: Any, current: Any) -> bool:
    """Whether ``stored``, a digest an earlier mapframe kept (in a study's fingerprint, or a
    store's code digest), is what it computed for a callable of this process whose digest is
    now ``current``: the earlier algorithm also counted the values of module-level names
    that are only attribute names of the function's code (``C.shape`` read a global
    ``shape``). Computed only when asked (it hashes those values), for a ``current`` that
    :func:`callable_digest` or :func:`code_digest` returned."""
    if not isinstance(stored, str) or not isinstance(current, str):
        return False
    if stored == current:
        return True
    with _ORIGINS_LOCK:
        origins = [(a, r()) for a, r in _ORIGINS.get(current, ())]
    token = _LEGACY.set(True)
    try:
        return any(fn is not None and algorithm(fn) == stored for algorithm, fn in origins)
    finally:
        _LEGACY.reset(token)


def _feed_function_code(h: Any, fn: types.FunctionType, depth: int, seen: set[int]) -> None:
    """:func:`code_digest`'s part for one function (and the module functions it calls)."""
    if depth > _MAX_DEPTH:
        raise _Unidentifiable
    _feed(h, "function", fn.__module__ or "", fn.__qualname__)
    if id(fn) in seen:
        return
    seen.add(id(fn))
    consts = fn.__code__.co_consts
    # the docstring (None for none, on the Pythons that keep that slot) is left out
    _feed_code(h, fn.__code__, skip_first=len(consts) > 0 and consts[0] == fn.__doc__)
    _feed_value(h, fn.__defaults__, depth + 1, set())
    _feed_value(h, fn.__kwdefaults__, depth + 1, set())
    loaded = set(_global_names(fn.__code__))
    for name in _code_names(fn.__code__):
        # a name the code only uses as an attribute (``np.load``) counts as one the module
        # lacks, whatever the module has under it: the earlier algorithm's entry for it
        value = fn.__globals__.get(name) if name in loaded else None
        if isinstance(value, types.FunctionType) and value.__module__ == fn.__module__:
            _feed(h, "global", name)
            _feed_function_code(h, value, depth + 1, seen)
        elif _is_constant(value):
            _feed(h, "global", name)
            _feed_value(h, value, depth + 1, set())


def _is_constant(value: Any, depth: int = 0) -> bool:
    """A number, string, bytes or ``None``, or a (short) tuple or frozenset of such."""
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
        return True
    return (isinstance(value, (tuple, frozenset)) and depth < 3 and len(value) <= 1000
            and all(_is_constant(v, depth + 1) for v in value))


def _feed(h: Any, *parts: str) -> None:
    for p in parts:
        h.update(p.encode("utf-8", "surrogatepass"))
        h.update(b"\0")


def _feed_callable(h: Any, fn: Any, depth: int, seen: set[int]) -> None:
    if depth > _MAX_DEPTH:
        raise _Unidentifiable
    if id(fn) in seen:
        _feed(h, "<recursive>")
        return
    seen = seen | {id(fn)}
    if isinstance(fn, functools.partial):
        _feed(h, "partial")
        _feed_callable(h, fn.func, depth + 1, seen)
        _feed_value(h, fn.args, depth + 1, seen)
        _feed_value(h, dict(fn.keywords), depth + 1, seen)
        return
    if isinstance(fn, types.MethodType):
        _feed(h, "method")
        _feed_callable(h, fn.__func__, depth + 1, seen)
        _feed_value(h, fn.__self__, depth + 1, seen)
        return
    if isinstance(fn, types.FunctionType):
        _feed(h, "function", fn.__module__ or "", fn.__qualname__)
        _feed_code(h, fn.__code__)
        _feed_value(h, fn.__defaults__, depth + 1, seen)
        _feed_value(h, fn.__kwdefaults__, depth + 1, seen)
        for cell in fn.__closure__ or ():
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell
                _feed(h, "<empty cell>")
                continue
            _feed_captured(h, value, depth + 1, seen)
        for name in _global_names(fn.__code__):
            if name in fn.__globals__:
                _feed(h, "global", name)
                _feed_captured(h, fn.__globals__[name], depth + 1, seen)
        return
    if isinstance(fn, types.BuiltinFunctionType):
        _feed(h, "builtin", getattr(fn, "__module__", None) or "", fn.__qualname__)
        return
    if callable(fn):  # an instance with __call__
        cls = type(fn)
        _feed(h, "instance", cls.__module__, cls.__qualname__)
        _feed_callable(h, cls.__call__, depth + 1, seen)
        attributes = getattr(fn, "__dict__", {})
        for name in sorted(attributes):
            _feed(h, "attribute", name)
            _feed_captured(h, attributes[name], depth + 1, seen)
        return
    raise _Unidentifiable


def _feed_code(h: Any, code: types.CodeType, skip_first: bool = False) -> None:
    """A code object's bytecode, names and constants (the first one left out when
    ``skip_first``: a function's docstring)."""
    _feed(h, "code", code.co_code.hex(), repr(code.co_names), repr(code.co_varnames))
    for i, const in enumerate(code.co_consts):
        if skip_first and i == 0:
            continue
        if isinstance(const, types.CodeType):
            _feed_code(h, const)
        else:
            _feed(h, type(const).__name__, repr(const))


def _global_names(code: types.CodeType) -> list[str]:
    """The module-level names ``code`` (and the code nested in it) loads, sorted; all the
    names of its code (attribute names too) in the earlier algorithm (:data:`_LEGACY`)."""
    if _LEGACY.get():
        return _code_names(code)
    return sorted(_loaded_names(code))


def _loaded_names(code: types.CodeType) -> set[str]:
    names = {i.argval for i in dis.get_instructions(code) if i.opname in _GLOBAL_LOADS}
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _loaded_names(const)
    return names


def _code_names(code: types.CodeType) -> list[str]:
    """All the names of ``code`` and the code nested in it (attribute names too), sorted."""
    names = list(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names.extend(_code_names(const))
    return sorted(set(names))


def _feed_captured(h: Any, value: Any, depth: int, seen: set[int]) -> None:
    """A value the callable captured (closure, module global, instance attribute): a list,
    dict, set or bytearray counts by its type only, since functions append to such
    containers as they run (a call log) without computing anything else."""
    if isinstance(value, (list, dict, set, bytearray)):
        _feed(h, "mutable", type(value).__name__)
        return
    _feed_value(h, value, depth, seen)


def _feed_value(h: Any, value: Any, depth: int, seen: set[int]) -> None:
    if depth > _MAX_DEPTH:
        raise _Unidentifiable
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
        _feed(h, type(value).__name__, repr(value))
        return
    if isinstance(value, (tuple, list, frozenset, set)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        _feed(h, type(value).__name__, str(len(items)))
        for item in items:
            _feed_value(h, item, depth + 1, seen)
        return
    if isinstance(value, dict):
        _feed(h, "dict", str(len(value)))
        for k in sorted(value, key=repr):
            _feed_value(h, k, depth + 1, seen)
            _feed_value(h, value[k], depth + 1, seen)
        return
    if isinstance(value, types.ModuleType):
        _feed(h, "module", value.__name__)
        return
    if isinstance(value, type):
        _feed(h, "class", value.__module__, value.__qualname__)
        return
    if isinstance(value, (types.FunctionType, functools.partial, types.MethodType,
                          types.BuiltinFunctionType)):
        module = getattr(value, "__module__", None)
        if isinstance(value, types.FunctionType) and module not in (None, "__main__") and (
                "<" not in value.__qualname__):
            _feed(h, "named function", module or "", value.__qualname__)  # importable
            return
        _feed_callable(h, value, depth + 1, seen)
        return
    array = _as_array(value)
    if array is not None:
        _feed(h, "array", str(array.dtype), repr(array.shape),
              hashlib.sha256(array.tobytes()).hexdigest())
        return
    if _is_torch_module(value):
        # A model's repr is its architecture only: its weights (and buffers) count too.
        _feed(h, "torch module", type(value).__qualname__, repr(value), str(value.training))
        for name, tensor in value.state_dict().items():
            _feed(h, "state", name)
            _feed_value(h, tensor, depth + 1, seen)
        return
    # Whatever pickles is identified by its pickle: a repr may leave out the state (a fitted
    # estimator's repr shows its settings, not what it learned) or abbreviate it ("...").
    digest = _pickle_digest(value)
    if digest is not None:
        _feed(h, "pickle", digest)
        return
    attributes = getattr(value, "__dict__", None)
    if isinstance(attributes, dict):  # e.g. an instance of a class defined in a function
        cls = type(value)
        _feed(h, "object", cls.__module__, cls.__qualname__)
        for name in sorted(attributes):
            _feed(h, "attribute", name)
            _feed_value(h, attributes[name], depth + 1, seen)
        return
    text = repr(value)
    if " at 0x" not in text and " object at " not in text and "..." not in text:
        _feed(h, type(value).__qualname__, text)
        return
    raise _Unidentifiable


class _HashWriter:
    """A file-like sink that hashes what a pickler writes, so a large value is never held
    twice in memory."""

    def __init__(self) -> None:
        self.h = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.h.update(data)
        return len(data)


class _ContentPickler(pickle.Pickler):
    """A pickler that writes arrays and tensors as a digest of their contents: torch's own
    pickling of a tensor differs between processes (it embeds a random serialization id),
    and hashing the raw bytes is cheaper than pickling them."""

    def persistent_id(self, obj: Any) -> Any:
        array = _as_array(obj) if not isinstance(obj, (type, str, bytes)) else None
        if array is None:
            return None
        return ("array", str(array.dtype), array.shape,
                hashlib.sha256(array.tobytes()).hexdigest())


def value_digest(value: Any) -> str | None:
    """SHA-256 of ``value``'s pickle with arrays and tensors inside it hashed by their bytes
    (the same in every process, unlike torch's own pickle); ``None`` where it cannot be
    pickled. What a component's :meth:`~mapframe.component.Component.describe` writes for a
    setting whose repr is only a memory address."""
    return _pickle_digest(value)


def _pickle_digest(value: Any) -> str | None:
    sink = _HashWriter()
    try:
        _ContentPickler(sink, protocol=4).dump(value)
    except Exception:
        return None
    return sink.h.hexdigest()


def _is_torch_module(value: Any) -> bool:
    torch = sys.modules.get("torch")  # never imported here: only a loaded torch has modules
    return torch is not None and isinstance(value, torch.nn.Module)


def _as_array(value: Any) -> Any:
    """``value`` as a numpy array when it is one (or a torch tensor), else ``None``."""
    import numpy as np

    if isinstance(value, np.ndarray):
        return np.ascontiguousarray(value)
    if type(value).__module__.startswith("torch") and hasattr(value, "detach"):
        tensor = value.detach().cpu()
        try:
            return np.ascontiguousarray(tensor.numpy())
        except TypeError:  # a dtype numpy lacks (bfloat16, float8): its raw bytes
            raw = tensor.contiguous().reshape(-1).view(sys.modules["torch"].uint8).numpy()
            return np.ascontiguousarray(raw).view(np.dtype(f"V{tensor.element_size()}"))
    return None
