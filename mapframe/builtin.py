"""mapframe's built-in components, registered through the ``mapframe`` entry-point group
exactly like a third-party plugin (see ``setup.cfg``: ``builtin = mapframe.builtin``)."""

from __future__ import annotations

from mapframe.plugin import ComponentRegistry, hookimpl


@hookimpl
def mapframe_register_components(registry: ComponentRegistry) -> None:
    """Register every built-in evaluator, sampler, surrogate, solver, strategy, store and
    executor."""
    from mapframe.evaluators.callable import CallableEvaluator
    from mapframe.examples.digits import DigitsEvaluator
    from mapframe.executors.dask_executor import DaskExecutor
    from mapframe.executors.inprocess import InProcessExecutor
    from mapframe.executors.pool import ProcessExecutor
    from mapframe.executors.ray_executor import RayExecutor
    from mapframe.merging.geometric import KarcherMean, ModelStock, MultiSlerp
    from mapframe.merging.interpolation import (
        ModelSoup,
        PreferenceTaskArithmetic,
        ScalarTaskArithmetic,
        Slerp,
    )
    from mapframe.merging.sparsified import Breadcrumbs, Della
    from mapframe.merging.spectral import (
        IsotropicCommonTaskMerge,
        IsotropicMerge,
        TaskSingularVectorsMerge,
    )
    from mapframe.merging.task_arithmetic import TaskArithmetic
    from mapframe.merging.ties_dare import DareTaskArithmetic, DareTies, TiesMerging
    from mapframe.pairing import CosinePairing, InOrderPairing, MetricProfilePairing
    from mapframe.samplers.bins import BinSampler
    from mapframe.samplers.botorch_sampler import BoTorchSampler
    from mapframe.samplers.choice import AutoSampler
    from mapframe.samplers.front import FrontSampler
    from mapframe.samplers.gp import GPSampler
    from mapframe.samplers.space_filling import (
        GridSampler,
        LatinHypercubeSampler,
        RandomSampler,
        SobolSampler,
    )
    from mapframe.solvers.pymoo_solvers import (
        AutoFrontSolver,
        GridSolver,
        NSGA2Solver,
        NSGA3Solver,
    )
    from mapframe.stopping import PlateauStopping
    from mapframe.storage.memory import MemoryStore
    from mapframe.storage.sqlite import SQLiteStore
    from mapframe.surrogates.gp import GPSurrogate
    from mapframe.surrogates.mean import GPQuadraticMeanSurrogate
    from mapframe.surrogates.quadratic import (
        AutoSurrogate,
        QuadraticSurrogate,
        SigmoidQuadraticSurrogate,
        SoftplusQuadraticSurrogate,
    )

    for cls in (
        CallableEvaluator,
        DigitsEvaluator,
        RandomSampler,
        SobolSampler,
        LatinHypercubeSampler,
        GridSampler,
        BinSampler,
        GPSampler,
        FrontSampler,
        BoTorchSampler,
        AutoSampler,
        QuadraticSurrogate,
        SigmoidQuadraticSurrogate,
        SoftplusQuadraticSurrogate,
        AutoSurrogate,
        GPSurrogate,
        GPQuadraticMeanSurrogate,
        NSGA2Solver,
        NSGA3Solver,
        GridSolver,
        AutoFrontSolver,
        TaskArithmetic,
        ScalarTaskArithmetic,
        PreferenceTaskArithmetic,
        TiesMerging,
        DareTaskArithmetic,
        DareTies,
        Slerp,
        ModelSoup,
        TaskSingularVectorsMerge,
        IsotropicMerge,
        IsotropicCommonTaskMerge,
        Breadcrumbs,
        Della,
        ModelStock,
        KarcherMean,
        MultiSlerp,
        MemoryStore,
        SQLiteStore,
        InProcessExecutor,
        ProcessExecutor,
        RayExecutor,
        DaskExecutor,
        PlateauStopping,
        CosinePairing,
        MetricProfilePairing,
        InOrderPairing,
    ):
        registry.register(cls)
