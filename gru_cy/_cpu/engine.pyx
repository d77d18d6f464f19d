# cython: language_level=3
"""The CPU engine of one layer: its storage, caches and per-call path.

``Engine`` holds the pointers of one layer's storage (the flat ``theta``,
``grad`` and ``rolling`` arrays of ``gru_cy.kernels.param_layout``), its
training cache and its scratch.  A forward call prepares its buffers (the
per-shape scratch; the training cache), then chooses its path once
(``fused.plan_forward``, after the adaptive team has picked the team or one
thread), allocates what that path needs and runs it with the GIL released.
The paths are the fused forward (``fused.pyx``) and the per-kernel step loops
(``steps.pyx``); every path gives the same bits.

Arrays handed in are C-contiguous, of the engine's dtype and of the sizes the
layer validated (``gru_cy.layer``); this module does no validation beyond
refusing what would crash (a missing ``dy``), and nothing under ``nogil``
raises.
"""
cimport numpy as cnp
from cython.parallel cimport prange
import numpy as np
from libc.string cimport memcpy, memset

from gru_cy._cpu.cell import bn_constants
from gru_cy._cpu.fused cimport (PATH_BATCH, PATH_STEPS, PATH_UNITS, UNITS_FIRST_H, Plan,
                                batch_mode, forward_fused, plan_forward)
from gru_cy._cpu.gemm cimport GEMV_MAX_M, prepack_size
from gru_cy._cpu.gemm import aligned_empty
from gru_cy._cpu.layout cimport CHUNK_ROWS, Dims, Ptrs, chunk_steps, dims_layout
from gru_cy._cpu.steps cimport backward_limited, backward_steps, forward_steps
from gru_cy._cpu.common cimport gru_now
from gru_cy._cpu.team cimport (Tune, env_adaptive, fused_team, resolve_threads, tune_begin,
                               tune_force, tune_record, tune_report, tune_reset)
from gru_cy import kernels

cnp.import_array()


def _check_limits(limits, Py_ssize_t B):
    # forward_limited's lengths of the sorted rows (internal: gru_cy.sequences).
    if not (isinstance(limits, np.ndarray) and limits.dtype == np.int64
            and limits.flags.c_contiguous and limits.shape == (B,)
            and (B == 0 or (limits[B - 1] >= 1 and (np.diff(limits) <= 0).all()))):
        raise ValueError(f"limits: expected int64 ({B},) of lengths >= 1, decreasing")


def _check_rows(rows, yout, order, limits, Py_ssize_t T, Py_ssize_t B, Py_ssize_t H, dtype):
    # forward_limited's unit-slice arguments (internal: gru_cy.sequences):
    # a row of x and y (>= 0) exactly where the sorted row runs (t < limits).
    if not (isinstance(rows, np.ndarray) and rows.dtype == np.int64
            and rows.flags.c_contiguous and rows.size == T * B
            and (rows.size == 0 or (rows.min() >= -1 and rows.max() < T * B))
            and ((rows.reshape(T, B) >= 0)
                 == (np.arange(T)[:, None] < limits[None, :])).all()):
        raise ValueError(f"rows: expected int64 ({T * B},) of 0 .. {T * B - 1} where "
                         f"the sorted rows run (t < limits), -1 elsewhere")
    if not (isinstance(order, np.ndarray) and order.dtype == np.int64
            and order.flags.c_contiguous and order.shape == (B,)
            and (B == 0 or (order.min() >= 0 and order.max() < B))):
        raise ValueError(f"order: expected int64 ({B},) of 0 .. {B - 1}")
    if not (isinstance(yout, np.ndarray) and yout.dtype == dtype and yout.ndim == 3
            and yout.shape[0] >= T and yout.shape[1:] == (B, H)
            and yout.flags.c_contiguous and yout.flags.writeable):
        raise ValueError(f"yout: expected a writable C-contiguous {dtype} array "
                         f"(>= {T}, {B}, {H})")


def _check_layout():
    # layout.pxd must say what gru_cy.kernels says (the CUDA engine and the
    # layer's named views read kernels).
    cdef Dims d
    if CHUNK_ROWS != kernels.CHUNK_ROWS:
        raise ImportError(f"layout.pxd's CHUNK_ROWS ({CHUNK_ROWS}) must equal "
                          f"gru_cy.kernels.CHUNK_ROWS ({kernels.CHUNK_ROWS})")
    for I, H in ((3, 5), (64, 128)):
        d.In = I
        d.H = H
        dims_layout(&d)
        lay = kernels.param_layout(I, H, True)
        got = (0, d.oW, d.ob, d.os)
        want = tuple(lay[k][0] for k in ("U", "W", "biases", "scales"))
        if got != want:
            raise ImportError(f"layout.pxd's parameter offsets {got} for I={I}, H={H} "
                              f"differ from gru_cy.kernels.param_layout's {want}")
        if kernels.rolling_shape(H) != (2, 6 * H):
            raise ImportError(f"the engine keeps the rolling statistics as (2, 6H), "
                              f"gru_cy.kernels.rolling_shape says {kernels.rolling_shape(H)}")
    want = (kernels.BN_EPS, kernels.BN_MOMENTUM, kernels.BN_NEW)
    if bn_constants() != want:
        raise ImportError(f"cell.pyx's BN constants {bn_constants()} differ from "
                          f"gru_cy.kernels' {want}")


