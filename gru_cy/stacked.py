"""``StackedGRU``: layers of GRUs, one or two directions each, the model of
``torch.nn.GRU`` (num_layers, bidirectional, batch_first, dropout, padded
batches of unequal lengths).

Each layer and direction is a ``gru_cy.GRU`` (the reverse direction with
``reverse=True``); a layer's input is the previous layer's output, both
directions side by side (forward first).  The two directions of a layer are
independent: on the CPU with two or more threads they run at the same time:
with two, each engine call of one direction runs with the other's in one
parallel region, one thread each (``gru_cy._cpu.engine.forward_pair``); with
more, the reverse direction runs in a worker thread with its share of the
threads (the engine releases the GIL).
Results do not depend on the split: every engine call is bit-identical for
any thread count.
"""
import concurrent.futures
import threading
from collections.abc import MutableMapping

import numpy as np

from gru_cy import _validate as V
from gru_cy._checkpoint_io import Saveable
from gru_cy._dropout import DropoutMasks
from gru_cy._locking import Locked, new_lock, serialized
from gru_cy.backends import DEVICES
from gru_cy.layer import (GRU, GRU_ACTIVATIONS, VARIANTS, backward_directions,
                          forward_directions)

__all__ = ["StackedGRU"]

_POOL = None
_POOL_LOCK = threading.Lock()


def _pool():
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="gru_cy-reverse")
        return _POOL


class _Params(MutableMapping):
    """The sublayers' named views under ``l{k}.`` / ``l{k}.reverse.`` prefixes;
    assignment goes to the sublayer (shape checked, its cache dropped)."""

    def __init__(self, model, grads):
        self._map = {}
        for k, dirs in enumerate(model.layers):
            for d, layer in enumerate(dirs):
                prefix = f"l{k}." + ("reverse." if d else "")
                src = layer.grads if grads else layer.params
                for name in src:
                    self._map[prefix + name] = (layer, name)
        self._grads = grads

    def __getitem__(self, key):
        layer, name = self._map[key]
        return (layer.grads if self._grads else layer.params)[name]

    def __setitem__(self, key, value):
        if key not in self._map:
            raise KeyError(f"params: no parameter named {key!r}")
        if self._grads:
            raise TypeError("grads: gradients are read-only views (write into them)")
        layer, name = self._map[key]
        layer.params[name] = value

    def __delitem__(self, key):
        raise TypeError("params: parameters cannot be removed")

    def __iter__(self):
        return iter(self._map)

    def __len__(self):
        return len(self._map)

    def __repr__(self):
        return f"{'grads' if self._grads else 'params'}({', '.join(self._map)})"


