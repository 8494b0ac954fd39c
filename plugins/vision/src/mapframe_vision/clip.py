"""Zero-shot CLIP evaluation of merged image encoders (the MAP paper's main setting).

The merged model is CLIP's image tower; each task is classified zero-shot against a head
built from the (unmerged) text tower, as in task arithmetic (Ilharco et al., 2023) and MAP.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from mapframe.errors import CheckpointError, ConfigError
from mapframe.evaluators.base import ModelEvaluator
from mapframe.problem import Task
from mapframe_vision._common import (
    check_count,
    check_metric,
    check_preload,
    check_state_shapes,
    drop_attributes,
    freeze_on_device,
    metric_index,
    metric_tasks,
)
from mapframe_vision.data import (
    EvalSet,
    TaskSpec,
    check_numeric_folder_order,
    describe_data,
    load_dataset,
    parse_tasks,
    resolve_class_names,
)
from mapframe_vision.heads import HeadCache, build_zeroshot_head, presets, resolve_templates
from mapframe_vision.runtime import check_precision, resolve_device, score_classifier

if TYPE_CHECKING:
    import torch

__all__ = ["DEFAULT_HEAD_CACHE", "ClipEvaluator"]

logger = logging.getLogger(__name__)

#: Where zero-shot heads are cached unless ``head_cache`` says otherwise.
DEFAULT_HEAD_CACHE = os.path.join("~", ".cache", "mapframe", "clip-heads")

# Wrappers whose state dicts nest the image tower: open_clip's CLIP ("visual."), the
# task-vectors ImageEncoder ("model.visual."), DataParallel/DDP ("module.").
_PREFIXES = ("", "visual.", "model.visual.", "module.visual.", "module.model.visual.",
             "image_encoder.model.visual.", "model.", "module.")


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    # open_clip warns on the root logger for every model built without weights, which is
    # what the image-tower template is.
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)


class ClipEvaluator(ModelEvaluator):
    """Top-1 zero-shot accuracy (or loss) of merged CLIP image encoders on each task.

    Args:
        tasks: one mapping per task: ``name``; ``data`` (an ``ImageFolder`` root, or
            ``{dataset: "module:factory", kwargs: {...}}``, or from Python a ``Dataset``);
            ``classnames`` (a list, a text file with one name per line, ``folder``, or a
            preset name; default: the dataset's ``classes``, or the preset named like the
            task); ``templates`` (format strings with one ``{}``, or a preset name; default:
            the preset named like the task, else ``"a photo of a {}."``); ``max_samples`` (a
            fixed random subset, for quick searches).
        model: an open_clip model name (``ViT-B-32``, ...), or one registered from
            ``model_config``.
        pretrained: the open_clip pretrained tag (``openai``, ``laion2b_s34b_b79k``, ...;
            downloaded by open_clip into ``cache_dir`` if not there) or the path of a local
            full CLIP checkpoint. It provides the text tower for the zero-shot heads only:
            the merged image towers come from the study's checkpoints. Once every head is
            cached, it is not loaded at all.
        model_config: a JSON model config file (or a folder of them) registered with
            ``open_clip.add_model_config`` before ``model`` is looked up.
        cache_dir: open_clip's weight cache (``None``: open_clip's default).
        quick_gelu: force QuickGELU activations (``None``: as the pretrained tag says, else
            no). OpenAI's weights need it; the wrong choice silently costs accuracy.
        image_mean, image_std: preprocessing normalisation (``None``: the pretrained tag's,
            else OpenAI's).
        metric: ``accuracy`` (maximise, in [0, 1]) or ``loss`` (cross-entropy, minimise).
        batch_size, num_workers: evaluation batching (``num_workers`` for streamed data).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:<i>``.
        precision: ``auto`` (fp16 autocast on CUDA, fp32 on CPU), ``fp32``, ``amp``, ``bf16``.
        preload: keep preprocessed evaluation images in memory (``auto``: when a task's
            tensors take at most ``preload_limit_gb``).
        head_cache: folder for cached zero-shot heads (``None``: no cache).

    The evaluation follows :class:`~mapframe.evaluators.ModelEvaluator`'s template: one
    resident image tower (:attr:`resident_model`) is built in :meth:`setup`
    (:meth:`build_model`), then the zero-shot heads and evaluation sets (:meth:`prepare`);
    each evaluation writes the merged weights into the tower in place (:meth:`merge`) and
    classifies each requested task's images against its head (:meth:`score_task`). The
    open_clip model name is :attr:`model`.
    """

    name: ClassVar[str] = "clip"

    def __init__(
        self,
        tasks: Sequence[Mapping[str, Any] | TaskSpec],
        model: str = "ViT-B-32",
        pretrained: str = "openai",
        model_config: str | None = None,
        cache_dir: str | None = None,
        quick_gelu: bool | None = None,
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
        metric: str = "accuracy",
        batch_size: int = 128,
        num_workers: int = 0,
        device: str = "auto",
        precision: str = "auto",
        preload: bool | str = "auto",
        preload_limit_gb: float = 4.0,
        head_cache: str | None = DEFAULT_HEAD_CACHE,
    ) -> None:
        self._specs = parse_tasks(tasks)
        if not isinstance(model, str) or not model:
            raise ConfigError(f"model must be an open_clip model name, got {model!r}")
        if not isinstance(pretrained, str) or not pretrained:
            raise ConfigError(
                "pretrained is required: an open_clip pretrained tag (e.g. openai) or the path "
                "of a full CLIP checkpoint; its text tower builds the zero-shot heads"
            )
        check_metric(metric)
        for arg, val, low in (("batch_size", batch_size, 1), ("num_workers", num_workers, 0)):
            check_count(arg, val, low)
        check_preload(preload)
        self.model = model
        self.pretrained = pretrained
        self.model_config = model_config
        self.cache_dir = cache_dir
        self.quick_gelu = quick_gelu
        self.image_mean = list(image_mean) if image_mean is not None else None
        self.image_std = list(image_std) if image_std is not None else None
        self.metric = metric
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.device = device
        self._device: str | None = None
        self.precision = check_precision(precision)
        self.preload = preload
        self.preload_limit_gb = float(preload_limit_gb)
        self.head_cache = head_cache
        self._tasks = metric_tasks(self._specs, metric)
        self._shapes: dict[str, tuple[int, ...]] | None = None
        self._ready = False
        self._timings: dict[str, float] = {"merge_s": 0.0, "score_s": 0.0, "merges": 0,
                                           "images": 0}

    # -- description -------------------------------------------------------------------------
    @property
    def tasks(self) -> list[Task]:
        """One accuracy (or loss) objective per task, in the order of ``tasks``."""
        return list(self._tasks)

    def describe(self) -> dict[str, Any]:
        """Settings as a config would spell them (datasets given as objects by their type)."""
        desc = super().describe()
        desc["tasks"] = [_describe_spec(s) for s in self._specs]
        return desc

    # -- open_clip ---------------------------------------------------------------------------
    def _open_clip(self) -> Any:
        try:
            import open_clip
        except ImportError as exc:  # pragma: no cover - a dependency of this package
            raise ConfigError(f"the clip evaluator needs open_clip_torch ({exc}); "
                              "pip install open_clip_torch") from None
        if self.model_config is not None:
            path = Path(os.path.expanduser(self.model_config))
            if not path.exists():
                raise ConfigError(f"model_config {path} not found (a JSON open_clip model "
                                  "config, or a folder of them)")
            open_clip.add_model_config(path)
        if self.model not in open_clip.list_models():
            import difflib

            close = difflib.get_close_matches(self.model, open_clip.list_models(), n=3)
            raise ConfigError(
                f"unknown open_clip model {self.model!r}"
                + (f"; did you mean {', '.join(close)}?" if close else "")
                + " (open_clip.list_models() lists them; register your own with model_config)"
            )
        return open_clip

    def _is_tag(self) -> bool:
        return not Path(os.path.expanduser(self.pretrained)).is_file()

    def _pretrained_cfg(self) -> dict[str, Any]:
        open_clip = self._open_clip()
        if not self._is_tag():
            return {}
        tags = open_clip.list_pretrained_tags_by_model(self.model)
        if self.pretrained not in tags:
            looks_like_path = os.sep in self.pretrained or self.pretrained.endswith(
                (".pt", ".bin", ".pth", ".safetensors"))
            if looks_like_path:
                raise CheckpointError(f"pretrained checkpoint not found: {self.pretrained}")
            raise ConfigError(
                f"open_clip has no pretrained tag {self.pretrained!r} for {self.model}; "
                f"tags: {', '.join(tags) or 'none'} (or give the path of a checkpoint file)"
            )
        return dict(open_clip.get_pretrained_cfg(self.model, self.pretrained))

    def _build_kwargs(self) -> dict[str, Any]:
        cfg = self._pretrained_cfg()
        qg = self.quick_gelu if self.quick_gelu is not None else bool(cfg.get("quick_gelu"))
        kw: dict[str, Any] = {"force_quick_gelu": qg}
        mean = self.image_mean or cfg.get("mean")
        std = self.image_std or cfg.get("std")
        if mean is not None:
            kw["image_mean"] = tuple(mean)
        if std is not None:
            kw["image_std"] = tuple(std)
        for src, dst in (("interpolation", "image_interpolation"),
                         ("resize_mode", "image_resize_mode")):
            if cfg.get(src):
                kw[dst] = cfg[src]
        return kw

    def _identity(self) -> dict[str, Any]:
        """What the text tower's weights are: tag, or file with size and mtime."""
        ident: dict[str, Any] = {"model": self.model, "quick_gelu": self._build_kwargs()[
            "force_quick_gelu"]}
        if self._is_tag():
            ident["pretrained"] = self.pretrained
        else:
            p = Path(os.path.expanduser(self.pretrained)).resolve()
            st = p.stat()
            ident["pretrained"] = {"path": str(p), "size": st.st_size,
                                   "mtime_ns": st.st_mtime_ns}
        return ident

    def _template_model(self) -> tuple[Any, Any]:
        """A randomly initialised model of the right architecture and its preprocessing."""
        open_clip = self._open_clip()
        with _quiet_root_logger():
            model, _, preprocess = open_clip.create_model_and_transforms(
                self.model, pretrained=None, **self._build_kwargs())
        return model, preprocess

    def _full_model(self) -> Any:
        """The pretrained CLIP with its text tower (downloaded by open_clip for a tag)."""
        open_clip = self._open_clip()
        try:
            model, _, _ = open_clip.create_model_and_transforms(
                self.model, pretrained=os.path.expanduser(self.pretrained),
                cache_dir=self.cache_dir, **self._build_kwargs())
        except Exception as exc:
            # A local file open_clip cannot read fails in many ways (torch.load raises
            # UnpicklingError, IndexError, ... on a file that is no checkpoint).
            first = (str(exc).splitlines() or [type(exc).__name__])[0]
            if not self._is_tag():
                raise CheckpointError(
                    f"{self.pretrained}: not a CLIP checkpoint of {self.model} that "
                    f"open_clip can load ({first[:300]})") from None
            if not isinstance(exc, (RuntimeError, OSError, ValueError)):
                raise
            cfg = open_clip.get_pretrained_cfg(self.model, self.pretrained)
            where = cfg.get("hf_hub") or cfg.get("url") or "?"
            raise CheckpointError(
                f"could not get the {self.pretrained!r} weights of open_clip model "
                f"{self.model} ({first[:200]}). They are only needed to "
                "build the zero-shot heads. Without network access: download them elsewhere "
                f"(Hugging Face repo / URL: {where}) and set pretrained: /path/to/that/file "
                "(open_clip_pytorch_model.bin or open_clip_model.safetensors), or copy an "
                "open_clip cache that has them and point cache_dir at it"
            ) from None
        return model

    # -- checkpoints -------------------------------------------------------------------------
    def _visual_shapes(self) -> dict[str, tuple[int, ...]]:
        if self._shapes is None:
            model, _ = self._template_model()
            self._shapes = {k: tuple(v.shape) for k, v in model.visual.state_dict().items()}
        return self._shapes

    def prepare_checkpoint(
        self, state: dict[str, torch.Tensor], source: str
    ) -> dict[str, torch.Tensor]:
        """Keep the image tower of any common layout, under the tower's own key names.

        Accepted: the image tower's state dict; a full open_clip CLIP state dict
        (``visual.*``); the task-vectors ``ImageEncoder`` (``model.visual.*``, also as a
        pickled module); any of them wrapped in ``module.``. Keys or shapes that do not fit
        ``model`` raise :class:`~mapframe.errors.CheckpointError`.
        """
        expected = self._visual_shapes()
        best, best_hits = "", -1
        for prefix in _PREFIXES:
            hits = sum(1 for k in state if k.startswith(prefix) and k[len(prefix):] in expected)
            if hits > best_hits:
                best, best_hits = prefix, hits
        out = {k[len(best):]: v for k, v in state.items() if k.startswith(best)}
        check_state_shapes(
            out, expected, source,
            misfit=f"does not fit the image tower of open_clip model {self.model!r}",
            model=f"the image tower of {self.model!r}", varies="size",
            fix="set model: to the one it was fine-tuned from",
        )
        return out

    # -- setup (ModelEvaluator's template: build_model, bind_parameters, prepare) ------------
    def build_model(self) -> torch.nn.Module:
        """The resident image tower of ``model`` on ``device``, in eval mode and without
        gradients (randomly initialised: merges overwrite its weights); its preprocessing is
        kept for :meth:`prepare`."""
        self._device = resolve_device(self.device)
        template, self._preprocess = self._template_model()
        visual = template.visual
        del template  # the text tower of the template is random: never used
        # setup() then binds the merged tensors, sharing storage with the tower on its device
        # (merges are computed on the CPU and copied in).
        return freeze_on_device(visual, self._device)

    def model_device(self) -> torch.device:
        """The torch device of the resident image tower (``device`` resolved; ``auto`` picks
        CUDA when available)."""
        import torch

        return torch.device(self._device or resolve_device(self.device))

    def _resolved_device(self) -> str:
        """``device`` as resolved by :meth:`build_model` (a string such as ``cuda:0``)."""
        if self._device is None:
            raise ConfigError(f"evaluator {self.name!r} was used before setup(merger)")
        return self._device

    def prepare(self) -> None:
        """The evaluation sets, each task's class names and templates, and the zero-shot
        heads (read from the head cache, else built with the pretrained text tower)."""
        preprocess = self._preprocess
        self._datasets: dict[str, Any] = {}
        self._classnames: dict[str, list[str]] = {}
        self._templates: dict[str, list[str]] = {}
        for spec in self._specs:
            ds = load_dataset(spec, preprocess)
            self._datasets[spec.name] = ds
            if spec.classnames is None and not getattr(ds, "classes", None) and (
                spec.name in presets()["classnames"]
            ):
                spec = TaskSpec(spec.name, spec.data, "preset", spec.templates, spec.max_samples)
            if spec.classnames not in (None, "folder"):  # names in class order
                check_numeric_folder_order(spec.name, ds)
            self._classnames[spec.name] = resolve_class_names(spec, ds, presets()["classnames"])
            self._templates[spec.name] = resolve_templates(spec.name, spec.templates)
        self._heads = self._build_heads()
        self._sets = {
            s.name: EvalSet(s.name, self._datasets[s.name], len(self._classnames[s.name]),
                            batch_size=self.batch_size, num_workers=self.num_workers,
                            max_samples=s.max_samples, preload=self.preload,
                            preload_limit_gb=self.preload_limit_gb,
                            device=self._resolved_device())
            for s in self._specs
        }
        self._ready = True

    def _build_heads(self) -> dict[str, torch.Tensor]:
        cache = HeadCache(self.head_cache)
        ident = self._identity()
        heads: dict[str, torch.Tensor] = {}
        todo = []
        for spec in self._specs:
            key = HeadCache.key(ident, self._classnames[spec.name], self._templates[spec.name])
            head = cache.get(self.model, key)
            if head is None:
                todo.append((spec.name, key))
            else:
                heads[spec.name] = head
        if todo:
            import open_clip

            t0 = time.perf_counter()
            full = self._full_model().to(self._resolved_device()).eval()
            tokenizer = open_clip.get_tokenizer(self.model, cache_dir=self.cache_dir)
            scale = float(full.logit_scale.detach().exp())
            for name, key in todo:
                head = build_zeroshot_head(full.encode_text, tokenizer, scale,
                                           self._classnames[name], self._templates[name],
                                           self._resolved_device())
                cache.put(self.model, key, head, {"task": name, "model": ident,
                                                  "classnames": self._classnames[name],
                                                  "templates": self._templates[name]})
                heads[name] = head
            del full
            logger.info("built %d zero-shot head(s) in %.1f s", len(todo),
                        time.perf_counter() - t0)
        for name, head in heads.items():
            n = len(self._classnames[name])
            if head.shape[0] != n:  # pragma: no cover - the key includes the class names
                raise ConfigError(f"task {name!r}: cached head has {head.shape[0]} classes, "
                                  f"expected {n}; delete {self.head_cache}")
        return {k: v.to(self._resolved_device()) for k, v in heads.items()}

    @property
    def timings(self) -> dict[str, float]:
        """Seconds spent merging (``merge_s``) and scoring (``score_s``), merges done and
        images classified so far (throughput = ``images / score_s``)."""
        return dict(self._timings)

    @property
    def heads(self) -> dict[str, torch.Tensor]:
        """The zero-shot heads (``classes × embed_dim``, logit scale included), after setup."""
        return dict(self._heads)

    @property
    def class_names(self) -> dict[str, list[str]]:
        """Each task's class names, in label order, after setup."""
        return {k: list(v) for k, v in self._classnames.items()}

    # -- evaluation (ModelEvaluator's template: merge, score_tasks -> score_task) -------------
    def logits(self, task: str, images: torch.Tensor) -> torch.Tensor:
        """Zero-shot logits of the resident (currently merged) image tower for ``task``."""
        return self._logits(self.resident_model, task, images)

    def _logits(self, visual: torch.nn.Module, task: str,
                images: torch.Tensor) -> torch.Tensor:
        feats = visual(images)
        if isinstance(feats, (tuple, list)):
            feats = feats[0]
        feats = feats.float()
        feats = feats / feats.norm(dim=-1, keepdim=True)
        return feats @ self._heads[task].T

    def merge(self, coefficients: np.ndarray) -> None:
        """Write the merged weights into the resident tower (timed, CUDA work included)."""
        t0 = time.perf_counter()
        super().merge(coefficients)
        self._timings["merge_s"] += time.perf_counter() - t0
        self._timings["merges"] += 1

    def score_tasks(self, model: torch.nn.Module, tasks: Sequence[int]) -> list[float]:
        """Score ``tasks`` (their datasets alone are read), timed into :attr:`timings`."""
        t0 = time.perf_counter()
        values = super().score_tasks(model, tasks)
        self._timings["score_s"] += time.perf_counter() - t0
        return values

    def score_task(self, model: torch.nn.Module, task: int) -> float:
        """Zero-shot accuracy (or loss) of the image tower ``model`` on task ``task``."""
        name = self._specs[task].name
        evalset = self._sets[name]
        res = score_classifier(functools.partial(self._logits, model, name), evalset,
                               self._resolved_device(), self.precision)
        self._timings["images"] += len(evalset)
        return res[metric_index(self.metric)]

    def close(self) -> None:
        """Drop the resident model, heads and preloaded images."""
        if self._ready:
            t = self._timings
            if t["merges"]:
                logger.info("clip: %d merges, %.2f s merging, %.2f s scoring (%.0f images/s)",
                            t["merges"], t["merge_s"], t["score_s"],
                            t["images"] / max(t["score_s"], 1e-9))
        super().close()
        drop_attributes(self, ("_heads", "_sets", "_datasets", "_preprocess"))
        self._ready = False


def _describe_spec(spec: TaskSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"name": spec.name, "data": describe_data(spec.data)}
    for k in ("classnames", "templates", "max_samples"):
        v = getattr(spec, k)
        if v is not None:
            out[k] = v
    return out
