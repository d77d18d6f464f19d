"""The public GRU layer: parameters, state, forward/backward/update, dispatch.

Data flows one way: this class validates (through ``_validate``), allocates
outputs, and hands C-contiguous arrays of its dtype to a backend engine
(``gru_cy._cpu.gru.Engine`` on the CPU, ``gru_cy.cuda`` on a GPU), which never
raises.
"""
from collections.abc import MutableMapping

import numpy as np

from gru_cy import _validate as V
from gru_cy.kernels import ACT_LOGISTIC, ACT_TANH

SUBLAYERS = ("uz", "ur", "uh", "wz", "wr", "wh")
VARIANTS = ("darknet", "reset_after")
GRU_ACTIVATIONS = ("tanh", "logistic")
OPTIMIZERS = ("sgd", "adam")
DEVICES = ("cpu", "cuda")
GEMMS = ("native", "blas")


def _aligned_zeros(n, dtype):
    """Zeros, n elements, data 64-byte aligned: parameter storage (whole-line
    vector loads of the weights in the CPU engine's per-step products)."""
    from gru_cy._cpu.gemm import aligned_empty
    a = aligned_empty(n, dtype)
    a[...] = 0
    return a


class _CpuBackend:
    name = "cpu"
    xp = np

    def __init__(self):
        from gru_cy._cpu import gru, update
        self.Engine = gru.Engine
        self.sgd_update = update.py_sgd_update
        self.adam_update = update.py_adam_update
        self.max_threads = gru.max_threads
        self.lean_input = gru.lean_input


_CPU = None


def cpu_backend():
    """The CPU backend (engine class, update kernels, thread query)."""
    global _CPU
    if _CPU is None:
        _CPU = _CpuBackend()
    return _CPU


def _backend(device):
    """The backend of ``device``.

    A backend offers what ``_CpuBackend`` offers: ``name``, ``xp`` (the array
    module), ``Engine`` (constructor ``(theta, grad, rolling, inputs, outputs,
    reset_after, act, bn, use_blas)``; methods ``forward(x, h0, y, train,
    nthreads)`` (returns the final state, a fresh (B, H) array), ``backward(dy,
    dstate, dx, dh0, nthreads)``, ``invalidate()``, ``set_storage(theta, grad, rolling)``; attributes ``cache`` (None when there
    is no training cache), ``cache_T``, ``cache_B``), ``sgd_update`` and
    ``adam_update`` (argument order of gru_cy.kernels, arrays of ``xp``, then
    nthreads), ``max_threads()`` and ``lean_input(x, dtype, inputs)`` (True when
    x is an ``xp`` array (T > 0, B > 0, inputs) of dtype, C-contiguous: used as
    is).  ``gru_cy.cuda.backend()`` returns the CUDA
    one; ``gru_cy.cuda.require()`` raises RuntimeError saying why CUDA cannot be
    used.
    """
    if device == "cpu":
        return cpu_backend()
    from gru_cy import cuda
    cuda.require()
    return cuda.backend()


class ParamDict(MutableMapping):
    """Named views of a layer's storage.

    Reading gives a view (in-place edits take effect); assigning copies the
    new values in after checking the shape, then calls ``on_change`` (the
    owner drops its training cache); keys cannot be added or removed.

    Parameters
    ----------
    views : dict of name -> array view
    xp : module
        The array module of the views (numpy or cupy).
    on_change : callable
    """

    def __init__(self, views, xp, on_change):
        self._views = views
        self._xp = xp
        self._on_change = on_change

    def __getitem__(self, key):
        return self._views[key]

    def __setitem__(self, key, value):
        if key not in self._views:
            raise KeyError(f"params: no parameter named {key!r}; expected one of "
                           f"{', '.join(self._views)}")
        view = self._views[key]
        xp = self._xp
        if hasattr(value, "detach") and hasattr(value, "numpy"):
            value = value.detach().cpu().numpy()
        if xp is np and hasattr(value, "get") and hasattr(value, "__cuda_array_interface__"):
            value = value.get()
        arr = xp.asarray(value)
        if arr.dtype.kind not in "fiu" or arr.dtype == bool:
            raise TypeError(f"params[{key!r}]: expected a real array, got dtype {arr.dtype}")
        if tuple(arr.shape) != tuple(view.shape):
            raise ValueError(f"params[{key!r}]: expected shape {tuple(view.shape)}, "
                             f"got {tuple(arr.shape)}")
        view[...] = arr
        self._on_change()

    def __delitem__(self, key):
        raise TypeError("params: parameters cannot be removed")

    def __iter__(self):
        return iter(self._views)

    def __len__(self):
        return len(self._views)

    def __repr__(self):
        return "ParamDict({" + ", ".join(f"{k!r}: shape {tuple(v.shape)}"
                                         for k, v in self._views.items()) + "})"