_check_layout()


cdef Py_ssize_t _c_recompute_bytes = 64 << 20
# The backward recomputes reset_after's c (no BN, native gemm) where the
# cache's c would take at least this many bytes; below it the recomputation's
# time (4-5% of config C's step, c of 24.4 MiB) is worth more than the memory
# (docs/performance.md, "Memory").


def c_recompute_threshold(nbytes=None):
    """The size of c (bytes) from which the backward recomputes it (see
    steps.pyx); ``nbytes`` sets a new one (tests).  Returns the old."""
    global _c_recompute_bytes
    old = _c_recompute_bytes
    if nbytes is not None:
        _c_recompute_bytes = nbytes
    return old


cdef inline void* _ptr(object a):
    return NULL if a is None else cnp.PyArray_DATA(<cnp.ndarray>a)


def lean_input(x, cnp.dtype dtype, Py_ssize_t inputs):
    """True when ``x`` needs no conversion: a NumPy array (T, B, inputs) with
    T, B > 0, of ``dtype`` in native byte order, C-contiguous and aligned.

    The layer's per-call check (batch-1 streaming calls it per step), in C.
    """
    return _lean(x, dtype.type_num, inputs)


cdef inline bint _lean(object x, int type_num, Py_ssize_t inputs):
    if not cnp.PyArray_CheckExact(x):
        return False
    cdef cnp.ndarray a = <cnp.ndarray>x
    return (cnp.PyArray_NDIM(a) == 3 and cnp.PyArray_DIM(a, 0) > 0
            and cnp.PyArray_DIM(a, 1) > 0 and cnp.PyArray_DIM(a, 2) == inputs
            and cnp.PyArray_TYPE(a) == type_num and cnp.PyArray_ISNOTSWAPPED(a)
            and cnp.PyArray_IS_C_CONTIGUOUS(a) and cnp.PyArray_ISALIGNED(a))


cdef void _cache_ptrs(Ptrs* p, dict cache):
    # The training cache's pointers (kernels.training_cache): h_{-1..T-1}, the
    # gates, c (where kept), s|q, BN's normalised values and deviations.
    p.h0 = _ptr(cache["hs"])
    p.z = _ptr(cache["z"])
    p.r = _ptr(cache["r"])
    p.c = _ptr(cache.get("c"))
    p.sq = _ptr(cache["sq"])
    p.vu = _ptr(cache.get("vu"))
    p.su = _ptr(cache.get("su"))
    p.vw = _ptr(cache.get("vw"))
    p.sw = _ptr(cache.get("sw"))


cdef struct Call:
    # One prepared call (Engine._prepare / _prepare_backward): what its
    # computation needs, without the GIL.
    Ptrs p
    Dims d
    Plan plan
    void* scratch            # the fused forward's
    bint train
    bint f64
    bint tuned               # timed for the adaptive team
    int mode                 # its mode (1 team, 0 one thread)
    int team                 # the team it was given
    Tune* s                  # its record
    bint limited             # backward: steps.backward_limited (else backward_steps)


_TUNED_CALLS = ("inference", "training", "backward")


cdef int _tune_index(which) except -1:
    # Engine.tune's index of a kind of call
    try:
        return _TUNED_CALLS.index(which)
    except ValueError:
        raise ValueError(f"which: expected one of {_TUNED_CALLS}, got {which!r}") from None


