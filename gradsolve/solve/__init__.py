"""Solving: the loop that drives every optimizer, results, fitting and analysis of solutions."""
