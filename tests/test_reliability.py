"""Faults that used to lose or mix up results (issue 21): each test fails on the old code."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mapframe import MergeStudy
from mapframe.errors import ConfigError, StoreError
from mapframe.evaluators.identity import callable_digest


def _study(fn, db, **kw):
    return MergeStudy(objective=fn, task_names=["a", "b"], budget=8, seed=0, storage=db,
                      study_name="s", **kw)


# -- 1. different objectives never share evaluations ----------------------------------------
def test_two_different_lambdas_do_not_share_a_store(tmp_path):
    db = tmp_path / "s.sqlite"
    _study(lambda C: np.column_stack([C[:, 0], -C[:, 1]]), db).run()
    with pytest.raises(StoreError, match="evaluator"):
        _study(lambda C: np.column_stack([2 * C[:, 0], C[:, 1] ** 2]), db).run()


def test_the_same_lambda_resumes(tmp_path):
    db = tmp_path / "s.sqlite"

    def make():
        return lambda C: np.column_stack([C[:, 0], -C[:, 1]])

    first = _study(make(), db).run()
    again = _study(make(), db).run()
    assert first.n_evaluated == 8 and again.n_evaluated == 0 and again.n_reused == 8


def test_closures_differ_by_captured_values():
    def make(k):
        return lambda C: k * C

    assert callable_digest(make(1.0)) == callable_digest(make(1.0))
    assert callable_digest(make(1.0)) != callable_digest(make(2.0))
    assert callable_digest(make(np.ones(3))) != callable_digest(make(np.zeros(3)))


def test_module_globals_read_by_a_lambda_are_part_of_its_identity():
    # Two scripts defining the same lambda over a different module-level constant.
    digests = []
    for k in (1.0, 2.0):
        namespace: dict = {"k": k}
        exec("f = lambda C: k * C", namespace)
        digests.append(callable_digest(namespace["f"]))
    assert None not in digests and digests[0] != digests[1]


def test_partials_and_instances_are_identified_by_their_arguments():
    import functools

    def scaled(C, k):
        return k * C

    class Scaled:
        def __init__(self, k):
            self.k = k

        def __call__(self, C):
            return self.k * C

    assert callable_digest(functools.partial(scaled, k=1)) != callable_digest(
        functools.partial(scaled, k=2))
    assert callable_digest(Scaled(1)) == callable_digest(Scaled(1))
    assert callable_digest(Scaled(1)) != callable_digest(Scaled(3))


def test_digest_is_stable_across_processes():
    script = ("import numpy as np\nfrom mapframe.evaluators.identity import callable_digest\n"
              "w = np.arange(3.0)\nf = lambda C: C @ w + {'a': 1, 'b': 2}['a']\n"
              "print(callable_digest(f))\n")
    outs = {subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           check=True, env={"PYTHONHASHSEED": str(seed), "PATH": ""}
                           ).stdout.strip() for seed in (1, 2)}
    assert len(outs) == 1 and "None" not in outs


_DESCRIBE_SCRIPT = """
from mapframe.component import Component

class Scale:
    def __init__(self, k):
        self.k = k

class Described(Component):
    name = "described"

    def __init__(self, k):
        self.labels = {"cat", "dog", "bird", "fish", "frog", "horse"}
        self.scale = Scale(k)

print(Described(2.0).describe()["labels"], Described(2.0).describe()["scale"],
      Described(3.0).describe()["scale"], sep="|")
"""


def test_a_component_s_set_or_plain_object_setting_describes_it_the_same_in_every_process():
    """describe() feeds the store's fingerprint: a set written in hash order, or an object
    written with its memory address, made an unchanged study a different setup in the next
    process, and all its stored evaluations were evaluated again."""
    outs = [subprocess.run([sys.executable, "-c", _DESCRIBE_SCRIPT], capture_output=True,
                           text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": str(seed)}).stdout.strip()
            for seed in (1, 2, 3)]
    assert len(set(outs)) == 1, outs
    labels, scale_2, scale_3 = outs[0].split("|")
    assert labels == str(sorted(["cat", "dog", "bird", "fish", "frog", "horse"]))
    assert scale_2.startswith("<Scale") and " at 0x" not in outs[0]
    assert scale_2 != scale_3  # two different objects are two setups


def test_a_torch_model_read_by_an_objective_counts_by_its_weights():
    """A model's repr is its architecture only: two objectives reading models with other
    weights used to share one digest, and a study reused the other model's metrics."""
    import torch

    def make(seed):
        torch.manual_seed(seed)
        model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Tanh())
        return lambda C: model(torch.as_tensor(C, dtype=torch.float32)).detach().numpy()

    assert callable_digest(make(0)) == callable_digest(make(0))
    assert callable_digest(make(0)) != callable_digest(make(1))
    with torch.no_grad():
        half = torch.nn.Linear(2, 2).to(torch.bfloat16)  # a dtype numpy lacks
        f = lambda C: half  # noqa: E731
        before = callable_digest(f)
        half.weight.add_(1)
        assert None not in (before, callable_digest(f)) and before != callable_digest(f)


