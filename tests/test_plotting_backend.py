"""Drawing mapframe's plots leaves matplotlib's backend and pyplot's figures alone.

The plots called ``matplotlib.use("Agg")``: in a Jupyter notebook that replaced the inline
backend, so after ``result.save(...)`` the user's own ``plt.show()`` showed nothing for the
rest of the session. They now draw plain ``Figure`` objects (saved by the Agg canvas).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("matplotlib")


def test_saving_a_result_keeps_the_users_backend_and_figures(tmp_path) -> None:
    # a fresh interpreter: the backend is chosen once per process
    code = textwrap.dedent(f"""
        import matplotlib
        matplotlib.use("pdf")  # stands for a notebook's inline backend
        import matplotlib.pyplot as plt
        import numpy as np
        from mapframe import MergeStudy

        def f(C):
            return np.column_stack([1 - ((C - [0.8, 0.2]) ** 2).sum(1),
                                    1 - ((C - [0.2, 0.8]) ** 2).sum(1)])

        mine = plt.figure()
        res = MergeStudy(objective=f, task_names=["a", "b"], budget=8, sampler="sobol").run()
        paths = res.save(r"{tmp_path / 'out'}")
        assert paths["front_png"].stat().st_size > 0
        print(matplotlib.get_backend(), plt.get_fignums() == [mine.number])
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["pdf", "True"]
