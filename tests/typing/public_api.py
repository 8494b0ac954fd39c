"""The documented public API as a user types it (docs/embedding.md), checked by
``mypy --strict`` in .ci/run: a call the docs show must type-check as written."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from mapframe import MergeStudy, SavedResults, StudyResult
from mapframe.plotting import front_figure


def objective(C: np.ndarray) -> np.ndarray:
    return np.column_stack([1 - (C[:, 0] - 0.2) ** 2, 1 - (C[:, 1] - 0.8) ** 2])


def use(result: StudyResult) -> None:
    predicted: np.ndarray = result.predict([[0.5, 0.5]])
    best: int = result.select([0.7, 0.3])
    also: int = result.select((0.7, 0.3))
    print(predicted.shape, best, also, result.front.coefficients.shape)


def show(result: StudyResult, saved: SavedResults) -> None:
    """What a notebook shows (docs/embedding.md, "In a notebook")."""
    figure: Figure = result.plot()
    again: Figure = saved.plot()
    same: Figure = front_figure(result)
    page: str = result._repr_html_() + saved._repr_html_() + result.front._repr_html_()
    table = result.front_table()
    print(figure, again, same, len(page), len(table), len(saved.front_table()),
          len(result.front.to_pandas(["x", "y"])))


def in_a_row(configs: list[dict[str, int]]) -> list[StudyResult]:
    """Studies one after the other on one local cluster (docs/distributed.md, "Several
    studies in a row")."""
    from mapframe.executors.dask_executor import DaskExecutor

    with DaskExecutor(workers=2).keep_alive():
        return [MergeStudy(objective=objective, task_names=["a", "b"], budget=c["budget"],
                           executor={"name": "dask", "workers": 2}).run() for c in configs]


if __name__ == "__main__":
    study = MergeStudy(objective=objective, task_names=["a", "b"], budget=20,
                       preference=(0.5, 0.5), progress=True)
    use(study.run())
