"""Optimizers and learning-rate schedulers (PyTorch's torch.optim contract).

One file per optimizer; the base class is in ``optimizer.py``.  Levenberg-Marquardt
(``lm.py``) solves nonlinear least squares from a residual closure.
"""

from . import lr_scheduler
from .adadelta import Adadelta
from .adagrad import Adagrad
from .adam import Adam
from .adamw import AdamW
from .lbfgs import LBFGS
from .lm import LevenbergMarquardt
from .nadam import NAdam
from .optimizer import Optimizer
from .rmsprop import RMSprop
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "Adadelta", "Adam", "AdamW", "NAdam", "RMSprop", "Adagrad",
           "LBFGS", "LevenbergMarquardt", "lr_scheduler"]
