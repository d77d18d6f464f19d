"""Softmax and the losses, and Darknet's ``[softmax]`` and ``[cost]`` layers.

Every function runs on the backend that holds its input (NumPy: the CPU's
kernels; CuPy: the CUDA kernels).  Losses are summed over rows; an update
divides by the batch, as Darknet does.  Sizes: ``R`` rows, ``C`` classes.
"""
import numpy as np

from gru_cy import _validate as V
from gru_cy import backends
from gru_cy._locking import Locked, new_lock, serialized


def _floating(name, a, backend):
    """``a`` as a C-contiguous floating array of ``backend`` (its own float type)."""
    a = backend.asarray(a)
    if a.dtype.kind != "f":
        raise TypeError(f"{name}: expected a floating array, got dtype {a.dtype}")
    return backend.xp.ascontiguousarray(a)


def _rows(a):
    """(R, C) view of an array whose last axis holds the C columns."""
    C = a.shape[-1] if a.ndim else 1
    return a.reshape(-1, C)


def targets_like(backend, targets, ref, name="targets"):
    """Class indices (shape ``ref.shape[:-1]``) as one-hot rows, or probabilities
    of ``ref``'s shape checked and converted to its dtype."""
    xp = backend.xp
    t = backend.asarray(targets)
    if t.dtype.kind in "iu" and t.shape == ref.shape[:-1]:
        C = ref.shape[-1]
        if t.size and (int(t.min()) < 0 or int(t.max()) >= C):
            raise ValueError(f"{name}: expected class indices in [0, {C}), got "
                             f"values in [{int(t.min())}, {int(t.max())}]")
        out = xp.zeros(ref.shape, dtype=ref.dtype)
        flat = out.reshape(-1, C)
        flat[xp.arange(flat.shape[0]), t.reshape(-1)] = 1
        return out
    if t.shape != ref.shape:
        raise ValueError(f"{name}: expected shape {ref.shape} (or class indices of "
                         f"shape {ref.shape[:-1]}), got {t.shape}")
    if t.dtype.kind != "f":
        raise TypeError(f"{name}: expected a floating array or integer class "
                        f"indices, got dtype {t.dtype}")
    return xp.ascontiguousarray(t, dtype=ref.dtype)


def softmax(x, temperature=1.0):
    """Row-wise softmax over the last axis (max-subtracted, computed in double).

    Parameters
    ----------
    x : ndarray, shape (..., C), float32 or float64
    temperature : float
        Darknet's ``temperature``: ``softmax(x / temperature)``.

    Returns
    -------
    ndarray, same shape and dtype as ``x``
    """
    be = backends.of(x)
    x = _floating("x", x, be)
    temperature = V.hyper("temperature", temperature, low_open=True)
    v = x if temperature == 1 else (x / temperature).astype(x.dtype, copy=False)
    p = be.xp.empty_like(v)
    if v.shape[-1]:
        be.softmax_forward(_rows(p), _rows(v), 1)
    return p


def _cross_entropy(be, p, t, scale):
    """(loss, scale * (p - t)) of probabilities p and targets t, both (..., C)."""
    d = be.xp.empty_like(p)
    loss = be.xp.empty(_rows(p).shape[0], dtype=p.dtype)
    be.softmax_cross_entropy_backward(_rows(d), loss, _rows(p), _rows(t), scale, 1)
    return float(loss.sum(dtype=np.float64)), d


def softmax_cross_entropy(logits, targets):
    """Softmax followed by cross-entropy, summed over rows.

    Parameters
    ----------
    logits : ndarray, shape (..., C), float32 or float64
    targets : ndarray
        Probabilities (one-hot or soft) of the same shape as ``logits``, or
        integer class indices of shape ``logits.shape[:-1]``.

    Returns
    -------
    loss : float
        ``-sum_rows sum_c t * log(softmax(logits))``.
    dlogits : ndarray, same shape and dtype as ``logits``
        The true gradient of ``loss``: ``softmax(logits) - t``.
    """
    be = backends.of(logits)
    p = softmax(logits)
    return _cross_entropy(be, p, targets_like(be, targets, p), 1.0)


