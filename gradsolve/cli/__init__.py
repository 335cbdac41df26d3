"""The command line: click commands and rich output only; the numerics live in gradsolve.solve."""
