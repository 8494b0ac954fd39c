"""Front solvers: multi-objective optimisation on the surrogates."""

from mapframe.solvers.base import FrontSolver, SolverResult
from mapframe.solvers.pymoo_solvers import GridSolver, NSGA2Solver, NSGA3Solver

__all__ = ["FrontSolver", "GridSolver", "NSGA2Solver", "NSGA3Solver", "SolverResult"]
