"""Registering a plugin in a notebook cell run again: the cell redefines the plugin class and
registers a new instance, which raised 'another plugin is already registered in code as
...' although the docs promised that a cell run twice is harmless. A redefinition (a class
of ``__main__`` with the same qualified name, a reloaded module's class, the module
imported anew) now replaces the registration; another plugin under a taken name is still
refused, unless ``replace=True``."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mapframe import MergeStudy
from mapframe.errors import PluginLoadError
from mapframe.plugin import get_registry, hookimpl, register_plugin, unregister_plugin
from mapframe.plugin.manager import IN_CODE

CELL = '''
class Logger:
    @hookimpl
    def mapframe_study_finished(self, study, result):
        seen.append(("{tag}", study.study_name))

register_plugin(Logger())
'''


def quad(C: np.ndarray) -> np.ndarray:
    return np.column_stack([-(C**2).sum(axis=1), -((C - 1) ** 2).sum(axis=1)])


def run_cell(source: str, namespace: dict[str, Any]) -> None:
    """Run ``source`` as a notebook runs a cell: in the ``__main__`` namespace."""
    exec(compile(source, "<cell>", "exec"), namespace)


def in_code() -> list[str]:
    return [p.name for p in get_registry().plugins if p.package == IN_CODE]


@pytest.fixture
def notebook(fresh_plugins: None) -> Any:
    ns: dict[str, Any] = {"__name__": "__main__", "hookimpl": hookimpl,
                          "register_plugin": register_plugin, "seen": []}
    yield ns
    unregister_plugin("Logger")
    unregister_plugin("Other")


def test_a_cell_run_again_replaces_its_plugin(notebook: dict[str, Any]) -> None:
    run_cell(CELL.format(tag="first"), notebook)
    first = notebook["Logger"]
    run_cell(CELL.format(tag="second"), notebook)  # raised PluginLoadError
    assert notebook["Logger"] is not first and notebook["Logger"].__module__ == "__main__"
    assert in_code() == ["Logger"]  # one plugin, not two
    MergeStudy(objective=quad, task_names=["a", "b"], budget=6, seed=0, sampler="sobol",
               study_name="nb").run()
    assert notebook["seen"] == [("second", "nb")]  # the redefined class's hook, once


def test_a_registration_cell_run_again_without_redefining_the_class(
        notebook: dict[str, Any]) -> None:
    run_cell(CELL.format(tag="first"), notebook)
    run_cell("register_plugin(Logger())", notebook)  # a new instance of the same class
    run_cell("register_plugin(Logger())", notebook)
    assert in_code() == ["Logger"]


def test_another_class_under_a_taken_name_is_still_refused(notebook: dict[str, Any]) -> None:
    run_cell(CELL.format(tag="first"), notebook)
    run_cell("class Other:\n    pass\n", notebook)
    with pytest.raises(PluginLoadError) as err:
        register_plugin(notebook["Other"](), name="Logger")
    msg = str(err.value)
    assert "\n" not in msg
    assert "__main__.Logger" in msg and "__main__.Other" in msg
    assert "name=" in msg and "replace=True" in msg and "unregister_plugin('Logger')" in msg
    assert in_code() == ["Logger"]


def test_a_class_of_another_module_with_the_same_name_is_refused(
        notebook: dict[str, Any]) -> None:
    run_cell(CELL.format(tag="first"), notebook)
    Logger = type("Logger", (), {"__module__": "somewhere_else"})
    with pytest.raises(PluginLoadError, match="already registered in code as 'Logger'"):
        register_plugin(Logger())


class Configured:
    """An importable plugin class: two instances are two plugins (two settings, maybe)."""

    def __init__(self, level: int) -> None:
        self.level = level


def test_two_instances_of_an_importable_class_are_two_plugins(fresh_plugins: None) -> None:
    first = Configured(1)
    register_plugin(first)
    try:
        with pytest.raises(PluginLoadError, match="already registered in code as "
                                                  "'Configured'"):
            register_plugin(Configured(2))
        register_plugin(Configured(2), name="Configured-2")  # the way out the error names
        unregister_plugin("Configured-2")
    finally:
        unregister_plugin(first)


def test_replace_true_replaces_whatever_holds_the_name(notebook: dict[str, Any]) -> None:
    run_cell(CELL.format(tag="first"), notebook)
    run_cell("class Other:\n    pass\n", notebook)
    other = notebook["Other"]()
    register_plugin(other, name="Logger", replace=True)
    plugins = [p for p in get_registry().plugins if p.package == IN_CODE]
    assert [(p.name, p.module) for p in plugins] == [("Logger", "Other")]


def test_a_replaced_plugin_keeps_its_place(notebook: dict[str, Any]) -> None:
    run_cell(CELL.format(tag="first"), notebook)
    run_cell("class Other:\n    pass\nregister_plugin(Other())", notebook)
    run_cell(CELL.format(tag="second"), notebook)
    assert in_code() == ["Logger", "Other"]


def test_the_same_object_twice_is_still_a_no_op(notebook: dict[str, Any]) -> None:
    run_cell(CELL.format(tag="first") + "lg = Logger()\nregister_plugin(lg)\n"
             "register_plugin(lg)\n", notebook)
    assert in_code() == ["Logger"]
    MergeStudy(objective=quad, task_names=["a", "b"], budget=6, seed=0, sampler="sobol",
               study_name="nb").run()
    assert notebook["seen"] == [("first", "nb")]


@pytest.fixture
def plugin_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_plugins: None):
    (tmp_path / "nb_reload_plugin.py").write_text(
        "from mapframe.plugin import hookimpl\n\n"
        "TAG = 'v1'\n\n"
        "class Listener:\n"
        "    @hookimpl\n"
        "    def mapframe_study_started(self, study):\n"
        "        pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path / "nb_reload_plugin.py"
    sys.modules.pop("nb_reload_plugin", None)
    unregister_plugin("Listener")
    unregister_plugin("nb_reload_plugin")


def test_an_instance_of_a_reloaded_module_s_class_replaces_the_old(plugin_module: Path
                                                                  ) -> None:
    mod = importlib.import_module("nb_reload_plugin")
    register_plugin(mod.Listener())
    plugin_module.write_text(plugin_module.read_text().replace("'v1'", "'v2'"))
    importlib.invalidate_caches()
    mod = importlib.reload(mod)
    assert mod.TAG == "v2"
    register_plugin(mod.Listener())  # another class object, same module and name
    assert in_code() == ["Listener"]


def test_a_module_plugin_reloaded_or_imported_anew(plugin_module: Path) -> None:
    mod = importlib.import_module("nb_reload_plugin")
    register_plugin(mod)
    register_plugin(importlib.reload(mod))  # the same module object: nothing to do
    del sys.modules["nb_reload_plugin"]
    again = importlib.import_module("nb_reload_plugin")  # a new module object
    assert again is not mod
    register_plugin(again)
    assert in_code() == ["nb_reload_plugin"]
    unregister_plugin(again)
    assert in_code() == []


def test_register_with_a_kind_names_the_fix(notebook: dict[str, Any]) -> None:
    """The audit's cell wrote registry.register("sampler", MySobol): a raw TypeError about
    positional arguments, wrapped in 'plugin failed to load'."""
    run_cell('''
from mapframe.samplers.space_filling import SobolSampler
class MySobol(SobolSampler):
    name = "mysobol-nb"
class Other:
    @hookimpl
    def mapframe_register_components(self, registry):
        registry.register("sampler", MySobol)
register_plugin(Other())
''', notebook)
    with pytest.raises(PluginLoadError, match=r"register\(\) takes the component class only "
                                              r".* got register\('sampler', MySobol\); write "
                                              r"registry.register\(MySobol\)"):
        get_registry()
