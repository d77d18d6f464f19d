"""What training needs around the GRU: a connected layer, losses, a network.

The pieces follow Darknet's semantics so that a Darknet network loads and runs
here unchanged (see ``gru_cy.darknet``), with one deliberate difference: every
backward returns and accumulates **true gradients** of the loss (Darknet keeps
the negative gradient in ``delta``).

* :class:`Connected` is Darknet's ``[connected]`` layer: ``y = act(x @ W.T + b)``
  or, with batch normalisation, ``y = act(scales * BN(x @ W.T) + b)`` with the
  statistics taken over all rows of the call (Darknet's connected layer sees
  ``B*T`` rows in a recurrent network).
* :class:`Softmax` and :class:`Cost` are Darknet's ``[softmax]`` and ``[cost]``
  (``type=sse``) layers.
* :func:`softmax_cross_entropy` and :func:`mse` are the losses, summed over
  rows; the update divides by the batch, as Darknet does.
* :class:`Network` chains ``[gru]``, ``[connected]``, ``[softmax]`` and
  ``[cost]`` layers over time-major tensors ``(T, B, features)``.

Sizes: ``R`` rows (``T*B`` in a network), ``I`` inputs, ``O`` outputs.
"""

import numpy as np

from .kernels import ACTIVATIONS, BN_EPS, BN_MOMENTUM
from .layer import ParamDict

__all__ = ["Connected", "Softmax", "Cost", "Network", "softmax",
           "softmax_cross_entropy", "mse", "ACTIVATIONS"]

OPTIMIZERS = ("sgd", "adam")
DEVICES = ("cpu", "cuda")


# --- engine access ----------------------------------------------------------

def _net():
    from ._cpu import net
    return net


def _gemm():
    from ._cpu import gemm
    return gemm.gemm_py


def _update():
    from ._cpu import update
    return update


def _threads(num_threads):
    return _net().max_threads() if num_threads is None else int(num_threads)


def _xp(device):
    if device == "cpu":
        return np
    import cupy
    return cupy


def _cupy_or_raise():
    try:
        import cupy
    except ImportError as exc:
        raise RuntimeError("device='cuda' needs CuPy, which is not installed") from exc
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            raise RuntimeError("device='cuda': CuPy finds no CUDA GPU")
    except cupy.cuda.runtime.CUDARuntimeError as exc:
        raise RuntimeError(f"device='cuda': CuPy finds no usable GPU ({exc})") from exc
    return cupy


def _check_dtype(dtype):
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise TypeError(f"dtype: expected float32 or float64, got {dt}")
    return dt


def _as_float(xp, a, dtype, name):
    """Validate and convert an array argument to ``dtype`` (C-contiguous)."""
    kind = getattr(getattr(a, "dtype", None), "kind", None)
    if kind is None:
        a = xp.asarray(a)
        kind = a.dtype.kind
    if kind != "f":
        raise TypeError(f"{name}: expected a floating array, got dtype {a.dtype}")
    return xp.ascontiguousarray(xp.asarray(a), dtype=dtype)


def _activation_code(activation):
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation: expected one of {ACTIVATIONS}, "
                         f"got {activation!r}")
    return ACTIVATIONS.index(activation)


# --- activations on any array module (the CUDA fallback) ---------------------

def _act_xp(xp, v, code):
    """y = act(v) with Darknet's formulas, array-module generic."""
    a = ACTIVATIONS[code]
    if a == "linear":
        return v
    if a == "logistic":
        e = xp.exp(-xp.abs(v))
        return xp.where(v >= 0, 1 / (1 + e), e / (1 + e))
    if a == "tanh":
        return xp.tanh(v)
    if a == "relu":
        return xp.where(v > 0, v, 0)
    if a == "leaky":
        return xp.where(v > 0, v, 0.1 * v)
    if a == "elu":
        return xp.where(v >= 0, v, xp.expm1(xp.minimum(v, 0)))
    if a == "selu":
        return xp.where(v >= 0, 1.0507 * v, 1.0507 * 1.6732 * xp.expm1(xp.minimum(v, 0)))
    if a == "relie":
        return xp.where(v > 0, v, 0.01 * v)
    if a == "ramp":
        return xp.where(v > 0, v, 0) + 0.1 * v
    if a == "hardtan":
        return xp.clip(v, -1, 1)
    if a == "lhtan":
        return xp.where(v < 0, 0.001 * v, xp.where(v > 1, 0.001 * (v - 1) + 1, v))
    if a == "plse":
        return xp.where(v < -4, 0.01 * (v + 4),
                        xp.where(v > 4, 0.01 * (v - 4) + 1, 0.125 * v + 0.5))
    e = xp.exp(-xp.abs(v))
    return 2 * xp.where(v >= 0, 1 / (1 + e), e / (1 + e)) - 1


