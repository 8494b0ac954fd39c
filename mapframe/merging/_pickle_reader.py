"""Read the tensors out of a pickled ``nn.Module`` checkpoint without running its code.

Many published fine-tunes were saved with ``torch.save(model)`` (the whole module, not its
``state_dict``): the task-vectors checkpoints (``<dataset>/finetuned.pt``, ``zeroshot.pt``)
are pickled ``ImageEncoder`` objects of a research repository that is not importable here.
``torch.load(weights_only=True)`` refuses them, and a full unpickle both runs code from the
file and needs the original classes.

:func:`read_module_tensors` unpickles with a restricted ``find_class`` (the "restricting
globals" recipe of Python's pickle documentation): the only real callables it hands out are
torch's tensor-rebuild functions, dtypes and a few containers. Every other global, a class
or a function alike, becomes an inert stand-in that records its arguments and state and does
nothing else; so the file's code never runs, whatever it names. The module tree is then
walked through the stand-ins' recorded state (``_parameters``, ``_buffers``, ``_modules``)
to produce the same keys ``model.state_dict()`` would have given.
"""

from __future__ import annotations

import collections
import io
import pickle
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["read_module_tensors"]


class _Stand_in:
    """An inert replacement for any class or function a pickle names."""

    _qualname = "?"
    _args: tuple[Any, ...] = ()
    _state: Any = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._args = args

    def __setstate__(self, state: Any) -> None:
        self._state = state

    def __setitem__(self, key: Any, value: Any) -> None:  # SETITEMS on dict subclasses
        if not isinstance(self._state, dict):
            self._state = {}
        self._state[key] = value

    def append(self, value: Any) -> None:  # APPENDS on list subclasses
        self.__dict__.setdefault("_items", []).append(value)

    def extend(self, values: Any) -> None:
        self.__dict__.setdefault("_items", []).extend(values)

    def __repr__(self) -> str:
        return f"<stand-in for {self._qualname}>"


def _stand_in(module: str, name: str) -> type:
    return type(name, (_Stand_in,), {"_qualname": f"{module}.{name}"})


def _reconstructor(cls: Any, base: Any, state: Any) -> Any:
    # copyreg._reconstructor, restricted to stand-ins (the real one calls base.__init__).
    return cls() if isinstance(cls, type) and issubclass(cls, _Stand_in) else _Stand_in()


def _allowed(module: str, name: str) -> Any:
    import torch
    import torch._utils

    # Protocol-2 pickles (torch.save's default) spell Python 2 module names.
    module = {"__builtin__": "builtins", "copy_reg": "copyreg"}.get(module, module)
    if module == "torch._utils" and name in {
        "_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter",
        "_rebuild_parameter_with_state",
    }:
        return getattr(torch._utils, name)
    if module == "torch._tensor" and name == "_rebuild_from_type_v2":
        def rebuild_from_type(func: Any, typ: Any, args: Any, state: Any) -> Any:
            return func(*args)  # drop tensor subclasses (their type would be a stand-in)

        return rebuild_from_type
    if module == "torch" and isinstance(getattr(torch, name, None), (torch.dtype, torch.Size)):
        return getattr(torch, name)
    if (module, name) in {("torch", "Size"), ("torch", "device")}:
        return getattr(torch, name)
    if module == "torch.nn.parameter" and name == "Parameter":
        return torch.nn.Parameter
    if (module, name) == ("collections", "OrderedDict"):
        return collections.OrderedDict
    if (module, name) in {("builtins", "set"), ("builtins", "frozenset")}:
        return set if name == "set" else frozenset
    if (module, name) == ("copyreg", "_reconstructor"):
        return _reconstructor
    if (module, name) == ("builtins", "object"):
        return _Stand_in
    return None


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        found = _allowed(module, name)
        return found if found is not None else _stand_in(module, name)


def _restricted_load(file: Any, **kwargs: Any) -> Any:
    # torch.load reads a legacy (non-zip) file's header records, and the whole of a bare
    # pickle, with pickle_module.load: restricted too, or the file's code would run there.
    return _RestrictedUnpickler(file, **kwargs).load()


class _RestrictedPickle:
    """A ``pickle_module`` for ``torch.load``: torch's storage handling, our globals."""

    Unpickler = _RestrictedUnpickler
    load = staticmethod(_restricted_load)
    __name__ = "mapframe_restricted_pickle"


def _state_of(obj: Any) -> Any:
    if isinstance(obj, _Stand_in):
        return obj._state if obj._state is not None else obj.__dict__
    return None


def _walk(obj: Any, prefix: str, out: dict[str, torch.Tensor], depth: int = 0) -> bool:
    import torch

    state = _state_of(obj)
    if not isinstance(state, dict) or "_parameters" not in state or depth > 64:
        return False
    for k, v in (state.get("_parameters") or {}).items():
        if isinstance(v, torch.Tensor):
            out[prefix + str(k)] = v.detach()
    skip = state.get("_non_persistent_buffers_set") or set()
    for k, v in (state.get("_buffers") or {}).items():
        if isinstance(v, torch.Tensor) and k not in skip:
            out[prefix + str(k)] = v
    for k, m in (state.get("_modules") or {}).items():
        _walk(m, f"{prefix}{k}.", out, depth + 1)
    return True


def read_module_tensors(data: bytes | str) -> dict[str, torch.Tensor] | None:
    """The ``state_dict``-style tensors of a pickled module (or of a mapping holding one under
    ``"model"``/``"module"``/``"state_dict"``), read without running the pickle's code.

    ``data`` is the file's path or bytes. Returns ``None`` when the file holds no module
    tree this reader understands; raises what ``torch.load`` raises for unreadable files.
    """
    import torch

    src: Any = io.BytesIO(data) if isinstance(data, bytes) else data
    obj = torch.load(src, map_location="cpu", weights_only=False,
                     pickle_module=_RestrictedPickle)  # type: ignore[arg-type]
    candidates = [obj]
    if isinstance(obj, dict):
        candidates += [obj.get(k) for k in ("model", "module", "state_dict", "image_encoder")]
    for cand in candidates:
        out: dict[str, torch.Tensor] = {}
        if _walk(cand, "", out) and out:
            return out
    return None
