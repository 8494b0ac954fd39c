"""The documentation in docs/ stays true to the code.

Conventions these tests rely on (keep them when editing the docs):

* ``docs/embedding.md``: fenced code blocks tagged ```` ```python run ```` are executed, each
  on its own in a fresh namespace with a fresh temporary directory as the working directory.
  Blocks tagged plain ```` ```python ```` (or anything else) are not run.
* ``docs/writing-plugins.md``: a fenced block whose first line is a comment naming a file
  (``# my_package/plugin.py``, ``# tests/test_evaluator.py``, ``# setup.cfg``,
  ``# study.yaml``, ...) is that file of the worked example. The test writes those files into
  a fake installed distribution (a dist-info on ``sys.path``, see the ``fake_dist`` fixture)
  and checks that the plugin registers, runs a study, and passes its own contract tests.
* ``docs/configuration.md``: every ``yaml`` block with an ``evaluator`` validates, and the
  black-box example (``# my_objectives.py`` + ``# blackbox.yaml``) runs.
* Every hook, built-in component (and its constructor parameters) and config key is named
  in the page that documents it.
"""

from __future__ import annotations

import configparser
import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mapframe.cli import main
from mapframe.config import (
    CHECKPOINT_KEYS,
    NESTED_KEYS,
    STUDY_KEYS,
    TOP_LEVEL_KEYS,
    validate_config,
)
from mapframe.errors import ConfigError, PluginLoadError
from mapframe.plugin import get_registry, hookspecs, register_plugin, unregister_plugin

DOCS = Path(__file__).resolve().parent.parent / "docs"
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```[ \t]*$", re.S | re.M)


def _page(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def _blocks(name: str) -> list[tuple[str, str]]:
    """(info string, body) of every fenced code block of a page."""
    return [(info.strip(), body) for info, body in FENCE.findall(_page(name))]


def _files(name: str) -> dict[str, str]:
    """Blocks whose first line is ``# <file name>``, by that file name."""
    out: dict[str, str] = {}
    for _, body in _blocks(name):
        first = body.splitlines()[0] if body else ""
        m = re.fullmatch(r"# ([\w./-]+\.(?:py|cfg|toml|yaml))", first.strip())
        if m:
            assert m.group(1) not in out, f"{name}: two blocks claim {m.group(1)}"
            out[m.group(1)] = body
    return out


def _forget_modules(*prefixes: str) -> None:
    for mod in [m for m in sys.modules if m.split(".")[0] in prefixes]:
        del sys.modules[mod]


@pytest.fixture
def one_thread():
    """Single-threaded torch: the examples' tiny models only lose time to thread spin-up."""
    torch = pytest.importorskip("torch")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# -- (a) hooks ------------------------------------------------------------------------------
def test_every_hook_is_documented():
    hooks = [name for name, obj in vars(hookspecs).items()
             if name.startswith("mapframe_") and inspect.isfunction(obj)]
    assert len(hooks) >= 4
    page = _page("writing-plugins.md")
    for hook in hooks:
        params = ", ".join(inspect.signature(getattr(hookspecs, hook)).parameters)
        assert f"### `{hook}({params})`" in page, f"hook {hook} has no section in the docs"


# -- (b) built-in components ---------------------------------------------------------------
def test_every_builtin_component_is_in_the_reference():
    registry = get_registry()
    builtin = [p for p in registry.plugins if p.name == "builtin"]
    assert builtin and builtin[0].components
    page = _page("reference.md")
    for kind, name in builtin[0].components:
        assert f"`{name}`" in page, f"built-in {kind} {name!r} is missing from reference.md"
        cls = registry.get(kind, name)
        for param in inspect.signature(cls).parameters:
            assert f"`{param}`" in page, (
                f"parameter {param!r} of {kind} {name!r} is missing from reference.md")


def test_the_auto_table_names_the_surrogate_rule_as_coded():
    """reference.md's "What `auto` picks" row for the surrogate names every sampler and
    number of tasks with which ``surrogate: auto`` becomes the ``gp`` surrogate."""
    from mapframe.solvers.pymoo_solvers import SELECT_AUTO_OBJECTIVES
    from mapframe.surrogates.choice import GP_FINAL_SAMPLERS, GP_FINAL_TASKS

    page = _page("reference.md")
    table = page.split("### What `auto` picks", 1)[1].split("\n### ", 1)[0]
    rows = {line.split("|")[1].strip(): line for line in table.splitlines()
            if line.startswith("| `")}
    surrogate = rows["`surrogate: auto`"]
    assert " or ".join(f"`{s}`" for s in GP_FINAL_SAMPLERS) + " sampler" in surrogate
    tasks = " or ".join(str(n) for n in GP_FINAL_TASKS) + " tasks"
    assert f"at {tasks}, the `gp` surrogate" in surrogate
    from mapframe.surrogates.choice import (
        SMALL_BUDGET_FACTOR,
        SMALL_BUDGET_MAX_TASKS,
        SMALL_BUDGET_TASKS,
    )

    assert SMALL_BUDGET_FACTOR == 2  # "twice the quadratic's parameter count"
    assert (f"from {SMALL_BUDGET_TASKS} to {SMALL_BUDGET_MAX_TASKS} tasks with any sampler, "
            "the `gp` surrogate when the search budget is below twice the quadratic's "
            "parameter count") in surrogate
    assert f"beyond {SMALL_BUDGET_MAX_TASKS} tasks" in surrogate
    from mapframe.samplers.choice import MAX_ADAPTIVE_DIMS

    assert f"`sobol` beyond {MAX_ADAPTIVE_DIMS}" in rows["`sampler: auto`"]
    assert ("the `gp` surrogate when the search budget is at least N + 1 and at most the "
            "quadratic's (N + 1)(N + 2)/2 parameters") in surrogate
    from mapframe.surrogates.choice import BOTORCH_GP_TASKS

    assert BOTORCH_GP_TASKS == (3,)
    assert "with the `botorch` sampler at 3 tasks, the `gp` surrogate" in surrogate
    select = " or ".join(str(n) for n in SELECT_AUTO_OBJECTIVES) + " tasks"
    assert f"at {select}" in rows["`front_solver: {name: auto, select: auto}`"]


