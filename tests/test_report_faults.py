"""Report and plot faults found by an audit: plain (no browser) checks."""

from __future__ import annotations

import json
import sqlite3
import warnings
from pathlib import Path

import numpy as np
import pytest

from mapframe import MergeStudy
from mapframe.report import assemble, locate

pytest.importorskip("plotly")

from mapframe.report.page import bundle_json


def test_f2_bundle_json_is_valid_json_and_safe_in_a_script():
    """F2: '<!--' became '<\\!--', not a JSON escape: JSON.parse (and /data.json) failed."""
    value = {"name": "x<!--y</script>&amp;", "n": [1, 2]}
    text = bundle_json(value)
    assert json.loads(text) == value
    assert "<" not in text and ">" not in text and "&" not in text


def _failing_verification(n_search: int):  # type: ignore[no-untyped-def]
    from report_studies import conflicting

    f = conflicting(2)
    calls = {"n": 0}

    def objective(C: np.ndarray) -> np.ndarray:
        C = np.atleast_2d(C)
        out = f(C)
        calls["n"] += len(C)
        if calls["n"] > n_search:  # every verification evaluation: NaN on the second task
            out[:, 1] = np.nan
        return out

    return objective


def test_f7_failed_verifications_are_not_read_as_an_interrupted_study(tmp_path):
    """F7: the run's count added only the successful verifications to the search count,
    so a finished study whose verifications failed was 'running or interrupted'."""
    study = MergeStudy(objective=_failing_verification(12), task_names=["a", "b"],
                       budget=12, seed=0, verify=3, sampler="lhs", on_error="record",
                       storage=tmp_path / "evaluations.sqlite")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study.run().save(tmp_path, plot=False)
    data = assemble(locate(tmp_path))
    assert data.evaluations["phase"].count("verify") == 3
    assert "verify" in data.evaluations["phase"] and data.front is not None
    assert not any("running or was interrupted" in n for n in data.notes), data.notes


def test_f7_a_store_ahead_of_the_saved_run_is_still_noted(tmp_path):
    """The note stays for what it is for: the store holds evaluations the saved run lacks."""
    from report_studies import conflicting

    def study(budget: int) -> MergeStudy:
        return MergeStudy(objective=conflicting(2), task_names=["a", "b"], budget=budget,
                          seed=0, verify=2, sampler="lhs", study_name="grow",
                          storage=tmp_path / "evaluations.sqlite")

    study(10).run().save(tmp_path, plot=False)
    assert not assemble(locate(tmp_path)).notes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study(14).run()  # more evaluations stored, the folder not saved again
    notes = assemble(locate(tmp_path)).notes
    assert any("running or was interrupted" in n for n in notes), notes


def test_f8_a_study_whose_folder_holds_another_study_is_not_called_unfinished(tmp_path):
    """F8: studies A then B saved into one folder: A's report said 'no front yet ... the
    front appears when the study finishes' although A had finished."""
    from report_studies import conflicting

    store = tmp_path / "evaluations.sqlite"
    for name, tasks, budget in (("A", ["a1", "a2"], 10), ("B", ["b1", "b2", "b3"], 14)):
        MergeStudy(objective=conflicting(len(tasks)), task_names=tasks, budget=budget,
                   seed=0, verify=2, sampler="lhs", storage=store,
                   study_name=name).run().save(tmp_path, plot=False)
    for source in (locate(tmp_path, "A"), locate(store, "A")):
        data = assemble(source)
        # A's own front, as A stored it in the store when it finished; the note says why
        # it is not the folder's
        assert data.front is not None and data.task_names == ["a1", "a2"]
        assert len(data.notes) == 1
        note = data.notes[0]
        assert "no front yet" not in note
        assert f"{tmp_path} holds the results of study 'B'" in note
        assert "stored in its store" in note
    with sqlite3.connect(store) as conn:  # a store from before stored fronts: as before
        conn.execute("DELETE FROM meta WHERE key = 'front'")
    conn.close()
    for source in (locate(tmp_path, "A"), locate(store, "A")):
        data = assemble(source)
        assert data.front is None and len(data.notes) == 1
        assert "front was replaced" in data.notes[0]
    assert assemble(locate(tmp_path, "B")).notes == []


