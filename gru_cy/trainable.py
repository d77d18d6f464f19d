"""What every layer with parameters shares: flat storage with named views,
gradients, an optimiser, a row count and a device.

A layer keeps its trainable parameters in one flat vector ``theta`` (weights
first, so that SGD's decay applies to ``theta[:n_decay]``), their gradients in
a vector of the same layout, and its batch-normalisation rolling statistics in
a separate array.  ``params`` and ``grads`` are named views of these; an
update is one kernel call over the whole vector.
"""
import weakref
from collections.abc import MutableMapping

import numpy as np

from gru_cy import _validate as V
from gru_cy import backends
from gru_cy._checkpoint_io import Saveable
from gru_cy._locking import Locked, new_lock, serialized
from gru_cy.optim import OPTIMIZERS, Optimizer


class ParamDict(MutableMapping):
    """Named views of a layer's storage.

    Reading gives a view (in-place edits take effect); assigning copies the
    new values in after checking the shape, then calls ``on_change`` (the
    owner drops its training cache); keys cannot be added or removed.

    Parameters
    ----------
    views : dict of name -> array view
    backend : gru_cy.backends.Backend
        Where the views live (assigned values are moved there).
    on_change : callable
    """

    def __init__(self, views, backend, on_change, lock=None):
        self._views = views
        self._backend = backend
        self._on_change = on_change
        self._lock = lock if lock is not None else new_lock()

    def __getitem__(self, key):
        return self._views[key]

    def __setitem__(self, key, value):
        if key not in self._views:
            raise KeyError(f"params: no parameter named {key!r}; expected one of "
                           f"{', '.join(self._views)}")
        view = self._views[key]
        arr = self._backend.asarray(value)
        if arr.dtype.kind not in "fiu" or arr.dtype == bool:
            raise TypeError(f"params[{key!r}]: expected a real array, got dtype {arr.dtype}")
        if tuple(arr.shape) != tuple(view.shape):
            raise ValueError(f"params[{key!r}]: expected shape {tuple(view.shape)}, "
                             f"got {tuple(arr.shape)}")
        with self._lock:
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


