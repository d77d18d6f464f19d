"""Data-parallel training over MPI (the optional extra ``gru_cy[mpi]``: mpi4py and an MPI).

Every rank holds a whole copy of the model and trains on its shard of the
global batch (:func:`shard`: rank r of n takes sequences r, r + n, ...).
:class:`DataParallel` makes the copies one model:

* at wrap time rank 0's parameters, rolling statistics and optimiser state
  are broadcast to every rank;
* ``update()`` sums the gradients and the row counts over the ranks, then
  applies the model's own rule with the global row count as ``batch``: the
  step is the one a single process takes on the whole batch, and every rank
  takes the same step, so the copies stay identical;
* the sum has a fixed order: every element of a layer's flat gradient
  buffer is the sum of the ranks' values added in rank order 0, 1, ..., n-1,
  whichever rank adds it.  By default (``reduction="scatter"``) chunk j of
  the buffer goes to rank j (``MPI_Ialltoallv``, started as soon as the
  backward has finished that layer), which adds its chunk's n parts in rank
  order, then the summed chunks go to every rank (``MPI_Allgatherv``): the
  traffic of a ring allreduce, deterministic by construction (an MPI
  allreduce's order is the library's choice).  Results are bit-identical
  from run to run with the same number of ranks (and the same threads per
  rank: the engine is bit-identical for any thread count), and equal to one
  process on the whole batch up to the rounding of the partial sums;
* batch normalisation keeps **per-rank statistics** (torch DDP without
  SyncBatchNorm): a training forward normalises with the statistics of the
  rank's shard, the gradients are summed as above and the rolling
  statistics are averaged over the ranks at every update.  With BN the
  result is therefore that of n shards normalised separately, not that of
  one process on the whole batch; every shard needs at least two sequences.
* a Network's ``seen`` (Darknet's counter of training rows) counts every
  rank's rows from one update to the next.

mpi4py is imported when a function of this module first needs MPI, never by
``import gru_cy``; without it those functions raise ``ImportError`` naming
``pip install "gru_cy[mpi]"``.  The layers must be on the CPU.
"""
import contextlib
import os
import sys
import traceback

import numpy as np

from gru_cy.layer import GRU
from gru_cy.nn.network import Network
from gru_cy.stacked import StackedGRU

__all__ = ["DataParallel", "shard", "shard_indices", "abort_on_error", "mpi",
           "world", "threads_per_rank", "INSTALL"]

INSTALL = 'pip install "gru_cy[mpi]"'


def mpi():
    """The ``mpi4py.MPI`` module (importing it starts MPI).

    Raises
    ------
    ImportError
        mpi4py (or its MPI library) is not installed; the message says how to
        install it.
    """
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise ImportError(f"gru_cy.distributed needs mpi4py and an MPI library "
                          f"({e}): {INSTALL}") from None
    return MPI


def world():
    """``MPI.COMM_WORLD``."""
    return mpi().COMM_WORLD


# --- data ---------------------------------------------------------------------------

def shard_indices(batch, rank, size):
    """The sequences of the global batch that rank ``rank`` of ``size`` takes.

    Parameters
    ----------
    batch : int
        B, the sequences of the global batch (at least ``size``).
    rank, size : int

    Returns
    -------
    ndarray of int64, shape (ceil((B - rank) / size),)
        ``rank, rank + size, rank + 2 * size, ...``
    """
    batch, rank, size = int(batch), int(rank), int(size)
    if size < 1:
        raise ValueError(f"size: expected at least 1 rank, got {size}")
    if not 0 <= rank < size:
        raise ValueError(f"rank: expected 0 <= rank < {size}, got {rank}")
    if batch < size:
        raise ValueError(f"batch: expected at least one sequence per rank ({size}), "
                         f"got {batch}")
    return np.arange(rank, batch, size, dtype=np.int64)