def test_an_object_whose_repr_hides_its_state_counts_by_that_state():
    """A fitted estimator's repr shows its settings, not what it learned."""

    class Fitted:
        def __init__(self, w):
            self.w = np.asarray(w, dtype=float)

        def __repr__(self):
            return "Fitted()"

    def make(w):
        est = Fitted(w)
        return lambda C: C @ est.w

    assert callable_digest(make([1.0, 2.0])) == callable_digest(make([1.0, 2.0]))
    assert callable_digest(make([1.0, 2.0])) != callable_digest(make([1.0, 3.0]))


def test_digest_of_tensors_inside_objects_is_stable_across_processes():
    """torch's own pickling of a tensor embeds a random id: tensors are hashed by content."""
    script = ("import torch\nfrom mapframe.evaluators.identity import callable_digest\n"
              "class Holder:\n    def __init__(self):\n        torch.manual_seed(0)\n"
              "        self.m = torch.nn.Linear(3, 3)\n        self.t = torch.ones(2)\n"
              "h = Holder()\nf = lambda C: (h, C)\nprint(callable_digest(f))\n")
    outs = {subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           check=True).stdout.strip() for _ in range(2)}
    assert len(outs) == 1 and "None" not in outs


def test_a_script_s_objective_is_known_by_what_it_computes(tmp_path):
    """A function defined in the running script was known by its name ``__main__:f`` only:
    editing the script (or a value it reads) and rerunning reused the old metrics."""
    script = ("import numpy as np\nfrom mapframe import MergeStudy\nK = {k}\n"
              "def objective(C):\n    return np.column_stack([K * C[:, 0], -C[:, 1]])\n"
              "res = MergeStudy(objective=objective, task_names=['a', 'b'], budget=8, seed=0,\n"
              "                 storage={db!r}).run()\nprint(res.n_evaluated, res.n_reused)\n")
    db = str(tmp_path / "s.sqlite")

    def run(k):
        return subprocess.run([sys.executable, "-c", script.format(k=k, db=db)],
                              capture_output=True, text=True)

    first, again, edited = run(1.0), run(1.0), run(2.0)
    assert first.stdout.split() == ["8", "0"] and again.stdout.split() == ["0", "8"]
    assert edited.returncode != 0 and "evaluator differ" in edited.stderr


def test_a_script_study_stored_before_script_digests_still_resumes():
    from mapframe.storage.base import fingerprint_diff

    old = {"tasks": [], "evaluator": {"name": "callable", "function": "__main__:f"}}
    new = {"tasks": [], "evaluator": {"name": "callable", "function": "__main__:f",
                                      "code": "abc"}}
    assert fingerprint_diff(old, new) == []
    other = {"tasks": [], "evaluator": {"name": "callable", "function": "__main__:g",
                                        "code": "abc"}}
    assert fingerprint_diff(old, other) == ["evaluator"]
    lam = {"tasks": [], "evaluator": {"name": "callable", "function": "<lambda>"}}
    assert fingerprint_diff(lam, {**lam, "evaluator": {**lam["evaluator"], "code": "x"}}) == [
        "evaluator"]


def test_an_unidentifiable_objective_refuses_to_reuse_a_store(tmp_path):
    lock = threading.Lock()  # no stable identity: not picklable, repr is an address

    def f(C):
        with lock:
            return np.column_stack([C[:, 0], -C[:, 1]])

    assert callable_digest(f) is None
    db = tmp_path / "s.sqlite"
    _study(f, db).run()
    with pytest.raises(ConfigError, match="study_name="):
        _study(f, db).run()
    # A name of its own makes a fresh study in the same store.
    assert MergeStudy(objective=f, task_names=["a", "b"], budget=8, seed=0, storage=db,
                      study_name="s2").run().n_evaluated == 8


# -- 3 and 11. metrics that are not plain real numbers --------------------------------------
def test_complex_metrics_are_an_error_not_a_silent_real_part():
    from mapframe.errors import EvaluationError

    with pytest.raises(EvaluationError, match="complex numbers; metrics must be real"):
        MergeStudy(objective=lambda C: C + 1j, task_names=["a", "b"], budget=8).run()


def test_a_torch_tensor_that_requires_grad_is_accepted():
    import torch

    w = torch.tensor([1.0, -1.0], requires_grad=True)

    def f(C):
        return torch.as_tensor(C, dtype=torch.float32) * w  # keeps requires_grad

    res = MergeStudy(objective=f, task_names=["a", "b"], budget=8, seed=0).run()
    assert res.history.Y.shape == (8, 2)


