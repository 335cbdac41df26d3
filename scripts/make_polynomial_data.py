"""Write problems/polynomial.csv: 20 samples of y = x**2 + 2*x + 3 with x ~ 5*N(0, 1).

Deterministic (numpy.random.default_rng(0)), float64 throughout; y is computed
from x exactly as the formula is written, and both are written with repr() so
they read back bit for bit.  Run from the repository root:

    python scripts/make_polynomial_data.py [OUTPUT]
"""

from __future__ import annotations

import os
import sys

import numpy as np

SEED = 0
ROWS = 20


def make_rows(seed: int = SEED, rows: int = ROWS) -> list[tuple[float, float]]:
    rng = np.random.default_rng(seed)
    x = 5.0 * rng.standard_normal(rows)
    out = []
    for value in x.tolist():  # Python floats: the formula below is evaluated in float64
        y = value**2 + 2 * value + 3
        out.append((value, y))
    return out


def write_csv(path: str, rows: list[tuple[float, float]]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write("x,y\n")
        for x, y in rows:
            fh.write(f"{x!r},{y!r}\n")


def main(argv: list[str]) -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    default = os.path.join(here, os.pardir, "problems", "polynomial.csv")
    path = argv[1] if len(argv) > 1 else default
    write_csv(path, make_rows())
    print(f"wrote {os.path.normpath(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
