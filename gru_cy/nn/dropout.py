"""Darknet's ``[dropout]`` layer (``dropout_layer.c``): inverted dropout.

Training: each element is zeroed with probability ``p`` and the survivors are
scaled by ``1 / (1 - p)`` (Darknet's ``l.scale``, in the input's precision);
the backward applies the same mask to the gradient.  Inference: the identity.
Sizes: ``R`` rows, ``C = inputs`` columns (in a network, ``R = T*B``).
"""
import numpy as np

from gru_cy import _validate as V
from gru_cy import backends
from gru_cy._dropout import DropoutMasks
from gru_cy._locking import Locked, new_lock, serialized

__all__ = ["Dropout"]


class Dropout(DropoutMasks, Locked):
    """Darknet's ``[dropout]``: ``(R, C) -> (R, C)``, ``C = inputs = outputs``.

    Parameters
    ----------
    inputs : int
        ``C``.
    probability : float in [0, 1)
        The chance that an element is dropped (Darknet's ``probability``,
        default 0.5).
    seed : int or None
        Seeds the generator of the masks: a seeded layer draws the same masks
        in every run.  Each training forward draws one mask of the input's
        shape (also when ``probability`` is 0), so the generator advances the
        same way whatever the probability.

    Attributes
    ----------
    type : str
        ``"dropout"``.
    inputs, outputs : int
        Equal.
    probability : float
    dropout_state : dict
        The generator's state (assign it back to draw the same masks again);
        checkpoints, pickles and copies carry it.
    """

    type = "dropout"

    def __init__(self, inputs, probability=0.5, seed=None):
        self.inputs = self.outputs = V.positive_int("inputs", inputs)
        self.probability = V.hyper("probability", probability, low=0.0, high=1.0,
                                   high_open=True)
        if seed is not None and (isinstance(seed, bool)
                                 or not isinstance(seed, (int, np.integer))):
            raise TypeError(f"seed: expected an int or None, got {seed!r}")
        self._rng = np.random.default_rng(seed)
        self._mask = None
        self._lock = new_lock()

    def _checkpoint_node(self, prefix, arrays, with_state):
        return {"kind": "Dropout", "args": dict(inputs=self.inputs,
                                                probability=self.probability),
                "rng": self._rng.bit_generator.state}

    def _check(self, name, a):
        be = backends.of(a)
        a = be.asarray(a)
        if a.dtype.kind != "f":
            raise TypeError(f"{name}: expected a floating array, got dtype {a.dtype}")
        if a.ndim < 1 or a.shape[-1] != self.inputs:
            raise ValueError(f"{name}: expected an array whose last axis has {self.inputs} "
                             f"elements (inputs), got shape {a.shape}")
        return be, a

    @serialized
    def forward(self, x, train=False):
        """y = x * mask in training (mask: 0 with probability p, else 1 / (1 - p)),
        a copy of x otherwise.

        Parameters
        ----------
        x : ndarray, shape (..., inputs), float32 or float64
        train : bool
            Draw a mask and keep it for ``backward``.

        Returns
        -------
        ndarray, same shape and dtype as ``x`` (a fresh array)
        """
        be, x = self._check("x", x)
        if not train:
            self._mask = None
            return x.copy()
        self._mask = be.asarray(self._draw_mask(x.shape, self.probability, x.dtype))
        return x * self._mask

    @serialized
    def backward(self, dy):
        """dx = dy * mask, the mask of the last training forward (Darknet's
        ``backward_dropout_layer``: ``r < p`` zeroes the delta, else ``*= scale``).

        Parameters
        ----------
        dy : ndarray, the shape of the last training forward's ``x``

        Returns
        -------
        ndarray, fresh
        """
        if self._mask is None:
            raise ValueError("backward: expected a preceding forward(train=True), got none")
        _, dy = self._check("dy", dy)
        if dy.shape != self._mask.shape:
            raise ValueError(f"dy: expected shape {self._mask.shape} (the last training "
                             f"forward's), got {dy.shape}")
        return (dy * self._mask).astype(self._mask.dtype, copy=False)

    def __repr__(self):
        return f"Dropout(inputs={self.inputs}, probability={self.probability})"
