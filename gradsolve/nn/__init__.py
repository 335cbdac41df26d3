"""Neural-network helpers: for now the functional losses and activations."""
from gradsolve.nn import functional  # noqa: F401