cdef class Engine:
    """One layer's CPU storage and caches; the lean per-call path.

    Arrays handed in are C-contiguous, of the engine's dtype and of the sizes
    the layer validated; this class does no validation.
    """
    cdef public object theta, grad, rolling
    cdef public object cache           # dict of cache arrays (train), or None
    cdef object spare                  # the last invalidated cache: its arrays are reused
    cdef object work                   # dict of inference scratch, for one shape (wp)
    cdef dict works                    # the scratch of the last shapes, by (T, B)
    cdef Py_ssize_t work_T, work_B     # its shape
    cdef object fscratch               # the fused forward's scratch (the largest asked)
    cdef Py_ssize_t fscratch_bytes     # its size
    cdef Ptrs wp                       # the scratch's pointers (h0: the zero state)
    cdef Dims d
    cdef bint f64
    cdef public Py_ssize_t cache_T, cache_B
    cdef public bint adaptive          # pick team or one thread by timing (team.pyx)
    cdef Tune tune[3]                  # inference, training forward, backward
    cdef bint cache_c                  # the cache keeps no c: the backward recomputes it
    cdef object cache_lim              # a limited training forward's (limits, rows, order)
    cdef bint hold_run                 # hold(): a run of segments (packs kept, no tuning)
    cdef Call call                     # the call being run (prepared, computed, finished)
    cdef object call_refs              # the arrays its pointers point into
    cdef object packs_in               # the fscratch array holding current packs, or None
    cdef object xc                     # the limited calls' gathered rows of x (_xc)

    def __init__(self, theta, grad, rolling, Py_ssize_t inputs, Py_ssize_t outputs,
                 bint reset_after, int act, bint bn, bint use_blas):
        self.theta = theta
        self.grad = grad
        self.rolling = rolling
        self.f64 = theta.dtype == np.float64
        memset(&self.d, 0, sizeof(Dims))
        self.d.In = inputs
        self.d.H = outputs
        dims_layout(&self.d)
        self.d.reset_after = reset_after
        self.d.act = act
        self.d.bn = bn
        self.d.use_blas = use_blas
        self.cache = None
        self.spare = None
        self.work = None
        self.works = {}
        self.fscratch = None
        self.work_T = 0
        self.work_B = 0
        self.cache_T = 0
        self.cache_B = 0
        self.adaptive = env_adaptive()
        self.hold_run = False
        self.packs_in = None
        self.xc = None
        self.cache_lim = None
        self.call_refs = None
        for i in range(3):
            tune_reset(&self.tune[i], 0, 0, True)

    def tuning(self, which="inference"):
        """The adaptive team's record for "inference" or "training" forwards or "backward".

        ``state``: "new" (the next call warms up) or "on"; ``threads``: the
        team size; ``mode``: "team" or "one thread"; ``seconds_per_step``: the
        moving averages by mode (None: not timed); ``best``: the team's
        fastest step; ``last_threads``: threads the last call was given (0:
        none tuned yet).
        """
        return tune_report(&self.tune[_tune_index(which)])

    def _tune_force(self, which, int mode):
        # Tests: the next calls run in mode (1 team, 0 one thread).
        tune_force(&self.tune[_tune_index(which)], mode)

    def invalidate(self):
        """Drop the training cache (backward then needs a new training forward).

        Its arrays are kept for the next training forward of the same shape
        (no fresh pages to fault in per training step).
        """
        if self.cache is not None:
            self.spare = self.cache
        self.cache = None
        self.cache_lim = None
        self.cache_T = 0
        self.cache_B = 0

    def hold(self, bint hold):
        """Start (True) or end (False) a run of calls of changing batch sizes
        with unchanged parameters: a padded batch's segments (``gru_cy.sequences``).

        Within it the fused batch mode packs U and W once, at its first call,
        and later calls read the same packs (the same bits); and the adaptive
        team stays out (its record is per batch size: every segment would
        start a new one and time a thread alone), so calls run on the team.
        The holder must not change the parameters meanwhile.
        """
        self.hold_run = hold
        self.packs_in = None

    def take_cache(self):
        """The training cache as an opaque record, the engine left without one.

        Its arrays are the record's alone (not kept for reuse): a padded
        batch's segments (``gru_cy.sequences``) each keep their own cache
        and hand it back with :meth:`put_cache` before their backward.
        """
        rec = (self.cache, self.cache_T, self.cache_B, self.cache_c, self.cache_lim)
        self.cache = None
        self.cache_lim = None
        self.cache_T = 0
        self.cache_B = 0
        return rec

    def put_cache(self, rec):
        """Make a record of :meth:`take_cache` the training cache again."""
        self.cache, self.cache_T, self.cache_B, self.cache_c, self.cache_lim = rec

    cdef dict _scratch(self, Py_ssize_t T, Py_ssize_t B):
        # Per-shape scratch: xp chunk (inference and training), step buffers
        # (inference), zero state; their pointers are kept in self.wp.
        cdef dict w = self.work
        if w is not None and self.work_T == T and self.work_B == B:
            return w
        # The last few shapes' scratch is kept: a padded batch's segments
        # (gru_cy.sequences) call with a few shapes in turn.
        w = self.works.pop((T, B), None)
        if w is None:
            w = kernels.scratch(np, chunk_steps(T, B) * B, B, self.d.H, self.theta.dtype)
            while len(self.works) >= 8:
                del self.works[next(iter(self.works))]
        self.works[(T, B)] = w
        self.work = w
        self.work_T = T
        self.work_B = B
        memset(&self.wp, 0, sizeof(Ptrs))
        self.wp.xp = _ptr(w["xp"])
        self.wp.hp = _ptr(w["hp"])
        self.wp.z = _ptr(w["z"])
        self.wp.r = _ptr(w["r"])
        self.wp.c = _ptr(w["c"])
        self.wp.sq = _ptr(w["sq"])
        self.wp.h0 = _ptr(w["zeros"])
        return w

    cdef void* _fused_scratch(self, Py_ssize_t nbytes) except? NULL:
        # The fused forward's scratch (batch mode's packs and step buffers),
        # kept for the next call.
        if nbytes == 0:
            return NULL
        if self.fscratch is None or self.fscratch_bytes < nbytes:
            self.fscratch = None
            self.fscratch_bytes = 0
            self.fscratch = np.empty(nbytes, np.uint8)
            self.fscratch_bytes = nbytes
        return _ptr(self.fscratch)

    def _packs(self, Py_ssize_t T, Py_ssize_t B, bint fwd):
        # Buffers for the recurrent weights packed once per call, where the
        # per-step gemms take the blocked path (B > 3) over several steps;
        # (None, None) otherwise.  Allocated per call: no lasting memory.
        cdef Py_ssize_t H = self.d.H
        cdef bint dbl = self.f64
        if self.d.use_blas or B <= 3 or T < 2:
            return (None, None)
        dt = self.theta.dtype
        if self.d.reset_after:
            n = prepack_size(dbl, 3 * H, H) if fwd else prepack_size(dbl, H, 3 * H)
            return (aligned_empty(n, dt), None)
        if fwd:
            return (aligned_empty(prepack_size(dbl, 2 * H, H), dt),
                    aligned_empty(prepack_size(dbl, H, H), dt))
        return (aligned_empty(prepack_size(dbl, H, H), dt),
                aligned_empty(prepack_size(dbl, H, 2 * H), dt))

    def forward(self, x, h0, y, bint train, int nthreads):
        """x (T, B, I), h0 (B, H) or None (zeros), y (T, B, H) written.

        Training keeps x (not copied: the caller hands a private array), h_{-1..T-1},
        z, r, c, s|q and BN's statistics for ``backward``; h0 is copied.
        ``nthreads`` < 1: OpenMP's current count.  Returns h_{T-1}, a fresh
        (B, H) array.
        """
        return self._run(<cnp.ndarray?>x, h0, y, train, nthreads)

    cdef Plan _plan(self, Py_ssize_t T, Py_ssize_t B, int nthreads, bint units_first=False):
        # The plan of an inference forward of (T, B) on nthreads (in a held
        # run: no adaptive team); units_first: a limited call's.
        cdef Dims d = self.d
        d.T = T
        d.B = B
        d.nthreads = resolve_threads(nthreads)
        d.units_first = units_first
        return plan_forward(&d, self.f64)

    def plans_batch(self, Py_ssize_t T, Py_ssize_t B, int nthreads):
        """Whether an inference forward of (T, B) on ``nthreads`` would run the
        fused batch mode (in a held run: no adaptive team)."""
        return self._plan(T, B, nthreads).path == PATH_BATCH

    def limited_mode(self, Py_ssize_t T, Py_ssize_t B, int nthreads):
        """How an inference forward of a padded batch of (T, B) on
        ``nthreads`` would run as one :meth:`forward_limited` call (in a held
        run: no adaptive team): 0 not at all (segments: on one thread those
        were faster at small sizes, config B's sizes with 8 sequences 2.8 ms
        against 4.2); 1 in batch mode, on x sorted by length; 2 in unit slices,
        which read the caller's x through ``rows`` and write its y
        (:meth:`forward_limited`).  Unit slices where both can run and H >=
        UNITS_FIRST_H: their steps run exactly the running rows, where the
        batch mode's longest chunk of rows runs its steps alone."""
        cdef Plan plan
        if B <= GEMV_MAX_M:
            return 0    # (the segments' direct gemm path: the same bits on any team)
        plan = self._plan(T, B, nthreads, True)
        if plan.path == PATH_BATCH:
            return 1
        return 2 if plan.path != PATH_STEPS and plan.nt > 1 else 0

    def plans_limited(self, Py_ssize_t T, Py_ssize_t B, int nthreads):
        """Whether a padded batch of (T, B) runs as one :meth:`forward_limited`
        call on ``nthreads`` (:meth:`limited_mode` is not 0)."""
        return self.limited_mode(T, B, nthreads) != 0

    def limited_train(self, Py_ssize_t T, Py_ssize_t B):
        """Whether a padded batch's training forward of (T, B) runs as one
        :meth:`forward_limited` call (unit slices, the rows' caches kept in
        place) and its backward as :meth:`backward_limited`: without BN or
        SciPy's BLAS, with the candidates kept, B > 3, H >= UNITS_FIRST_H (unit
        slices of fewer units lose to the segments' batch mode: (T, B, I, H) =
        (32, 128, 32, 64), 3.6 ms a step against 3.0-3.5).  Sizes only, not
        the team: the same bits on one thread and on many."""
        return (B > GEMV_MAX_M and not self.d.bn and not self.d.use_blas
                and self.d.H >= UNITS_FIRST_H
                and T * B * self.d.H * (<Py_ssize_t>self.theta.itemsize) < _c_recompute_bytes)

    def forward_limited(self, x, h0, y, limits, int nthreads, rows=None, yout=None,
                        order=None, bint train=False):
        """Inference on a padded batch whose rows are sorted by decreasing
        length: ``limits`` (B,) int64, those lengths; x (T, B, I), y (T, B, H).
        Runs where :meth:`limited_mode` is not 0: in batch mode each chunk of
        rows stops after its first row's steps, in unit slices the call after
        the longest row's; each step runs the rows still running (at least 4,
        the blocked gemm path's arithmetic: the same bits).  A row's steps
        beyond its own length may compute on any row of x; their outputs are
        the caller's to drop; y is not written where no row runs.

        Unit slices (mode 2) take ``rows``, ``yout`` and ``order`` (else all
        None): x is then the caller's padded x (its first T steps), read
        through ``rows`` (int64 (T * B,): the padded row t' * B + b of x of
        sorted row i at step t, -1 where it has ended), and each step's
        outputs also go to ``yout`` (the caller's padded y, (T', B, H) with
        T' >= T) at those rows, zeros at step t of the sequences ended by t
        (``order`` (B,) int64: the padded b of each sorted row); yout's steps
        from T on are the caller's.

        ``train`` (where :meth:`limited_train`; with ``rows``): a training
        forward on any team, x a private copy kept for :meth:`backward_limited`;
        the cache keeps each step's running rows (others are not written).

        Returns True; else computes nothing and returns False (the caller
        then runs segments).
        """
        if not self._prepare_limited(x, h0, y, limits, nthreads, rows, yout, order, train):
            return False
        with nogil:
            _forward_compute(&self.call)
        self._finish_limited(y, limits, rows, order, train)
        return True

    cdef bint _prepare_limited(self, x, h0, y, limits, int nthreads, rows, yout, order,
                               bint train) except -1:
        # forward_limited up to its computation: True prepared (self.call),
        # False declined (nothing to run).
        cdef Py_ssize_t T = cnp.PyArray_DIM(<cnp.ndarray?>x, 0), B = cnp.PyArray_DIM(x, 1)
        _check_limits(limits, B)
        if rows is not None:
            _check_rows(rows, yout, order, limits, T, B, self.d.H, y.dtype)
        if train and (rows is None or not self.limited_train(T, B)):
            return False
        self.d.units_first = 2 if train else 1
        try:
            self._prepare(<cnp.ndarray?>x, h0, y, train, nthreads)
        finally:
            self.d.units_first = 0
        if self.call.plan.path == PATH_STEPS or (rows is not None and (
                self.call.plan.path != PATH_UNITS or B <= GEMV_MAX_M)):
            self.call_refs = None
            return False
        self.call.p.limits = _ptr(limits)
        if self.call.plan.path == PATH_UNITS and B > GEMV_MAX_M:
            self.call.p.xc = _ptr(self._xc(T, B))
        if rows is not None:
            self.call.p.xrows = _ptr(rows)
            self.call.p.yout = _ptr(yout)
            self.call.p.order = _ptr(order)
        return True

    cdef object _xc(self, Py_ssize_t T, Py_ssize_t B):
        # The limited calls' buffer of a chunk's gathered rows of x
        # (chunk_steps * B rows of I), kept for the next call.
        cdef Py_ssize_t n = chunk_steps(T, B) * B * self.d.In
        if self.xc is None or self.xc.size < n:
            self.xc = aligned_empty(n, self.theta.dtype)
        return self.xc

    cdef void _finish_limited(self, y, limits, rows, order, bint train) except *:
        # After a limited forward's computation: the training cache kept.
        if train:
            self._finish(y)
            self.cache_lim = (limits, rows, order)
        self.call_refs = None

    def backward_limited(self, dy, dh, dx, int nthreads):
        """The backward of a limited training forward (:meth:`forward_limited`
        with ``train``): dy (T', B, H) and dx (T', B, I) the caller's padded
        arrays (T' >= T), read and written through the forward's rows (dx zero
        at step t of the sequences ended by t; its steps from T on are the
        caller's); dh (B, H), sorted rows: each one's final-state gradient in,
        dh0 out.  Parameter gradients accumulate into ``grad``."""
        self._prepare_backward_limited(dy, dh, dx, nthreads)
        with nogil:
            _backward_compute(&self.call)
        self.call_refs = None

    cdef int _prepare_backward_limited(self, dy, dh, dx, int nthreads) except -1:
        # backward_limited up to its computation (self.call, self.call_refs).
        cdef dict w = self.cache
        cdef Py_ssize_t T = self.cache_T, B = self.cache_B, H = self.d.H, I = self.d.In
        cdef Py_ssize_t rows
        cdef Ptrs p
        cdef Dims d
        if w is None or self.cache_lim is None:
            raise ValueError("backward_limited: expected the cache of a limited training "
                             "forward")
        dt = self.theta.dtype
        # dy, dx: (>= T, B, .); dh: (B, H) exactly
        for name, a, steps, shape in (("dy", dy, T, (B, H)), ("dx", dx, T, (B, I)),
                                      ("dh", dh, 0, (B, H))):
            if not (isinstance(a, np.ndarray) and a.dtype == dt and a.flags.c_contiguous
                    and (name == "dy" or a.flags.writeable)
                    and (a.shape == shape if name == "dh" else
                         a.ndim == 3 and a.shape[0] >= steps and a.shape[1:] == shape)):
                raise ValueError(f"{name}: expected a C-contiguous {dt} array (..., "
                                 f"{shape[0]}, {shape[1]}){'' if name == 'dy' else ', writable'}"
                                 f", got {type(a).__name__} {getattr(a, 'shape', None)}")
        limits, xrows, order = self.cache_lim
        memset(&p, 0, sizeof(Ptrs))
        d = self.d
        d.T = T
        d.B = B
        d.nthreads = resolve_threads(nthreads)
        d.c_recompute = 0
        rows = chunk_steps(T, B) * B
        refs = self._backward_ptrs(&p, T, B, dy, dh, dx)
        lbuf = aligned_empty(rows * (2 * H + I) + B * H, dt)
        xc = self._xc(T, B)
        p.limits = _ptr(limits)
        p.xrows = _ptr(xrows)
        p.order = _ptr(order)
        p.xc = _ptr(xc)
        p.lbuf = _ptr(lbuf)
        self.call.p = p
        self.call.d = d
        self.call.f64 = self.f64
        self.call.tuned = False
        self.call.limited = True
        self.call_refs = (refs, lbuf, xc, dy, dh, dx, w)
        return 0

    def infer_lean(self, x, state, int nthreads):
        """The layer's per-call path for inference from the carried state.

        Where ``x`` needs no conversion (see ``lean_input``) and ``state`` is
        None or (B, H): runs the forward from ``state`` (None: zeros) and
        returns ``(y, h_{T-1})``, two fresh arrays.  Else None: the caller
        takes its general path (which converts ``x`` or raises).
        """
        cdef cnp.ndarray xa
        cdef cnp.npy_intp dims[3]
        if not _lean(x, cnp.NPY_DOUBLE if self.f64 else cnp.NPY_FLOAT, self.d.In):
            return None
        xa = <cnp.ndarray>x
        dims[0] = cnp.PyArray_DIM(xa, 0)
        dims[1] = cnp.PyArray_DIM(xa, 1)
        dims[2] = self.d.H
        if state is not None and cnp.PyArray_DIM(<cnp.ndarray?>state, 0) != dims[1]:
            return None
        y = cnp.PyArray_EMPTY(3, dims, cnp.NPY_DOUBLE if self.f64 else cnp.NPY_FLOAT, 0)
        return y, self._run(xa, state, y, False, nthreads)

    cdef object _run(self, cnp.ndarray xa, h0, y, bint train, int nthreads):
        self._prepare(xa, h0, y, train, nthreads)
        with nogil:
            _forward_compute(&self.call)
        return self._finish(y)

    cdef int _prepare(self, cnp.ndarray xa, h0, y, bint train, int nthreads) except -1:
        # A forward call up to its computation (self.call, self.call_refs):
        # buffers, pointers, the adaptive team's mode and the plan.
        cdef Py_ssize_t T = cnp.PyArray_DIM(xa, 0), B = cnp.PyArray_DIM(xa, 1)
        cdef Py_ssize_t H = self.d.H
        cdef Ptrs p
        cdef Dims d
        cdef Call* c = &self.call
        cdef dict cache = None
        if self.cache is not None:
            self.invalidate()
        self._scratch(T, B)
        self.d.T = T
        self.d.B = B
        self.d.nthreads = resolve_threads(nthreads)
        p = self.wp
        p.theta = _ptr(self.theta)
        p.rolling = _ptr(self.rolling)
        p.x = cnp.PyArray_DATA(xa)
        self.d.c_recompute = train and self.d.reset_after and not self.d.bn \
            and not self.d.use_blas \
            and T * B * H * (<Py_ssize_t>self.theta.itemsize) >= _c_recompute_bytes
        if train:
            # without c where the backward recomputes it (steps.pyx)
            cache = kernels.training_cache(np, xa, h0, H, self.d.bn, self.theta.dtype,
                                           not self.d.c_recompute, self.spare)
            self.spare = None
            hs = cache["hs"]
            _cache_ptrs(&p, cache)
            p.y = <char*>p.h0 + B * H * (<Py_ssize_t>hs.itemsize)
            if "c" not in cache:
                p.c = self.wp.c      # one step's scratch (the scratch's c)
        else:
            if h0 is not None:
                p.h0 = _ptr(h0)
            p.y = _ptr(y)
        # The path, chosen once: the adaptive team first picks the team or one
        # thread (fused forward only: the batch mode's threads wait for no one,
        # so it times one thread only once the team is slow), then the plan.
        d = self.d
        c.train = train
        c.f64 = self.f64
        c.s = &self.tune[1 if train else 0]
        c.mode = 1
        c.tuned = (not d.bn and not d.use_blas and self.adaptive and not self.hold_run
                   and d.nthreads > 1 and fused_team(&d, 1 << 30) > 1)
        if c.tuned:
            c.mode = tune_begin(c.s, &d, not batch_mode(&d, self.f64))
        c.plan = plan_forward(&d, self.f64)
        c.scratch = NULL
        packs = None
        if c.plan.path == PATH_STEPS:
            packs = self._packs(T, B, True)
            p.wpre = _ptr(packs[0])
            p.wpre2 = _ptr(packs[1])
        else:
            c.scratch = self._fused_scratch(c.plan.scratch_bytes)
            if c.plan.path == PATH_BATCH and self.hold_run:
                c.plan.packs_ready = self.packs_in is self.fscratch
                self.packs_in = self.fscratch
        c.p = p
        c.d = d
        # What the call's pointers point into and nothing else holds: the
        # cache and the packs (x, h0 and y are the preparer's arguments, held
        # by its caller until the computation ends; batch-1 streaming makes no
        # tuple at all).
        self.call_refs = None if cache is None and packs is None else (cache, packs)
        return 0

    cdef object _finish(self, y):
        # After the computation: the training cache kept, the final state.
        cdef Call* c = &self.call
        cdef Py_ssize_t T = c.d.T, B = c.d.B, H = c.d.H
        cache = None if self.call_refs is None else self.call_refs[0]
        self.call_refs = None
        if c.train:
            y[...] = cache["hs"][1:]
            self.cache_c = self.d.c_recompute
            self.d.c_recompute = 0
            self.cache = cache
            self.cache_T = T
            self.cache_B = B
        # The final state h_{T-1}, a fresh (B, H) array (the layer carries it).
        cdef cnp.npy_intp dims[2]
        dims[0] = B
        dims[1] = H
        cdef size_t es = 8 if self.f64 else 4
        state = cnp.PyArray_EMPTY(2, dims, cnp.NPY_DOUBLE if self.f64 else cnp.NPY_FLOAT, 0)
        memcpy(cnp.PyArray_DATA(<cnp.ndarray>state), <char*>c.p.y + (T - 1) * B * H * es,
               B * H * es)
        return state

    def backward(self, dy, dstate, dx, dh0, int nthreads):
        """dy (T, B, H), dstate (B, H) or None; writes dx (T, B, I), dh0 (B, H).

        Parameter gradients accumulate into ``grad``.  The gradient buffers
        hold one chunk of steps; for the darknet variant without BN the u and
        w sublayers' gradients are equal and share one buffer.
        """
        self._prepare_backward(dy, dstate, dx, dh0, nthreads)
        with nogil:
            _backward_compute(&self.call)
        self.call_refs = None

    cdef tuple _backward_ptrs(self, Ptrs* p, Py_ssize_t T, Py_ssize_t B, dy, dh, dx):
        # A backward's pointers (p zeroed): parameters, the cache, dy, dh, dx,
        # its chunk buffers and W's packs, which it returns (kept alive).
        cdef Py_ssize_t rows = chunk_steps(T, B) * B
        bufs = kernels.backward_buffers(np, rows, B, self.d.H, self.theta.dtype,
                                        not self.d.reset_after and not self.d.bn)
        packs = self._packs(T, B, False)
        p.theta = _ptr(self.theta)
        p.grad = _ptr(self.grad)
        p.rolling = _ptr(self.rolling)
        p.x = _ptr(self.cache["x"])
        _cache_ptrs(p, self.cache)
        p.dy = _ptr(dy)
        p.dh = _ptr(dh)
        p.dx = _ptr(dx)
        p.dau = _ptr(bufs["dau"])
        p.daw = _ptr(bufs["daw"])
        p.ds = _ptr(bufs["ds"])
        p.wpre = _ptr(packs[0])
        p.wpre2 = _ptr(packs[1])
        return bufs, packs

    cdef int _prepare_backward(self, dy, dstate, dx, dh0, int nthreads) except -1:
        # A backward call up to its computation (self.call, self.call_refs).
        cdef dict w = self.cache
        cdef Py_ssize_t T = self.cache_T, B = self.cache_B, H = self.d.H
        cdef Ptrs p
        cdef Call* c = &self.call
        if w is None or dy is None:
            raise ValueError("backward: expected dy and a training cache, got "
                             f"dy={type(dy).__name__}, cache={'none' if w is None else 'kept'}")
        if self.cache_lim is not None:
            raise ValueError("backward: the cache is a limited training forward's: "
                             "expected backward_limited")
        memset(&p, 0, sizeof(Ptrs))
        self.d.T = T
        self.d.B = B
        self.d.nthreads = resolve_threads(nthreads)
        self.d.c_recompute = self.cache_c
        if dstate is None:
            dh0[...] = 0
        else:
            dh0[...] = dstate
        rows = chunk_steps(T, B) * B
        bufs, packs = self._backward_ptrs(&p, T, B, dy, dh0, dx)
        cbuf = np.empty((rows, H), self.theta.dtype) if self.cache_c else None
        if self.cache_c:
            p.c = _ptr(cbuf)
        # The backward, on the team or one thread (team.pyx; its parallel
        # regions meet at barriers as the fused forward's threads do).  Not
        # with SciPy's BLAS: its threads are not the engine's to choose.
        c.p = p
        c.d = self.d
        c.f64 = self.f64
        c.s = &self.tune[2]
        c.mode = 1
        c.team = c.d.nthreads
        c.tuned = (self.adaptive and not self.hold_run and c.d.nthreads > 1
                   and not c.d.use_blas)
        c.limited = False
        if c.tuned:
            c.mode = tune_begin(c.s, &c.d, True)
        self.call_refs = (bufs, cbuf, packs, dy, dx, dh0, w)
        return 0


