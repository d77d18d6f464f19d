# The layout of one layer and of one call, shared by the engine's modules.
#
# Sizes: T steps, B batch, I inputs, H outputs.  Gate blocks are [z | r | h].
# Parameters (theta, flat; the gradient likewise), as gru_cy.kernels.param_layout
# says: U (3H, I) rows [uz; ur; uh] at 0, W (3H, H) rows [wz; wr; wh] at d.oW,
# biases (6, H) rows [uz, ur, uh, wz, wr, wh] at d.ob, with BN scales (6, H)
# at d.os.  rolling: (2, 6H), the means then the variances.  The offsets are
# set once per layer by dims_layout; engine.pyx checks at import that they
# and CHUNK_ROWS agree with gru_cy.kernels.


cdef struct Dims:
    # In = I: a C field may not be called I (complex.h defines it as a macro).
    Py_ssize_t T, B, In, H
    Py_ssize_t oW, ob, os   # offsets (elements) of W, the biases and the scales in theta
    int reset_after, act, bn, use_blas, nthreads
    int c_recompute          # training, reset_after without BN, native gemm: the
                             # forward keeps no c (p.c: one step's scratch), the
                             # backward recomputes it per chunk (steps.pyx)
    int units_first          # a padded batch's limited call: 1 unit slices where
                             # they and the batch mode can both run (inference),
                             # 2 unit slices on any team (training; plan_forward)


cdef struct Ptrs:
    # parameters
    void* theta
    void* grad
    void* rolling
    # per call
    void* x        # (T, B, I)
    void* h0       # (B, H)
    void* y        # (T, B, H): h_t; h_{t-1} = h0 at t = 0, else y[t-1]
    # caches (train) or per-step scratch (inference)
    void* z        # (T, B, H)
    void* r
    void* c
    void* sq       # s (darknet) or q (reset_after), (T, B, H)
    void* xp       # (chunk_steps * B, 3H)
    void* hp       # (B, 3H)
    void* vu       # BN: (T, B, 3H) vhat of uz, ur, uh
    void* su       # BN: (T, 3H)
    void* vw       # BN: (T, B, 3H) vhat of wz, wr, wh
    void* sw       # BN: (T, 3H)
    # backward
    void* dy       # (T, B, H)
    void* dh       # (B, H): dstate in, dh0 out
    void* dx       # (T, B, I)
    void* dau      # (chunk_steps * B, 3H)
    void* daw      # (chunk_steps * B, 3H), may alias dau
    void* ds       # (B, H)
    # recurrent weights packed once per call for the per-step gemms (or NULL):
    # forward: W (reset_after) | [Wz; Wr] and Wh (darknet), as op(B) = W.T;
    # backward: W | Wh and [Wz; Wr], as op(B) = W.
    void* wpre
    void* wpre2
    # inference on a padded batch sorted by decreasing length (or NULL): the
    # rows' lengths (int64, B); the batch mode stops a chunk of rows after the
    # steps of its first (longest) row
    void* limits
    # and in unit slices, optionally (else NULL): x (above) is the caller's
    # padded x, read through xrows (int64 (T, B): the padded row of x of each
    # sorted row, -1 where it has ended), and yout (the caller's padded y) gets
    # each step's outputs at those rows, zeros at the rows of sequences ended
    # (order (B,) int64: the padded row of each sorted row)
    void* xrows
    void* yout
    void* order
    # unit slices, limits: chunk_steps * B rows of I, 64-byte aligned: each
    # chunk's running rows of x, gathered (or NULL: each step projects its own)
    void* xc
    # steps.backward_limited's other buffers (see there), or NULL
    void* lbuf


cdef enum:
    # gru_cy.kernels.CHUNK_ROWS: rows (steps x batch) per chunk of the input
    # projection and of the gradient buffers.
    CHUNK_ROWS = 512


cdef inline Py_ssize_t _running(const long long* lim, Py_ssize_t m, Py_ssize_t mfloor,
                                Py_ssize_t t) noexcept nogil:
    # A padded batch (rows sorted by decreasing length, lim: their lengths):
    # of m rows running before step t, those still running at t, at least
    # mfloor.  (_running(lim, B, 0, t): the rows running at t.)
    while m > mfloor and lim[m - 1] <= t:
        m -= 1
    return m


cdef inline void dims_layout(Dims* d) noexcept nogil:
    # The parameter offsets of d.In and d.H (gru_cy.kernels.param_layout).
    d.oW = 3 * d.H * d.In
    d.ob = d.oW + 3 * d.H * d.H
    d.os = d.ob + 6 * d.H


cdef inline Py_ssize_t chunk_steps(Py_ssize_t T, Py_ssize_t B) noexcept nogil:
    # Steps per chunk (gru_cy.kernels.chunk_steps); depends on B only.
    cdef Py_ssize_t n = CHUNK_ROWS // B
    if n < 1:
        n = 1
    return n if n < T else T