def mse(y, targets, scale=1.0):
    """Half the summed squared error (Darknet's ``sse`` cost) and its gradient.

    Parameters
    ----------
    y : ndarray, shape (..., C), float32 or float64
    targets : ndarray, same shape as ``y``
    scale : float
        Darknet's cost ``scale``: the loss and the gradient are multiplied by it.

    Returns
    -------
    loss : float
        ``scale * sum (y - t)^2 / 2`` over every element; the mean squared
        error (scale 1) is ``2 * loss / y.size``.
    dy : ndarray, same shape and dtype as ``y``
        The true gradient of ``loss``: ``scale * (y - t)``.
    """
    be = backends.of(y)
    y = _floating("y", y, be)
    t = targets_like(be, targets, y)
    d = be.xp.empty_like(y)
    rows = _rows(y)
    loss = be.xp.empty(rows.shape[0], dtype=y.dtype)
    be.mse_backward(_rows(d), loss, rows, _rows(t), 1.0, 1)
    total = float(loss.sum(dtype=np.float64))
    if scale != 1:
        return scale * total, (scale * d).astype(y.dtype, copy=False)
    return total, d


class Softmax(Locked):
    """Darknet's ``[softmax]``: row-wise softmax (``groups``, ``temperature``).

    In a network, a softmax followed by the loss is differentiated together
    (``dlogits = p - t``); on its own, ``backward`` applies the softmax Jacobian.
    """

    type = "softmax"

    def __init__(self, inputs, groups=1, temperature=1.0):
        self.inputs = self.outputs = V.positive_int("inputs", inputs)
        groups = V.positive_int("groups", groups)
        if self.inputs % groups:
            raise ValueError(f"groups: expected a positive divisor of inputs = "
                             f"{self.inputs}, got {groups!r}")
        self.groups = groups
        self.temperature = V.hyper("temperature", temperature, low_open=True)
        self._p = None
        self._lock = new_lock()

    def _checkpoint_node(self, prefix, arrays, with_state):
        return {"kind": "Softmax", "args": dict(inputs=self.inputs, groups=self.groups,
                                                temperature=self.temperature)}

    @serialized
    def forward(self, x, train=False):
        """P (R, C) = softmax of each group of each row of x (R, C)."""
        R, C = x.shape
        p = softmax(x.reshape(R * self.groups, C // self.groups),
                    self.temperature).reshape(R, C)
        self._p = p if train else None
        return p.copy()

    def loss(self, p, targets):
        """(cross-entropy of the output p, its gradient w.r.t. this layer's input)."""
        be = backends.of(p)
        return _cross_entropy(be, p, targets_like(be, targets, p), 1.0 / self.temperature)

    @serialized
    def backward(self, dp):
        """dx = J^T dp with the softmax Jacobian (per group)."""
        if self._p is None:
            raise ValueError("backward: expected a preceding forward(train=True), got none")
        R, C = self._p.shape
        p = self._p.reshape(R * self.groups, -1)
        d = dp.reshape(p.shape)
        return (p * (d - (d * p).sum(axis=1, keepdims=True)) / self.temperature
                ).reshape(R, C).astype(self._p.dtype)


class Cost:
    """Darknet's ``[cost]`` layer (``type=sse``): identity forward, marks the loss.

    After a softmax, the network's loss is the cross-entropy (Darknet's
    softmax computes its own delta); otherwise half the summed squared error
    times ``scale``.
    """

    type = "cost"

    def __init__(self, inputs, cost_type="sse", scale=1.0):
        if cost_type != "sse":
            raise ValueError(f"cost_type: expected 'sse' (the only cost supported), "
                             f"got {cost_type!r}")
        self.inputs = self.outputs = V.positive_int("inputs", inputs)
        self.cost_type = cost_type
        self.scale = float(scale)

    def forward(self, x, train=False):
        return x.copy()

    def _checkpoint_node(self, prefix, arrays, with_state):
        return {"kind": "Cost", "args": dict(inputs=self.inputs, cost_type=self.cost_type,
                                             scale=self.scale)}

    def loss(self, y, targets):
        """(scale * sse of the output y, its gradient)."""
        return mse(y, targets, self.scale)

    def backward(self, dy):
        return dy