def shard(x, targets=None, lengths=None, *, rank=None, size=None, comm=None,
          batch_axis=1):
    """This rank's shard of a global batch: sequences ``rank, rank + size, ...``.

    Parameters
    ----------
    x : ndarray, shape (T, B, ...) (``batch_axis=1``, time-major) or (B, T, ...)
    targets : ndarray or None
        Sharded along the same axis as ``x`` (``Network.train_step``'s labels
        (T, B) or targets (T, B, C)).
    lengths : integer array (B,) or None
    rank, size : int or None
        Default: the communicator's.
    comm : mpi4py communicator or None
        Default ``MPI.COMM_WORLD`` (only read where ``rank`` or ``size`` is None).
    batch_axis : int

    Returns
    -------
    (x, targets, lengths) of this rank, copies (C-contiguous); None stays None.
    """
    if rank is None or size is None:
        comm = world() if comm is None else comm
        rank = comm.Get_rank() if rank is None else rank
        size = comm.Get_size() if size is None else size
    idx = shard_indices(np.shape(x)[batch_axis], rank, size)

    def take(a, axis):
        if a is None:
            return None
        if np.shape(a)[axis] != np.shape(x)[batch_axis]:
            raise ValueError(f"shard: expected {np.shape(x)[batch_axis]} sequences along "
                             f"axis {axis}, got shape {np.shape(a)}")
        return np.ascontiguousarray(np.take(np.asarray(a), idx, axis=axis))

    return take(x, batch_axis), take(targets, batch_axis), take(lengths, 0)


# --- failures -----------------------------------------------------------------------

class AgreedExit(SystemExit):
    """A ``SystemExit`` that every rank raises alike (a check on values all
    ranks share, such as the job's size or rank 0's broadcast verdict):
    :func:`abort_on_error` lets it end each rank normally, since no rank is
    left waiting, rather than abort the job (an MPI abort can lose the
    ranks' last output, the very message that says why)."""


@contextlib.contextmanager
def abort_on_error(comm=None, prog="gru_cy"):
    """End the whole job when this rank fails.

    An exception that leaves the ``with`` block on one rank would leave the
    others waiting in a collective (MPICH hangs at shutdown): the rank prints
    the traceback and ``<prog>: rank r of n failed: ...; ending the job``,
    then calls ``comm.Abort`` (1; 130 for Ctrl-C), which ends every rank.
    With one rank the exception propagates as usual; a ``SystemExit`` with
    a non-zero status ends the job the same way (with that status), since a
    check that fails on some ranks only would leave the others waiting.
    """
    comm = world() if comm is None else comm
    try:
        yield comm
    except SystemExit as e:
        # a failed check on some ranks only (a file one machine lacks) would
        # leave the others in a collective: a non-zero exit ends the job
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if comm.Get_size() == 1 or code == 0 or isinstance(e, AgreedExit):
            raise
        sys.stderr.write(f"{prog}: rank {comm.Get_rank()} of {comm.Get_size()} exits with "
                         f"status {code}; ending the job (MPI Abort)\n")
        sys.stderr.flush()
        sys.stdout.flush()
        comm.Abort(code)
    except BaseException as e:
        if comm.Get_size() == 1:
            raise
        code = 130 if isinstance(e, KeyboardInterrupt) else 1
        # one write: the launcher may interleave the ranks' output between writes
        sys.stderr.write(traceback.format_exc()
                         + f"{prog}: rank {comm.Get_rank()} of {comm.Get_size()} failed: "
                           f"{type(e).__name__}: {e}; ending the job (MPI Abort, exit "
                           f"{code})\n")
        sys.stderr.flush()
        sys.stdout.flush()
        comm.Abort(code)


# --- the wrapper ----------------------------------------------------------------------

def _leaves(model):
    """The layers that hold parameters (a flat ``_grad``), in forward order."""
    if isinstance(model, GRU):
        return [model]
    if isinstance(model, StackedGRU):
        return model._sublayers()
    if isinstance(model, Network):
        out = []
        for layer in model.layers:
            out.extend(_leaves(layer) if isinstance(layer, (GRU, StackedGRU))
                       else [layer] if hasattr(layer, "_grad") else [])
        return out
    raise TypeError(f"model: expected a gru_cy GRU, StackedGRU or Network, "
                    f"got {type(model).__name__}")


