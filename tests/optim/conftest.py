import pathlib
import sys

# tests/optim/problems.py is a plain helper module next to the tests
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