class Trainable(Locked, Saveable):
    """Base of the layers with parameters (``GRU``, ``Connected``).

    A subclass calls :meth:`_init_storage` in its constructor and provides
    ``_views(theta, rolling)`` (named views of a vector of the storage's
    layout; ``rolling`` None for the gradient), ``_invalidate()`` (drop the
    training cache) and, if it holds more device arrays, ``_moved(backend)``.
    """

    def _init_storage(self, n, n_decay, rolling_rows, dtype, optimizer, num_threads):
        """Zero storage for ``n`` parameters (the first ``n_decay`` are weights) and
        a (2, ``rolling_rows``) array of rolling means (0) and variances (1), or
        None where ``rolling_rows`` is 0; on the CPU."""
        self.dtype = V.float_dtype(dtype)
        self.optimizer = V.choice("optimizer", optimizer, OPTIMIZERS)
        self.num_threads = V.num_threads(num_threads)
        be = backends.get("cpu")
        self._backend = be
        self._theta = be.storage(n, self.dtype)
        self._grad = be.storage(n, self.dtype)
        self._rolling = None
        if rolling_rows:
            self._rolling = np.zeros((2, rolling_rows), self.dtype)
            self._rolling[1] = 1
        self._n_decay = n_decay
        self._optim = Optimizer(self.optimizer)
        self._rows = 0
        self._lock = new_lock()

    def _bind(self):
        # on_change through a weak reference: the layer and its ParamDict form
        # no cycle, so the last `del layer` frees its storage at once.
        ref = weakref.ref(self)

        def on_change():
            layer = ref()
            if layer is not None:
                layer._invalidate()

        self._params = ParamDict(self._views(self._theta, self._rolling), self._backend,
                                 on_change, self._lock)
        self._grads = self._views(self._grad, None)

    # ----------------------------------------------------- pickle and copy --
    # What a pickle or a copy leaves out (rebuilt by __setstate__): the lock,
    # the named views, the backend object; subclasses add their engine and
    # caches (a restored layer has no training cache).
    _TRANSIENT = ("_lock", "_params", "_grads", "_backend")

    def __getstate__(self):
        state = {k: v for k, v in self.__dict__.items() if k not in self._TRANSIENT}
        state["_device"] = self._backend.name
        return state

    def __setstate__(self, state):
        state = dict(state)
        backend = backends.get(state.pop("_device"))
        self.__dict__.update(state)
        self._backend = backend
        # fresh storage, aligned as the engine wants it
        for name in ("_theta", "_grad"):
            a = getattr(self, name)
            fresh = backend.storage(a.size, a.dtype)
            fresh[...] = a
            setattr(self, name, fresh)
        self._lock = new_lock()
        self._restored()
        self._bind()

    def _restored(self):
        """Hook: rebuild what the pickle left out (an engine), after unpickling."""

    def _moved(self, backend):
        """Hook: move what else the layer holds to ``backend`` (its engine, state)."""

    def _threads(self):
        n = self.num_threads
        return self._backend.max_threads() if n is None else n

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

    @serialized
    def zero_grad(self):
        """Zero the gradient buffers in place and the row count."""
        self._grad[...] = 0
        self._rows = 0

    @serialized
    def update(self, learning_rate=0.001, momentum=0.9, decay=0.0001, batch=None,
               b1=0.9, b2=0.999, eps=1e-7, clip=None):
        """Apply Darknet's update rule (SPEC "Update") and zero the gradients.

        Parameters
        ----------
        learning_rate, momentum, decay : float
        batch : float or None
            Rows the gradients were summed over; default the rows seen by
            ``backward`` since the last update or ``zero_grad()``.
        b1, b2, eps : float
            Adam's constants (``optimizer="adam"``).
        clip : float or None
            Clamp each gradient element to ``[-clip, clip]`` first.

        Raises
        ------
        ValueError
            Bad hyper-parameters, or a step that would make a parameter
            non-finite (a huge learning rate, a non-finite gradient): then
            nothing changes (parameters, gradients, optimiser state).
        """
        hp = self._check_update(learning_rate, momentum, decay, batch, b1, b2, eps, clip)
        self._apply_update(hp)

    def _check_update(self, learning_rate=0.001, momentum=0.9, decay=0.0001, batch=None,
                      b1=0.9, b2=0.999, eps=1e-7, clip=None):
        # The checked hyper-parameters; ValueError where the step would leave a
        # non-finite parameter (found on copies: nothing changes).
        hp = V.update_args(learning_rate, momentum, decay, batch, b1, b2, eps, clip,
                           self._rows)
        nthreads = self._threads()
        if self._optim.would_be_non_finite(self._backend, self._theta, self._grad,
                                           self._n_decay, hp, nthreads):
            # where (for the message): the rule on copies, a chunk at a time
            bad = self._optim.first_non_finite(self._backend, self._theta, self._grad,
                                               self._n_decay, hp, nthreads)
            bad = 0 if bad is None else bad
            name = next((k for k, v in self._param_offsets() if v[0] <= bad < v[1]), "?")
            raise ValueError(
                f"update: the step would make {name} non-finite (learning_rate="
                f"{hp['learning_rate']!r}, gradient there {float(self._grad[bad])!r}); "
                f"nothing was changed: lower learning_rate, clip the gradients, or fix "
                f"the non-finite gradient")
        return hp

    def _apply_update(self, hp):
        self._optim.step(self._backend, self._theta, self._grad, self._n_decay, hp,
                         self._threads())
        self._rows = 0
        self._invalidate()

    def _param_offsets(self):
        # (name, (start, end)) of each trainable parameter in the flat vector.
        def address(a):
            return a.__array_interface__["data"][0] if isinstance(a, np.ndarray) \
                else a.data.ptr

        base = self._theta
        out = []
        for k, v in self._views(base, None).items():
            start = (address(v) - address(base)) // base.itemsize
            out.append((k, (start, start + v.size)))
        return out

    @serialized
    def to(self, device):
        """Move parameters, gradients, optimiser state and state; returns self."""
        device = V.choice("device", device, backends.DEVICES)
        if device == self.device:
            return self
        be = backends.get(device)

        def move_storage(a):
            out = be.storage(a.size, self.dtype)
            out[...] = be.asarray(a)
            return out

        self._theta = move_storage(self._theta)
        self._grad = move_storage(self._grad)
        if self._rolling is not None:
            self._rolling = be.asarray(self._rolling)
        self._optim.to(be)
        self._backend = be
        self._moved(be)
        self._bind()
        return self