cdef void _forward_compute(Call* c) noexcept nogil:
    # The computation of a prepared forward call.
    cdef double t0
    if c.plan.path == PATH_STEPS:
        if c.f64:
            forward_steps(<double*>c.p.theta, c.d, c.p, c.train)
        else:
            forward_steps(<float*>c.p.theta, c.d, c.p, c.train)
    else:
        t0 = gru_now() if c.tuned else 0     # (a clock read: 25 ns of a streaming step)
        forward_fused(c.p.theta, c.d, c.p, c.train, c.f64, &c.plan, c.scratch)
        if c.tuned:
            tune_record(c.s, c.mode, gru_now() - t0, c.d.T, c.plan.nt)


cdef void _backward_compute(Call* c) noexcept nogil:
    # The computation of a prepared backward call.
    cdef double t0 = gru_now()
    if c.limited:
        if c.f64:
            backward_limited(<double*>c.p.theta, c.d, c.p)
        else:
            backward_limited(<float*>c.p.theta, c.d, c.p)
    elif c.f64:
        backward_steps(<double*>c.p.theta, c.d, c.p)
    else:
        backward_steps(<float*>c.p.theta, c.d, c.p)
    if c.tuned:
        tune_record(c.s, c.mode, gru_now() - t0, c.d.T, c.team)