class StackedGRU(DropoutMasks, Locked, Saveable):
    """Layers of GRUs, optionally bidirectional: ``torch.nn.GRU``'s model.

    Parameters
    ----------
    inputs, outputs : int
        I (features per step of the input) and H (units per direction).
    num_layers : int
    bidirectional : bool
        Each layer runs a forward and a reverse GRU (D = 2); its output is
        both, forward half first.
    batch_first : bool
        ``x`` and ``y`` are (B, T, features) instead of (T, B, features);
        states are (num_layers * D, B, H) either way (as torch's).
    dropout : float in [0, 1)
        Dropout on the outputs of every layer but the last, in training only;
        the mask is drawn from the model's seeded generator and reused by the
        backward (inverted dropout: kept values are scaled by 1 / (1 - p)).
    variant, activation, batch_normalize, optimizer, dtype, device, num_threads, gemm
        As ``gru_cy.GRU``, for every sublayer.
    inference_precision : {"float32", "bfloat16"}
        As ``gru_cy.GRU``, for every sublayer (settable).  In a "bfloat16"
        inference forward the two directions of a bidirectional layer are two
        calls (in turn on up to two threads, else side by side, as ``_both``),
        never the float32 engine's paired call.
    seed : int or None
        Seeds every sublayer's initialisation and the dropout generator.
    bias : bool
        False: the biases are zero and stay zero (``update`` leaves them);
        torch's ``bias=False``.
    """

    def __init__(self, inputs, outputs, num_layers=1, bidirectional=False, batch_first=False,
                 dropout=0.0, variant="darknet", activation="tanh", batch_normalize=False,
                 optimizer="sgd", dtype=np.float32, device="cpu", seed=None, num_threads=None,
                 bias=True, gemm="native", inference_precision="float32"):
        self.inputs = V.size("inputs", inputs)
        self.outputs = V.size("outputs", outputs)
        self.num_layers = V.size("num_layers", num_layers)
        for name, flag in (("bidirectional", bidirectional), ("batch_first", batch_first),
                           ("bias", bias)):
            if not isinstance(flag, (bool, np.bool_)):
                raise TypeError(f"{name}: expected a bool, got {flag!r}")
        self.bidirectional = bool(bidirectional)
        self.batch_first = bool(batch_first)
        self.bias = bool(bias)
        self.dropout = V.hyper("dropout", dropout, low=0.0, high=1.0, high_open=True)
        V.choice("variant", variant, VARIANTS)
        V.choice("activation", activation, GRU_ACTIVATIONS)
        V.choice("device", device, DEVICES)
        if seed is not None and (isinstance(seed, bool)
                                 or not isinstance(seed, (int, np.integer))):
            raise TypeError(f"seed: expected an int or None, got {seed!r}")
        self.num_threads = V.num_threads(num_threads)
        D = self.directions
        from gru_cy.kernels import param_size
        total = sum(D * param_size(self.inputs if k == 0 else D * self.outputs, self.outputs,
                                   bool(batch_normalize)) for k in range(self.num_layers))
        V.memory("num_layers", 4 * total * V.float_dtype(dtype).itemsize,
                 f"{self.num_layers} layer(s) x {D} direction(s) of {self.outputs} units "
                 f"(parameters, gradients and optimiser state)")
        seeds = np.random.SeedSequence(seed).spawn(self.num_layers * D + 1)
        self.layers = []
        for k in range(self.num_layers):
            n_in = self.inputs if k == 0 else D * self.outputs
            self.layers.append([
                GRU(n_in, self.outputs, variant=variant, activation=activation,
                    batch_normalize=batch_normalize, optimizer=optimizer, dtype=dtype,
                    device="cpu", seed=int(seeds[k * D + d].generate_state(1)[0]),
                    num_threads=num_threads, gemm=gemm, reverse=bool(d),
                    inference_precision=inference_precision)
                for d in range(D)])
        self._rng = np.random.default_rng(seeds[-1])
        if not self.bias:
            for layer in self._sublayers():
                for name in layer.params:
                    if name.endswith(".biases"):
                        layer.params[name] = np.zeros(self.outputs)
        self._masks = None
        self._shape = None
        self._dh0 = None
        self._lock = new_lock()
        if device != "cpu":
            self.to(device)

    # -------------------------------------------------------------- basics --
    @property
    def directions(self):
        """D: 2 when bidirectional, else 1."""
        return 2 if self.bidirectional else 1

    @property
    def variant(self):
        return self.layers[0][0].variant

    @property
    def activation(self):
        return self.layers[0][0].activation

    @property
    def batch_normalize(self):
        return self.layers[0][0].batch_normalize

    @property
    def optimizer(self):
        return self.layers[0][0].optimizer

    @property
    def dtype(self):
        return self.layers[0][0].dtype

    @property
    def device(self):
        return self.layers[0][0].device

    def _sublayers(self):
        return [layer for dirs in self.layers for layer in dirs]

    @property
    def params(self):
        """Mapping ``l{k}.{sub}.weights``, ``l{k}.reverse.{sub}.weights``, ... -> views."""
        return _Params(self, grads=False)

    @property
    def grads(self):
        """Mapping of the gradient buffers, keyed as ``params`` (trainable only)."""
        return _Params(self, grads=True)

    @property
    def state(self):
        """The carried states (num_layers * D, B, H), a copy; None before a forward."""
        with self._lock:    # one forward's states, not a mix of two calls'
            states = [layer.state for layer in self._sublayers()]
        if any(s is None for s in states):
            return None
        return self._backend().xp.stack(states)

    @state.setter
    @serialized
    def state(self, value):
        if value is None:
            self.reset_state()
            return
        value = V.array("state", value, self.dtype,
                        (self.num_layers * self.directions, "B", self.outputs),
                        self._backend())
        for i, layer in enumerate(self._sublayers()):
            layer.state = value[i]

    @serialized
    def reset_state(self):
        """Forget the carried states: the next forward starts from zeros (or h0)."""
        for layer in self._sublayers():
            layer.reset_state()

    @property
    def dh0(self):
        """dL/dh0 (num_layers * D, B, H) of the last backward; None before it."""
        return self._dh0

    def _backend(self):
        return self.layers[0][0]._backend

    def _threads(self):
        n = self.num_threads
        return self._backend().max_threads() if n is None else n

    # ------------------------------------------------------------- running --
    def _both(self, fwd, rev):
        """Run the two directions' calls ``fwd(nthreads)``, ``rev(nthreads)``:
        at the same time on the CPU with three or more threads (the reverse
        one in a worker thread, each with its share), else in turn."""
        n = self._threads()
        if self.device != "cpu" or n < 3:
            return fwd(n), rev(n)
        future = _pool().submit(rev, n // 2)
        try:
            a = fwd(n - n // 2)
        finally:
            b = future.result()
        return a, b

    @property
    def inference_precision(self):
        """"float32" or "bfloat16", every sublayer's (``gru_cy.GRU``)."""
        return self.layers[0][0].inference_precision

    @inference_precision.setter
    @serialized
    def inference_precision(self, value):
        for layer in self._sublayers():
            layer.inference_precision = value

    def _paired(self):
        # Two threads on the CPU: each engine call of one direction runs with
        # the other's in one parallel region, one thread each (no hand-off
        # to a Python thread: its wake-up alone costs ~0.1 ms here).
        return self.directions == 2 and self.device == "cpu" and self._threads() == 2

    def _limited_in_turn(self, layer, train, T, B, lengths):
        # Inference on a padded batch that one direction on the whole team
        # runs as one limited call (each step its running rows): the two
        # directions in turn, each on both threads, beat the pair of
        # one-thread segment runs (config C, 2 layers: docs/performance.md).
        # The same bits either way (every product on the blocked gemm path).
        # (Training keeps the pair: each direction one limited call on one
        # thread where Engine.limited_train, else its segments.)
        return (not train and lengths is not None
                and layer.inference_precision == "float32"
                and layer._runs_limited(train, T, B, lengths, self._threads()))

    def _run(self, dirs, call):
        # call(layer) on each direction of one layer, sharing the threads.
        if len(dirs) == 1:
            return [call(dirs[0], self._threads())]

        def one(layer):
            return lambda n: call(layer, n)

        return list(self._both(one(dirs[0]), one(dirs[1])))

    def _to_time_major(self, a, name, features):
        be = self._backend()
        if self.batch_first:
            a = V.array(name, a, self.dtype, ("B", "T", features), be)
            return be.xp.ascontiguousarray(a.transpose(1, 0, 2))
        return V.array(name, a, self.dtype, ("T", "B", features), be)

    def _from_time_major(self, a):
        if self.batch_first:
            return self._backend().xp.ascontiguousarray(a.transpose(1, 0, 2))
        return a

    @serialized
    def forward(self, x, train=False, h0=None, lengths=None):
        """Run every layer over the sequences.

        Parameters
        ----------
        x : array (T, B, I), or (B, T, I) with ``batch_first``
        train : bool
            Training mode (caches for ``backward``, BN batch statistics, dropout).
        h0 : array (num_layers * D, B, H) or None
            Initial states in torch's order (layer-major, forward direction
            first); None: each sublayer's carried state, else zeros.
        lengths : integer array (B,) or None
            Valid steps per sequence (see ``gru_cy.GRU.forward``): outputs
            are 0 in the padding and each final state is taken after the
            sequence's last valid step (for a reverse direction: after
            reading step 0).

        Returns
        -------
        y : array (T, B, D * H), or (B, T, D * H) with ``batch_first``.
        """
        be = self._backend()
        xp = be.xp
        L, D, H = self.num_layers, self.directions, self.outputs
        x = self._to_time_major(x, "x", self.inputs)
        T, B = x.shape[:2]
        lengths = V.lengths(lengths, B, T)
        if h0 is not None:
            h0 = V.array("h0", h0, self.dtype, (L * D, B, H), be)
        masks = []
        h = x
        for k, dirs in enumerate(self.layers):
            def call(layer, n, h=h, k=k):
                d = 1 if layer.reverse else 0
                layer.num_threads = n
                try:
                    return layer.forward(h, train=train, lengths=lengths,
                                         h0=None if h0 is None else h0[k * D + d])
                finally:
                    layer.num_threads = self.num_threads
            if self._paired() and (train or self.inference_precision == "float32") \
                    and not self._limited_in_turn(dirs[0], train, T, B, lengths):
                outs = forward_directions(dirs[0], dirs[1], h, train,
                                          [None if h0 is None else h0[k * D + d]
                                           for d in range(2)], lengths)
            else:
                outs = self._run(dirs, call)
            h = outs[0] if D == 1 else xp.concatenate(outs, axis=2)
            if train and self.dropout > 0 and k < L - 1:
                mask = be.asarray(self._draw_mask(h.shape, self.dropout, self.dtype))
                h = h * mask
                masks.append(mask)
        if train:
            self._masks = masks
            self._shape = (T, B)
        else:
            self._masks = None
            self._shape = None
        return self._from_time_major(h)

    __call__ = forward

    @serialized
    def backward(self, dy, dstate=None):
        """Backpropagate through the last training forward.

        Parameters
        ----------
        dy : array (T, B, D * H), or (B, T, D * H) with ``batch_first``
        dstate : array (num_layers * D, B, H) or None
            dL/d(final states), in ``state``'s order.

        Returns
        -------
        dx : array shaped as ``x``.  Sets ``dh0`` (num_layers * D, B, H);
        adds each parameter's gradient into ``grads``.
        """
        return self._backward(dy, dstate)

    def _backward(self, dy, dstate=None, after=None):
        # backward's body; ``after(dirs)``, where given, is called with each
        # layer's GRUs as soon as their gradients are complete (the last
        # layer's first): gru_cy.distributed starts their reduction there.
        if self._shape is None:
            raise ValueError("backward: expected a preceding forward(x, train=True) "
                             "(none since the last update or inference forward)")
        be = self._backend()
        xp = be.xp
        L, D, H = self.num_layers, self.directions, self.outputs
        T, B = self._shape
        dy = self._to_time_major(dy, "dy", D * H)
        if dy.shape[:2] != (T, B):
            raise ValueError(f"dy: expected {T} steps and batch {B} (the training "
                             f"forward's), got shape {tuple(dy.shape)}")
        if dstate is not None:
            dstate = V.array("dstate", dstate, self.dtype, (L * D, B, H), be)
        dh0 = [None] * (L * D)
        d = dy
        for k in range(L - 1, -1, -1):
            dirs = self.layers[k]

            def call(layer, n, d=d, k=k):
                j = 1 if layer.reverse else 0
                part = d if D == 1 else xp.ascontiguousarray(d[:, :, j * H:(j + 1) * H])
                layer.num_threads = n
                try:
                    return layer.backward(part, None if dstate is None
                                          else dstate[k * D + j])
                finally:
                    layer.num_threads = self.num_threads
            if self._paired():
                dxs = backward_directions(
                    dirs[0], dirs[1],
                    [xp.ascontiguousarray(d[:, :, j * H:(j + 1) * H]) for j in range(2)],
                    [None if dstate is None else dstate[k * D + j] for j in range(2)])
            else:
                dxs = self._run(dirs, call)
            for j, layer in enumerate(dirs):
                dh0[k * D + j] = layer.dh0
            if after is not None:
                after(list(dirs))
            d = dxs[0] if D == 1 else dxs[0] + dxs[1]
            if k > 0 and self._masks:
                d = d * self._masks[k - 1]
        self._dh0 = xp.stack(dh0)
        return self._from_time_major(d)

    def _checkpoint_node(self, prefix, arrays, with_state):
        from gru_cy import _checkpoint_io as C
        g = self.layers[0][0]
        return {"kind": "StackedGRU", "args": dict(
            inputs=self.inputs, outputs=self.outputs, num_layers=self.num_layers,
            bidirectional=self.bidirectional, batch_first=self.batch_first,
            dropout=self.dropout, variant=g.variant, activation=g.activation,
            batch_normalize=g.batch_normalize, optimizer=g.optimizer, dtype=g.dtype.name,
            num_threads=self.num_threads, bias=self.bias, gemm=g.gemm,
            **({} if g.inference_precision == "float32"
               else {"inference_precision": g.inference_precision})),
            "rng": self._rng.bit_generator.state,
            "layers": [C.node(sub, f"{prefix}l{k}.d{d}.", arrays, with_state)
                       for k, dirs in enumerate(self.layers) for d, sub in enumerate(dirs)]}

    # ------------------------------------------------------------ training --
    @serialized
    def zero_grad(self):
        """Zero every sublayer's gradients and row count."""
        for layer in self._sublayers():
            layer.zero_grad()

    @serialized
    def update(self, learning_rate=0.001, momentum=0.9, decay=0.0001, batch=None,
               b1=0.9, b2=0.999, eps=1e-7, clip=None):
        """Apply the update rule to every sublayer (see ``gru_cy.GRU.update``);
        ``batch`` defaults to the rows of the backward passes since the last
        update.  With ``bias=False`` the biases' gradients are dropped first."""
        self._apply_update(self._check_update(
            learning_rate=learning_rate, momentum=momentum, decay=decay, batch=batch,
            b1=b1, b2=b2, eps=eps, clip=clip))

    def _check_update(self, **hp):
        # Every sublayer's step checked before any is taken (see GRU.update).
        if not self.bias:
            for layer in self._sublayers():
                for name, g in layer.grads.items():
                    if name.endswith(".biases"):
                        g[...] = 0
        out = []
        for layer in self._sublayers():
            with layer._lock:
                out.append(layer._check_update(**hp))
        return out

    def _apply_update(self, checked):
        for layer, hp in zip(self._sublayers(), checked):
            with layer._lock:
                layer._apply_update(hp)
        self._shape = None
        self._masks = None

    @serialized
    def to(self, device):
        """Move every sublayer (and the carried states); returns self."""
        for layer in self._sublayers():
            layer.to(device)
        self._shape = None
        self._masks = None
        return self

    # ------------------------------------------------------------- interop --
    @serialized
    def load_torch_state_dict(self, state_dict):
        """Load a ``torch.nn.GRU`` state dict (all layers and directions; see
        ``gru_cy.torch_compat``); returns self."""
        from gru_cy import torch_compat
        torch_compat.load_stacked(self, state_dict)
        return self

    def torch_state_dict(self, tensors=False):
        """The weights as a ``torch.nn.GRU`` state dict: NumPy arrays, or torch
        tensors with ``tensors=True`` (for ``module.load_state_dict``)."""
        from gru_cy import torch_compat
        return torch_compat.as_tensors(torch_compat.stacked_state_dict(self), tensors)

    @classmethod
    def from_torch(cls, module, **kwargs):
        """A StackedGRU equal to ``torch.nn.GRU`` ``module`` (read without
        importing torch): its sizes, ``num_layers``, ``bidirectional``,
        ``batch_first``, ``bias``, ``dropout`` and weights (float64 weights
        give a float64 model).  ``kwargs`` go to the constructor (e.g.
        ``num_threads``, ``device``)."""
        from gru_cy import torch_compat
        return torch_compat.stacked_from_torch(cls, module, kwargs)

    def __repr__(self):
        return (f"StackedGRU(inputs={self.inputs}, outputs={self.outputs}, "
                f"num_layers={self.num_layers}, bidirectional={self.bidirectional}, "
                f"batch_first={self.batch_first}, dropout={self.dropout}, "
                f"variant={self.variant!r}, dtype={self.dtype.name}, device={self.device!r})")
