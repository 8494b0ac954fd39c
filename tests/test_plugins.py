"""Plugin discovery, the registry's checks, hooks, and `mapframe plugins`."""

from __future__ import annotations

import numpy as np
import pytest

from mapframe import MergeStudy
from mapframe.cli import main
from mapframe.errors import ComponentError, PluginLoadError, UnknownComponentError
from mapframe.plugin import (
    ComponentRegistry,
    get_registry,
    hookimpl,
    register_plugin,
    unregister_plugin,
)
from mapframe.samplers.base import Sampler
from mapframe.samplers.space_filling import RandomSampler

GOOD_PLUGIN = '''
import numpy as np
from mapframe.evaluators import Evaluator
from mapframe.plugin import hookimpl
from mapframe.problem import Task

class SphereEvaluator(Evaluator):
    """Two tasks whose optima sit at opposite corners."""
    name = "sphere"

    @property
    def tasks(self):
        return [Task("near_zero"), Task("near_one")]

    def evaluate(self, coefficients):
        C = np.atleast_2d(coefficients)
        return np.column_stack([-(C ** 2).sum(1), -((C - 1) ** 2).sum(1)])

@hookimpl
def mapframe_register_components(registry):
    registry.register(SphereEvaluator)
'''


def test_builtins_come_from_the_entry_point():
    registry = get_registry()
    builtin = [p for p in registry.plugins if p.name == "builtin"]
    assert builtin and builtin[0].package == "mapframe" and builtin[0].error is None
    for kind, name in [("sampler", "sobol"), ("surrogate", "quadratic"),
                       ("front_solver", "nsga3"), ("merge_strategy", "task_arithmetic"),
                       ("storage", "sqlite"), ("executor", "inprocess"),
                       ("evaluator", "digits")]:
        assert name in registry.names(kind)
        assert (kind, name) in builtin[0].components


def test_unknown_name_lists_available():
    with pytest.raises(UnknownComponentError) as err:
        get_registry().get("sampler", "sobolx")
    msg = str(err.value)
    assert "not available (plugin may not be installed)" in msg
    assert "sobol" in msg and "lhs" in msg


def test_study_with_unknown_component_name():
    with pytest.raises(UnknownComponentError, match="front solver 'nsga4'"):
        MergeStudy(objective=lambda C: C, task_names=["a", "b"], front_solver="nsga4")


def test_registry_rejects_duplicates_and_non_components():
    registry = ComponentRegistry()
    registry.register(RandomSampler)
    registry.register(RandomSampler)  # the same class again is harmless

    class OtherRandom(RandomSampler):
        name = "random"

    with pytest.raises(ComponentError, match="registered twice"):
        registry.register(OtherRandom)
    with pytest.raises(ComponentError, match="not a mapframe component"):
        registry.register(dict)  # type: ignore[arg-type]

    class Nameless(RandomSampler):
        name = ""

    with pytest.raises(ComponentError, match="has no `name`"):
        registry.register(Nameless)

    class Abstract(Sampler):
        name = "abstract"

    with pytest.raises(ComponentError, match="abstract: implement propose"):
        registry.register(Abstract)


def test_create_rejects_unknown_parameters():
    from mapframe.errors import ConfigError

    with pytest.raises(ConfigError, match="does not take parameter"):
        get_registry().create("executor", {"name": "inprocess", "workers": 3})


def test_third_party_plugin_is_discovered(fake_dist, capsys):
    fake_dist("mapframe-sphere", {"sphere": "sphere_plugin"},
              {"sphere_plugin.py": GOOD_PLUGIN})
    registry = get_registry()
    assert "sphere" in registry.names("evaluator")
    result = MergeStudy(evaluator="sphere", budget=12, seed=0).run()
    assert result.front.coefficients.shape[1] == 2
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "sphere" in out and "mapframe-sphere" in out and "1.2.3" in out


def test_broken_plugin_names_its_package(fake_dist, capsys, tmp_path):
    fake_dist("mapframe-broken", {"broken": "broken_plugin"},
              {"broken_plugin.py": "import not_a_real_module_xyz\n"})
    with pytest.raises(PluginLoadError) as err:
        get_registry()
    assert "mapframe-broken" in str(err.value)
    assert "not_a_real_module_xyz" in str(err.value)
    # `mapframe plugins` still lists everything, marking the broken one.
    assert main(["plugins"]) == 1
    out = capsys.readouterr().out
    assert "BROKEN" in out and "builtin" in out
    # ... and the CLI reports it as a one-line error for any study command.
    cfg = tmp_path / "study.yaml"
    cfg.write_text("evaluator: {name: callable, function: 'objectives:two_quadratics', "
                   "tasks: [a, b]}\n")
    assert main(["run", str(cfg), "-q"]) == 2
    assert "mapframe-broken" in capsys.readouterr().err


def test_plugin_that_registers_a_duplicate_is_reported(fake_dist):
    src = '''
from mapframe.plugin import hookimpl
from mapframe.samplers.space_filling import RandomSampler

class Clash(RandomSampler):
    name = "sobol"

@hookimpl
def mapframe_register_components(registry):
    registry.register(Clash)
'''
    fake_dist("mapframe-clash", {"clash": "clash_plugin"}, {"clash_plugin.py": src})
    with pytest.raises(PluginLoadError, match="registered twice"):
        get_registry()