# -- 3. a checkpoint rewritten with the same size and modification time ---------------------
def test_hash_fingerprint_sees_a_checkpoint_rewritten_in_place(tmp_path):
    import os

    import torch

    from mapframe.errors import StoreError
    from mapframe.evaluators.callable import CallableEvaluator
    from mapframe.merging.checkpoints import save_state_dict

    paths = {}
    for name, value in (("pre", 0.0), ("a", 1.0), ("b", 2.0)):
        paths[name] = tmp_path / f"{name}.safetensors"
        save_state_dict({"w": torch.full((3,), value)}, paths[name])

    def run(mode):
        return MergeStudy(
            evaluator=CallableEvaluator("objectives:two_quadratics", ["x", "y"]),
            checkpoints={"pretrained": paths["pre"],
                         "finetuned": {"a": paths["a"], "b": paths["b"]},
                         "fingerprint": mode},
            budget=6, seed=0, storage=tmp_path / f"{mode}.sqlite").run()

    run("stat"), run("hash")
    st = os.stat(paths["a"])
    save_state_dict({"w": torch.full((3,), 5.0)}, paths["a"])  # same size, new weights
    os.utime(paths["a"], ns=(st.st_atime_ns, st.st_mtime_ns))
    assert run("stat").n_reused == 6  # documented blind spot of the default
    with pytest.raises(StoreError, match="merge"):
        run("hash")


# -- 6. many processes creating one store at once -------------------------------------------
def _create_store(args):
    path, barrier_wait = args
    from mapframe.storage.sqlite import SQLiteStore

    barrier_wait()
    store = SQLiteStore(path)
    store.open("shared", {"tasks": ["a"]})
    store.close()
    return "ok"


def test_many_processes_create_the_same_store_at_once(tmp_path):
    import multiprocessing as mp

    # The old code failed in about 2 of 120 processes (UNIQUE constraint, "database is
    # locked"): 5 rounds of 24 processes racing on a fresh file each.
    ctx = mp.get_context("fork")
    n = 24
    found: list[str] = []
    for round_no in range(5):
        barrier = ctx.Barrier(n)
        path = str(tmp_path / f"s{round_no}.sqlite")
        errors = ctx.Queue()

        def work(path=path, barrier=barrier, errors=errors):
            try:
                _create_store((path, barrier.wait))
            except BaseException as exc:  # report, don't hide
                errors.put(f"{type(exc).__name__}: {exc}")

        procs = [ctx.Process(target=work) for _ in range(n)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        while not errors.empty():
            found.append(errors.get())
        assert all(p.exitcode == 0 for p in procs)
    assert not found, found[:3]


# -- 12. plugins that end the process or misspell a hook ------------------------------------
def test_a_plugin_calling_sys_exit_on_import_is_reported_not_fatal(fake_dist, capsys):
    from mapframe.cli import main

    fake_dist("mapframe-exits", {"exits": "exits_plugin"},
              {"exits_plugin.py": "import sys\nsys.exit(3)\n"})
    assert main(["plugins"]) == 1  # it returns: the process was not ended
    out = capsys.readouterr().out
    assert "BROKEN" in out and "sys.exit(3)" in out and "builtin" in out


def test_a_misspelled_hook_is_reported(fake_dist, capsys):
    from mapframe.cli import main

    src = ("from mapframe.plugin import hookimpl\n\n"
           "def mapframe_register_component(registry):\n    pass\n")
    fake_dist("mapframe-typo2", {"typo2": "typo2_plugin"}, {"typo2_plugin.py": src})
    assert main(["plugins"]) == 1
    out = capsys.readouterr().out
    assert "BROKEN" in out and "did you mean 'mapframe_register_components'" in out


def test_a_folder_given_as_config_says_so(tmp_path):
    from mapframe.config import load_spec

    with pytest.raises(ConfigError, match="is a folder: give the path of the study's YAML"):
        load_spec(tmp_path)


def test_out_of_range_metrics_print_enough_digits():
    from mapframe.errors import MetricError

    def f(C):
        return np.column_stack([np.full(len(C), 1.0000001), C[:, 1]])

    with pytest.raises(MetricError, match=r"metric 1\.0000001 is outside"):
        MergeStudy(objective=f, task_names=["a", "b"], metric_ranges=[(0, 1), (0, 1)],
                   budget=8).run()


# -- 9 and 10. a foreign database, a full disk, a read-only store ---------------------------
def test_a_foreign_sqlite_database_is_refused_untouched(tmp_path):
    import hashlib
    import sqlite3

    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE evaluations (id INTEGER PRIMARY KEY, score REAL)")
    conn.execute("INSERT INTO evaluations (score) VALUES (0.5)")
    conn.commit()
    conn.close()
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(StoreError, match=r"another program.*left untouched"):
        _study(lambda C: C, path).run()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.db"]  # no -wal, no -shm


@pytest.mark.parametrize("content", [b"task,score\n a,0.5\n", b"x"])
def test_a_file_that_is_no_database_is_refused_untouched(tmp_path, content):
    """A CSV given as the store was called a damaged store (with advice to salvage it), and
    a file of one byte was silently replaced by a new store."""
    path = tmp_path / "results.csv"
    path.write_bytes(content)
    with pytest.raises(StoreError, match=r"results.csv is not an evaluation store .*give "
                                         r"storage another path") as info:
        _study(lambda C: C, path).run()
    assert "salvage" not in str(info.value)
    assert path.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv"]


def _full_store(tmp_path):
    from mapframe.history import Evaluation
    from mapframe.storage.sqlite import SQLiteStore

    store = SQLiteStore(tmp_path / "s.sqlite")
    store.open("s", {})
    for i in range(3):
        store.add(Evaluation(np.array([i / 10]), np.array([1.0])))
    return store, Evaluation


def test_a_full_disk_says_what_is_safe(tmp_path):
    store, Evaluation = _full_store(tmp_path)
    conn = store._connect()
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")  # as if the disk filled up now
    big = "x" * 20000
    with pytest.raises(StoreError, match=r"disk holding the store is full.*3 evaluations"):
        for i in range(50):
            store.add(Evaluation(np.array([1 + i]), None, "failed", big))
    assert len(store.load()) == 3


def test_a_read_only_store_says_what_is_safe(tmp_path):
    store, Evaluation = _full_store(tmp_path)
    store._connect().execute("PRAGMA query_only = ON")
    with pytest.raises(StoreError, match=r"read-only.*3 evaluations of this study"):
        store.add(Evaluation(np.array([0.9]), np.array([1.0])))


_READ_ONLY_RUN = """
import sys
from mapframe import MergeStudy
from mapframe.errors import StoreError
try:
    res = MergeStudy(evaluator={"name": "callable", "function": "objectives:two_quadratics",
                                "tasks": ["a", "b"]},
                     budget=int(sys.argv[2]), storage=sys.argv[1], study_name="s").run()
    print("reused", res.n_reused, "new", res.n_evaluated, len(res.front))
except StoreError as exc:
    print("error", exc)
"""


def _as_nobody(*args: str) -> str:
    """Run a script as the unprivileged user 'nobody' (root can write any file)."""
    import os
    import shutil

    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to make a file truly read-only")
    tests = str(Path(__file__).parent)
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable]
    probe = subprocess.run([*nobody, "-c", "pass"], capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:  # e.g. a Python under /root (pyenv): 'nobody' cannot load it
        pytest.skip(f"this Python does not start as 'nobody': {probe.stderr.strip()[:200]}")
    out = subprocess.run(
        [*nobody, "-c", _READ_ONLY_RUN, *args], capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": tests, "HOME": "/tmp"})
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip()


def test_a_read_only_store_holding_every_evaluation_still_gives_results():
    import os
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="mapframe-ro-"))  # under /tmp: 'nobody' can enter
    try:
        os.chmod(folder, 0o755)
        db = folder / "s.sqlite"
        MergeStudy(evaluator={"name": "callable", "function": "objectives:two_quadratics",
                              "tasks": ["a", "b"]}, budget=6, storage=db,
                   study_name="s").run()
        os.chmod(db, 0o644)  # readable, not writable, by 'nobody'
        assert _as_nobody(str(db), "6").startswith("reused 6 new 0")
        line = _as_nobody(str(db), "8")
        assert line.startswith("error the store") and "read-only" in line
        assert "2 evaluations" in line and "nothing was evaluated" in line
    finally:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)