def _generators(model):
    """The objects that draw dropout masks (a ``_rng``), in forward order."""
    parts = model.layers if isinstance(model, Network) else [model]
    return [p for p in parts if hasattr(p, "_rng")]


class DataParallel:
    """A model trained data-parallel over the ranks of an MPI communicator.

    Each rank feeds its shard of the global batch (:func:`shard`) through the
    wrapper's ``forward`` / ``backward`` (or ``train_step``); ``update`` sums
    the gradients and rows over the ranks in a fixed order and takes the
    model's step with the global row count (see the module's docstring).
    Other attributes and methods (``predict``, ``params``, ``reset_state``,
    ``state``, ...) are the wrapped model's.

    Parameters
    ----------
    model : gru_cy.GRU, gru_cy.StackedGRU or gru_cy.Network
        On the CPU; built alike on every rank (same sizes and dtype): rank 0's
        parameters, rolling statistics, optimiser state and (a Network's)
        ``seen`` are copied to the others here; gradients accumulated before
        count once (rank 0's: the other ranks zero theirs); a carried state is
        taken as the whole batch's, each rank keeping its sequences' rows.
    comm : mpi4py communicator or None
        Default ``MPI.COMM_WORLD``.
    overlap : bool
        Start each layer's gradient sum (its first phase, non-blocking) as
        soon as the backward has finished it, the last layer's first, while the
        backward of the earlier layers runs (a Network, or a StackedGRU per
        layer); ``update`` waits for them.  The gradients must then not be
        changed between ``backward`` and ``update`` (use ``overlap=False``
        to edit them there).  The result is the same either way.
    reduction : {"scatter", "gather"}
        How the gradients are summed; both add every element's n parts in
        rank order, so both give the same bits.  "scatter": chunk j of each
        buffer goes to rank j (``MPI_Alltoallv``), which sums it, then every
        summed chunk to every rank (``MPI_Allgatherv``): 2 (n-1)/n times the
        buffer sent and received per rank, as a ring allreduce.  "gather":
        the whole buffer to every rank (``MPI_Allgather``), each rank sums all
        of it: (n-1) times the buffer, simpler, fine for two or three ranks.

    Raises
    ------
    ImportError
        Without mpi4py.
    ValueError
        The ranks' models differ in sizes or dtype, or a layer is not on the CPU
        (raised on every rank alike).
    """

    def __init__(self, model, comm=None, overlap=True, reduction="scatter"):
        if reduction not in ("scatter", "gather"):
            raise ValueError(f"reduction: expected 'scatter' or 'gather', "
                             f"got {reduction!r}")
        MPI = mpi()
        self.reduction = reduction
        self.__dict__["model"] = model
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        self.overlap = bool(overlap)
        self._MPI = MPI
        self._leaves = _leaves(model)
        self._pending = {}          # id(leaf) -> (leaf, received parts, request)
        self._sync = True           # False inside no_sync()
        self._broadcast()

    # attributes not set here are the model's
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.__dict__["model"], name)

    def __repr__(self):
        return f"DataParallel({self.model!r}, rank {self.rank} of {self.size})"

    # ------------------------------------------------------------ wrap time --
    def _broadcast(self):
        # The same architecture everywhere (checked on gathered signatures, so
        # every rank raises alike), then rank 0's storage.
        sig = [(type(leaf).__name__, int(leaf._theta.size), str(leaf.dtype),
                leaf.device, None if leaf._rolling is None else leaf._rolling.shape)
               for leaf in self._leaves]
        sigs = self.comm.allgather(sig)
        for r, s in enumerate(sigs):
            if s != sigs[0]:
                raise ValueError(f"model: rank {r} holds layers {s}, rank 0 holds "
                                 f"{sigs[0]}: build the same model on every rank")
        if any(leaf.device != "cpu" for leaf in self._leaves):
            raise ValueError("model: gru_cy.distributed runs CPU models; expected "
                             "device 'cpu', got 'cuda'")
        for leaf in self._leaves:
            self.comm.Bcast(leaf._theta, root=0)
            if leaf._rolling is not None:
                self.comm.Bcast(leaf._rolling, root=0)
            optim = leaf._optim
            t, names = self.comm.bcast((optim.t, sorted(optim.state)), root=0)
            optim.t = t
            if not names:
                optim.state = {}
            for k in names:
                if k not in optim.state:
                    optim.state[k] = np.zeros_like(leaf._theta)
                self.comm.Bcast(optim.state[k], root=0)
            leaf._invalidate()
        # A carried state is the whole batch's (a checkpoint's, as save writes
        # it): rank 0's goes to every rank, which keeps its sequences' rows.
        for leaf in self._leaves:
            if isinstance(leaf, GRU):
                st = self.comm.bcast(None if leaf._state is None else
                                     np.asarray(leaf._state), root=0)
                leaf._state = None if st is None else np.ascontiguousarray(
                    st[shard_indices(st.shape[0], self.rank, self.size)])
        # Dropout: rank 0's generator, then rank r jumps r * 2**127 draws ahead
        # (PCG64.jumped): independent masks on every rank, the same each run
        for obj in _generators(self.model):
            state = self.comm.bcast(obj._rng.bit_generator.state, root=0)
            obj._rng.bit_generator.state = state
            if self.rank > 0:
                obj._rng.bit_generator.state = \
                    obj._rng.bit_generator.jumped(self.rank).state
        if isinstance(self.model, Network):
            # Darknet's counter of training rows: the whole job's
            self.model.seen = self.comm.bcast(self.model.seen, root=0)
            self._seen = self.model.seen
        # Gradients accumulated before (a checkpoint saved between backward and
        # update, loaded by every rank) count once: rank 0's.
        if self.rank > 0:
            for leaf in self._leaves:
                leaf._grad[...] = 0
                leaf._rows = 0
            if isinstance(self.model, Network):
                self.model._rows = 0

    # ------------------------------------------------------------ reduction --
    def _start(self, leaves):
        # Start the first phase of the sum of these layers' gradients (complete
        # now): "scatter" sends chunk j of the buffer to rank j (MPI_Ialltoallv);
        # "gather" sends the whole buffer to every rank (MPI_Iallgather).
        MPI = self._MPI
        for leaf in leaves:
            g = leaf._grad
            if self.reduction == "gather":
                parts = np.empty((self.size, g.size), g.dtype)
                req = self.comm.Iallgather(g, parts)
            else:
                counts, displs = _chunks(g.size, self.size)
                mine = int(counts[self.rank])
                parts = np.empty((self.size, mine), g.dtype)
                kind = MPI.DOUBLE if g.dtype == np.float64 else MPI.FLOAT
                req = self.comm.Ialltoallv(
                    [g, (counts, displs), kind],
                    [parts, ([mine] * self.size, [mine * r for r in range(self.size)]), kind])
            self._pending[id(leaf)] = (leaf, parts, req)
        # let MPI progress what is already under way
        MPI.Request.Testall([p[2] for p in self._pending.values()])

    def _drop_pending(self):
        # Sums of gradients that are no longer final (another backward or a
        # zero_grad follows): finish them (every rank started them) and forget.
        if self._pending:
            self._MPI.Request.Waitall([p[2] for p in self._pending.values()])
            self._pending = {}

    def _reduce(self):
        """Sum the gradients over the ranks (rank order), average the rolling
        statistics; returns the global row count."""
        MPI = self._MPI
        missing = [leaf for leaf in self._leaves if id(leaf) not in self._pending]
        self._start(missing)
        net = self.model if isinstance(self.model, Network) else None
        # this rank's rows since the last update, and (a Network) its seen rows
        rows = np.array([self._rows_here(), 0 if net is None else net.seen - self._seen],
                        np.int64)
        all_rows = np.empty((self.size, 2), np.int64)
        self.comm.Allgather(rows, all_rows)
        if net is not None:
            net.seen = self._seen = self._seen + int(all_rows[:, 1].sum())
        pending = list(self._pending.values())
        self._pending = {}
        MPI.Request.Waitall([p[2] for p in pending])
        second = []
        for leaf, parts, _ in pending:
            g = leaf._grad
            if self.reduction == "gather":
                _sum_in_order(g, parts)
                continue
            # this rank's chunk summed in rank order, then every chunk to every rank
            chunk = np.empty(parts.shape[1], g.dtype)
            _sum_in_order(chunk, parts)
            counts, displs = _chunks(g.size, self.size)
            kind = MPI.DOUBLE if g.dtype == np.float64 else MPI.FLOAT
            second.append((chunk, self.comm.Iallgatherv(
                [chunk, kind], [g, (counts, displs), kind])))
        MPI.Request.Waitall([req for _, req in second])
        for leaf in self._leaves:
            if leaf._rolling is not None:
                r = leaf._rolling
                parts = np.empty((self.size,) + r.shape, r.dtype)
                self.comm.Allgather(np.ascontiguousarray(r), parts)
                _sum_in_order(r, parts)
                r /= self.size
        return int(all_rows[:, 0].sum())

    def _global_states(self):
        # {leaf index: the whole batch's carried state} on rank 0 (empty elsewhere)
        out = {}
        for i, leaf in enumerate(self._leaves):
            if not isinstance(leaf, GRU):
                continue
            parts = self.comm.gather(None if leaf._state is None
                                     else np.asarray(leaf._state), root=0)
            if self.rank == 0 and all(p is not None for p in parts):
                out[i] = _interleave(parts)
        return out

    def _rows_here(self):
        m = self.model
        if isinstance(m, StackedGRU):
            return m.layers[0][0]._rows
        return m._rows

    def sum(self, value):
        """``value`` (a number or an array, the same shape on every rank) summed
        over the ranks in rank order: the same result on every rank; a float
        for a number."""
        shape = np.shape(value)
        a = np.array(value, dtype=np.float64).reshape(-1)
        parts = np.empty((self.size, a.size), np.float64)
        self.comm.Allgather(a, parts)
        out = np.empty_like(a)
        _sum_in_order(out, parts)
        return float(out[0]) if shape == () else out.reshape(shape)

    # -------------------------------------------------------------- training --
    @contextlib.contextmanager
    def no_sync(self):
        """Backward passes inside accumulate gradients without starting their
        gathers (for several backward passes before one update)."""
        old, self._sync = self._sync, False
        try:
            yield self
        finally:
            self._sync = old

    def forward(self, *args, **kwargs):
        """The model's ``forward`` on this rank's shard."""
        return self.model.forward(*args, **kwargs)

    __call__ = forward

    def backward(self, dy, *args, **kwargs):
        """The model's ``backward`` on this rank's shard (``start`` for a
        Network, ``dstate`` for a GRU or StackedGRU); with ``overlap`` each
        layer's gradient gather starts as soon as the layer is done."""
        self._drop_pending()
        m = self.model
        if not (self.overlap and self._sync):
            return m.backward(dy, *args, **kwargs)
        if isinstance(m, GRU):
            out = m.backward(dy, *args, **kwargs)
            self._start([m])
            return out
        with m._lock:
            return m._backward(dy, *args, after=self._start, **kwargs)

    def update(self, **hyper):
        """Sum the gradients and rows over the ranks, then the model's ``update``.

        Keyword arguments are the model's (``learning_rate=...`` for a GRU or
        StackedGRU; a Network takes its own).  ``batch`` defaults to the rows
        backpropagated on all ranks since the last update; a given ``batch``
        is the global one.  Every rank must call it.
        """
        # a refused update (e.g. a non-finite step) must leave this rank's own
        # gradients, statistics and counters, not the sums: a retry sums again
        saved = self._snapshot()
        rows = self._reduce()
        if hyper.get("batch") is None:
            hyper["batch"] = rows if rows > 0 else None
        try:
            return self.model.update(**hyper)
        except BaseException:
            self._restore(saved)
            raise

    def _snapshot(self):
        net = self.model if isinstance(self.model, Network) else None
        return ([(leaf._grad.copy(), None if leaf._rolling is None else leaf._rolling.copy())
                 for leaf in self._leaves],
                None if net is None else (net.seen, self._seen))

    def _restore(self, saved):
        arrays, seen = saved
        for leaf, (g, r) in zip(self._leaves, arrays):
            leaf._grad[...] = g
            if r is not None:
                leaf._rolling[...] = r
        if seen is not None:
            self.model.seen, self._seen = seen

    def zero_grad(self):
        """The model's ``zero_grad`` (gathers under way are finished first)."""
        self._drop_pending()
        return self.model.zero_grad()

    def train_step(self, x, targets, lengths=None):
        """A Network's ``train_step`` on this rank's shard; the update (every
        ``subdivisions`` calls) is the global one.  Returns the loss summed over
        every rank's rows (the whole batch's loss)."""
        net = self.model
        if not isinstance(net, Network):
            raise TypeError(f"train_step: expected a wrapped Network, got "
                            f"{type(net).__name__}")
        with net._lock:
            y = net.forward(x, train=True, lengths=lengths)
            start, _ = net._loss_layer()
            loss, d = net.loss(y, targets)
            net._calls += 1
            last = net._calls % net.subdivisions == 0
            ctx = contextlib.nullcontext() if last else self.no_sync()
            with ctx:
                self.backward(d.reshape(y.shape[0], y.shape[1], -1), start=start)
            if last:
                self.update()
        return self.sum(loss)

    def save(self, path, state=True):
        """Rank 0 writes the checkpoint (the model's ``save``); every rank must
        call it and every rank raises if the write failed.  With ``state`` the
        carried states are the whole batch's, the ranks' rows put back in
        place: the checkpoint is the one a single process would write, and
        wrapping a model loaded from it gives each rank its rows again."""
        err = None
        states = self._global_states() if state else {}
        if self.rank == 0:
            kept = {i: self._leaves[i]._state for i in states}
            try:
                with self.model._lock:
                    for i, st in states.items():
                        self._leaves[i]._state = st
                    try:
                        self.model.save(path, state=state)
                    finally:
                        for i, st in kept.items():
                            self._leaves[i]._state = st
            except Exception as e:      # reported on every rank below
                err = e
        msg = self.comm.bcast(None if err is None else f"{type(err).__name__}: {err}",
                              root=0)
        if err is not None:
            raise err
        if msg is not None:
            raise RuntimeError(f"save: rank 0 could not write {path}: {msg}")