# -- (c) configuration keys ----------------------------------------------------------------
def test_every_config_key_is_documented():
    page = _page("configuration.md")
    for key in [*TOP_LEVEL_KEYS, *STUDY_KEYS, *CHECKPOINT_KEYS, *NESTED_KEYS]:
        assert f"| `{key}` |" in page, f"config field {key!r} has no row in configuration.md"


def test_configuration_yaml_examples_validate(tmp_path):
    import yaml

    configs = [body for info, body in _blocks("configuration.md")
               if info == "yaml" and "evaluator:" in body]
    assert len(configs) >= 2
    for body in configs:
        validate_config(yaml.safe_load(body), base_dir=tmp_path)


def test_distributed_yaml_examples_build_their_executors(tmp_path):
    import yaml

    from mapframe.plugin import get_registry

    blocks = [yaml.safe_load(body) for info, body in _blocks("distributed.md") if info == "yaml"]
    names = []
    for data in blocks:
        if "evaluator" in data:
            validate_config(data, base_dir=tmp_path)
        spec = data["executor"]
        # Building an executor checks its parameters; nothing connects before start().
        executor = get_registry().create("executor", spec)
        names.append(executor.name)
        assert executor.describe()["name"] == spec["name"]
    assert set(names) == {"process", "ray", "dask"}


def test_configuration_blackbox_example_runs(tmp_path, monkeypatch, capsys):
    files = _files("configuration.md")
    for name in ("my_objectives.py", "blackbox.yaml"):
        (tmp_path / name).write_text(files[name])
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # what PYTHONPATH=. does for the command
    try:
        assert main(["run", "blackbox.yaml", "--quiet", "--no-plot"]) == 0
    finally:
        _forget_modules("my_objectives")
    summary = json.loads((tmp_path / "results/blackbox/summary.json").read_text())
    assert summary["n_search_evaluations"] == 20 and summary["selected"] is not None
    models = {task: d["model"] for task, d in summary["surrogates"].items()}
    assert models == {"score": "sigmoid_quadratic", "loss": "softplus_quadratic"}
    assert (tmp_path / "results/blackbox/evaluations.sqlite").is_file()
    capsys.readouterr()


# -- (d) embedding examples ----------------------------------------------------------------
EMBEDDING_BLOCKS = [body for info, body in _blocks("embedding.md") if info == "python run"]


