"""Zero-shot classification heads from CLIP's text tower, cached on disk.

A head is the matrix of class embeddings ``W`` (classes × embed_dim): for each class, the
text embeddings of every prompt template filled with the class name, each normalised,
averaged and normalised again, times ``exp(logit_scale)``. An image's logits are
``normalise(f(x)) @ W.T``. Heads depend only on the text tower, which merging leaves
alone, so each is built once and then read from the cache, keyed by everything it depends
on: model, pretrained weights, class names, templates and the open_clip version.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mapframe.errors import ConfigError

if TYPE_CHECKING:
    import torch

__all__ = ["DEFAULT_TEMPLATES", "HeadCache", "build_zeroshot_head", "presets",
           "resolve_templates"]

logger = logging.getLogger(__name__)

#: Templates for tasks without a preset and without ``templates``.
DEFAULT_TEMPLATES: tuple[str, ...] = ("a photo of a {}.",)


@lru_cache(maxsize=1)
def presets() -> dict[str, Any]:
    """The shipped prompt templates and class names of the paper's 8 CLIP tasks
    (``{"templates": {task: [...]}, "classnames": {task: [...]}}``)."""
    return dict(json.loads((Path(__file__).parent / "presets.json").read_text()))


def resolve_templates(task: str, value: Any) -> list[str]:
    """A task's templates: a list of format strings with one ``{}``, a preset's name, or
    (``None``) the preset named like the task, else :data:`DEFAULT_TEMPLATES`."""
    known = presets()["templates"]
    if value is None:
        return list(known.get(task, DEFAULT_TEMPLATES))
    if isinstance(value, str):
        key = task if value == "preset" else value
        if key not in known:
            raise ConfigError(
                f"task {task!r}: no template preset {key!r}; presets: {', '.join(sorted(known))}"
                "; or give templates as a list such as ['a photo of a {}.']"
            )
        return list(known[key])
    if isinstance(value, Sequence) and value:
        out = [str(t) for t in value]
        bad = [t for t in out if t.count("{}") != 1]
        if bad:
            raise ConfigError(f"task {task!r}: each template needs exactly one '{{}}' where the "
                              f"class name goes; not so in {bad[:3]}")
        return out
    raise ConfigError(f"task {task!r}: templates must be a non-empty list of strings or a "
                      f"preset name, got {value!r}")


def build_zeroshot_head(
    encode_text: Callable[[torch.Tensor], torch.Tensor],
    tokenize: Callable[[list[str]], torch.Tensor],
    logit_scale: float,
    classnames: Sequence[str],
    templates: Sequence[str],
    device: str = "cpu",
) -> torch.Tensor:
    """The ``(classes, embed_dim)`` float32 head for ``classnames`` (see the module doc)."""
    import torch

    rows = []
    with torch.inference_mode():
        for name in classnames:
            tokens = tokenize([t.format(name) for t in templates]).to(device)
            emb = encode_text(tokens).float()
            emb = emb / emb.norm(dim=-1, keepdim=True)
            mean = emb.mean(dim=0)
            rows.append(mean / mean.norm())
    return (torch.stack(rows) * float(logit_scale)).cpu()


class HeadCache:
    """Zero-shot heads on disk (``<root>/<model>-<key>.safetensors``); ``root=None`` keeps
    nothing. Writes are atomic (temp file + rename), so concurrent workers never read a
    half-written head."""

    def __init__(self, root: str | os.PathLike[str] | None) -> None:
        self.root = Path(os.path.expanduser(os.fspath(root))) if root is not None else None

    @staticmethod
    def key(identity: Mapping[str, Any], classnames: Sequence[str],
            templates: Sequence[str]) -> str:
        import open_clip

        blob = json.dumps({"model": dict(identity), "classnames": list(classnames),
                           "templates": list(templates),
                           "open_clip": getattr(open_clip, "__version__", "?")},
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:24]

    def path(self, model: str, key: str) -> Path | None:
        if self.root is None:
            return None
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in model)
        return self.root / f"{safe}-{key}.safetensors"

    def get(self, model: str, key: str) -> torch.Tensor | None:
        p = self.path(model, key)
        if p is None or not p.is_file():
            return None
        from safetensors.torch import load_file

        try:
            return load_file(str(p))["head"]
        except Exception as exc:  # a damaged cache file is rebuilt, not fatal
            logger.warning("ignoring unreadable cached head %s (%s)", p, exc)
            return None

    def put(self, model: str, key: str, head: torch.Tensor, meta: Mapping[str, Any]) -> None:
        p = self.path(model, key)
        if p is None:
            return
        from safetensors.torch import save_file

        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(f".{os.getpid()}.tmp")
        save_file({"head": head.contiguous()}, str(tmp),
                  metadata={k: json.dumps(v) for k, v in meta.items()})
        os.replace(tmp, p)