# -- 9. damaged stores: detected at open, checked and salvaged ------------------------------
def _stored_study(tmp_path):
    db = tmp_path / "s.sqlite"
    res = MergeStudy(objective=_quad, task_names=["a", "b"], budget=8, seed=0, storage=db,
                     study_name="s").run()
    return db, res


def _quad(C):
    C = np.atleast_2d(C)
    return np.column_stack([1 - ((C - 0.2) ** 2).sum(1), 1 - ((C - 0.8) ** 2).sum(1)])


def test_a_garbage_value_is_detected_checked_and_salvaged(tmp_path, capsys):
    import sqlite3

    from mapframe.cli import main

    db, _ = _stored_study(tmp_path)
    conn = sqlite3.connect(db)
    conn.execute("UPDATE evaluations SET metrics = 'garbage{' WHERE seq = 3")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match=r"damaged.*mapframe store check.*salvage"):
        MergeStudy(objective=_quad, task_names=["a", "b"], budget=8, seed=0, storage=db,
                   study_name="s").run()
    assert main(["store", "check", str(db)]) == 1
    out = capsys.readouterr().out
    assert "DAMAGED" in out and "7 readable evaluations, 1 unreadable" in out
    new = tmp_path / "new.sqlite"
    assert main(["store", "salvage", str(db), str(new)]) == 0
    assert main(["store", "check", str(new)]) == 0
    res = MergeStudy(objective=_quad, task_names=["a", "b"], budget=8, seed=0, storage=new,
                     study_name="s").run()
    assert (res.n_reused, res.n_evaluated) == (7, 1)


