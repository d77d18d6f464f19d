"""gru_cy: a Darknet-style GRU layer with a Cython/OpenMP engine, a CUDA twin,
a working backward, Darknet's update rules and a gradient check."""
from gru_cy.layer import GRU

__version__ = "0.1.0"
__all__ = ["GRU", "__version__"]
