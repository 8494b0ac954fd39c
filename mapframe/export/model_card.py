"""The model card (README.md) of an exported merge, in the Hugging Face Hub's format.

YAML front matter the Hub reads (``base_model`` lists the pretrained model and the
fine-tunes, ``tags`` include mergekit's ``mergekit``/``merge`` and ``mapframe``,
``library_name`` when the base is a transformers folder), then the merge: strategy and
coefficients, the preference that selected the point, the predicted and measured metrics
per task, the Pareto-front plot, and the equivalent mergekit configuration when one exists.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mapframe.export.point import ExportPoint

__all__ = ["card_metadata", "hub_id", "model_card"]

TAGS = ("mergekit", "merge", "mapframe")
#: A model folder inside the Hugging Face cache: ``.../models--<org>--<name>/snapshots/<rev>``.
_CACHED = re.compile(r"models--([^/\\]+?)--([^/\\]+)[/\\]snapshots[/\\][^/\\]+[/\\]?$")


def hub_id(path: str) -> str:
    """The Hub repository id of a model folder in the Hugging Face cache (``org/name``), else
    the path itself: the Hub reads ``base_model`` as repository ids."""
    m = _CACHED.search(path)
    return f"{m.group(1)}/{m.group(2)}" if m else path


def card_metadata(point: ExportPoint, library: str | None = None) -> dict[str, object]:
    """The card's front matter as a mapping."""
    models = [hub_id(m) for m in [point.pretrained, *point.finetuned.values()] if m]
    meta: dict[str, object] = {"base_model": models, "tags": list(TAGS)}
    if library:
        meta["library_name"] = library
    return meta


def _cell(text: object) -> str:
    """``text`` as one Markdown table cell: line breaks and other control characters as
    spaces, ``|`` escaped (either would end the cell or the row)."""
    flat = "".join(" " if ord(ch) < 32 or ord(ch) == 127 else ch for ch in str(text))
    return flat.replace("|", "\\|")


def _number(x: float | None) -> str:
    return "–" if x is None or x != x else f"{x:.6g}"


def model_card(point: ExportPoint, library: str | None = None,
               front_png: str | None = None) -> str:
    """The README.md of an exported merge (``front_png``: the plot's file name in the
    folder, linked when given)."""
    import yaml

    from mapframe.export.mergekit_yaml import mergekit_yaml

    front = yaml.safe_dump(card_metadata(point, library), sort_keys=False,
                           allow_unicode=True).rstrip()
    name = point.study or "merge"
    where = (f"front point {point.index}" if point.index is not None else "a merge")
    out = [
        "---", front, "---", f"# {name}: {where}", "",
        "This model is a merge of fine-tuned models of one pre-trained model, found with "
        "[mapframe](https://arxiv.org/abs/2406.07529) (MAP: Model merging with Amortized "
        "Pareto fronts): mapframe evaluated a few dozen merges, fitted one surrogate per task "
        "and solved for the whole trade-off front between the tasks; this is one point of "
        f"that front ({point.source or 'point'}).", "",
        "## Merge", "",
        f"- strategy: `{point.strategy.get('name')}`"
        + "".join(f", {k} = `{v}`" for k, v in point.strategy.items() if k != "name"),
        f"- pretrained (base) model: `{point.pretrained}`", "",
        "| fine-tuned model | coefficient |", "|---|---|",
    ]
    out += [f"| `{_cell(path or task)}` ({_cell(task)}) | {c:.6g} |"
            for (task, path), c in zip(point.finetuned.items(), point.coefficients)]
    out.append("")
    if point.preference is not None:
        out += ["- selected for the preference " + ", ".join(
            f"{t} {p:.4g}" for t, p in zip(point.task_names, point.preference)), ""]
    out += ["## Metrics", "",
            "Predicted by the surrogates; measured where the merge was evaluated.", "",
            "| task | direction | predicted | measured |", "|---|---|---|---|"]
    real: list[float | None] = (list(point.real) if point.real is not None
                                else [None] * len(point.task_names))
    for t, d, p, r in zip(point.task_names, point.directions, point.predicted, real):
        out.append(f"| {_cell(t)} | {'higher' if d == 'max' else 'lower'} is better | "
                   f"{_number(p)} | {_number(r)} |")
    out.append("")
    if front_png:
        out += ["## Pareto front", "", f"![the study's Pareto front]({front_png})", ""]
    config, why = point.mergekit()
    out += ["## mergekit", ""]
    if config is not None:
        out += ["The same merge with [mergekit](https://github.com/arcee-ai/mergekit) "
                "(`mergekit-yaml mergekit_config.yml OUT`):", "", "```yaml",
                mergekit_yaml(config, point.mergekit_header()).rstrip(), "```", ""]
    else:
        out += [f"No mergekit configuration reproduces this merge: {why}", ""]
    return "\n".join(out)