def checkpoint_results(folder: Path, with_config: bool = False) -> Path:
    """A task-arithmetic study over two tiny fine-tunes, saved with StudyResult.save (no
    config.yaml, as a study run from Python writes; ``with_config``: plus the config.yaml
    that ``mapframe run`` writes, naming the checkpoints, as the report reads it)."""
    torch = pytest.importorskip("torch")
    from mapframe.evaluators import ModelEvaluator
    from mapframe.merging import save_state_dict
    from mapframe.problem import Task

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    base = torch.nn.Linear(3, 2)
    pre = save_state_dict(base.state_dict(), folder / "pre.safetensors")
    ft = {}
    for i, name in enumerate(["a", "b"]):
        sd = {k: v + 0.2 * (i + 1) * torch.randn_like(v) for k, v in base.state_dict().items()}
        ft[name] = save_state_dict(sd, folder / f"{name}.safetensors")
    x = torch.linspace(-1, 1, 3)

    class Distance(ModelEvaluator):
        name = "report-faults-distance"

        @property
        def tasks(self) -> list[Task]:
            return [Task("a", "min", 0, np.inf), Task("b", "min", 0, np.inf)]

        def build_model(self) -> torch.nn.Module:
            return torch.nn.Linear(3, 2)

        def score(self, model: torch.nn.Module) -> list[float]:
            y = model(x)
            return [float(((y - 0.3) ** 2).sum()), float(((y + 0.3) ** 2).sum())]

    study = MergeStudy(evaluator=Distance(), checkpoints={"pretrained": pre, "finetuned": ft},
                       budget=10, seed=0, verify=2, sampler="lhs",
                       storage=folder / "evaluations.sqlite")
    study.run().save(folder / "results", plot=False)
    if with_config:
        import yaml

        config = {"study": {"name": study.study_name, "budget": 10, "seed": 0, "verify": 2,
                            "output": str((folder / "results").absolute())},
                  "evaluator": {"name": Distance.name},
                  "checkpoints": {"pretrained": str(pre),
                                  "finetuned": {k: str(v) for k, v in ft.items()}}}
        (folder / "results" / "config.yaml").write_text(yaml.safe_dump(config))
    return folder / "results"


def test_f4_a_checkpoint_study_saved_from_python_is_not_called_black_box(tmp_path):
    """F4: has_model looked only at config.yaml: a task-arithmetic study saved with
    StudyResult.save was 'a black-box objective', and its export command could not work."""
    folder = checkpoint_results(tmp_path)
    data = assemble(locate(folder))
    assert data.export["has_model"] is True
    assert data.export["command"] is None
    assert "black-box" not in data.export["note"]
    assert "result.export(path, index={N})" in data.export["note"]
    from report_studies import make_results

    blackbox = assemble(locate(make_results(tmp_path / "bb", 2))).export
    assert blackbox["has_model"] is False and "black-box" in blackbox["note"]
    # mapframe export refuses a black-box folder: the page shows no command for it
    assert blackbox["command"] is None


def test_f9_verified_error_is_over_the_front_points_marked_verified(tmp_path):
    """F9: the 'verified mean |pred − real|' column averaged every verification (4), while
    docs/report.md says it is over the verified front points (3 remain on this front)."""
    from report_studies import conflicting

    f = conflicting(2)

    def objective(C: np.ndarray) -> np.ndarray:
        C = np.atleast_2d(C)
        return f(C) + 0.05 * np.sin(23 * C[:, :1] + 17 * C[:, 1:2])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = MergeStudy(objective=objective, task_names=["a", "b"], budget=12, seed=0,
                            verify=4, sampler="lhs").run()
    result.save(tmp_path, plot=False)
    v = result.front.verified
    assert result.verification["n_verified"] == 4 and v.sum() == 3  # one left the front
    err = np.abs(result.front.predicted[v] - result.front.real[v])
    data = assemble(locate(tmp_path))
    for j, d in enumerate(data.diagnostics):
        assert d["n_verified_front"] == 3
        assert d["verified_mean_abs_error"] == pytest.approx(err[:, j].mean())
        assert d["verified_max_abs_error"] == pytest.approx(err[:, j].max())
    from mapframe.report.page import bundle

    panel = bundle(data)["panels"]["diagnostics"]
    assert "<span id='n-verified-front'>3</span> front points marked verified (of 4" in panel
    assert "mean |pred − real|, verified front points" in panel