def test_a_wiped_page_is_detected_at_open(tmp_path):
    db, _ = _stored_study(tmp_path)
    from mapframe.storage.sqlite import SQLiteStore

    SQLiteStore(db)._connect().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(db.read_bytes())
    page = 4096
    assert len(data) >= 3 * page
    data[2 * page:3 * page] = b"\xff" * page  # wipe a page in the middle of the file
    db.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="damaged"):
        MergeStudy(objective=_quad, task_names=["a", "b"], budget=8, seed=0, storage=db,
                   study_name="s").run()


def test_a_store_cut_short_is_salvaged_up_to_the_cut(tmp_path, capsys):
    """A file that lost its last page: SQLite refuses it whole ("malformed"), and salvage
    used to recover nothing; the pages before the cut are read from a zero-padded copy."""
    from mapframe.cli import main
    from mapframe.storage.repair import missing_bytes
    from mapframe.storage.sqlite import SQLiteStore

    db = tmp_path / "s.sqlite"
    MergeStudy(objective=_quad, task_names=["a", "b"], budget=40, seed=0, storage=db,
               study_name="s", sampler="sobol").run()
    SQLiteStore(db)._connect().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    whole = db.read_bytes()
    assert missing_bytes(db) == (0, len(whole))
    # The last pages may hold the finished run's front and summary (study meta) rather than
    # evaluations: cut page after page until evaluations are lost too.
    for pages in range(1, 9):
        cut = 4096 * pages
        db.write_bytes(whole[:-cut])
        assert missing_bytes(db) == (cut, len(whole))
        assert main(["store", "check", str(db)]) == 1
        out = capsys.readouterr().out
        assert f"{cut} bytes shorter" in out and "readable evaluations" in out
        new = tmp_path / f"new{pages}.sqlite"
        assert main(["store", "salvage", str(db), str(new)]) == 0
        copied = int(capsys.readouterr().out.split(": ")[1].split()[0])
        if copied < 40:
            break
    assert 0 < copied < 40
    assert db.read_bytes() == whole[:-cut]  # the damaged file is left as it was
    res = MergeStudy(objective=_quad, task_names=["a", "b"], budget=40, seed=0, storage=new,
                     study_name="s", sampler="sobol").run()
    assert (res.n_reused, res.n_evaluated) == (copied, 40 - copied)


def test_a_relative_store_path_survives_an_objective_that_changes_directory(tmp_path,
                                                                             monkeypatch):
    """The store reopens its file at the run's end (and its heartbeat does for claims): a
    relative path, resolved after the objective's os.chdir, made a second store there."""
    import os

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")

    def wanders(C):
        os.chdir(tmp_path / "b")
        return _quad(C)

    MergeStudy(objective=wanders, task_names=["a", "b"], budget=8, seed=0, sampler="sobol",
               storage="s.sqlite").run()
    assert not list((tmp_path / "b").iterdir())
    monkeypatch.chdir(tmp_path / "a")
    again = MergeStudy(objective=wanders, task_names=["a", "b"], budget=8, seed=0,
                       sampler="sobol", storage="s.sqlite").run()
    assert again.n_reused == 8 and not list((tmp_path / "b").iterdir())


# -- 7. several runs writing one results folder ---------------------------------------------
def test_concurrent_saves_into_one_folder_do_not_crash(tmp_path):
    import multiprocessing as mp

    res = MergeStudy(objective=_quad, task_names=["a", "b"], budget=8, seed=0).run()
    out = tmp_path / "results"
    ctx = mp.get_context("fork")
    errors = ctx.Queue()

    def work():
        try:
            for _ in range(15):
                res.save(out, plot=False)
        except BaseException as exc:
            errors.put(f"{type(exc).__name__}: {exc}")

    procs = [ctx.Process(target=work) for _ in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    found = []
    while not errors.empty():
        found.append(errors.get())
    assert not found, found[:2]
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    import json

    assert json.loads((out / "summary.json").read_text())["study"] == "study"


def test_a_constant_metric_says_it_does_not_vary():
    import warnings

    from mapframe.errors import MapframeWarning

    def f(C):
        return np.column_stack([np.full(len(C), 0.5), _quad(C)[:, 1]])

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        MergeStudy(objective=f, task_names=["a", "b"], budget=8, seed=0).run()
    texts = [str(w.message) for w in caught if issubclass(w.category, MapframeWarning)]
    assert any("does not vary" in t and "'a'" in t for t in texts), texts
    assert not any("fits poorly" in t and "'a'" in t for t in texts)


def test_sigterm_says_how_to_resume(tmp_path):
    import signal

    from objectives import SlowStudy

    study = SlowStudy(tmp_path, budget=30, delay=0.05)
    study.start()
    try:
        study.wait_stored(3)
        study.proc.send_signal(signal.SIGTERM)
        rc = study.proc.wait(60)
        err = study.proc.stderr.read().decode()
    finally:
        study.stop()
    assert rc == 143
    assert "terminated (SIGTERM); finished evaluations are stored in" in err
    assert str(study.db) in err and "run the same command again to resume" in err
    done = study.rerun()
    assert done.returncode == 0, done.stderr


# -- 18. the progress line counts workers as workers ----------------------------------------
def test_progress_counts_busy_workers_not_jobs():
    events = []
    MergeStudy(objective=_quad,
               task_names=["a", "b"], budget=20, seed=0,
               executor={"name": "process", "workers": 2},
               progress=events.append).run()
    running = [e for e in events if e.stage == "evaluate" and e.workers]
    assert running
    assert all(e.busy_workers is not None and e.busy_workers <= e.workers for e in running)


# -- 8. an output folder that cannot be written is found before the study runs ---------------
@pytest.mark.parametrize("make_output", ["file", "proc"])
def test_unwritable_output_is_found_before_any_evaluation(tmp_path, capsys, make_output):
    import yaml

    from mapframe.cli import main

    if make_output == "file":
        output = tmp_path / "taken"
        output.write_text("not a folder")
    else:
        output = tmp_path.parent / "/proc/mapframe-out"
    db = tmp_path / "s.sqlite"
    cfg = {"evaluator": {"name": "callable", "function": "objectives:two_quadratics",
                         "tasks": ["a", "b"]},
           "study": {"budget": 6, "storage": str(db), "output": str(output)}}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(path), "-q"]) == 2
    err = capsys.readouterr().err
    assert "results folder" in err and err.strip().count("\n") == 0
    assert not db.exists()  # nothing was evaluated


