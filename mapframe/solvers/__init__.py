"""Front solvers: multi-objective optimisation on the surrogates."""

from mapframe.solvers.base import FrontSolver, SolverResult
from mapframe.solvers.polish import improve, polish_front
from mapframe.solvers.pymoo_solvers import AutoFrontSolver, GridSolver, NSGA2Solver, NSGA3Solver

__all__ = [
    "AutoFrontSolver",
    "FrontSolver",
    "GridSolver",
    "NSGA2Solver",
    "NSGA3Solver",
    "SolverResult",
    "improve",
    "polish_front",
]
