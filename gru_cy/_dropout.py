"""Dropout masks, shared by ``gru_cy.nn.Dropout`` and ``gru_cy.StackedGRU``:
one seeded generator per object (``_rng``), inverted dropout's scaled masks."""
import numpy as np


class DropoutMasks:
    """Mixin: ``dropout_state`` and ``_draw_mask``; the class sets ``self._rng``."""

    @property
    def dropout_state(self):
        """The mask generator's state (set it back to draw the same masks again)."""
        return self._rng.bit_generator.state

    @dropout_state.setter
    def dropout_state(self, value):
        self._rng.bit_generator.state = value

    def _draw_mask(self, shape, probability, dtype):
        """A (NumPy) mask of ``shape``: 0 with probability ``probability``, else
        ``1 / (1 - probability)`` in ``dtype`` (Darknet: ``rand_uniform(0, 1) <
        p`` drops, survivors times ``l.scale``)."""
        dtype = np.dtype(dtype)
        keep = self._rng.random(shape) >= probability
        return keep.astype(dtype) * dtype.type(1.0 / (1.0 - probability))