def test_study_hooks_are_called(fresh_plugins):
    seen = {"started": 0, "stored": 0, "finished": 0}

    class Listener:
        @hookimpl
        def mapframe_study_started(self, study):
            seen["started"] += 1

        @hookimpl
        def mapframe_evaluation_stored(self, study, evaluation):
            seen["stored"] += 1

        @hookimpl
        def mapframe_study_finished(self, study, result):
            seen["finished"] += 1

    listener = Listener()
    register_plugin(listener)
    try:
        MergeStudy(objective=lambda C: -(C**2), task_names=["a", "b"], budget=8,
                   seed=1).run()
    finally:
        unregister_plugin(listener)
    assert seen == {"started": 1, "stored": 8, "finished": 1}


def test_plugins_json(capsys):
    import json

    assert main(["plugins", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert any(r["plugin"] == "builtin" and "sampler:sobol" in r["components"] for r in rows)


def test_sampler_instances_are_accepted():
    s = RandomSampler()
    study = MergeStudy(objective=lambda C: -np.abs(C), task_names=["a", "b"], sampler=s)
    assert study.sampler is s


def test_plugin_with_a_misnamed_hook_argument_is_reported(fake_dist, capsys):
    src = '''
from mapframe.plugin import hookimpl

@hookimpl
def mapframe_register_components(reg):
    pass
'''
    fake_dist("mapframe-typo", {"typo": "typo_plugin"}, {"typo_plugin.py": src})
    with pytest.raises(PluginLoadError, match="mapframe-typo"):
        get_registry()
    assert main(["plugins"]) == 1
    assert "BROKEN" in capsys.readouterr().out


def test_a_component_that_fails_when_made_names_itself_in_one_line():
    """Only TypeError and ValueError were turned into one-line errors: a constructor that
    imports a missing optional package, or any other bug of a plugin's, ended in a raw
    traceback that did not name the plugin."""
    from mapframe.errors import ConfigError

    class NeedsDep(RandomSampler):
        name = "needs_dep_test"

        def __init__(self) -> None:
            import no_such_package_for_mapframe  # noqa: F401

    class Broken(RandomSampler):
        name = "broken_init_test"

        def __init__(self) -> None:
            raise RuntimeError("the plugin's own bug\nsecond line")

    registry = ComponentRegistry()
    registry.register(NeedsDep)
    registry.register(Broken)
    with pytest.raises(ConfigError, match=r"sampler 'needs_dep_test' \(from .*\) needs a "
                                          r"package that is not installed.*no_such_package"):
        registry.create("sampler", "needs_dep_test")
    with pytest.raises(ComponentError, match=r"sampler 'broken_init_test' \(from .*\) failed "
                                             r"when it was made: RuntimeError: the plugin's "
                                             r"own bug$"):
        registry.create("sampler", "broken_init_test")


@pytest.mark.parametrize("kind, spec, message", [
    ("front_solver", {"name": "nsga3", "n_gen": -1}, "front_solver 'nsga3': n_gen must be"),
    ("executor", {"name": "process", "workers": -1}, "executor 'process': workers must be"),
    ("storage", {"name": "sqlite", "path": "unused.db", "claim_ttl": -1},
     "storage 'sqlite': claim_ttl must be"),
    # a message that already names its component is left as it is
    ("stopping", {"name": "plateau", "patience": -1}, "plateau: patience must be"),
])
def test_a_setting_error_says_which_component_it_is_about(kind, spec, message):
    """A config names several components: 'n_gen must be ...' alone did not say whose."""
    from mapframe.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        get_registry().create(kind, spec)
    assert str(info.value).startswith(message), str(info.value)


def test_a_component_error_of_its_own_class_keeps_its_class():
    """The name goes in front without changing what a caller catches."""

    class Picky(RandomSampler):
        name = "picky_test"

        def __init__(self) -> None:
            raise UnknownComponentError("the thing it needs is not there")

    registry = ComponentRegistry()
    registry.register(Picky)
    with pytest.raises(UnknownComponentError,
                       match=r"^sampler 'picky_test': the thing it needs is not there$"):
        registry.create("sampler", "picky_test")


def _one_plugin_error(registry, name):
    return next(p for p in registry.plugins if p.name == name).error


def test_a_misnamed_hook_argument_is_one_line_naming_hook_and_argument(fake_dist):
    """pluggy's PluginValidationError, copied verbatim, was three lines."""
    src = '''
from mapframe.plugin import hookimpl

@hookimpl
def mapframe_register_components(reg):
    pass
'''
    fake_dist("mapframe-argname", {"argp": "argname_plugin"}, {"argname_plugin.py": src})
    with pytest.raises(PluginLoadError) as err:
        get_registry()
    msg = str(err.value)
    assert "\n" not in msg, msg
    assert "mapframe_register_components" in msg and "'reg'" in msg
    assert "registry" in msg and "pip uninstall mapframe-argname" in msg


def test_a_multi_line_import_error_of_a_plugin_is_one_line(fake_dist):
    src = 'raise RuntimeError("first line of the problem\\nsecond line\\nthird line")\n'
    fake_dist("mapframe-lines", {"lines": "lines_plugin"}, {"lines_plugin.py": src})
    with pytest.raises(PluginLoadError) as err:
        get_registry()
    msg = str(err.value)
    assert "\n" not in msg and "first line of the problem" in msg, msg


def test_registering_the_same_plugin_twice_is_a_no_op(fresh_plugins):
    """A notebook cell run twice registered the module twice: every later study failed with
    a two-line pluggy message dumping the plugin dict."""
    import types

    calls = []
    mod = types.ModuleType("notebook_twice_plugin")

    @hookimpl
    def mapframe_register_components(registry):
        calls.append(1)

    mod.mapframe_register_components = mapframe_register_components
    register_plugin(mod)
    register_plugin(mod)
    try:
        registry = get_registry()
        assert _one_plugin_error(registry, "notebook_twice_plugin") is None
        assert len([p for p in registry.plugins if p.name == "notebook_twice_plugin"]) == 1
        assert calls == [1]
    finally:
        unregister_plugin(mod)
    assert "notebook_twice_plugin" not in [p.name for p in get_registry().plugins]


def test_registering_an_installed_plugin_in_code_is_a_no_op(fake_dist):
    fake_dist("mapframe-sphere", {"sphere": "sphere_plugin"},
              {"sphere_plugin.py": GOOD_PLUGIN})
    import sphere_plugin

    register_plugin(sphere_plugin)
    try:
        registry = get_registry()
        assert "sphere" in registry.names("evaluator")
        assert all(p.error is None for p in registry.plugins)
    finally:
        unregister_plugin(sphere_plugin)


def test_an_in_code_plugin_is_told_to_unregister_not_to_pip_uninstall(fresh_plugins):
    import types

    mod = types.ModuleType("notebook_raising_plugin")

    @hookimpl
    def mapframe_register_components(registry):
        raise RuntimeError("boom\nmore")

    mod.mapframe_register_components = mapframe_register_components
    register_plugin(mod)
    try:
        with pytest.raises(PluginLoadError) as err:
            get_registry()
    finally:
        unregister_plugin(mod)
    msg = str(err.value)
    assert "\n" not in msg and "boom" in msg, msg
    assert "pip uninstall" not in msg
    assert "mapframe.plugin.unregister_plugin(" in msg


def test_another_plugin_under_a_name_taken_in_code_is_refused(fresh_plugins):
    import types

    first, second = types.ModuleType("same_label"), types.ModuleType("same_label")
    register_plugin(first)
    try:
        with pytest.raises(PluginLoadError) as err:
            register_plugin(second)
        msg = str(err.value)
        assert "\n" not in msg and "'same_label'" in msg and "name=" in msg
        unregister_plugin("same_label")  # by the name it was registered under
        register_plugin(second)
    finally:
        unregister_plugin(second)
    assert "same_label" not in [p.name for p in get_registry().plugins]


def test_the_documented_hook_argument_error(fake_dist):
    from pathlib import Path

    src = ("from mapframe.plugin import hookimpl\n\n@hookimpl\n"
           "def mapframe_register_components(reg):\n    pass\n")
    fake_dist("mapframe-myplugin", {"myplugin": "argdoc_plugin"}, {"argdoc_plugin.py": src})
    with pytest.raises(PluginLoadError) as err:
        get_registry()
    page = (Path(__file__).parent.parent / "docs" / "writing-plugins.md").read_text()
    assert f"mapframe: error: {err.value}\n" in page


def test_a_hook_without_hookimpl_marks_the_plugin_broken(fake_dist, capsys):
    """pluggy ignores an undecorated function: the plugin showed [ok] with no components,
    and the study then said its component 'is not available'."""
    src = '''
from mapframe.samplers.space_filling import RandomSampler

class Mine(RandomSampler):
    name = "mine_undecorated"

def mapframe_register_components(registry):
    registry.register(Mine)
'''
    fake_dist("mapframe-nodeco", {"nodeco": "nodeco_plugin"}, {"nodeco_plugin.py": src})
    with pytest.raises(PluginLoadError) as err:
        get_registry()
    msg = str(err.value)
    assert "\n" not in msg and "mapframe-nodeco" in msg
    assert "mapframe_register_components" in msg
    assert "decorate it with @hookimpl (from mapframe.plugin import hookimpl)" in msg
    assert main(["plugins"]) == 1
    out = capsys.readouterr().out
    assert "BROKEN" in out and "@hookimpl" in out


def test_an_undecorated_hook_method_in_code_is_reported(fresh_plugins):
    class Listener:
        def mapframe_study_started(self, study):
            pass

    listener = Listener()
    register_plugin(listener)
    try:
        with pytest.raises(PluginLoadError, match=r"mapframe_study_started.*@hookimpl"):
            get_registry()
    finally:
        unregister_plugin(listener)
    get_registry()