cdef void _pair(Call* a, Call* b, bint backward) noexcept nogil:
    # Two prepared calls at once, one thread each.
    cdef int i
    for i in prange(2, num_threads=2, schedule="static", chunksize=1):
        if backward:
            _backward_compute(a if i == 0 else b)
        else:
            _forward_compute(a if i == 0 else b)


def forward_pair(Engine a, xa, ha, ya, Engine b, xb, hb, yb, bint train):
    """The forward calls of two engines (the two directions of a layer) at
    once, on one thread each: ``(a.forward(xa, ha, ya, train, 1),
    b.forward(xb, hb, yb, train, 1))`` with the same bits."""
    a._prepare(<cnp.ndarray?>xa, ha, ya, train, 1)
    b._prepare(<cnp.ndarray?>xb, hb, yb, train, 1)
    with nogil:
        _pair(&a.call, &b.call, False)
    return a._finish(ya), b._finish(yb)


def backward_pair(Engine a, dya, dsa, dxa, dha, Engine b, dyb, dsb, dxb, dhb):
    """The backward calls of two engines at once, on one thread each, as
    ``a.backward(dya, dsa, dxa, dha, 1)`` and ``b.backward(...)``."""
    a._prepare_backward(dya, dsa, dxa, dha, 1)
    b._prepare_backward(dyb, dsb, dxb, dhb, 1)
    with nogil:
        _pair(&a.call, &b.call, True)
    a.call_refs = None
    b.call_refs = None