def _grad_xp(xp, y, code):
    """act'(x) written through y = act(x) (Darknet's gradient())."""
    a = ACTIVATIONS[code]
    one = xp.ones_like(y)
    table = {
        "linear": lambda: one,
        "logistic": lambda: (1 - y) * y,
        "tanh": lambda: 1 - y * y,
        "relu": lambda: xp.where(y > 0, one, 0),
        "leaky": lambda: xp.where(y > 0, one, 0.1),
        "elu": lambda: xp.where(y >= 0, one, y + 1),
        "selu": lambda: xp.where(y >= 0, 1.0507 * one, y + 1.0507 * 1.6732),
        "relie": lambda: xp.where(y > 0, one, 0.01),
        "ramp": lambda: xp.where(y > 0, 1.1 * one, 0.1),
        "hardtan": lambda: xp.where((y > -1) & (y < 1), one, 0),
        "lhtan": lambda: xp.where((y > 0) & (y < 1), one, 0.001),
        "plse": lambda: xp.where((y < 0) | (y > 1), 0.01 * one, 0.125),
        "loggy": lambda: 2 * (1 - (y + 1) / 2) * ((y + 1) / 2),
    }
    return table[a]().astype(y.dtype, copy=False)


# --- the update rules (SPEC section 1, "Update"), the CuPy path ----------------
# On the CPU the layer calls the engine's sgd_update / adam_update kernels.

def _sgd_update(w, u, g, learning_rate, momentum, decay, batch, clip, weight_decay):
    """Darknet's SGD with momentum, in place on ``w``, ``u``; zeroes ``g``."""
    if clip is not None:
        g.clip(-clip, clip, out=g)
    u -= g
    if weight_decay:
        u -= (decay * batch) * w
    w += (learning_rate / batch) * u
    u *= momentum
    g[...] = 0


def _adam_update(w, m, v, g, learning_rate, b1, b2, eps, decay, batch, t, clip):
    """Darknet's Adam (GPU rule), in place on ``w``, ``m``, ``v``; zeroes ``g``."""
    if clip is not None:
        g.clip(-clip, clip, out=g)
    gd = g + (decay * batch) * w
    m *= b1
    m += (1 - b1) * gd
    v *= b2
    v += (1 - b2) * gd * gd
    mhat = m / (1 - b1 ** t)
    vhat = v / (1 - b2 ** t)
    w -= learning_rate * mhat / ((vhat ** 0.5) + eps)
    g[...] = 0


def _check_hyper(learning_rate, momentum, decay, batch, b1, b2, eps, clip):
    for name, val in (("learning_rate", learning_rate), ("momentum", momentum),
                      ("decay", decay), ("b1", b1), ("b2", b2), ("eps", eps)):
        if not np.isfinite(val) or val < 0:
            raise ValueError(f"{name}: expected a finite value >= 0, got {val!r}")
    if batch is not None and (not np.isfinite(batch) or batch <= 0):
        raise ValueError(f"batch: expected a positive number of rows, got {batch!r}")
    if clip is not None and (not np.isfinite(clip) or clip <= 0):
        raise ValueError(f"clip: expected None or a finite value > 0, got {clip!r}")