def _interleave(parts):
    # The whole batch's rows from the ranks' shards: rank r's row k is row
    # r + k n (the inverse of shard_indices).
    n = len(parts)
    out = np.empty((sum(p.shape[0] for p in parts),) + parts[0].shape[1:], parts[0].dtype)
    for r, p in enumerate(parts):
        out[r::n] = p
    return out


def _chunks(m, n):
    # (counts, displacements) of m elements split into n chunks, the first
    # m % n of them one longer.
    counts = np.full(n, m // n, np.int64)
    counts[:m % n] += 1
    displs = np.zeros(n, np.int64)
    np.cumsum(counts[:-1], out=displs[1:])
    return counts, displs


def _sum_in_order(out, parts):
    # out = parts[0] + parts[1] + ... + parts[n-1], left to right: the same
    # bits on every rank and in every run.
    np.copyto(out, parts[0])
    for p in parts[1:]:
        out += p


def threads_per_rank(comm=None):
    """A default thread count for each rank: this machine's processors over the
    ranks sharing it (at least 1); None where ``OMP_NUM_THREADS`` is set."""
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    MPI = mpi()
    comm = MPI.COMM_WORLD if comm is None else comm
    local = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        n = local.Get_size()
    finally:
        local.Free()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else (os.cpu_count() or 1)
    return max(1, cpus // n)
