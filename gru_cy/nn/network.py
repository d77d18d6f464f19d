"""A network of ``[gru]``, ``[connected]``, ``[dropout]``, ``[softmax]`` and ``[cost]`` layers.

The pieces follow Darknet's semantics so that a Darknet network loads and runs
here unchanged (see ``gru_cy.darknet``, which depends on this module, never
the reverse), with one deliberate difference: every backward returns and
accumulates **true gradients** of the loss (Darknet keeps the negative
gradient in ``delta``).  Tensors are time-major ``(T, B, features)``.
"""
import numpy as np

from gru_cy import _validate as V
from gru_cy import backends
from gru_cy._checkpoint_io import Saveable
from gru_cy._locking import Locked, new_lock, serialized
from gru_cy.layer import GRU
from gru_cy.nn import schedule
from gru_cy.nn.losses import Cost, Softmax
from gru_cy.stacked import StackedGRU

_RECURRENT = (GRU, StackedGRU)

__all__ = ["Network"]


class Network(Locked, Saveable):
    """A sequence of ``[gru]``, ``[connected]``, ``[dropout]``, ``[softmax]``, ``[cost]`` layers.

    Tensors are time-major ``(T, B, features)``; a GRU sees them as such, the
    other layers see ``T*B`` rows (Darknet's layout).  GRU states carry from
    call to call as in Darknet (``predict`` included); ``reset_state`` clears
    them.

    Parameters
    ----------
    layers : list
        ``gru_cy.GRU``, ``gru_cy.StackedGRU`` (time-major), :class:`Connected`,
        :class:`Dropout`, :class:`Softmax`, :class:`Cost`.
    inputs : int
        Features per step of the input.
    batch, subdivisions, time_steps : int
        Darknet's ``[net]`` values as the GRU sees them: ``batch`` is the
        sequences per call ``B`` (cfg ``batch / subdivisions``),
        ``time_steps`` is ``T``.  An update's batch is
        ``batch * subdivisions * time_steps`` rows.
    learning_rate, momentum, decay, b1, b2, eps : float
        Hyper-parameters passed to every layer's ``update``; ``learning_rate``
        is the base rate of the policy.
    optimizer : {"sgd", "adam"}
        Recorded for the cfg (``adam=1``); each layer holds its own.
    seen : int
        Darknet's counter of training rows (``B*T`` per training call).
    clip : float or None
        Passed to every layer's ``update``.
    policy : {"constant", "step", "steps", "exp", "poly", "sigmoid"}
        Darknet's learning-rate policy (``gru_cy.nn.schedule``): the rate of
        an update without an explicit one is
        :meth:`current_learning_rate`, Darknet's ``get_current_rate`` at
        batch number :attr:`current_batch`.  Default "constant": always
        ``learning_rate``.
    burn_in, power, step, scale, steps, scales, gamma, max_batches
        The policy's parameters, as the cfg's ``[net]`` options of the same
        names (Darknet's defaults; ``steps``, ``scales`` sequences); checked
        by ``gru_cy.nn.schedule.check``.
    """

    def __init__(self, layers, inputs, batch=1, subdivisions=1, time_steps=1,
                 learning_rate=0.001, momentum=0.9, decay=0.0001, optimizer="sgd",
                 b1=0.9, b2=0.999, eps=1e-7, seen=0, clip=None, policy="constant",
                 burn_in=0, power=4.0, step=1, scale=1.0, steps=(), scales=(), gamma=1.0,
                 max_batches=0):
        if not layers:
            raise ValueError("layers: expected at least one layer, got none")
        self.layers = list(layers)
        self.inputs = V.positive_int("inputs", inputs)
        self.batch = V.positive_int("batch", batch)
        self.subdivisions = V.positive_int("subdivisions", subdivisions)
        self.time_steps = V.positive_int("time_steps", time_steps)
        self.learning_rate = float(learning_rate)
        self.momentum = float(momentum)
        self.decay = float(decay)
        self.optimizer = optimizer
        self.b1, self.b2, self.eps = float(b1), float(b2), float(eps)
        self.clip = clip
        self.seen = int(seen)
        sched = schedule.check(policy=policy, burn_in=burn_in, power=power, step=step,
                               scale=scale, steps=steps, scales=scales, gamma=gamma,
                               max_batches=max_batches)
        self.policy = sched["policy"]
        self.burn_in, self.power = sched["burn_in"], sched["power"]
        self.step, self.scale = sched["step"], sched["scale"]
        self.steps, self.scales = sched["steps"], sched["scales"]
        self.gamma, self.max_batches = sched["gamma"], sched["max_batches"]
        # Darknet's file metadata (gru_cy.darknet reads and writes them)
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
            if isinstance(layer, StackedGRU) and layer.batch_first:
                raise ValueError(f"layers[{i}] (StackedGRU): expected batch_first=False "
                                 f"(a Network is time-major), got True")
            if layer.inputs != n:
                raise ValueError(f"layers[{i}] ({_layer_type(layer)}): expected "
                                 f"{n} inputs (the previous layer's outputs), "
                                 f"got {layer.inputs}")
            n = layer.outputs * getattr(layer, "directions", 1)
        self.outputs = n
        self._lengths = None
        self._lock = new_lock()

    def _checkpoint_node(self, prefix, arrays, with_state):
        from gru_cy import _checkpoint_io as C
        return {"kind": "Network", "args": dict(
            inputs=self.inputs, batch=self.batch, subdivisions=self.subdivisions,
            time_steps=self.time_steps, learning_rate=self.learning_rate,
            momentum=self.momentum, decay=self.decay, optimizer=self.optimizer, b1=self.b1,
            b2=self.b2, eps=self.eps, seen=self.seen, clip=self.clip,
            **self._schedule()),
            "rows": int(self._rows), "calls": int(self._calls),
            "layers": [C.node(layer, f"{prefix}{i}.", arrays, with_state)
                       for i, layer in enumerate(self.layers)]}

    def _schedule(self):
        # the policy's parameters, as schedule.check and current_rate take them
        return dict(policy=self.policy, burn_in=self.burn_in, power=self.power,
                    step=self.step, scale=self.scale, steps=list(self.steps),
                    scales=list(self.scales), gamma=self.gamma,
                    max_batches=self.max_batches)

    @property
    def current_batch(self):
        """Darknet's batch number ``get_current_batch``: ``seen // update_batch``.

        ``seen`` advances by ``B*T`` in each training forward, before the
        update of its batch: the first update (after ``subdivisions``
        training calls of the cfg's sizes) has batch number 1.
        """
        return int(self.seen) // self.update_batch

    def current_learning_rate(self, batch_num=None):
        """The rate an update without an explicit one uses now: Darknet's
        ``get_current_rate`` (``gru_cy.nn.schedule.current_rate``) with this
        network's policy.

        Parameters
        ----------
        batch_num : int or None
            Darknet's batch number; default :attr:`current_batch`.

        Returns
        -------
        float
        """
        b = self.current_batch if batch_num is None else batch_num
        if isinstance(b, bool) or not isinstance(b, (int, np.integer)) or b < 0:
            raise ValueError(f"batch_num: expected an integer >= 0 or None, got {b!r}")
        return schedule.current_rate(b, self.learning_rate, **self._schedule())

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
        """The device of the first layer with parameters ("cpu" without any)."""
        return self._backend.name

    def _check_x(self, x):
        return V.array("x", x, self.dtype, ("T", "B", self.inputs), self._backend)

    @property
    def _backend(self):
        for layer in self.layers:
            if hasattr(layer, "device"):
                return backends.get(layer.device)
        return backends.get("cpu")

    @serialized
    def forward(self, x, train=False, lengths=None):
        """Run every layer; returns the last layer's output ``(T, B, outputs)``.

        Parameters
        ----------
        x : ndarray, shape (T, B, inputs)
        train : bool
            Training forward: caches for ``backward``, batch statistics, and
            ``seen += B*T``.
        lengths : integer array (B,) or None
            Valid steps per sequence of a padded batch: the recurrent layers
            run each sequence over its steps only (``gru_cy.GRU.forward``);
            the other layers see every row, and :meth:`loss` and
            :meth:`backward` count the valid rows only (the gradient is zero
            in the padding).  Connected layers with batch normalisation
            cannot train on a padded batch (their statistics would see the
            padding): a ValueError.
        """
        x = self._check_x(x)
        T, B = x.shape[:2]
        lengths = V.lengths(lengths, B, T)
        if lengths is not None and train:
            for i, layer in enumerate(self.layers):
                if not isinstance(layer, _RECURRENT) and getattr(layer, "batch_normalize",
                                                                 False):
                    raise ValueError(f"lengths: layers[{i}] ({_layer_type(layer)}) has batch "
                                     f"normalisation, whose training statistics would "
                                     f"include the padding; train it on full-length batches")
        h = x
        for layer in self.layers:
            if isinstance(layer, _RECURRENT):
                h = layer.forward(h.reshape(T, B, -1), train=train, lengths=lengths)
            else:
                h = layer.forward(h.reshape(T * B, -1), train=train)
        if train:
            self.seen += B * T
            self._shape = (T, B)
            self._lengths = lengths
        return h.reshape(T, B, -1)

    def _valid_rows(self):
        # Rows t*B + b of the valid steps of the last training forward (None: all).
        if self._lengths is None:
            return None
        T, B = self._shape
        mask = np.arange(T)[:, None] < self._lengths[None, :]
        return np.flatnonzero(mask.reshape(-1))

    @serialized
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

    @serialized
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
        # the layer after `start` computes the loss: [softmax] or [cost]
        head = self.layers[start + 1]
        rows = self._valid_rows() if self._shape is not None else None
        if rows is None:
            return head.loss(output, targets)
        # a padded batch: the loss of the valid rows, a zero gradient elsewhere
        be = self._backend
        T, B = self._shape
        flat = output.reshape(T * B, -1)
        idx = be.xp.asarray(rows)
        t = be.asarray(targets)
        t = t.reshape(T * B, *t.shape[2:])
        loss, d = head.loss(flat[idx], t[idx])
        full = be.xp.zeros(flat.shape, d.dtype)
        full[idx] = d.reshape(len(rows), -1)
        return loss, full.reshape(output.shape)

    @serialized
    def backward(self, dy, start=None):
        """Backpropagate ``dy`` = dL/d(output of layer ``start``); returns dL/dx.

        Parameters
        ----------
        dy : ndarray, shape (T, B, features of that layer)
        start : int or None
            Index of the layer whose output ``dy`` refers to; default the last.
        """
        return self._backward(dy, start)

    def _backward(self, dy, start=None, after=None):
        # backward's body; ``after(leaves)``, where given, is called as soon as
        # the gradients of those layers with parameters are complete (the last
        # layer's first): gru_cy.distributed starts their reduction there.
        if self._shape is None:
            raise ValueError("backward: expected a preceding forward(train=True), got none")
        T, B = self._shape
        start = len(self.layers) - 1 if start is None else start
        d = dy
        rows = self._valid_rows()
        if rows is not None:
            # the gradient is zero in the padding (whatever dy holds there)
            d = self._backend.asarray(d).reshape(T * B, -1).copy()
            keep = np.zeros(T * B, bool)
            keep[rows] = True
            d[self._backend.xp.asarray(np.flatnonzero(~keep))] = 0
        for layer in reversed(self.layers[:start + 1]):
            if isinstance(layer, StackedGRU) and after is not None:
                with layer._lock:
                    d = layer._backward(d.reshape(T, B, -1), None, after)
            elif isinstance(layer, _RECURRENT):
                d = layer.backward(d.reshape(T, B, -1))
            else:
                d = layer.backward(d.reshape(T * B, -1))
            if after is not None and hasattr(layer, "_grad"):
                after([layer])
        self._rows += T * B if rows is None else len(rows)
        return d.reshape(T, B, -1)

    @serialized
    def train_step(self, x, targets, lengths=None):
        """One Darknet training call: forward, loss, backward; update every
        ``subdivisions`` calls.  Returns the loss (summed over the valid rows)."""
        y = self.forward(x, train=True, lengths=lengths)
        start, _ = self._loss_layer()
        loss, d = self.loss(y, targets)
        self.backward(d.reshape(y.shape[0], y.shape[1], -1), start=start)
        self._calls += 1
        if self._calls % self.subdivisions == 0:
            self.update()
        return loss

    @serialized
    def update(self, batch=None, learning_rate=None):
        """Update every layer with the network's hyper-parameters.

        Parameters
        ----------
        batch : int or None
            Default: the rows backpropagated since the last update (``B*T``
            per training call, i.e. Darknet's ``batch*subdivisions*T`` when
            called every ``subdivisions`` calls).
        learning_rate : float or None
            Default: :meth:`current_learning_rate`, the policy's rate at the
            current batch number (``learning_rate`` itself with the
            "constant" policy and no ``burn_in``).

        Raises
        ------
        ValueError
            No rows to update with, the policy's rate is NaN or negative
            (``poly`` past ``max_batches``), or a step would leave a
            non-finite parameter (then nothing changes).
        """
        if batch is None:
            if self._rows == 0:
                raise ValueError("batch: expected a number of rows; none were "
                                 "backpropagated since the last update")
            batch = self._rows
        if learning_rate is None:
            learning_rate = self.current_learning_rate()
            if not learning_rate >= 0 or learning_rate == float("inf"):
                raise ValueError(f"learning_rate: policy {self.policy!r} at batch number "
                                 f"{self.current_batch} gives {learning_rate!r}, expected a "
                                 f"finite rate >= 0 (max_batches={self.max_batches}, "
                                 f"power={self.power}); pass learning_rate= or change the "
                                 f"policy")
        # Every layer's step is checked before any is taken: a step that would
        # leave a non-finite parameter anywhere changes nothing anywhere.
        hp = dict(learning_rate=learning_rate, momentum=self.momentum,
                  decay=self.decay, batch=batch, b1=self.b1, b2=self.b2, eps=self.eps,
                  clip=self.clip)
        trainable = [layer for layer in self.layers if hasattr(layer, "_check_update")]
        checked = []
        for i, layer in enumerate(trainable):
            try:
                checked.append(layer._check_update(**hp))
            except ValueError as e:
                raise ValueError(f"layers[{self.layers.index(layer)}] "
                                 f"({_layer_type(layer)}): {e}") from None
        for layer, token in zip(trainable, checked):
            layer._apply_update(token)
        self._rows = 0
        self._shape = None

    @serialized
    def zero_grad(self):
        for layer in self.layers:
            if hasattr(layer, "zero_grad"):
                layer.zero_grad()
        self._rows = 0

    @serialized
    def reset_state(self):
        """Forget every GRU's carried state (the next call starts from zeros)."""
        for layer in self.layers:
            if isinstance(layer, _RECURRENT):
                layer.reset_state()

    @serialized
    def to(self, device):
        """Move every layer; returns self."""
        for layer in self.layers:
            if hasattr(layer, "to"):
                layer.to(device)
        self._shape = None
        return self

    def __repr__(self):
        kinds = ", ".join(_layer_type(layer) for layer in self.layers)
        return f"Network(inputs={self.inputs}, layers=[{kinds}])"


def _layer_type(layer):
    if isinstance(layer, GRU):
        return "gru"
    if isinstance(layer, StackedGRU):
        return "stacked_gru"
    return getattr(layer, "type", type(layer).__name__)