def test_embedding_has_the_three_line_example():
    assert len(EMBEDDING_BLOCKS) >= 8
    first = EMBEDDING_BLOCKS[0]
    for line in ('from mapframe import MergeStudy',
                 'study = MergeStudy(objective=f, task_names=["a", "b"], budget=20, seed=0)',
                 'result = study.run()', 'result.front.coefficients', 'result.front.predicted'):
        assert line in first


@pytest.mark.parametrize("index", range(len(EMBEDDING_BLOCKS)))
def test_embedding_block_runs(index, tmp_path, monkeypatch, capsys, one_thread):
    monkeypatch.chdir(tmp_path)
    code = compile(EMBEDDING_BLOCKS[index], f"docs/embedding.md[block {index}]", "exec")
    exec(code, {"__name__": f"docs_embedding_{index}"})
    capsys.readouterr()


# -- (e) the worked plugin example ---------------------------------------------------------
PACKAGE_MODULES = ("evaluator", "vectorised", "plugin", "samplers", "surrogates", "solvers",
                   "merging", "progress_log")
# The page registers its extra components "in plugin.py like the evaluator"; here they get a
# second entry point instead, so that plugin.py stays exactly as documented.
EXTRAS_HOOK = '''
from mapframe.plugin import hookimpl

@hookimpl
def mapframe_register_components(registry):
'''


def _setup_cfg(files: dict[str, str]) -> tuple[str, str, dict[str, str]]:
    cfg = configparser.ConfigParser()
    cfg.read_string(files["setup.cfg"])
    lines = [ln.strip() for ln in cfg["options.entry_points"]["mapframe"].splitlines()]
    eps = dict(ln.split(" = ", 1) for ln in lines if ln)
    return cfg["metadata"]["name"], cfg["metadata"]["version"], eps


@pytest.fixture
def my_package():
    _forget_modules("my_package")
    yield
    _forget_modules("my_package")


def _install(fake_dist, tmp_path, package, entry_points, modules) -> Path:
    root = tmp_path / f"site-{package}"
    (root / "my_package").mkdir(parents=True)
    (root / "tests").mkdir()
    return fake_dist(package, entry_points, {"my_package/__init__.py": "", **modules})


