"""gru_cy: a Darknet-style GRU layer with a Cython/OpenMP engine, a CUDA twin,
a working backward, Darknet's update rules, the pieces of a network around it
and a gradient check."""
from gru_cy.layer import GRU
from gru_cy.stacked import StackedGRU
from gru_cy.nn import (Connected, Cost, Network, Softmax, mse, softmax,
                       softmax_cross_entropy)

__version__ = "0.1.0"
__all__ = ["GRU", "StackedGRU", "Network", "Connected", "Softmax", "Cost", "softmax",
           "softmax_cross_entropy", "mse", "__version__"]
