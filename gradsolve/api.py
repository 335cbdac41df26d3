"""The Python API behind the command: load a problem, solve it, read the result.

>>> import gradsolve as gs
>>> problem = gs.Problem.from_text("x + y = 3\\nx - y = 1")
>>> result = gs.solve(problem)
>>> result.status, round(result.parameters["x"], 12), round(result.parameters["y"], 12)
('converged', 2.0, 1.0)
"""
from __future__ import annotations

from gradsolve.solve.result import Result  # noqa: F401 - re-exported


class Problem:
    """A parsed problem; build it with `from_file` or `from_text`."""

    def __init__(self, spec, reload=None):
        self.spec = spec
        self._reload = reload  # seed -> spec: the same source parsed again with other random starts

    @classmethod
    def from_file(cls, path, *, init=None, seed=None, allow_data_outside=False):
        from gradsolve.problem.files import from_file

        def reload(seed):
            return from_file(path, allow_data_outside=allow_data_outside, init=init, seed=seed)

        return cls(reload(seed), reload)

    @classmethod
    def from_text(cls, text, *, filename="<text>", init=None, seed=None):
        from gradsolve.problem.files import from_text

        def reload(seed):
            return from_text(text, filename, init=init, seed=seed)

        return cls(reload(seed), reload)

    def with_seed(self, seed: int) -> "Problem":
        """The same problem with the starting values that `seed` draws (unknowns given no start)."""
        if seed == self.spec.solver.get("seed") or self._reload is None:
            return self
        return Problem(self._reload(seed), self._reload)

    @property
    def unknowns(self):
        return self.spec.unknown_names

    @property
    def kind(self):
        return self.spec.kind

    def __repr__(self):
        return f"Problem({self.spec.name!r}, kind={self.spec.kind!r}, unknowns={self.spec.unknown_names})"


def solve(problem, *, on_progress=None, every=1, **options) -> Result:
    """Solve `problem` (a Problem, or a path) with the CLI's options as keywords (optimizer=, lr=, steps=, ...).

    `seed=` draws the random starting values afresh, as `--seed` does.  `on_progress(row)` gets a
    ProgressRow every `every` steps (a whole number >= 1).  Options that cannot work (every=0, a tol,
    atol or lr that is not a finite number, an unknown optimizer) raise ValueError, naming the option.
    """
    from gradsolve.solve.options import build_options
    from gradsolve.solve.solver import merged_options, solve_spec

    build_options(None, options)  # a bad option (seed="x", steps=0) is a SolveError before anything is read
    if not isinstance(problem, Problem):
        problem = Problem.from_file(problem, seed=options.get("seed"))
    elif options.get("seed") is not None:
        problem = problem.with_seed(int(options["seed"]))
    merged = merged_options(problem.spec, options)
    return solve_spec(problem.spec, merged, on_progress=on_progress, every=every)