# --- losses --------------------------------------------------------------------

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
    xp = _array_module(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"x: expected a floating array, got dtype {x.dtype}")
    if temperature <= 0 or not np.isfinite(temperature):
        raise ValueError(f"temperature: expected a finite value > 0, got {temperature!r}")
    v = xp.ascontiguousarray(x) if temperature == 1 else xp.ascontiguousarray(x / temperature)
    v = v.astype(x.dtype, copy=False)
    if xp is np:
        p = np.empty_like(v)
        R = v.size // v.shape[-1] if v.shape[-1] else 0
        _net().py_softmax_forward(p, v, R, v.shape[-1], v.shape[-1], 1)
        return p
    e = xp.exp(v - v.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _array_module(a):
    if isinstance(a, np.ndarray):
        return np
    mod = type(a).__module__.split(".")[0]
    if mod == "cupy":
        import cupy
        return cupy
    return np


def _targets_like(xp, targets, ref, name="targets"):
    """Class indices (shape ref.shape[:-1]) become one-hot rows; arrays are checked."""
    t = targets if hasattr(targets, "dtype") else xp.asarray(targets)
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
    xp = _array_module(logits)
    p = softmax(logits)
    t = _targets_like(xp, targets, p)
    if xp is np:
        R, C = (p.size // p.shape[-1], p.shape[-1]) if p.shape[-1] else (0, 0)
        d = np.empty_like(p)
        loss = np.empty(R, dtype=p.dtype)
        _net().py_softmax_cross_entropy_backward(d, loss, p, t, R, C, 1.0, 1)
        return float(loss.sum(dtype=np.float64)), d
    tiny = np.finfo(p.dtype).tiny
    loss = -(t * xp.log(xp.maximum(p, tiny))).sum()
    return float(loss), p - t


def mse(y, targets):
    """Half the summed squared error (Darknet's ``sse`` cost) and its gradient.

    Parameters
    ----------
    y : ndarray, shape (..., C), float32 or float64
    targets : ndarray, same shape as ``y``

    Returns
    -------
    loss : float
        ``sum (y - t)^2 / 2`` over every element; the mean squared error is
        ``2 * loss / y.size``.
    dy : ndarray, same shape and dtype as ``y``
        The true gradient of ``loss``: ``y - t``.
    """
    xp = _array_module(y)
    if y.dtype.kind != "f":
        raise TypeError(f"y: expected a floating array, got dtype {y.dtype}")
    y = xp.ascontiguousarray(y)
    t = _targets_like(xp, targets, y)
    if t.dtype.kind == "f" and t.shape != y.shape:
        raise ValueError(f"targets: expected shape {y.shape}, got {t.shape}")
    if xp is np:
        C = y.shape[-1] if y.ndim else 1
        R = y.size // C if C else 0
        d = np.empty_like(y)
        loss = np.empty(R, dtype=y.dtype)
        _net().py_mse_backward(d, loss, y, t, R, C, 1.0, 1)
        return float(loss.sum(dtype=np.float64)), d
    d = y - t
    return float(0.5 * (d * d).sum()), d


# --- layers ------------------------------------------------------------------

class Connected:
    """Darknet's ``[connected]`` layer on the engine: ``(R, I) -> (R, O)``.

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
        CUDA runs through CuPy array operations (no custom kernels).
    seed : int or None
        Initialisation as Darknet: weights ``uniform(-1, 1) * sqrt(2 / I)``,
        biases 0, scales 1, rolling variance 1.
    num_threads : int or None
        OpenMP team of the CPU kernels; None asks OpenMP on every call.

    Attributes
    ----------
    params : dict
        ``"weights"`` (O, I), ``"biases"`` (O,), with BN ``"scales"``,
        ``"rolling_mean"``, ``"rolling_variance"`` (O,).  Values are the
        layer's storage; assigning copies in after a shape check.
    grads : dict
        The trainable keys; live buffers that accumulate.
    """

    type = "connected"

    def __init__(self, inputs, outputs, activation="linear", batch_normalize=False,
                 optimizer="sgd", dtype=np.float32, device="cpu", seed=None,
                 num_threads=None):
        for name, val in (("inputs", inputs), ("outputs", outputs)):
            if not isinstance(val, (int, np.integer)) or isinstance(val, bool) or val <= 0:
                raise ValueError(f"{name}: expected a positive integer, got {val!r}")
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer: expected one of {OPTIMIZERS}, got {optimizer!r}")
        if device not in DEVICES:
            raise ValueError(f"device: expected one of {DEVICES}, got {device!r}")
        if num_threads is not None and (not isinstance(num_threads, (int, np.integer))
                                        or num_threads < 1):
            raise ValueError(f"num_threads: expected None or a positive integer, "
                             f"got {num_threads!r}")
        self.inputs = int(inputs)
        self.outputs = int(outputs)
        self.activation = activation
        self._act = _activation_code(activation)
        self.batch_normalize = bool(batch_normalize)
        self.optimizer = optimizer
        self.dtype = _check_dtype(dtype)
        self.num_threads = num_threads
        self.device = "cpu"
        rng = np.random.default_rng(seed)
        scale = np.sqrt(2.0 / self.inputs)
        O, I = self.outputs, self.inputs
        store = {"weights": (scale * rng.uniform(-1, 1, (O, I))).astype(self.dtype),
                 "biases": np.zeros(O, self.dtype)}
        if self.batch_normalize:
            store.update({"scales": np.ones(O, self.dtype),
                          "rolling_mean": np.zeros(O, self.dtype),
                          "rolling_variance": np.ones(O, self.dtype)})
        self.params = ParamDict(store, np, self._drop_cache)
        trainable = ["weights", "biases"] + (["scales"] if self.batch_normalize else [])
        self.grads = {k: np.zeros_like(self.params[k]) for k in trainable}
        self._opt = {}
        self.t = 0
        self._rows = 0
        self._cache = None
        if device != "cpu":
            self.to(device)

    # -- helpers
    def _drop_cache(self):
        self._cache = None

    @property
    def _xp(self):
        return _xp(self.device)

    def _nt(self):
        return _threads(self.num_threads)

    def _input(self, x, name="x"):
        xp = self._xp
        x = _as_float(xp, x, self.dtype, name)
        if x.ndim != 2 or x.shape[1] != self.inputs:
            raise ValueError(f"{name}: expected shape (R, {self.inputs}), got {x.shape}")
        if x.shape[0] == 0:
            raise ValueError(f"{name}: expected at least one row, got shape {x.shape}")
        return x

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
        xp, R = self._xp, x.shape[0]
        W, b = self.params["weights"], self.params["biases"]
        if self.batch_normalize and train and R < 2:
            raise ValueError(f"x: batch normalisation in training needs at least 2 "
                             f"rows, got {R}")
        if xp is np:
            v = np.empty((R, self.outputs), self.dtype)
            _gemm()(v, x, W, False, True, 1.0, 0.0, self._nt())
        else:
            v = x @ W.T
        cache = {"x": x}
        if self.batch_normalize:
            P = self.params
            if train:
                mu = v.mean(axis=0, dtype=np.float64)
                xc = v - mu
                var = (xc * xc).sum(axis=0) / (R - 1)
                sd = xp.sqrt(var)
                vhat = (xc / (sd + BN_EPS)).astype(self.dtype)
                P["rolling_mean"] *= BN_MOMENTUM
                P["rolling_mean"] += ((1 - BN_MOMENTUM) * mu).astype(self.dtype)
                P["rolling_variance"] *= BN_MOMENTUM
                P["rolling_variance"] += ((1 - BN_MOMENTUM) * var).astype(self.dtype)
                cache["vhat"], cache["sd"] = vhat, sd
            else:
                vhat = ((v - P["rolling_mean"])
                        / (xp.sqrt(P["rolling_variance"]) + BN_EPS)).astype(self.dtype)
            y = P["scales"] * vhat + b
        else:
            v += b
            y = v
        y = xp.ascontiguousarray(y, dtype=self.dtype)
        if xp is np:
            _net().py_activation_forward(y, y.size, self._act, self._nt())
        else:
            y = _act_xp(xp, y, self._act).astype(self.dtype, copy=False)
        cache["y"] = y
        self._cache = cache if train else None
        return y.copy()

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
        xp, c = self._xp, self._cache
        x, y = c["x"], c["y"]
        g = _as_float(xp, dy, self.dtype, "dy")
        if g.shape != y.shape:
            raise ValueError(f"dy: expected shape {y.shape}, got {g.shape}")
        g = g.copy()
        # y = act(a): g = dy * act'(a)
        if xp is np:
            _net().py_activation_backward(g, y, g.size, self._act, self._nt())
        else:
            g = g * _grad_xp(xp, y, self._act)
        self.grads["biases"] += g.sum(axis=0)
        if self.batch_normalize:
            # out = scales * vhat + biases, vhat = (v - mu) / (sd + eps)
            vhat, sd = c["vhat"], c["sd"]
            R = g.shape[0]
            self.grads["scales"] += (g * vhat).sum(axis=0)
            gv = g * self.params["scales"]
            d = sd + BN_EPS
            safe = xp.where(sd > 0, sd, 1)
            second = xp.where(sd > 0, (gv * vhat).sum(axis=0) / ((R - 1) * safe), 0)
            g = ((gv - gv.mean(axis=0)) / d - vhat * second).astype(self.dtype)
            g = xp.ascontiguousarray(g)
        W = self.params["weights"]
        if xp is np:
            _gemm()(self.grads["weights"], g, x, True, False, 1.0, 1.0, self._nt())
            dx = np.empty_like(x)
            _gemm()(dx, g, W, False, False, 1.0, 0.0, self._nt())
        else:
            self.grads["weights"] += g.T @ x
            dx = g @ W
        self._rows += x.shape[0]
        return dx

    def zero_grad(self):
        """Zero the gradients in place and the row count."""
        for g in self.grads.values():
            g[...] = 0
        self._rows = 0

    def update(self, learning_rate=0.001, momentum=0.9, decay=0.0001, batch=None,
               b1=0.9, b2=0.999, eps=1e-7, clip=None):
        """Apply Darknet's update rule (SPEC section 1) and zero the gradients.

        Parameters
        ----------
        learning_rate, momentum, decay : float
        batch : float or None
            Rows the gradients were summed over; default the rows seen by
            ``backward`` since the last update.
        b1, b2, eps : float
            Adam's constants (``optimizer="adam"``).
        clip : float or None
            Clamp each gradient element to ``[-clip, clip]`` first.
        """
        _check_hyper(learning_rate, momentum, decay, batch, b1, b2, eps, clip)
        if batch is None:
            if self._rows == 0:
                raise ValueError("batch: expected a number of rows; none were seen "
                                 "since the last update")
            batch = self._rows
        xp = self._xp
        self.t += 1
        for k, g in self.grads.items():
            w = self.params[k]
            if self.optimizer == "sgd":
                u = self._opt.setdefault(k, {"u": xp.zeros_like(w)})["u"]
                if xp is np:
                    _update().py_sgd_update(w, u, g, w.size,
                                            w.size if k == "weights" else 0,
                                            learning_rate, momentum, decay, batch,
                                            clip or 0.0, self._nt())
                else:
                    _sgd_update(w, u, g, learning_rate, momentum, decay, batch, clip,
                                k == "weights")
            else:
                st = self._opt.setdefault(k, {"m": xp.zeros_like(w), "v": xp.zeros_like(w)})
                if xp is np:
                    _update().py_adam_update(w, st["m"], st["v"], g, w.size, learning_rate,
                                             b1, b2, eps, decay, batch, self.t,
                                             clip or 0.0, self._nt())
                else:
                    _adam_update(w, st["m"], st["v"], g, learning_rate, b1, b2, eps,
                                 decay, batch, self.t, clip)
        self._rows = 0
        self._cache = None

    def to(self, device):
        """Move parameters, gradients and optimiser state; returns self."""
        if device not in DEVICES:
            raise ValueError(f"device: expected one of {DEVICES}, got {device!r}")
        if device == self.device:
            return self
        if device == "cuda":
            cp = _cupy_or_raise()
            move = cp.asarray
        else:
            def move(a):
                return a.get()
        self.params = ParamDict({k: move(v) for k, v in self.params.items()},
                                _xp(device), self._drop_cache)
        self.grads = {k: move(v) for k, v in self.grads.items()}
        self._opt = {k: {n: move(a) for n, a in st.items()} for k, st in self._opt.items()}
        self.device = device
        self._cache = None
        return self


class Softmax:
    """Darknet's ``[softmax]``: row-wise softmax (``groups``, ``temperature``).

    In a network, a softmax followed by the loss is differentiated together
    (``dlogits = p - t``); on its own, ``backward`` applies the softmax Jacobian.
    """

    type = "softmax"

    def __init__(self, inputs, groups=1, temperature=1.0):
        if inputs <= 0:
            raise ValueError(f"inputs: expected a positive integer, got {inputs!r}")
        if groups <= 0 or inputs % groups:
            raise ValueError(f"groups: expected a positive divisor of inputs = {inputs}, "
                             f"got {groups!r}")
        if not np.isfinite(temperature) or temperature <= 0:
            raise ValueError(f"temperature: expected a finite value > 0, got {temperature!r}")
        self.inputs = self.outputs = int(inputs)
        self.groups = int(groups)
        self.temperature = float(temperature)
        self._p = None

    def forward(self, x, train=False):
        """P (R, C) = softmax of each group of each row of x (R, C)."""
        R, C = x.shape
        p = softmax(x.reshape(R * self.groups, C // self.groups),
                    self.temperature).reshape(R, C)
        self._p = p if train else None
        return p.copy()

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
        self.inputs = self.outputs = int(inputs)
        self.cost_type = cost_type
        self.scale = float(scale)

    def forward(self, x, train=False):
        return x.copy()

    def backward(self, dy):
        return dy


# --- network -----------------------------------------------------------------

def _is_gru(layer):
    return hasattr(layer, "variant") and hasattr(layer, "reset_state")


def _host_array(a):
    """A NumPy view or copy of ``a`` (NumPy, CuPy or array-like)."""
    if isinstance(a, np.ndarray):
        return a
    if type(a).__module__.split(".")[0] == "cupy":
        return a.get()
    return np.asarray(a)


class Network:
    """A sequence of ``[gru]``, ``[connected]``, ``[softmax]`` and ``[cost]`` layers.

    Tensors are time-major ``(T, B, features)``; a GRU sees them as such, the
    other layers see ``T*B`` rows (Darknet's layout).  GRU states carry from
    call to call as in Darknet (``predict`` included); ``reset_state`` clears
    them.

    Parameters
    ----------
    layers : list
        ``gru_cy.GRU``, :class:`Connected`, :class:`Softmax`, :class:`Cost`.
    inputs : int
        Features per step of the input.
    batch, subdivisions, time_steps : int
        Darknet's ``[net]`` values as the GRU sees them: ``batch`` is the
        sequences per call ``B`` (cfg ``batch / subdivisions``),
        ``time_steps`` is ``T``.  An update's batch is
        ``batch * subdivisions * time_steps`` rows.
    learning_rate, momentum, decay, b1, b2, eps : float
        Hyper-parameters passed to every layer's ``update``.
    optimizer : {"sgd", "adam"}
        Recorded for the cfg (``adam=1``); each layer holds its own.
    seen : int
        Darknet's counter of training rows (``B*T`` per training call).
    """

    def __init__(self, layers, inputs, batch=1, subdivisions=1, time_steps=1,
                 learning_rate=0.001, momentum=0.9, decay=0.0001, optimizer="sgd",
                 b1=0.9, b2=0.999, eps=1e-7, seen=0, clip=None):
        if not layers:
            raise ValueError("layers: expected at least one layer, got none")
        self.layers = list(layers)
        self.inputs = int(inputs)
        for name, val in (("batch", batch), ("subdivisions", subdivisions),
                          ("time_steps", time_steps)):
            if int(val) <= 0:
                raise ValueError(f"{name}: expected a positive integer, got {val!r}")
        self.batch = int(batch)
        self.subdivisions = int(subdivisions)
        self.time_steps = int(time_steps)
        self.learning_rate = float(learning_rate)
        self.momentum = float(momentum)
        self.decay = float(decay)
        self.optimizer = optimizer
        self.b1, self.b2, self.eps = float(b1), float(b2), float(eps)
        self.clip = clip
        self.seen = int(seen)
        self.options = {}             # [net] options read from a cfg (kept by save_cfg)
        self.section_name = "net"
        self.layer_options = None     # per-layer cfg options, likewise
        self.header = (0, 2, 0)       # .weights version (major, minor, revision)
        self.gru_order = "darknet"    # GRU sublayer order of the .weights file
        self._rows = 0
        self._calls = 0
        self._shape = None
        n = self.inputs
        for i, layer in enumerate(self.layers):
            if layer.inputs != n:
                raise ValueError(f"layers[{i}] ({_layer_type(layer)}): expected "
                                 f"{n} inputs (the previous layer's outputs), "
                                 f"got {layer.inputs}")
            n = layer.outputs
        self.outputs = n

    @property
    def update_batch(self):
        """Rows per update as Darknet counts them: B * subdivisions * T."""
        return self.batch * self.subdivisions * self.time_steps

    @property
    def dtype(self):
        for layer in self.layers:
            if hasattr(layer, "dtype"):
                return np.dtype(layer.dtype)
        return np.dtype(np.float32)

    @property
    def device(self):
        for layer in self.layers:
            if hasattr(layer, "device"):
                return layer.device
        return "cpu"

    def _check_x(self, x):
        xp = _xp(self.device)
        x = _as_float(xp, x, self.dtype, "x")
        if x.ndim != 3 or x.shape[2] != self.inputs:
            raise ValueError(f"x: expected shape (T, B, {self.inputs}), got {x.shape}")
        if x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"x: expected T >= 1 and B >= 1, got shape {x.shape}")
        return x

    def forward(self, x, train=False):
        """Run every layer; returns the last layer's output ``(T, B, outputs)``.

        Parameters
        ----------
        x : ndarray, shape (T, B, inputs)
        train : bool
            Training forward: caches for ``backward``, batch statistics, and
            ``seen += B*T``.
        """
        x = self._check_x(x)
        T, B = x.shape[:2]
        h = x
        for layer in self.layers:
            if _is_gru(layer):
                h = layer.forward(h.reshape(T, B, -1), train=train)
            else:
                h = layer.forward(h.reshape(T * B, -1), train=train)
        if train:
            self.seen += B * T
            self._shape = (T, B)
        return h.reshape(T, B, -1)

    def predict(self, x):
        """Inference forward with the state carried between calls (Darknet's network_predict).

        Parameters
        ----------
        x : ndarray, shape (T, B, inputs) or (time_steps * batch, inputs)
            Time-major input; the 2-D form is Darknet's flat input buffer of
            the cfg's ``T`` and ``B`` (row ``t*B + b``).

        Returns
        -------
        ndarray, shape (T, B, outputs), or (time_steps * batch, outputs) for 2-D input
        """
        if getattr(x, "ndim", None) == 2:
            T, B = self.time_steps, self.batch
            if x.shape[0] != T * B:
                raise ValueError(f"x: expected (T, B, {self.inputs}) or Darknet's flat "
                                 f"({T * B}, {self.inputs}) = (time_steps*batch, inputs), "
                                 f"got {x.shape}")
            y = self.forward(x.reshape(T, B, -1), train=False)
            return y.reshape(T * B, -1)
        return self.forward(x, train=False)

    def _loss_layer(self):
        """(index where backward starts, loss kind) from the final layers."""
        n = len(self.layers)
        last = n - 1
        if isinstance(self.layers[last], Cost):
            if last >= 1 and isinstance(self.layers[last - 1], Softmax):
                return last - 2, "xent"
            return last - 1, "sse"
        if isinstance(self.layers[last], Softmax):
            return last - 1, "xent"
        return last, "none"

    def loss(self, output, targets):
        """The network's loss for ``output`` of a training forward.

        Returns
        -------
        loss : float
            Cross-entropy after a final ``[softmax]``, else ``scale * sse``
            with a final ``[cost]``.
        dstart : ndarray
            The gradient where ``backward`` starts: w.r.t. the softmax's input
            (``p - t``) or the cost's input.
        """
        start, kind = self._loss_layer()
        if kind == "none":
            raise ValueError("targets: this network ends without [softmax] or [cost]; "
                             "compute the loss yourself and call backward(dy)")
        if kind == "xent":
            p = output
            xp = _array_module(p)
            t = _targets_like(xp, targets, p)
            tiny = np.finfo(p.dtype).tiny
            loss = float(-(t * xp.log(xp.maximum(p, tiny))).sum(dtype=np.float64))
            d = p - t
            sm = self.layers[start + 1]
            if sm.temperature != 1:
                d = d / sm.temperature
            return loss, d.astype(p.dtype, copy=False)
        loss, d = mse(output, targets)
        scale = self.layers[-1].scale
        return scale * loss, (scale * d).astype(output.dtype, copy=False)

    def backward(self, dy, start=None):
        """Backpropagate ``dy`` = dL/d(output of layer ``start``); returns dL/dx.

        Parameters
        ----------
        dy : ndarray, shape (T, B, features of that layer)
        start : int or None
            Index of the layer whose output ``dy`` refers to; default the last.
        """
        if self._shape is None:
            raise ValueError("backward: expected a preceding forward(train=True), got none")
        T, B = self._shape
        start = len(self.layers) - 1 if start is None else start
        d = dy
        for layer in reversed(self.layers[:start + 1]):
            if _is_gru(layer):
                d = layer.backward(d.reshape(T, B, -1))
            else:
                d = layer.backward(d.reshape(T * B, -1))
        self._rows += T * B
        return d.reshape(T, B, -1)

    def train_step(self, x, targets):
        """One Darknet training call: forward, loss, backward; update every
        ``subdivisions`` calls.  Returns the loss (summed over rows)."""
        y = self.forward(x, train=True)
        start, _ = self._loss_layer()
        loss, d = self.loss(y, targets)
        self.backward(d.reshape(y.shape[0], y.shape[1], -1), start=start)
        self._calls += 1
        if self._calls % self.subdivisions == 0:
            self.update()
        return loss

    def update(self, batch=None):
        """Update every layer with the network's hyper-parameters.

        ``batch`` defaults to the rows backpropagated since the last update
        (``B*T`` per training call, i.e. Darknet's ``batch*subdivisions*T``
        when called every ``subdivisions`` calls).
        """
        if batch is None:
            if self._rows == 0:
                raise ValueError("batch: expected a number of rows; none were "
                                 "backpropagated since the last update")
            batch = self._rows
        for layer in self.layers:
            if hasattr(layer, "update"):
                layer.update(learning_rate=self.learning_rate, momentum=self.momentum,
                             decay=self.decay, batch=batch, b1=self.b1, b2=self.b2,
                             eps=self.eps, clip=self.clip)
        self._rows = 0
        self._shape = None

    def zero_grad(self):
        for layer in self.layers:
            if hasattr(layer, "zero_grad"):
                layer.zero_grad()
        self._rows = 0

    def reset_state(self):
        """Forget every GRU's carried state (the next call starts from zeros)."""
        for layer in self.layers:
            if _is_gru(layer):
                layer.reset_state()

    def to(self, device):
        """Move every layer; returns self."""
        for layer in self.layers:
            if hasattr(layer, "to"):
                layer.to(device)
        self._shape = None
        return self

    def save_weights(self, path):
        """Write Darknet ``.weights`` (see ``gru_cy.darknet.save_weights``)."""
        from .darknet import save_weights
        save_weights(self, path)

    def save_cfg(self, path):
        """Write a Darknet ``.cfg`` (see ``gru_cy.darknet.save_cfg``)."""
        from .darknet import save_cfg
        save_cfg(self, path)

    def __repr__(self):
        kinds = ", ".join(_layer_type(layer) for layer in self.layers)
        return f"Network(inputs={self.inputs}, layers=[{kinds}])"


def _layer_type(layer):
    if _is_gru(layer):
        return "gru"
    return getattr(layer, "type", type(layer).__name__)