def forward_limited_pair(Engine a, xa, ha, ya, la, ra, ya_out, oa,
                         Engine b, xb, hb, yb, lb, rb, yb_out, ob, bint train):
    """Two engines' :meth:`Engine.forward_limited` calls (the two directions
    of a layer; arguments as there, after ``nthreads``: rows, yout, order) at
    once, one thread each, with the same bits; False where either declines
    (then neither runs)."""
    if not a._prepare_limited(xa, ha, ya, la, 1, ra, ya_out, oa, train):
        return False
    try:
        if not b._prepare_limited(xb, hb, yb, lb, 1, rb, yb_out, ob, train):
            a.call_refs = None
            return False
    except BaseException:
        a.call_refs = None          # (a's prepared call holds its arrays)
        raise
    with nogil:
        _pair(&a.call, &b.call, False)
    a._finish_limited(ya, la, ra, oa, train)
    b._finish_limited(yb, lb, rb, ob, train)
    return True


def backward_limited_pair(Engine a, dya, dha, dxa, Engine b, dyb, dhb, dxb):
    """Two engines' :meth:`Engine.backward_limited` calls at once, one thread
    each, with the same bits."""
    a._prepare_backward_limited(dya, dha, dxa, 1)
    try:
        b._prepare_backward_limited(dyb, dhb, dxb, 1)
    except BaseException:
        a.call_refs = None          # (a's prepared call holds its buffers)
        raise
    with nogil:
        _pair(&a.call, &b.call, True)
    a.call_refs = None
    b.call_refs = None