def test_plugin_example_works(fake_dist, tmp_path, monkeypatch, capsys, my_package,
                              one_thread):
    from mapframe import MergeStudy
    from mapframe.merging import Merger, TaskArithmetic, TaskVectors

    files = _files("writing-plugins.md")
    package, _, entry_points = _setup_cfg(files)
    assert package == "mapframe-myplugin" and entry_points == {"myplugin": "my_package.plugin"}
    modules = {f"my_package/{m}.py": files[f"my_package/{m}.py"] for m in PACKAGE_MODULES}
    # the registrations the page tells the reader to add to plugin.py's hook
    added = [body for info, body in _blocks("writing-plugins.md")
             if info == "python" and body.startswith("    from my_package.merging import")]
    assert len(added) == 1
    modules["my_package/extras.py"] = EXTRAS_HOOK + added[0]
    for test_file in ("tests/test_evaluator.py", "tests/test_components.py"):
        modules[test_file] = files[test_file]
    root = _install(fake_dist, tmp_path, package, {**entry_points, "extras": "my_package.extras"},
                    modules)

    # installed: the registry lists the evaluators, attributed to the package
    registry = get_registry()
    info = next(p for p in registry.plugins if p.name == "myplugin")
    assert info.package == package and info.error is None
    assert info.components == [("evaluator", "my-classifier"),
                               ("evaluator", "my-classifier-batched")]
    assert main(["plugins"]) == 0
    listing = capsys.readouterr().out
    assert "myplugin  (mapframe-myplugin 1.2.3, my_package.plugin)  [ok]" in listing
    assert "    evaluator       my-classifier, my-classifier-batched" in _page(
        "writing-plugins.md")

    # "Trying it out": toy files, the YAML study through the CLI, the same study in Python
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    exec(compile(files["make_toy_files.py"], "make_toy_files.py", "exec"), {})
    (work / "study.yaml").write_text(files["study.yaml"])
    assert main(["run", "study.yaml", "--quiet", "--no-plot"]) == 0
    summary = json.loads((work / "results/toy/summary.json").read_text())
    assert summary["n_search_evaluations"] == 20 and summary["selected"] is not None
    assert (work / "results/toy/selected.safetensors").is_file()
    in_python = [body for info, body in _blocks("writing-plugins.md")
                 if info == "python" and body.startswith("from mapframe import MergeStudy")]
    assert len(in_python) == 1
    exec(compile(in_python[0], "writing-plugins.md[python study]", "exec"), {})
    assert (work / "merged.safetensors").is_file()

    # the vectorised evaluator scores exactly like the one-model-at-a-time one
    from my_package.evaluator import ClassifierEvaluator
    from my_package.vectorised import BatchedClassifierEvaluator

    tv = TaskVectors.from_files("ckpt/pretrained.safetensors",
                                {"a": "ckpt/a.safetensors", "b": "ckpt/b.safetensors"})
    C = np.random.default_rng(0).uniform(0, 1, (9, 2))
    scores = []
    for cls in (ClassifierEvaluator, BatchedClassifierEvaluator):
        ev = cls(["a", "b"], "data")
        ev.setup(Merger(TaskArithmetic(), tv))
        scores.append(ev.evaluate(C))
        ev.close()
    np.testing.assert_allclose(scores[0], scores[1])

    # documented parameter error
    with pytest.raises(ConfigError) as err:
        MergeStudy(evaluator={"name": "my-classifier", "tasks": ["a"], "data_dir": "data",
                              "colour": "red"}, checkpoints=None)
    assert str(err.value) in _page("writing-plugins.md").replace("\n", " ")

    # the study-event plugin, registered in code as the page shows
    import my_package.progress_log

    register_plugin(my_package.progress_log)
    try:
        MergeStudy(objective=lambda C: np.column_stack([C[:, 0], -C[:, 0] ** 2]),
                   task_names=["x", "y"], budget=6, seed=0, study_name="logged").run()
    finally:
        unregister_plugin(my_package.progress_log)
    out = capsys.readouterr().out
    assert "[logged] 6 evaluations of tasks ['x', 'y']" in out
    assert out.count("[logged] search ok c=") == 6 and "[logged] front of" in out
    in_code = [body for info, body in _blocks("writing-plugins.md")
               if "register_plugin(my_package.progress_log)" in body]
    assert len(in_code) == 1
    exec(compile(in_code[0], "writing-plugins.md[register in code]", "exec"), {})

    # the package's own contract tests pass against the installed plugin
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get(
        "PYTHONPATH", "")]), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
         "tests"], cwd=root, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # (MergeStrategyContract checks batches in float32 and bfloat16: one test each)
    assert re.search(r"\b42 passed\b", proc.stdout), proc.stdout[-1000:]


def _doc_line(text: str, start: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.startswith(start)]
    assert len(lines) >= 1, f"no line starting with {start!r}"
    return lines[0]


def test_documented_plugin_errors(fake_dist, tmp_path, capsys, my_package):
    page = _page("writing-plugins.md")
    package = "mapframe-myplugin"

    # a plugin that fails to import
    _install(fake_dist, tmp_path, package, {"myplugin": "my_package.plugin"},
             {"my_package/plugin.py": "import not_a_real_module_xyz\n"})
    with pytest.raises(PluginLoadError) as err:
        get_registry()
    documented = _doc_line(page, "mapframe: error: plugin 'myplugin' from package "
                                 "'mapframe-myplugin' failed to load (ModuleNotFoundError")
    assert f"mapframe: error: {err.value}" == documented.replace(
        "torchvision", "not_a_real_module_xyz")
    assert main(["plugins"]) == 1
    out = capsys.readouterr().out
    assert "myplugin  (mapframe-myplugin 1.2.3, my_package.plugin)  [BROKEN]" in out
    assert ("    failed to load: ModuleNotFoundError: No module named "
            "'not_a_real_module_xyz'") in out
    assert "myplugin  (mapframe-myplugin 0.1.0, my_package.plugin)  [BROKEN]" in page


