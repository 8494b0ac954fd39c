"""Exporting front points: safetensors files, Hugging Face model folders with a model card,
and mergekit configurations.

- :mod:`mapframe.export.point`: :class:`ExportPoint` (a point and its context) and
  :func:`export_point` (one of :data:`EXPORT_FORMATS`);
- :mod:`mapframe.export.hf_folder`: the sharded Hugging Face folder writer;
- :mod:`mapframe.export.model_card`: the README.md of an exported merge;
- :mod:`mapframe.export.mergekit_yaml`: a merge as mergekit YAML (and the table of which
  strategies translate).
"""

from mapframe.export.point import EXPORT_FORMATS, ExportPoint, export_point, push_to_hub

__all__ = ["EXPORT_FORMATS", "ExportPoint", "export_point", "push_to_hub"]
