"""gru_cy: a Darknet-style GRU layer with a Cython/OpenMP engine, a CUDA twin,
a working backward, Darknet's update rules, the pieces of a network around it
and a gradient check."""
from gru_cy._version import __version__
from gru_cy.checkpoint import load
from gru_cy.layer import GRU
from gru_cy.nn import (Connected, Cost, Dropout, Network, Softmax, mse, softmax,
                       softmax_cross_entropy)
from gru_cy.stacked import StackedGRU

__all__ = ["GRU", "StackedGRU", "Network", "load", "Connected", "Dropout", "Softmax", "Cost",
           "softmax", "softmax_cross_entropy", "mse", "__version__"]