# -- 12. messages that name the problem and the fix -----------------------------------------
def _tiny_states(nan_in: str | None = None):
    import torch

    g = torch.Generator().manual_seed(0)
    base = {"w": torch.randn(4, 3, generator=g), "b": torch.randn(4, generator=g)}
    fts = [{k: v + 0.1 * (i + 1) for k, v in base.items()} for i in range(2)]
    if nan_in == "pretrained":
        base["w"][0, 0] = float("nan")
    elif nan_in == "second":
        fts[1]["b"][1] = float("inf")
    return base, fts


@pytest.mark.parametrize("where", ["pretrained", "second"])
def test_nan_weights_name_the_file_that_holds_them(tmp_path, where):
    from mapframe.errors import CheckpointError
    from mapframe.merging import TaskVectors
    from mapframe.merging.checkpoints import save_state_dict

    base, fts = _tiny_states(where)
    pre = save_state_dict(base, tmp_path / "pre.safetensors")
    paths = {f"t{i}": save_state_dict(ft, tmp_path / f"ft{i}.safetensors")
             for i, ft in enumerate(fts)}
    with pytest.raises(CheckpointError) as info:
        TaskVectors.from_files(pre, paths)
    msg = str(info.value)
    if where == "pretrained":
        assert "pretrained checkpoint" in msg and str(pre) in msg
    else:
        assert str(paths["t1"]) in msg and str(paths["t0"]) not in msg


def test_a_checkpoints_format_is_read_from_its_bytes_not_its_name(tmp_path):
    import torch

    from mapframe.errors import CheckpointError
    from mapframe.merging import load_state_dict
    from mapframe.merging.checkpoints import save_state_dict, sniff_checkpoint_format

    base, _ = _tiny_states()
    st = save_state_dict(base, tmp_path / "m.safetensors")
    disguised = tmp_path / "model.bin"
    disguised.write_bytes(st.read_bytes())  # safetensors named .bin
    assert sniff_checkpoint_format(disguised) == "safetensors"
    got = load_state_dict(disguised)
    assert torch.equal(got["w"], base["w"])

    junk = tmp_path / "random.pt"
    junk.write_bytes(np.random.default_rng(0).bytes(256))
    with pytest.raises(CheckpointError, match=r"not a checkpoint.*starts with bytes") as info:
        load_state_dict(junk, allow_pickle=True)
    assert "pickle" not in str(info.value).split("(")[0]

    torch_file = tmp_path / "really-torch.safetensors"
    torch.save(base, torch_file)
    with pytest.raises(CheckpointError, match=r"a torch checkpoint.*rename it to \.pt"):
        load_state_dict(torch_file)


def test_three_metrics_for_two_tasks_is_a_bug_in_the_evaluator_not_a_failing_point():
    from mapframe.errors import EvaluatorBugError

    def three(C):
        return np.ones((len(np.atleast_2d(C)), 3))

    for on_error in ("raise", "record"):
        with pytest.raises(EvaluatorBugError, match="bug in the evaluator") as info:
            MergeStudy(objective=three, task_names=["a", "b"], budget=6,
                       on_error=on_error).run()
        assert "on_error" not in str(info.value)


@pytest.mark.parametrize("returned", [{"a": 0.5, "b": 0.5}, "0.5,0.5", [0.1, 0.2, 0.3]])
def test_a_one_point_function_returning_the_wrong_kind_is_a_bug_not_a_failing_point(returned):
    """With vectorized=False a dict (say) failed each point: on_error='raise' advised
    on_error='record', and with 'record' the whole budget was spent before a BudgetError."""
    from mapframe.errors import EvaluatorBugError
    from mapframe.evaluators.callable import CallableEvaluator

    calls = []

    def per_point(c):
        calls.append(c)
        return returned

    for on_error in ("raise", "record"):
        calls.clear()
        with pytest.raises(EvaluatorBugError, match=r"vectorized=False.*2 number\(s\), one "
                                                   r"per task \(a, b\)") as info:
            MergeStudy(evaluator=CallableEvaluator(per_point, ["a", "b"], vectorized=False),
                       budget=10, sampler="sobol", surrogate="quadratic",
                       on_error=on_error).run()
        assert len(calls) == 1 and "on_error" not in str(info.value)


