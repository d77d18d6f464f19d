"""Darknet's ``[connected]`` layer on the engine's kernels (either backend).

``y = act(x @ W.T + b)``, or with batch normalisation
``y = act(scales * BN(x @ W.T) + b)`` with the statistics taken over all rows
of the call (Darknet's connected layer sees ``B*T`` rows in a recurrent
network).  Every step is a kernel of ``gru_cy.kernels`` run by the layer's
backend: gemm, bias (or BN), activation; the backward mirrors it.  Sizes:
``R`` rows, ``I`` inputs, ``O`` outputs.
"""
import numpy as np

from gru_cy import _validate as V
from gru_cy._locking import serialized
from gru_cy.backends import DEVICES
from gru_cy.kernels import ACTIVATIONS
from gru_cy.trainable import Trainable


class Connected(Trainable):
    """Darknet's ``[connected]`` layer: ``(R, I) -> (R, O)``.

    Parameters
    ----------
    inputs, outputs : int
        ``I`` and ``O``.
    activation : str
        One of ``gru_cy.kernels.ACTIVATIONS`` (Darknet's names), default "linear".
    batch_normalize : bool
        Darknet's BN over the ``R`` rows of each training call (rolling
        statistics with momentum 0.99, unbiased variance, ``sqrt(var) + 1e-6``).
    optimizer : {"sgd", "adam"}
    dtype : float32 or float64
    device : {"cpu", "cuda"}
    seed : int or None
        Initialisation as Darknet: weights ``uniform(-1, 1) * sqrt(2 / I)``,
        biases 0, scales 1, rolling variance 1.
    num_threads : int or None
        OpenMP team of the CPU kernels; None asks OpenMP on every call.

    Attributes
    ----------
    params : mapping
        ``"weights"`` (O, I), ``"biases"`` (O,), with BN ``"scales"``,
        ``"rolling_mean"``, ``"rolling_variance"`` (O,).  Views of the layer's
        storage; assigning copies in after a shape check.
    grads : dict
        The trainable keys; live buffers that accumulate.
    """

    type = "connected"
    _TRANSIENT = Trainable._TRANSIENT + ("_cache",)

    def _restored(self):
        self._cache = None

    def _checkpoint_node(self, prefix, arrays, with_state):
        from gru_cy import _checkpoint_io as C
        node = {"kind": "Connected", "args": dict(
            inputs=self.inputs, outputs=self.outputs, activation=self.activation,
            batch_normalize=self.batch_normalize, optimizer=self.optimizer,
            dtype=self.dtype.name, num_threads=self.num_threads)}
        node.update(C.trainable(self, prefix, arrays, with_state))
        return node

    def __init__(self, inputs, outputs, activation="linear", batch_normalize=False,
                 optimizer="sgd", dtype=np.float32, device="cpu", seed=None,
                 num_threads=None):
        self.inputs = V.size("inputs", inputs)
        self.outputs = V.size("outputs", outputs)
        self.activation = V.choice("activation", activation, ACTIVATIONS)
        self._act = ACTIVATIONS.index(activation)
        self.batch_normalize = bool(batch_normalize)
        device = V.choice("device", device, DEVICES)
        O, I = self.outputs, self.inputs
        # theta: weights (O, I), biases (O,), with BN scales (O,)
        n = O * I + O + (O if self.batch_normalize else 0)
        V.memory("outputs", 4 * n * V.float_dtype(dtype).itemsize,
                 f"Connected({I}, {O})'s parameters, gradients and optimiser state")
        self._init_storage(n, O * I, O if self.batch_normalize else 0, dtype, optimizer,
                           num_threads)
        rng = np.random.default_rng(seed)
        views = self._views(self._theta, self._rolling)
        views["weights"][...] = np.sqrt(2.0 / I) * rng.uniform(-1, 1, (O, I))
        if self.batch_normalize:
            views["scales"][...] = 1
        self._cache = None
        self._bind()
        if device != "cpu":
            self.to(device)

    def _views(self, theta, rolling):
        O, I = self.outputs, self.inputs
        views = {"weights": theta[:O * I].reshape(O, I), "biases": theta[O * I:O * I + O]}
        if self.batch_normalize:
            views["scales"] = theta[O * I + O:]
            if rolling is not None:
                views["rolling_mean"] = rolling[0]
                views["rolling_variance"] = rolling[1]
        return views

    def _invalidate(self):
        self._cache = None

    def _moved(self, backend):
        self._cache = None

    def _input(self, x, name="x"):
        return V.array(name, x, self.dtype, ("R", self.inputs), self._backend)

    @serialized
    def forward(self, x, train=False):
        """``y = act(x @ W.T + b)`` (or with BN), a fresh ``(R, O)`` array.

        Parameters
        ----------
        x : ndarray, shape (R, I)
        train : bool
            Use the batch statistics (and advance the rolling ones) and keep
            the cache ``backward`` needs.
        """
        x = self._input(x)
        be, nt, R = self._backend, self._threads(), x.shape[0]
        P = self._params
        if self.batch_normalize and train and R < 2:
            raise ValueError(f"x: batch normalisation in training needs at least 2 "
                             f"rows, got {R}")
        y = be.xp.empty((R, self.outputs), self.dtype)
        be.gemm(y, x, P["weights"], False, True, 1.0, 0.0, nt)
        cache = {"x": x}
        if not self.batch_normalize:
            be.bias_forward(y, P["biases"], nt)
        elif train:
            vhat = be.xp.empty_like(y)
            sd = be.xp.empty(self.outputs, self.dtype)
            be.bn_forward_train(y, vhat, sd, P["rolling_mean"], P["rolling_variance"],
                                P["scales"], P["biases"], nt)
            cache["vhat"], cache["sd"] = vhat, sd
        else:
            be.bn_forward_infer(y, P["rolling_mean"], P["rolling_variance"], P["scales"],
                                P["biases"], nt)
        be.activation_forward(y, self._act, nt)
        cache["y"] = y
        self._cache = cache if train else None
        return y.copy()

    @serialized
    def backward(self, dy):
        """Accumulate parameter gradients; return ``dx`` ``(R, I)``.

        Parameters
        ----------
        dy : ndarray, shape (R, O)
            ``dL/dy`` for the last training forward.
        """
        if self._cache is None:
            raise ValueError("backward: expected a preceding forward(train=True), "
                             "got none (or it was invalidated)")
        be, nt, c, G = self._backend, self._threads(), self._cache, self._grads
        x, y = c["x"], c["y"]
        g = V.array("dy", dy, self.dtype, y.shape, be)
        if g is dy:
            g = g.copy()       # the kernels below overwrite it
        # y = act(a): g = dy * act'(a)
        be.activation_backward(g, y, self._act, nt)
        if self.batch_normalize:
            # out = scales * vhat + biases, vhat = (v - mu) / (sd + eps): g becomes dL/dv
            be.bn_backward(g, G["scales"], G["biases"], c["vhat"], c["sd"],
                           self._params["scales"], nt)
        else:
            be.col_sum(G["biases"], g, nt)
        # v = x @ W.T:  dW += g.T @ x;  dx = g @ W
        be.gemm(G["weights"], g, x, True, False, 1.0, 1.0, nt)
        dx = be.xp.empty_like(x)
        be.gemm(dx, g, self._params["weights"], False, False, 1.0, 0.0, nt)
        self._rows += x.shape[0]
        return dx
