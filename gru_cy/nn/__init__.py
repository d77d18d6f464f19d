"""What training needs around the GRU: a connected layer, softmax, losses and a network.

* :class:`Connected` is Darknet's ``[connected]`` layer;
* :class:`Dropout` is Darknet's ``[dropout]`` layer (seeded masks);
* :class:`Softmax` and :class:`Cost` are Darknet's ``[softmax]`` and ``[cost]``
  (``type=sse``) layers;
* :func:`softmax`, :func:`softmax_cross_entropy` and :func:`mse` are the losses,
  summed over rows (the update divides by the batch, as Darknet does);
* :class:`Network` chains ``[gru]``, ``[connected]``, ``[dropout]``,
  ``[softmax]`` and ``[cost]`` layers over time-major tensors ``(T, B, features)``;
  ``gru_cy.nn.schedule`` holds Darknet's learning-rate policies it applies.

Every piece runs on either backend (``gru_cy.backends``) through the kernels of
``gru_cy.kernels``.
"""
from gru_cy.kernels import ACTIVATIONS
from gru_cy.nn.connected import Connected
from gru_cy.nn.dropout import Dropout
from gru_cy.nn.losses import Cost, Softmax, mse, softmax, softmax_cross_entropy
from gru_cy.nn.network import Network

__all__ = ["Connected", "Dropout", "Softmax", "Cost", "Network", "softmax",
           "softmax_cross_entropy", "mse", "ACTIVATIONS"]