def test_a_one_point_function_may_return_one_number_for_one_task():
    from mapframe.evaluators.callable import CallableEvaluator

    ev = CallableEvaluator(lambda c: float(c.sum()), ["a"], vectorized=False)
    M = ev.evaluate_tasks(np.array([[0.25, 0.5], [1.0, 0.0]]), [0])
    np.testing.assert_allclose(M, [[0.75], [1.0]])


# -- 13. results stream out of a batch: a kill loses a few seconds of work ------------------
def test_time_sized_batches_grow_while_a_batch_is_quick(monkeypatch):
    import time as _time

    from mapframe.evaluators.callable import CallableEvaluator
    from mapframe.executors import worker as worker_mod
    from mapframe.executors.base import Job

    def slow(C):
        _time.sleep(0.01 * len(np.atleast_2d(C)))
        return np.atleast_2d(C)[:, :2]

    monkeypatch.setattr(worker_mod, "BATCH_TARGET_S", 0.05)
    rt = worker_mod.WorkerRuntime(CallableEvaluator(slow, ["a", "b"]), None)
    rt.setup()
    jobs = [Job(f"k{i}", np.array([i / 40, 1 - i / 40]), "search", 0) for i in range(40)]
    sizes = [len(part) for part in rt.iter_run(jobs)]
    # 1, 2, 4 points (10-40 ms, under the 50 ms target), then 8 (80 ms: kept) ...
    assert sizes[:4] == [1, 2, 4, 8] and max(sizes) <= 16 and sum(sizes) == 40
    assert [r.job.key for part in rt.iter_run(jobs[:3]) for r in part] == ["k0", "k1", "k2"]


@pytest.mark.parametrize("executor", [None, {"name": "process", "workers": 2}],
                         ids=["inprocess", "process"])
def test_a_killed_driver_loses_at_most_one_short_batch_per_worker(tmp_path, executor):
    """A vectorised objective with no batch limit used to get the whole design (in process)
    or ceil(design / workers) points per worker in one call: a kill lost all of them."""
    from objectives import SlowStudy, search_keys

    from mapframe.executors.worker import BATCH_TARGET_S

    delay, budget = 0.1, 30
    study = SlowStudy(tmp_path, budget=budget, delay=delay, executor=executor)
    study.start()
    try:
        study.wait_stored(6)
        study.kill()
    finally:
        study.stop()
    time.sleep(0.6)  # pool workers notice their driver is gone and exit
    stored = len(search_keys(study.db))
    assert stored < budget
    lost = len(study.calls()) - stored
    workers = 1 if executor is None else 2
    assert lost * delay <= workers * 2 * BATCH_TARGET_S + delay
    done = study.rerun()
    assert done.returncode == 0, done.stderr
    assert len(set(search_keys(study.db))) == budget


def test_remote_batches_are_sized_by_time_for_evaluators_without_a_limit():
    from mapframe.executors.base import Job, JobResult
    from mapframe.executors.worker import BATCH_TARGET_S, BatchTimer

    def batch(n, seconds):
        return [JobResult(Job(f"k{i}", np.zeros(2), "search", 0), np.zeros(2), None,
                          seconds / n, "w") for i in range(n)]

    t = BatchTimer()
    assert t.cap(None, None) == 1 and t.cap(None, 4) is None  # a fixed limit wins
    t.update(batch(1, 0.01))
    t.update(batch(2, 0.02))
    assert t.step == 4
    t.update(batch(4, 3 * BATCH_TARGET_S))
    assert t.step == 2