def test_documented_duplicate_name_error(fake_dist, tmp_path, my_package):
    clash = ("from mapframe.plugin import hookimpl\n"
             "from mapframe.samplers import RandomSampler\n\n"
             "class Clash(RandomSampler):\n    name = 'sobol'\n\n"
             "@hookimpl\ndef mapframe_register_components(registry):\n"
             "    registry.register(Clash)\n")
    _install(fake_dist, tmp_path, "mapframe-myplugin", {"myplugin": "my_package.plugin"},
             {"my_package/plugin.py": clash})
    with pytest.raises(PluginLoadError) as err:
        get_registry()
    documented = _doc_line(_page("writing-plugins.md"),
                           "mapframe: error: plugin 'myplugin' from package "
                           "'mapframe-myplugin' failed to load (ComponentError")
    assert f"mapframe: error: {err.value}" == documented


@pytest.mark.parametrize("page_name", ["configuration.md", "writing-plugins.md"])
def test_plugin_listing_in_configuration_matches_the_cli(capsys, page_name):
    """Every built-in row of `mapframe plugins`, in order, in each page that shows the
    listing (writing-plugins.md's copy had gone stale: four samplers, one strategy)."""
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    rows = out.split("\n\n")[0].split("builtin  (")[1].splitlines()[1:]
    assert len(rows) >= 9 and all(r.startswith("    ") for r in rows), rows
    page = _page(page_name)
    assert "\n".join(rows) + "\n" in page, (
        f"{page_name}: paste the built-in rows of `mapframe plugins`:\n" + "\n".join(rows))


def test_every_metric_is_in_the_reference():
    import mapframe.metrics as metrics

    page = _page("reference.md")
    for name in metrics.__all__:
        assert f"`{name}(" in page, f"mapframe.metrics.{name} is missing from reference.md"


def test_adaptive_sampling_page_matches_the_components(tmp_path):
    import yaml

    page = _page("adaptive-sampling.md")
    registry = get_registry()
    for kind, name in (("sampler", "bins"), ("sampler", "gp"), ("sampler", "front"),
                       ("sampler", "botorch"), ("surrogate", "gp"), ("stopping", "plateau")):
        for param in inspect.signature(registry.get(kind, name)).parameters:
            assert f"| `{param}` |" in page or f"`{param}`" in page, (kind, name, param)
    configs = [yaml.safe_load(body) for info, body in _blocks("adaptive-sampling.md")
               if info == "yaml"]
    assert configs
    for data in configs:
        cfg = validate_config(data, base_dir=tmp_path)
        registry.create("sampler", cfg["sampler"])
        registry.create("stopping", cfg["stopping"])


def test_nested_page_yaml_validates_and_images_exist(tmp_path):
    import yaml

    page = _page("nested.md")
    configs = [yaml.safe_load(body) for info, body in _blocks("nested.md") if info == "yaml"]
    assert configs
    for data in configs:
        cfg = validate_config(data, base_dir=tmp_path)
        assert cfg["nested"]["pair_budget"] == 20
        get_registry().create("pairing", cfg["nested"]["pairing"])
    for image in re.findall(r"\]\((images/[^)]+)\)", page):
        assert (DOCS / image).is_file(), image
    for name in get_registry().names("pairing"):
        assert f"`{name}`" in page


def test_adaptive_sampling_page_rounds_sampler_example_runs(tmp_path):
    """The page's RoundsSampler subclass, registered as a plugin would, passes the adaptive
    sampler contract's checks and runs a study that resumes without re-evaluating."""
    from mapframe.plugin import hookimpl
    from mapframe.testing import AdaptiveSamplerContract

    [body] = [b for info, b in _blocks("adaptive-sampling.md")
              if info == "python" and "class JitterSampler(RoundsSampler)" in b]
    namespace: dict = {}
    exec(compile(body, "adaptive-sampling.md", "exec"), namespace)
    cls = namespace["JitterSampler"]

    class Plugin:
        @hookimpl
        def mapframe_register_components(self, registry):
            registry.register(cls)

    plugin = Plugin()
    register_plugin(plugin, name="jitter-docs-example")
    try:
        class Check(AdaptiveSamplerContract):
            def make_sampler(self):
                return cls(batch=2)

        check = Check()
        check.test_is_registered()
        check.test_proposals_with_history()
        check.test_history_order_does_not_matter()
        check.test_proposes_in_rounds()
        check.test_study_resumes_without_reevaluating(tmp_path)
    finally:
        unregister_plugin(plugin)
