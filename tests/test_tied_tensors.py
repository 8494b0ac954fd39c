"""Tied tensors: two state-dict keys sharing one storage (an embedding and a tied LM head)
are one parameter, and every merge gives them one value."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mapframe.merging import (  # noqa: E402
    Breadcrumbs,
    DareTaskArithmetic,
    DareTies,
    Della,
    Merger,
    TaskArithmetic,
    TaskVectors,
    TiesMerging,
    load_state_dict,
)


class Tied(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(20, 8)
        self.head = torch.nn.Linear(8, 20, bias=False)
        self.head.weight = self.emb.weight
        self.norm = torch.nn.LayerNorm(8)


def _files(root: Path) -> tuple[str, dict[str, str]]:
    paths = []
    for i in range(3):
        torch.manual_seed(i)
        torch.save(Tied().state_dict(), root / f"m{i}.pt")
        paths.append(str(root / f"m{i}.pt"))
    return paths[0], {"a": paths[1], "b": paths[2]}


STRATEGIES = [TaskArithmetic, TiesMerging, lambda: DareTaskArithmetic(seed=0), DareTies,
              Della, Breadcrumbs]


@pytest.mark.parametrize("make", STRATEGIES)
def test_tied_tensors_get_one_merged_value(tmp_path: Path, make) -> None:
    """DARE, DARE-TIES and DELLA seeded each key's drop mask by its own name, so the
    embedding and its tied head were merged differently: the export held two different
    tensors and the evaluated model (one storage) only the last one written."""
    pretrained, finetuned = _files(tmp_path)
    tv = TaskVectors.from_files(pretrained, finetuned)
    merger = Merger(make(), tv)
    c = np.array([0.6, 0.7])
    out = merger.merged_state_dict(c)
    assert torch.equal(out["emb.weight"], out["head.weight"])
    model = Tied()
    merger.merge_into(merger.resident_params(model), c)
    assert torch.equal(model.emb.weight, out["emb.weight"])
    exported = load_state_dict(merger.export(tmp_path / "m", c))
    assert torch.equal(exported["emb.weight"], exported["head.weight"])
    assert torch.equal(exported["emb.weight"], out["emb.weight"])


def test_tied_keys_are_held_once_and_keep_the_content_identity(tmp_path: Path) -> None:
    pretrained, finetuned = _files(tmp_path)
    tied = TaskVectors.from_files(pretrained, finetuned)
    assert tied.tied_key("head.weight") == "emb.weight"
    assert tied.tied_key("emb.weight") == "emb.weight"
    assert tied.vectors("head.weight") is tied.vectors("emb.weight")
    # the same weights with the tie broken (equal copies) are the same content
    base = {k: v.clone() for k, v in load_state_dict(pretrained).items()}
    fts = [{k: v.clone() for k, v in load_state_dict(p).items()} for p in finetuned.values()]
    untied = TaskVectors(base, fts, list(finetuned), list(finetuned.values()))
    assert untied.tied_key("head.weight") == "head.weight"
    assert tied.fingerprint() == untied.fingerprint()
    assert tied.nbytes() < untied.nbytes()


def test_keys_tied_in_the_pretrained_model_only_are_merged_apart() -> None:
    """A fine-tune that untied the head (different values) keeps its own head."""
    torch.manual_seed(0)
    base = Tied().state_dict()
    torch.manual_seed(1)
    ft = {k: v + 0.1 * torch.randn_like(v) for k, v in base.items()}  # no sharing
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tv = TaskVectors(base, [ft])
    assert tv.tied_key("head.weight") == "head.weight"
    out = Merger(TaskArithmetic(), tv).merged_state_dict(np.array([1.0]))
    assert torch.equal(out["head.weight"], ft["head.weight"])
    assert torch.equal(out["emb.weight"], ft["emb.weight"])