# -- 16. a Ray cluster too small for the actors asked for --------------------------------
def test_a_ray_cluster_too_small_starts_what_fits_or_fails_at_once():
    import warnings

    from mapframe.errors import MapframeWarning
    from mapframe.executors.ray_cluster import check_fits

    two_cpus = {"CPU": 2.0}
    assert check_fits(two_cpus, 2, 1, 0.0, own_local=False) == 2
    with pytest.warns(MapframeWarning, match="3 CPU.*cluster has 2; starting the 2 that fit"):
        assert check_fits(two_cpus, 3, 1, 0.0, own_local=False) == 2
    with pytest.raises(ConfigError, match=r"1 GPU \(1 x 1\) but the cluster has 0.*not one"):
        check_fits(two_cpus, 1, 1, 1.0, own_local=False)
    with pytest.warns(MapframeWarning, match="wait until the cluster has room"):
        assert check_fits(two_cpus, 1, 1, 1.0, own_local=False, wait=True) == 1
    with pytest.raises(ConfigError, match="give the local instance more"):
        check_fits(two_cpus, 3, 1, 0.0, own_local=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_fits({"CPU": 8.0, "GPU": 2.0}, 2, 2, 1.0, own_local=False) == 2


# -- 15. addresses that are not a scheduler ------------------------------------------------
_NOT_A_SCHEDULER = r"""
import contextlib, http.server, os, socket, socketserver, sys, threading, time

from mapframe.errors import MapframeError
from mapframe.evaluators.callable import CallableEvaluator
from mapframe.executors.dask_executor import DaskExecutor

kind = sys.argv[1]
if kind == "http":  # like the dashboard's port
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0),
                                             http.server.SimpleHTTPRequestHandler)
    server.daemon_threads = True  # a handler may wait for ever on Dask's bytes
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
else:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    port = server.getsockname()[1]
    kept = []
    if kind == "replies":
        # An HTTP server's error reply, kept open: Dask reads "HTTP/1.0" as the length of its
        # next frame (5 EiB) and raised a raw MemoryError.
        def answer():
            with contextlib.suppress(OSError):
                while True:
                    conn, _ = server.accept()
                    conn.sendall(b"HTTP/1.0 400 Bad request syntax\r\n\r\n" + b"x" * 64)
                    kept.append(conn)

        threading.Thread(target=answer, daemon=True).start()
ex = DaskExecutor(address=f"tcp://127.0.0.1:{port}", connect_timeout=2)
t0 = time.monotonic()
try:
    ex.start(CallableEvaluator("objectives:two_quadratics", ["a", "b"]), None)
    print("STARTED")
except MapframeError as exc:
    print("ONE LINE", str(exc).splitlines()[0])
except BaseException as exc:
    print("RAW", type(exc).__name__, exc)
print("SECONDS", time.monotonic() - t0, flush=True)
# A Client whose start failed is left to the garbage collector, whose run of its __del__
# inside another client's start deadlocks on distributed's LoopRunner lock: this process
# ends here, as a program that gets this error would, instead of a test worker living on.
os._exit(0)
"""


@pytest.mark.parametrize("kind", ["silent", "http", "replies"])
def test_a_dask_address_that_is_not_a_scheduler_fails_within_the_timeout(kind):
    """A port that accepts and says nothing, an HTTP server (the dashboard's port), and one
    whose error reply comes before it closes (Dask read "HTTP/1.0" as a frame length and
    raised a raw MemoryError, met on a loaded machine): each a one-line error within the
    timeout. Run in a child process (see the script's end)."""
    pytest.importorskip("distributed")
    tests = str(Path(__file__).parent)
    out = subprocess.run([sys.executable, "-c", _NOT_A_SCHEDULER, kind], capture_output=True,
                         text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": tests})
    assert "ONE LINE" in out.stdout, out.stdout + out.stderr[-2000:]
    assert re.search(r"no Dask scheduler answered|cannot reach", out.stdout), out.stdout
    seconds = float(out.stdout.split("SECONDS")[1])
    assert seconds < 15


def test_a_ray_connection_refused_for_a_token_names_ray_auth_mode(monkeypatch):
    from mapframe.executors import ray_cluster

    class FakeRay:
        @staticmethod
        def is_initialized() -> bool:
            return False

        @staticmethod
        def init(**kwargs: Any) -> None:
            raise ConnectionError("Failed to connect to Ray cluster at 127.0.0.1:6379")

    monkeypatch.setattr(ray_cluster, "probe", lambda *a: None)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    target = ("address", "127.0.0.1", 6379)
    with pytest.raises(Exception, match="RAY_AUTH_MODE=token") as info:
        ray_cluster.connect(FakeRay, target, "127.0.0.1:6379", {}, 5.0)
    assert "\n" not in str(info.value)
    monkeypatch.setenv("RAY_AUTH_MODE", "token")  # already set: the hint would mislead
    with pytest.raises(Exception) as info:
        ray_cluster.connect(FakeRay, target, "127.0.0.1:6379", {}, 5.0)
    assert "RAY_AUTH_MODE" not in str(info.value)


def test_connect_timeout_bounds_ray_init_on_a_port_that_is_not_the_head(monkeypatch):
    from mapframe.errors import MapframeError
    from mapframe.executors import ray_cluster

    release = threading.Event()

    class StuckRay:  # like a raylet's gRPC port: accepted, then retried for 20+ s
        @staticmethod
        def is_initialized() -> bool:
            return False

        @staticmethod
        def init(**kwargs: Any) -> None:
            release.wait(30)

    monkeypatch.setattr(ray_cluster, "probe", lambda *a: None)
    t0 = time.monotonic()
    try:
        with pytest.raises(MapframeError, match=r"within 1 s \(connect_timeout\).*not a head"):
            ray_cluster.connect(StuckRay, ("address", "127.0.0.1", 42247), "127.0.0.1:42247",
                                {}, 1.0)
    finally:
        release.set()
    assert time.monotonic() - t0 < 5