class GRU:
    """A Darknet-style GRU layer (SPEC section 1) with a working backward.

    Parameters
    ----------
    inputs, outputs : int
        I and H.
    variant : {"darknet", "reset_after"}
        Where the reset gate acts: before the product (Darknet, Cho et al.)
        or after it (cuDNN, PyTorch).
    activation : {"tanh", "logistic"}
        The candidate's activation (gates are always logistic).
    batch_normalize : bool
        Darknet's per-sublayer, per-step batch normalisation.
    optimizer : {"sgd", "adam"}
        The rule ``update()`` applies (Darknet's).
    dtype : float32 or float64
    device : {"cpu", "cuda"}
    seed : int or None
        Seed of the Darknet initialisation ``uniform(-1, 1) * sqrt(2 / fan_in)``.
    num_threads : int or None
        None asks OpenMP on every call (``OMP_NUM_THREADS``, threadpoolctl).
        The most threads a call uses (never more than the processors OpenMP
        reports): small problems run on one, and on the
        CPU the forward (without BN, native gemm) and the backward (native
        gemm) time their calls per batch size and run on one thread where
        that is faster (a busy machine; ``GRU_CY_ADAPTIVE=0`` turns this
        off).  Results are bit-identical for any thread count.
    gemm : {"native", "blas"}
        The engine's own gemm, or SciPy's BLAS.

    Notes
    -----
    Tensors are time-major: ``x`` is (T, B, I), ``y`` (T, B, H), states (B, H).
    """

    def __init__(self, inputs, outputs, variant="darknet", activation="tanh",
                 batch_normalize=False, optimizer="sgd", dtype=np.float32,
                 device="cpu", seed=None, num_threads=None, gemm="native"):
        self.inputs = V.positive_int("inputs", inputs)
        self.outputs = V.positive_int("outputs", outputs)
        self.variant = V.choice("variant", variant, VARIANTS)
        self.activation = V.choice("activation", activation, GRU_ACTIVATIONS)
        if not isinstance(batch_normalize, (bool, np.bool_)):
            raise TypeError(f"batch_normalize: expected a bool, got {batch_normalize!r}")
        self.batch_normalize = bool(batch_normalize)
        self.optimizer = V.choice("optimizer", optimizer, OPTIMIZERS)
        self.dtype = V.float_dtype(dtype)
        device = V.choice("device", device, DEVICES)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
            raise TypeError(f"seed: expected an int or None, got {seed!r}")
        self.num_threads = V.num_threads(num_threads)
        self.gemm = V.choice("gemm", gemm, GEMMS)

        I, H = self.inputs, self.outputs
        self._n_weights = 3 * H * I + 3 * H * H
        n = self._n_weights + 6 * H + (6 * H if self.batch_normalize else 0)
        theta = _aligned_zeros(n, self.dtype)
        rolling = np.zeros((2, 6 * H), self.dtype)
        rolling[1] = 1
        rng = np.random.default_rng(seed)
        views = self._layout(theta, rolling)
        for sub in SUBLAYERS:
            w = views[f"{sub}.weights"]
            fan_in = w.shape[1]
            w[...] = rng.uniform(-1.0, 1.0, w.shape) * np.sqrt(2.0 / fan_in)
            if self.batch_normalize:
                views[f"{sub}.scales"][...] = 1
        self._backend = cpu_backend()
        self._theta = theta
        self._grad = _aligned_zeros(n, self.dtype)
        self._rolling = rolling
        self._opt = {}
        self._t = 0
        self._rows = 0
        self._state = None
        self._dh0 = None
        self._engine = self._make_engine()
        self._bind()
        if device != "cpu":
            self.to(device)

    # ------------------------------------------------------------ storage --
    def _layout(self, theta, rolling):
        """Named views of the flat storage (see gru_cy._cpu.gru for the layout)."""
        I, H = self.inputs, self.outputs
        views = {}
        U = theta[:3 * H * I].reshape(3 * H, I)
        W = theta[3 * H * I:self._n_weights].reshape(3 * H, H)
        bias = theta[self._n_weights:self._n_weights + 6 * H].reshape(6, H)
        for k, sub in enumerate(SUBLAYERS):
            mat = U if k < 3 else W
            views[f"{sub}.weights"] = mat[(k % 3) * H:(k % 3 + 1) * H]
            views[f"{sub}.biases"] = bias[k]
        if self.batch_normalize:
            scales = theta[self._n_weights + 6 * H:].reshape(6, H)
            for k, sub in enumerate(SUBLAYERS):
                views[f"{sub}.scales"] = scales[k]
            if rolling is not None:
                for k, sub in enumerate(SUBLAYERS):
                    views[f"{sub}.rolling_mean"] = rolling[0, k * H:(k + 1) * H]
                    views[f"{sub}.rolling_variance"] = rolling[1, k * H:(k + 1) * H]
        return views

    def _make_engine(self):
        act = ACT_TANH if self.activation == "tanh" else ACT_LOGISTIC
        return self._backend.Engine(self._theta, self._grad, self._rolling, self.inputs,
                                    self.outputs, self.variant == "reset_after", act,
                                    self.batch_normalize, self.gemm == "blas")

    def _bind(self):
        self._params = ParamDict(self._layout(self._theta, self._rolling),
                                 self._backend.xp, self._invalidate)
        self._grads = self._layout(self._grad, None)

    def _invalidate(self):
        self._engine.invalidate()

    @property
    def device(self):
        """"cpu" or "cuda"."""
        return self._backend.name

    @property
    def params(self):
        """Mapping name -> view of the parameter (and BN rolling statistics)."""
        return self._params

    @property
    def grads(self):
        """Mapping name -> live gradient buffer (trainable parameters only)."""
        return dict(self._grads)

    # -------------------------------------------------------------- state --
    @property
    def state(self):
        """The carried state (B, H), a copy; None before the first forward."""
        return None if self._state is None else self._state.copy()

    @state.setter
    def state(self, value):
        if value is None:
            self._state = None
            return
        self._state = V.array("state", value, self.dtype, (None, self.outputs),
                              self._backend.xp).copy()

    def reset_state(self):
        """Forget the carried state: the next forward starts from zeros (or h0)."""
        self._state = None

    @property
    def dh0(self):
        """dL/dh_{-1} (B, H) of the last backward; None before the first."""
        return self._dh0

    def _threads(self):
        n = self.num_threads
        return self._backend.max_threads() if n is None else n

    # ------------------------------------------------------------ forward --
    def forward(self, x, train=False, h0=None):
        """Run the layer over a sequence.

        Parameters
        ----------
        x : array (T, B, I), floating
        train : bool
            Training mode: batch statistics for BN (rolling statistics
            advance T times), and a cache for ``backward``.
        h0 : array (B, H) or None
            Initial state; None uses the carried state, else zeros.

        Returns
        -------
        y : array (T, B, H) of the layer's dtype, a fresh array.
        """
        n = self.num_threads
        if not train and h0 is None:
            # Fast path (batch-1 streaming calls this per step): x needs no
            # conversion, the carried state fits; checked and run in C.
            out = self._engine.infer_lean(x, self._state, 0 if n is None else n)
            if out is not None:
                y, self._state = out
                return y
        backend = self._backend
        xp = backend.xp
        x_in = x
        # No conversion, no copy where none is needed.
        if not backend.lean_input(x, self.dtype, self.inputs):
            x = V.array("x", x, self.dtype, (None, None, self.inputs), xp)
        T, B = x.shape[:2]
        if h0 is not None:
            h0 = V.array("h0", h0, self.dtype, (B, self.outputs), xp)
        elif self._state is not None:
            if self._state.shape[0] != B:
                raise ValueError(f"x: expected batch {self._state.shape[0]} to match the "
                                 f"carried state, got {B} (pass h0 or call reset_state())")
            h0 = self._state
        if train and self.batch_normalize and B == 1:
            raise ValueError("x: batch normalisation in training needs a batch of at "
                             "least 2 sequences, got B = 1")
        if train and x is x_in:
            x = x.copy()   # the cache must not see later edits of the caller's array
        y = xp.empty((T, B, self.outputs), self.dtype)
        # n None: 0, the engine's "OpenMP's current count".
        self._state = self._engine.forward(x, h0, y, bool(train), 0 if n is None else n)
        return y

    __call__ = forward

    # ----------------------------------------------------------- backward --
    def backward(self, dy, dstate=None):
        """Backpropagate through the last training forward.

        Parameters
        ----------
        dy : array (T, B, H)
            dL/dy.
        dstate : array (B, H) or None
            dL/dh_{T-1} (the final state), if the loss depends on it.

        Returns
        -------
        dx : array (T, B, I), a fresh array.  Sets ``dh0``; adds each
        parameter's gradient into ``grads``.
        """
        eng = self._engine
        if eng.cache is None:
            raise ValueError("backward: expected a preceding forward(x, train=True) "
                             "(none since the last update, parameter change, inference "
                             "forward or device move)")
        T, B = eng.cache_T, eng.cache_B
        xp = self._backend.xp
        dy = V.array("dy", dy, self.dtype, (T, B, self.outputs), xp)
        if dstate is not None:
            dstate = V.array("dstate", dstate, self.dtype, (B, self.outputs), xp)
        dx = xp.empty((T, B, self.inputs), self.dtype)
        dh0 = xp.empty((B, self.outputs), self.dtype)
        eng.backward(dy, dstate, dx, dh0, self._threads())
        self._dh0 = dh0
        self._rows += T * B
        return dx

    # ------------------------------------------------------------- update --
    def zero_grad(self):
        """Zero the gradient buffers in place and the row count."""
        self._grad[...] = 0
        self._rows = 0

    def update(self, learning_rate=0.001, momentum=0.9, decay=0.0001, batch=None,
               b1=0.9, b2=0.999, eps=1e-7, clip=None):
        """Apply Darknet's update rule (SPEC "Update") and zero the gradients.

        ``batch`` defaults to the rows (T*B per backward) seen since the last
        update or ``zero_grad()``.
        """
        lr = V.hyper("learning_rate", learning_rate)
        momentum = V.hyper("momentum", momentum)
        decay = V.hyper("decay", decay)
        b1 = V.hyper("b1", b1, high=1.0, high_open=True)
        b2 = V.hyper("b2", b2, high=1.0, high_open=True)
        eps = V.hyper("eps", eps, low_open=True)
        clip = 0.0 if clip is None else V.hyper("clip", clip, low_open=True)
        if batch is None:
            if self._rows == 0:
                raise ValueError("batch: expected a positive number of rows; none were "
                                 "seen since the last update (pass batch= explicitly)")
            batch = float(self._rows)
        else:
            batch = V.hyper("batch", batch, low_open=True)
        be = self._backend
        n = self._theta.size
        nt = self._threads()
        if self.optimizer == "sgd":
            if "u" not in self._opt:
                self._opt["u"] = be.xp.zeros_like(self._theta)
            be.sgd_update(self._theta, self._opt["u"], self._grad, n, self._n_weights,
                          lr, momentum, decay, batch, clip, nt)
        else:
            if "m" not in self._opt:
                self._opt["m"] = be.xp.zeros_like(self._theta)
                self._opt["v"] = be.xp.zeros_like(self._theta)
            self._t += 1
            be.adam_update(self._theta, self._opt["m"], self._opt["v"], self._grad, n,
                           lr, b1, b2, eps, decay, batch, self._t, clip, nt)
        self._rows = 0
        self._invalidate()

    # ------------------------------------------------------------- device --
    def to(self, device):
        """Move parameters, gradients, optimiser state and state; returns self."""
        device = V.choice("device", device, DEVICES)
        if device == self.device:
            return self
        be = _backend(device)

        def move(a):
            if a is None:
                return None
            return be.xp.asarray(a) if device != "cpu" else a.get()

        def move_storage(a):
            if device != "cpu":
                return move(a)
            out = _aligned_zeros(a.size, self.dtype)
            out[...] = a.get()
            return out

        self._theta = move_storage(self._theta)
        self._grad = move_storage(self._grad)
        self._rolling = move(self._rolling)
        self._opt = {k: move(v) for k, v in self._opt.items()}
        self._state = move(self._state)
        self._dh0 = move(self._dh0)
        self._backend = be
        self._engine = self._make_engine()
        self._bind()
        return self

    # ------------------------------------------------------------ interop --
    def load_torch_state_dict(self, state_dict):
        """Load ``torch.nn.GRU`` weights (SPEC section 4); see gru_cy.torch_compat."""
        from gru_cy import torch_compat
        torch_compat.load_torch_state_dict(self, state_dict)
        return self

    def torch_state_dict(self):
        """The weights as a ``torch.nn.GRU`` state dict of NumPy arrays."""
        from gru_cy import torch_compat
        return torch_compat.torch_state_dict(self)

    def __repr__(self):
        return (f"GRU(inputs={self.inputs}, outputs={self.outputs}, "
                f"variant={self.variant!r}, activation={self.activation!r}, "
                f"batch_normalize={self.batch_normalize}, optimizer={self.optimizer!r}, "
                f"dtype={self.dtype.name}, device={self.device!r})")
