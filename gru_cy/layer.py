"""The public GRU layer: parameters, state, forward/backward/update, dispatch.

Data flows one way: this class validates (through ``_validate``), allocates
outputs, and hands C-contiguous arrays of its dtype to its backend's engine
(``gru_cy.backends``: the Cython engine on the CPU, the CUDA engine on a
GPU), which never raises.  Storage, gradients, the optimiser and ``to()`` are
``gru_cy.trainable.Trainable``'s.
"""
import numpy as np

from gru_cy import _validate as V
from gru_cy import sequences
from gru_cy._locking import serialized
from gru_cy.backends import DEVICES
from gru_cy.kernels import ACT_LOGISTIC, ACT_TANH, param_layout, param_size, rolling_shape
from gru_cy.trainable import Trainable

SUBLAYERS = ("uz", "ur", "uh", "wz", "wr", "wh")
VARIANTS = ("darknet", "reset_after")
GRU_ACTIVATIONS = ("tanh", "logistic")
GEMMS = ("native", "blas")
PRECISIONS = ("float32", "bfloat16")


class GRU(Trainable):
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
    reverse : bool
        Read each sequence backwards, from its last valid step to step 0
        (ONNX's ``direction="reverse"``, the reverse half of torch's
        bidirectional GRU); ``y[t]`` is the state after reading ``x[t]``.
    inference_precision : {"float32", "bfloat16"}
        "bfloat16" (float32 layers on a CPU with AVX512_BF16 only): the
        inference forward (``train=False``) multiplies in bfloat16 with
        float32 accumulation (``vdpbf16ps``); biases, gates and state stay
        float32.  The weights are converted once and again after a parameter
        assignment, ``update()``, ``to()`` or a change of this attribute; an
        in-place edit of a ``params`` array is seen after
        ``layer.params[name] = layer.params[name]`` (or any assignment).
        ``forward(train=True)`` and ``backward`` stay float32 (the float32
        engine's results, bit for bit); ``lengths`` and batch normalisation
        are refused with it (ValueError).  The error against float32:
        docs/performance.md ("bfloat16 inference").  Settable on a layer
        (e.g. one loaded with ``gru_cy.load``).

    Notes
    -----
    Tensors are time-major: ``x`` is (T, B, I), ``y`` (T, B, H), states (B, H).
    Padded batches of unequal lengths: see :meth:`forward` and
    ``gru_cy.sequences``.
    """

    def __init__(self, inputs, outputs, variant="darknet", activation="tanh",
                 batch_normalize=False, optimizer="sgd", dtype=np.float32,
                 device="cpu", seed=None, num_threads=None, gemm="native", reverse=False,
                 inference_precision="float32"):
        self.inputs = V.size("inputs", inputs)
        self.outputs = V.size("outputs", outputs)
        self.variant = V.choice("variant", variant, VARIANTS)
        self.activation = V.choice("activation", activation, GRU_ACTIVATIONS)
        if not isinstance(batch_normalize, (bool, np.bool_)):
            raise TypeError(f"batch_normalize: expected a bool, got {batch_normalize!r}")
        self.batch_normalize = bool(batch_normalize)
        device = V.choice("device", device, DEVICES)
        if seed is not None and (isinstance(seed, bool)
                                 or not isinstance(seed, (int, np.integer))):
            raise TypeError(f"seed: expected an int or None, got {seed!r}")
        self.gemm = V.choice("gemm", gemm, GEMMS)
        if not isinstance(reverse, (bool, np.bool_)):
            raise TypeError(f"reverse: expected a bool, got {reverse!r}")
        self.reverse = bool(reverse)
        self._seq = None           # (Packing, segment caches) of a packed training forward
        self._packing = None       # the last Packing (reused while lengths repeat)
        self._bf16 = None          # the weights packed in bf16 (bfloat16 inference)
        _check_precision(inference_precision, dtype, self.batch_normalize, device)
        self._precision = inference_precision
        # parameters, gradients and up to two optimiser vectors, before any
        # is allocated
        V.memory("outputs", 4 * param_size(self.inputs, self.outputs, self.batch_normalize)
                 * V.float_dtype(dtype).itemsize,
                 f"GRU({self.inputs}, {self.outputs})'s parameters, gradients and "
                 f"optimiser state")
        layout = param_layout(self.inputs, self.outputs, self.batch_normalize)
        self._layout = layout
        self._init_storage(param_size(self.inputs, self.outputs, self.batch_normalize),
                           layout["biases"][0], rolling_shape(self.outputs)[1], dtype,
                           optimizer, num_threads)
        rng = np.random.default_rng(seed)
        views = self._views(self._theta, self._rolling)
        for sub in SUBLAYERS:
            w = views[f"{sub}.weights"]
            fan_in = w.shape[1]
            w[...] = rng.uniform(-1.0, 1.0, w.shape) * np.sqrt(2.0 / fan_in)
            if self.batch_normalize:
                views[f"{sub}.scales"][...] = 1
        self._state = None
        self._dh0 = None
        self._engine = self._make_engine()
        self._bind()
        if device != "cpu":
            self.to(device)

    # ------------------------------------------------------------ storage --
    def _views(self, theta, rolling):
        """Named views of a flat vector of ``gru_cy.kernels.param_layout``'s layout."""
        H = self.outputs
        blocks = {k: theta[off:off + shape[0] * shape[1]].reshape(shape)
                  for k, (off, shape) in self._layout.items()}
        views = {}
        for k, sub in enumerate(SUBLAYERS):
            mat = blocks["U"] if k < 3 else blocks["W"]
            views[f"{sub}.weights"] = mat[(k % 3) * H:(k % 3 + 1) * H]
            views[f"{sub}.biases"] = blocks["biases"][k]
        if self.batch_normalize:
            for k, sub in enumerate(SUBLAYERS):
                views[f"{sub}.scales"] = blocks["scales"][k]
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

    _TRANSIENT = Trainable._TRANSIENT + ("_engine", "_seq", "_packing", "_bf16")

    def _checkpoint_node(self, prefix, arrays, with_state):
        from gru_cy import _checkpoint_io as C
        node = {"kind": "GRU", "args": C.gru_args(self)}
        node.update(C.trainable(self, prefix, arrays, with_state))
        return node

    def _restored(self):
        self.__dict__.setdefault("_precision", "float32")   # pickles from before it
        self._seq = None
        self._packing = None
        self._bf16 = None
        self._engine = self._make_engine()

    def _invalidate(self):
        self._seq = None
        self._bf16 = None
        self._engine.invalidate()

    def _moved(self, backend):
        self._seq = None
        self._bf16 = None
        self._packing = None
        self._state = None if self._state is None else backend.asarray(self._state)
        self._dh0 = None if self._dh0 is None else backend.asarray(self._dh0)
        self._engine = self._make_engine()

    @property
    def inference_precision(self):
        """"float32" or "bfloat16": the precision of ``forward(train=False)``'s
        products (see the class docstring)."""
        return self._precision

    @inference_precision.setter
    @serialized
    def inference_precision(self, value):
        _check_precision(value, self.dtype, self.batch_normalize, self.device)
        self._precision = value
        self._bf16 = None

    # -------------------------------------------------------------- state --
    @property
    def state(self):
        """The carried state (B, H), a copy; None before the first forward."""
        return None if self._state is None else self._state.copy()

    @state.setter
    @serialized
    def state(self, value):
        if value is None:
            self._state = None
            return
        self._state = V.array("state", value, self.dtype, ("B", self.outputs),
                              self._backend).copy()

    @serialized
    def reset_state(self):
        """Forget the carried state: the next forward starts from zeros (or h0)."""
        self._state = None

    @property
    def dh0(self):
        """dL/dh_{-1} (B, H) of the last backward; None before the first."""
        return self._dh0

    # ------------------------------------------------------------ forward --
    def forward(self, x, train=False, h0=None, lengths=None):
        """Run the layer over a sequence.

        Parameters
        ----------
        x : array (T, B, I), floating
        train : bool
            Training mode: batch statistics for BN (rolling statistics
            advance T times), and a cache for ``backward``.
        h0 : array (B, H) or None
            Initial state; None uses the carried state (when its batch is B),
            else zeros.
        lengths : integer array (B,) or None
            Valid steps of each sequence of a padded batch, 1 <= lengths[b]
            <= T, in any order.  Sequence b runs steps 0 .. lengths[b]-1 only
            (reverse: lengths[b]-1 down to 0): ``y[t, b]`` is 0 for t >=
            lengths[b], its final state (returned by ``state``, carried to
            the next call) is its state after its last valid step, and BN's
            batch statistics of a step are taken over the sequences running
            at it (in training every step needs two; the rolling statistics
            advance ``max(lengths)`` times).  The work is proportional to
            ``sum(lengths)``.

        Returns
        -------
        y : array (T, B, H) of the layer's dtype, a fresh array.
        """
        # The object's lock (gru_cy._locking), taken by hand: this is the
        # streaming path, where a `with` block or a wrapper costs 0.3-0.6 us.
        lock = self._lock
        lock.acquire()
        try:
            if not train and h0 is None and lengths is None and not self.reverse \
                    and self._precision == "float32" and not self.batch_normalize:
                # Fast path (batch-1 streaming calls this per step): x needs
                # no conversion, the carried state fits; checked and run in C.
                # (BN takes the general path: its input range is checked there.)
                n = self.num_threads
                self._seq = None
                out = self._engine.infer_lean(x, self._state, 0 if n is None else n)
                if out is not None:
                    y, self._state = out
                    return y
            return self._forward(x, train, h0, lengths)
        finally:
            lock.release()

    def _forward(self, x, train, h0, lengths):
        n = self.num_threads
        if not train and self._precision == "bfloat16":
            return self._forward_bf16(x, h0, lengths)
        if lengths is not None or self.reverse:
            return self._forward_packed(x, train, h0, lengths)
        self._seq = None
        backend = self._backend
        xp = backend.xp
        x_in = x
        # No conversion, no copy where none is needed.
        if not backend.lean_input(x, self.dtype, self.inputs):
            x = V.array("x", x, self.dtype, ("T", "B", self.inputs), backend)
        T, B = x.shape[:2]
        h0 = self._initial_state(h0, B)
        self._check_bn_range(x)
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

    def _forward_bf16(self, x, h0, lengths):
        # Inference with bf16 products (gru_cy/_cpu/bf16.pyx); whole sequences.
        from gru_cy._cpu import bf16
        if lengths is not None:
            raise ValueError("lengths: inference_precision='bfloat16' runs whole sequences "
                             "only: expected lengths=None, got an array (use "
                             "inference_precision='float32' for padded batches)")
        if self.device != "cpu":
            raise ValueError(f"inference_precision: 'bfloat16' runs on the CPU only, the "
                             f"layer is on {self.device!r}")
        be = self._backend
        x = V.array("x", x, self.dtype, ("T", "B", self.inputs), be)
        T, B = x.shape[:2]
        h0 = self._initial_state(h0, B)
        self._seq = None
        self._engine.invalidate()     # an inference forward drops the training cache
        if self._bf16 is None:
            # checked again here: an unpickled layer may be on another CPU
            _check_precision(self._precision, self.dtype, False, self.device)
            self._bf16 = bf16.pack(self._theta, self.inputs, self.outputs)
        if self.reverse:
            x = np.ascontiguousarray(x[::-1])
        H = self.outputs
        off = self._layout["biases"][0]
        y = np.empty((T, B, H), self.dtype)
        n = self.num_threads
        bf16.forward(self._bf16, x, h0, y, self._theta[off:off + 3 * H],
                     self._theta[off + 3 * H:off + 6 * H], self.variant == "reset_after",
                     ACT_TANH if self.activation == "tanh" else ACT_LOGISTIC,
                     0 if n is None else n)
        self._state = y[T - 1].copy()
        return np.ascontiguousarray(y[::-1]) if self.reverse else y

    def _forward_packed(self, x, train, h0, lengths):
        # Lengths or reverse: the packed batch of gru_cy.sequences.
        if not train and not self.reverse and lengths is not None:
            # x converted once (_packed_setup's check then keeps it as it is)
            x = V.array("x", x, self.dtype, ("T", "B", self.inputs), self._backend)
            y = self._forward_equal_lengths(x, h0, lengths)
            if y is not None:
                return y
        run = self._packed_setup(x, train, h0, lengths, self._threads())
        (final, records), = sequences.forward_runs(self._backend, [run], self.outputs,
                                                   bool(train), self._threads())
        return self._packed_done(run, final, records, train)

    def _forward_equal_lengths(self, x, h0, lengths):
        # Inference in which every sequence has the same length L (a single
        # sequence, say): the plain forward over x[:L], zeros after it; the
        # same engine call as the packed batch's one segment, without its
        # gathers (at batch 1 they cost about 80 us a call).  None: lengths
        # differ, the packed batch runs.  x: checked and converted.
        T, B = x.shape[:2]
        lengths = V.lengths(lengths, B, T)
        L = int(lengths[0])
        if not (lengths == L).all():
            return None
        self._check_bn_range(x)       # all of x, as the packed batch checks it
        y = self._backend.xp.zeros((T, B, self.outputs), self.dtype)
        y[:L] = self._forward(x[:L], False, h0, None)
        return y

    def _runs_limited(self, train, T, B, lengths, threads):
        # Whether a padded batch (lengths checked) runs as one limited call,
        # each step with its running rows (no segments): inference the engine
        # runs in its fused forward on `threads`; training without BN on any
        # team (Engine.limited_train: the same bits on every team).
        if int(lengths.min()) >= T:
            return False
        if train:
            return (not self.batch_normalize
                    and self._engine.limited_train(int(lengths.max()), B))
        return self._engine.plans_limited(int(lengths.max()), B, threads)

    def _packed_setup(self, x, train, h0, lengths, threads):
        # (engine, Packing, x, h0, y) of a packed forward on `threads`, checked.
        be = self._backend
        x = V.array("x", x, self.dtype, ("T", "B", self.inputs), be)
        T, B = x.shape[:2]
        lengths = V.lengths(lengths, B, T)
        if lengths is None:
            lengths = np.full(B, T, np.int64)
        h0 = self._initial_state(h0, B)
        self._check_bn_range(x)
        # Fewer engine calls with padded rows, except where BN's batch
        # statistics must see the running sequences only.
        costs = (None if train and self.batch_normalize else
                 sequences.segment_costs(self.inputs, self.outputs, self.dtype.itemsize))
        limited = self._runs_limited(train, T, B, lengths, threads)
        min_rows = 1 if train else sequences.MIN_CALL_ROWS
        pk = self._packing
        if pk is None or not pk.matches(lengths, T, self.reverse, costs, limited, min_rows):
            pk = sequences.Packing(lengths, T, self.reverse, costs, limited, min_rows)
        if train and self.batch_normalize and pk.min_running < 2:
            raise ValueError(f"lengths: batch normalisation in training needs at least 2 "
                             f"running sequences at every step, got 1 at steps "
                             f">= {int(np.sort(lengths)[-2])} (lengths {lengths.tolist()})")
        self._packing = pk
        self._seq = None
        self._engine.invalidate()
        return (self._engine, pk, x, h0, be.xp.empty((T, B, self.outputs), self.dtype))

    def _packed_done(self, run, final, records, train):
        self._state = final
        if train:
            self._seq = (run[1], records)
        return run[4]

    def _check_bn_range(self, x):
        # With BN, an input projection that overflows (finite x of 3e38 in
        # float32) makes every output NaN, and the rolling statistics with
        # them: refused.  |x @ U.T| <= max|x| * max_row sum|U|; BN's centring
        # needs twice that, so a quarter of the largest float is the bound.
        if not self.batch_normalize:
            return
        xp = self._backend.xp
        U = self._theta[:3 * self.outputs * self.inputs].reshape(3 * self.outputs, -1)
        top = float(xp.abs(x).max())
        bound = top * float(xp.abs(U).sum(axis=1).max())
        limit = 0.25 * float(np.finfo(self.dtype).max)
        if not bound < limit:
            raise ValueError(f"x: values up to {top:.3g} would overflow "
                             f"the input projection of {self.dtype.name} before batch "
                             f"normalisation (bound {bound:.3g}, limit {limit:.3g}); "
                             f"scale the input down")

    def _initial_state(self, h0, B):
        # h0 checked, else the carried state when its batch is B, else None (zeros).
        if h0 is not None:
            return V.array("h0", h0, self.dtype, (B, self.outputs), self._backend)
        if self._state is not None:
            if self._state.shape[0] != B:
                raise ValueError(f"x: expected batch {self._state.shape[0]} to match the "
                                 f"carried state, got {B} (pass h0 or call reset_state())")
            return self._state
        return None

    # ----------------------------------------------------------- backward --
    @serialized
    def backward(self, dy, dstate=None):
        """Backpropagate through the last training forward.

        Parameters
        ----------
        dy : array (T, B, H)
            dL/dy (with lengths: the padding is not read).
        dstate : array (B, H) or None
            dL/d(final state), if the loss depends on it (with lengths: each
            sequence's state after its last valid step).

        Returns
        -------
        dx : array (T, B, I), a fresh array.  Sets ``dh0``; adds each
        parameter's gradient into ``grads``.
        """
        eng = self._engine
        if self._seq is not None:
            return self._backward_packed(dy, dstate)
        if eng.cache is None:
            raise ValueError("backward: expected a preceding forward(x, train=True) "
                             "(none since the last update, parameter change, inference "
                             "forward or device move)")
        T, B = eng.cache_T, eng.cache_B
        be = self._backend
        xp = be.xp
        dy = V.array("dy", dy, self.dtype, (T, B, self.outputs), be)
        if dstate is not None:
            dstate = V.array("dstate", dstate, self.dtype, (B, self.outputs), be)
        dx = xp.empty((T, B, self.inputs), self.dtype)
        dh0 = xp.empty((B, self.outputs), self.dtype)
        eng.backward(dy, dstate, dx, dh0, self._threads())
        self._dh0 = dh0
        self._rows += T * B
        return dx

    def _backward_packed(self, dy, dstate):
        run = self._packed_backward_setup(dy, dstate)
        sequences.backward_runs(self._backend, [run], self.outputs, self._threads())
        return self._packed_backward_done(run)

    def _packed_backward_setup(self, dy, dstate):
        # (engine, Packing, records, dy, dstate, dx, dh0) of a packed backward, checked.
        pk, records = self._seq
        T, B = pk.T, pk.B
        be = self._backend
        dy = V.array("dy", dy, self.dtype, (T, B, self.outputs), be)
        if dstate is not None:
            dstate = V.array("dstate", dstate, self.dtype, (B, self.outputs), be)
        return (self._engine, pk, records, dy, dstate,
                be.xp.empty((T, B, self.inputs), self.dtype),
                be.xp.empty((B, self.outputs), self.dtype))

    def _packed_backward_done(self, run):
        self._dh0 = run[6]
        self._rows += int(run[1].lengths.sum())     # the valid rows (padded ones excluded)
        return run[5]

    # ------------------------------------------------------------ interop --
    @serialized
    def load_torch_state_dict(self, state_dict):
        """Load ``torch.nn.GRU`` weights (SPEC section 4); see gru_cy.torch_compat."""
        from gru_cy import torch_compat
        torch_compat.load_torch_state_dict(self, state_dict)
        return self

    def torch_state_dict(self, tensors=False):
        """The weights as a ``torch.nn.GRU`` state dict: NumPy arrays, or with
        ``tensors=True`` torch tensors (torch imported then only), which
        ``module.load_state_dict`` takes as they are."""
        from gru_cy import torch_compat
        return torch_compat.as_tensors(torch_compat.torch_state_dict(self), tensors)

    def __repr__(self):
        return (f"GRU(inputs={self.inputs}, outputs={self.outputs}, "
                f"variant={self.variant!r}, activation={self.activation!r}, "
                f"batch_normalize={self.batch_normalize}, optimizer={self.optimizer!r}, "
                f"dtype={self.dtype.name}, device={self.device!r}"
                + (", reverse=True" if self.reverse else "")
                + (", inference_precision='bfloat16')" if self._precision == "bfloat16"
                   else ")"))


def _check_precision(value, dtype, batch_normalize, device, cpu=True):
    """Raise unless ``inference_precision`` = ``value`` fits a layer of this
    dtype, normalisation and device, and (``cpu``) this CPU."""
    V.choice("inference_precision", value, PRECISIONS)
    if value == "float32":
        return
    dtype = V.float_dtype(dtype)
    if dtype != np.float32:
        raise ValueError(f"inference_precision: 'bfloat16' needs a float32 layer, "
                         f"got dtype {dtype.name}")
    if batch_normalize:
        raise ValueError("inference_precision: 'bfloat16' does not support "
                         "batch_normalize=True (use 'float32')")
    if device != "cpu":
        raise ValueError(f"inference_precision: 'bfloat16' runs on the CPU only, "
                         f"got device {device!r}")
    from gru_cy._cpu import bf16
    if cpu and not bf16.supported():
        raise RuntimeError("inference_precision: 'bfloat16' needs a CPU with "
                           "AVX512_BF16 (vdpbf16ps), which this CPU lacks; use 'float32'")


def forward_directions(fwd, rev, x, train, h0s, lengths):
    """The forward of the two directions of a layer (``fwd``, then ``rev`` with
    ``reverse=True``, same sizes, CPU) on the same ``x``: each engine call of
    one direction runs at the same time as the other's, one thread each
    (``gru_cy.sequences.forward_runs`` with the engine's pair).  Returns
    ``(y_fwd, y_rev)``; states and caches as two ``forward`` calls."""
    with fwd._lock, rev._lock:
        runs = [fwd._packed_setup(x, train, h0s[0], lengths, 1),
                rev._packed_setup(x, train, h0s[1], lengths, 1)]
        be = fwd._backend
        out = sequences.forward_runs(be, runs, fwd.outputs, bool(train), 1,
                                     pair=be.forward_pair)
        return tuple(layer._packed_done(run, final, records, train)
                     for layer, run, (final, records) in zip((fwd, rev), runs, out))


def backward_directions(fwd, rev, dys, dstates):
    """The backward of :func:`forward_directions` (paired likewise); returns
    ``(dx_fwd, dx_rev)``."""
    with fwd._lock, rev._lock:
        for layer in (fwd, rev):
            if layer._seq is None:
                raise ValueError("backward: expected a preceding forward(x, train=True) "
                                 "(none since the last update, parameter change, inference "
                                 "forward or device move)")
        runs = [fwd._packed_backward_setup(dys[0], dstates[0]),
                rev._packed_backward_setup(dys[1], dstates[1])]
        be = fwd._backend
        sequences.backward_runs(be, runs, fwd.outputs, 1, pair=be.backward_pair)
        return tuple(layer._packed_backward_done(run)
                     for layer, run in zip((fwd, rev), runs))
