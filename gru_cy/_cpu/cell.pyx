# cython: language_level=3
"""The GRU cell's kernels: gates, candidate and state, BN, bias and column sums.

Tier 1: ``cdef ... noexcept nogil`` kernels on raw pointers, one per name in
``gru_cy.kernels.KERNELS`` (same argument order as the CUDA twins, plus a
trailing ``nthreads``), declared in ``cell.pxd`` for the drivers
(``steps.pyx``).  Each loops over independent rows (or columns) with
``prange`` when the work is worth a team (``common.team``); a row's arithmetic
is the same on any thread, so results do not depend on ``nthreads``.  The row
bodies are C (``rows.h``; ``cell.pxd``'s row functions).

Tier 2: ``py_<name>`` wrappers for the tests (the CUDA emulation compares every
kernel against these): typed memoryviews of one float type, flat and
C-contiguous (a view starting at an offset stands for a pointer into a
buffer), ``None`` for NULL, then the sizes, scalars and ``nthreads``.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport sqrt
cimport numpy as cnp
import numpy as np

from gru_cy._cpu.common cimport team

cnp.import_array()

cdef double BN_EPS = 1e-6          # gru_cy.kernels' BN_EPS, BN_MOMENTUM, BN_NEW
cdef double BN_MOMENTUM = 0.99     # (engine.pyx checks at import that they agree)
cdef double BN_NEW = 0.01


# ---------------------------------------------------------------- forward ---

cdef void bias_forward(floating* Y, const floating* bias, Py_ssize_t R, Py_ssize_t C,
                       Py_ssize_t ldy, int nthreads) noexcept nogil:
    # Y (R, C; ld ldy) += bias (C,) on every row.
    cdef Py_ssize_t i, j
    cdef int nt = team(R, R * C, nthreads)
    if nt == 1:
        for i in range(R):
            for j in range(C):
                Y[i * ldy + j] += bias[j]
    else:
        for i in prange(R, nogil=True, schedule="static", num_threads=nt):
            for j in range(C):
                Y[i * ldy + j] += bias[j]


cdef void bn_forward_train(floating* Y, floating* vhat, floating* sd,
                           floating* rolling_mean, floating* rolling_variance,
                           const floating* scales, const floating* biases,
                           Py_ssize_t G, Py_ssize_t B, Py_ssize_t C, Py_ssize_t ld,
                           int nthreads) noexcept nogil:
    # Y, vhat: G groups of B rows, element (g, b, c) at [(g*B + b)*ld + c];
    # sd: [g*ld + c].  Darknet's training BN over the B rows of each group.
    cdef Py_ssize_t c
    cdef int nt = team(C, G * B * C, nthreads)
    if nt == 1:
        for c in range(C):
            _bn_train_column(Y, vhat, sd, rolling_mean, rolling_variance, scales,
                             biases, G, B, ld, c)
    else:
        for c in prange(C, nogil=True, schedule="static", num_threads=nt):
            _bn_train_column(Y, vhat, sd, rolling_mean, rolling_variance, scales,
                             biases, G, B, ld, c)


cdef inline void _bn_train_column(floating* Y, floating* vhat, floating* sd,
                                  floating* rolling_mean, floating* rolling_variance,
                                  const floating* scales, const floating* biases,
                                  Py_ssize_t G, Py_ssize_t B, Py_ssize_t ld,
                                  Py_ssize_t c) noexcept nogil:
    cdef Py_ssize_t g, b, k
    cdef double mu, var, dev, d
    cdef floating v
    for g in range(G):
        mu = 0
        for b in range(B):
            mu += Y[(g * B + b) * ld + c]
        mu /= B
        var = 0
        for b in range(B):
            dev = Y[(g * B + b) * ld + c] - mu
            var += dev * dev
        var /= (B - 1)
        d = sqrt(var) + BN_EPS
        for b in range(B):
            k = (g * B + b) * ld + c
            v = <floating>((Y[k] - mu) / d)
            vhat[k] = v
            Y[k] = scales[c] * v + biases[c]
        sd[g * ld + c] = <floating>sqrt(var)
        rolling_mean[c] = <floating>(BN_MOMENTUM * rolling_mean[c] + BN_NEW * mu)
        rolling_variance[c] = <floating>(BN_MOMENTUM * rolling_variance[c] + BN_NEW * var)


cdef void bn_forward_infer(floating* Y, const floating* rolling_mean,
                           const floating* rolling_variance, const floating* scales,
                           const floating* biases, Py_ssize_t R, Py_ssize_t C,
                           Py_ssize_t ldy, int nthreads) noexcept nogil:
    # Y (R, C; ld ldy) = scales*(Y - rolling_mean)/(sqrt(rolling_variance) + eps) + biases.
    cdef Py_ssize_t i, j
    cdef int nt = team(R, R * C, nthreads)
    if nt == 1:
        for i in range(R):
            for j in range(C):
                Y[i * ldy + j] = <floating>(scales[j] * (Y[i * ldy + j] - rolling_mean[j])
                                            / (sqrt(rolling_variance[j]) + BN_EPS) + biases[j])
    else:
        for i in prange(R, nogil=True, schedule="static", num_threads=nt):
            for j in range(C):
                Y[i * ldy + j] = <floating>(scales[j] * (Y[i * ldy + j] - rolling_mean[j])
                                            / (sqrt(rolling_variance[j]) + BN_EPS) + biases[j])


cdef void gru_darknet_gates_forward(floating* z, floating* r, floating* s,
                                    const floating* xp, const floating* hp,
                                    const floating* hprev, Py_ssize_t B, Py_ssize_t H,
                                    Py_ssize_t ldx, Py_ssize_t ldh,
                                    int nthreads) noexcept nogil:
    # z = sig(xp_z + hp_z); r = sig(xp_r + hp_r); s = r * hprev.  All (B, H).
    cdef Py_ssize_t b
    cdef int nt = team(B, B * H, nthreads)
    if nt == 1:
        for b in range(B):
            _darknet_gates_row(z + b * H, r + b * H, s + b * H, xp + b * ldx,
                               hp + b * ldh, hprev + b * H, H, H)
    else:
        for b in prange(B, nogil=True, schedule="static", num_threads=nt):
            _darknet_gates_row(z + b * H, r + b * H, s + b * H, xp + b * ldx,
                               hp + b * ldh, hprev + b * H, H, H)


cdef void gru_darknet_state_forward(floating* c, floating* h, const floating* xp,
                                    const floating* hp, const floating* z,
                                    const floating* hprev, Py_ssize_t B, Py_ssize_t H,
                                    Py_ssize_t ldx, Py_ssize_t ldh, int act,
                                    int nthreads) noexcept nogil:
    # c = act(xp_h + hp_h); h = z*hprev + (1 - z)*c.  xp, hp point at column 2H.
    cdef Py_ssize_t b
    cdef int nt = team(B, B * H, nthreads)
    if nt == 1:
        for b in range(B):
            _darknet_state_row(c + b * H, h + b * H, xp + b * ldx, hp + b * ldh,
                               z + b * H, hprev + b * H, H, act)
    else:
        for b in prange(B, nogil=True, schedule="static", num_threads=nt):
            _darknet_state_row(c + b * H, h + b * H, xp + b * ldx, hp + b * ldh,
                               z + b * H, hprev + b * H, H, act)


cdef void gru_reset_after_forward(floating* z, floating* r, floating* q, floating* c,
                                  floating* h, const floating* xp, const floating* hp,
                                  const floating* hprev, Py_ssize_t B, Py_ssize_t H,
                                  Py_ssize_t ldx, Py_ssize_t ldh, int act,
                                  int nthreads) noexcept nogil:
    # z, r as above; q = hp_h; c = act(xp_h + r*q); h = z*hprev + (1 - z)*c.
    cdef Py_ssize_t b
    cdef int nt = team(B, B * H, nthreads)
    if nt == 1:
        for b in range(B):
            _reset_after_row(z + b * H, r + b * H, (q + b * H) if q != NULL else NULL,
                             c + b * H, h + b * H, xp + b * ldx, hp + b * ldh,
                             hprev + b * H, H, H, act)
    else:
        for b in prange(B, nogil=True, schedule="static", num_threads=nt):
            _reset_after_row(z + b * H, r + b * H, (q + b * H) if q != NULL else NULL,
                             c + b * H, h + b * H, xp + b * ldx, hp + b * ldh,
                             hprev + b * H, H, H, act)


# --------------------------------------------------------------- backward ---

cdef inline void _darknet_gates_bwd_row(floating* dau, floating* daw, floating* dh,
                                        const floating* dy, const floating* z,
                                        const floating* c, const floating* hprev,
                                        Py_ssize_t H, int act) noexcept nogil:
    # Differentiates h = z*hprev + (1 - z)*c and c = act(uh(x) + wh(s)) (rows.h).
    if floating is float:
        gru_darknet_gates_bwd_row_f(dau, daw, dh, dy, z, c, hprev, H, act)
    else:
        gru_darknet_gates_bwd_row_d(dau, daw, dh, dy, z, c, hprev, H, act)


cdef void gru_darknet_gates_backward(floating* dau, floating* daw, floating* dh,
                                     const floating* dy, const floating* z,
                                     const floating* c, const floating* hprev,
                                     Py_ssize_t B, Py_ssize_t H, Py_ssize_t ldd, int act,
                                     int nthreads) noexcept nogil:
    # g = dy + dh; dau/daw columns [0:H] = daz, [2H:3H] = dah; dh = g*z.
    cdef Py_ssize_t b
    cdef int nt = team(B, B * H, nthreads)
    if nt == 1:
        for b in range(B):
            _darknet_gates_bwd_row(dau + b * ldd, daw + b * ldd, dh + b * H,
                                   dy + b * H,
                                   z + b * H, c + b * H, hprev + b * H, H, act)
    else:
        for b in prange(B, nogil=True, schedule="static", num_threads=nt):
            _darknet_gates_bwd_row(dau + b * ldd, daw + b * ldd, dh + b * H,
                                   dy + b * H,
                                   z + b * H, c + b * H, hprev + b * H, H, act)


cdef inline void _darknet_reset_bwd_row(floating* dau, floating* daw, floating* dh,
                                        const floating* ds, const floating* r,
                                        const floating* hprev, Py_ssize_t H) noexcept nogil:
    # Differentiates s = r*hprev and r = sig(ur(x) + wr(hprev)) (rows.h).
    if floating is float:
        gru_darknet_reset_bwd_row_f(dau, daw, dh, ds, r, hprev, H)
    else:
        gru_darknet_reset_bwd_row_d(dau, daw, dh, ds, r, hprev, H)


cdef void gru_darknet_reset_backward(floating* dau, floating* daw, floating* dh,
                                     const floating* ds, const floating* r,
                                     const floating* hprev, Py_ssize_t B, Py_ssize_t H,
                                     Py_ssize_t ldd, int nthreads) noexcept nogil:
    # dau/daw point at column H: dar = ds*hprev*r*(1 - r); dh += ds*r.
    cdef Py_ssize_t b
    cdef int nt = team(B, B * H, nthreads)
    if nt == 1:
        for b in range(B):
            _darknet_reset_bwd_row(dau + b * ldd, daw + b * ldd, dh + b * H,
                                   ds + b * H, r + b * H, hprev + b * H, H)
    else:
        for b in prange(B, nogil=True, schedule="static", num_threads=nt):
            _darknet_reset_bwd_row(dau + b * ldd, daw + b * ldd, dh + b * H,
                                   ds + b * H, r + b * H, hprev + b * H, H)


cdef inline void _reset_after_bwd_row(floating* dau, floating* daw, floating* dh,
                                      const floating* dy, const floating* z,
                                      const floating* r, const floating* q,
                                      const floating* c, const floating* hprev,
                                      Py_ssize_t H, int act) noexcept nogil:
    # Differentiates c = act(uh(x) + r*q), q = wh(hprev), and the z/r gates (rows.h).
    if floating is float:
        gru_reset_after_bwd_row_f(dau, daw, dh, dy, z, r, q, c, hprev, H, act)
    else:
        gru_reset_after_bwd_row_d(dau, daw, dh, dy, z, r, q, c, hprev, H, act)


cdef void gru_reset_after_backward(floating* dau, floating* daw, floating* dh,
                                   const floating* dy, const floating* z,
                                   const floating* r, const floating* q,
                                   const floating* c, const floating* hprev,
                                   Py_ssize_t B, Py_ssize_t H, Py_ssize_t ldd, int act,
                                   int nthreads) noexcept nogil:
    # dau = [daz|dar|dah], daw = [daz|dar|dq], dh = g*z with g = dy + dh.
    cdef Py_ssize_t b
    cdef int nt = team(B, B * H, nthreads)
    if nt == 1:
        for b in range(B):
            _reset_after_bwd_row(dau + b * ldd, daw + b * ldd, dh + b * H,
                                 dy + b * H, z + b * H,
                                 r + b * H, q + b * H, c + b * H, hprev + b * H, H, act)
    else:
        for b in prange(B, nogil=True, schedule="static", num_threads=nt):
            _reset_after_bwd_row(dau + b * ldd, daw + b * ldd, dh + b * H,
                                 dy + b * H, z + b * H,
                                 r + b * H, q + b * H, c + b * H, hprev + b * H, H, act)


cdef inline void _bn_bwd_column(floating* dY, floating* dscales, floating* dbiases,
                                const floating* vhat, const floating* sd,
                                const floating* scales, Py_ssize_t G, Py_ssize_t B,
                                Py_ssize_t ld, Py_ssize_t c) noexcept nogil:
    # Differentiates out = scales*vhat + biases, vhat = (v - mu)/(sd + eps).
    cdef Py_ssize_t g, b, k
    cdef double gsum, gvh, mean_gv, sum_gv_vh, d, s, gv
    for g in range(G):
        gsum = 0
        gvh = 0
        for b in range(B):
            k = (g * B + b) * ld + c
            gsum += dY[k]
            gvh += dY[k] * vhat[k]
        dscales[c] += <floating>gvh
        dbiases[c] += <floating>gsum
        mean_gv = scales[c] * gsum / B
        sum_gv_vh = scales[c] * gvh
        s = sd[g * ld + c]
        d = s + BN_EPS
        for b in range(B):
            k = (g * B + b) * ld + c
            gv = <double>scales[c] * dY[k]
            if s > 0:
                dY[k] = <floating>((gv - mean_gv) / d - vhat[k] * sum_gv_vh / ((B - 1) * s))
            else:
                dY[k] = <floating>((gv - mean_gv) / d)


cdef void bn_backward(floating* dY, floating* dscales, floating* dbiases,
                      const floating* vhat, const floating* sd, const floating* scales,
                      Py_ssize_t G, Py_ssize_t B, Py_ssize_t C, Py_ssize_t ld,
                      int nthreads) noexcept nogil:
    # dY: dL/d(out) in, dL/dv out; dscales, dbiases (C,) +=.  Layout as bn_forward_train.
    cdef Py_ssize_t c
    cdef int nt = team(C, G * B * C, nthreads)
    if nt == 1:
        for c in range(C):
            _bn_bwd_column(dY, dscales, dbiases, vhat, sd, scales, G, B, ld, c)
    else:
        for c in prange(C, nogil=True, schedule="static", num_threads=nt):
            _bn_bwd_column(dY, dscales, dbiases, vhat, sd, scales, G, B, ld, c)


cdef enum:
    COL_BLOCK = 64


cdef void col_sum(floating* out, const floating* A, Py_ssize_t R, Py_ssize_t C,
                  Py_ssize_t lda, int nthreads) noexcept nogil:
    # out (C,) += column sums of A (R, C; ld lda), rows ascending.
    cdef Py_ssize_t nb = (C + COL_BLOCK - 1) // COL_BLOCK, blk
    cdef int nt = team(nb, R * C, nthreads)
    if nt == 1:
        for blk in range(nb):
            _col_sum_block(out, A, R, C, lda, blk)
    else:
        for blk in prange(nb, nogil=True, schedule="static", num_threads=nt):
            _col_sum_block(out, A, R, C, lda, blk)


cdef inline void _col_sum_block(floating* out, const floating* A, Py_ssize_t R,
                                Py_ssize_t C, Py_ssize_t lda, Py_ssize_t blk) noexcept nogil:
    cdef Py_ssize_t i, j
    cdef Py_ssize_t j0 = blk * COL_BLOCK
    cdef Py_ssize_t j1 = j0 + COL_BLOCK if j0 + COL_BLOCK < C else C
    for i in range(R):
        for j in range(j0, j1):
            out[j] += A[i * lda + j]


# ------------------------------------------------------ test-tier wrappers ---
# py_<name>(arrays..., sizes..., scalars..., nthreads): the kernel on the data
# of flat C-contiguous arrays of one float type (None = NULL where the contract
# allows it); the kernel's inputs may be read-only.

cdef inline floating* _p(floating[::1] a) noexcept:
    return NULL if a is None else &a[0]


cdef inline const floating* _c(const floating[::1] a) noexcept:
    return NULL if a is None else &a[0]


def bn_constants():
    """(BN_EPS, BN_MOMENTUM, BN_NEW) as the kernels use them (engine.pyx checks them)."""
    return BN_EPS, BN_MOMENTUM, BN_NEW


def py_bias_forward(floating[::1] Y, const floating[::1] bias, Py_ssize_t R, Py_ssize_t C,
                    Py_ssize_t ldy, int nthreads=1):
    bias_forward(_p(Y), _c(bias), R, C, ldy, nthreads)


def py_bn_forward_train(floating[::1] Y, floating[::1] vhat, floating[::1] sd,
                        floating[::1] rolling_mean, floating[::1] rolling_variance,
                        const floating[::1] scales, const floating[::1] biases, Py_ssize_t G,
                        Py_ssize_t B, Py_ssize_t C, Py_ssize_t ld, int nthreads=1):
    bn_forward_train(_p(Y), _p(vhat), _p(sd), _p(rolling_mean), _p(rolling_variance),
                     _c(scales), _c(biases), G, B, C, ld, nthreads)


def py_bn_forward_infer(floating[::1] Y, const floating[::1] rolling_mean,
                        const floating[::1] rolling_variance, const floating[::1] scales,
                        const floating[::1] biases, Py_ssize_t R, Py_ssize_t C,
                        Py_ssize_t ldy, int nthreads=1):
    bn_forward_infer(_p(Y), _c(rolling_mean), _c(rolling_variance), _c(scales), _c(biases),
                     R, C, ldy, nthreads)


def py_gru_darknet_gates_forward(floating[::1] z, floating[::1] r, floating[::1] s,
                                 const floating[::1] xp, const floating[::1] hp,
                                 const floating[::1] hprev, Py_ssize_t B, Py_ssize_t H,
                                 Py_ssize_t ldx, Py_ssize_t ldh, int nthreads=1):
    gru_darknet_gates_forward(_p(z), _p(r), _p(s), _c(xp), _c(hp), _c(hprev), B, H, ldx,
                              ldh, nthreads)


def py_gru_darknet_state_forward(floating[::1] c, floating[::1] h, const floating[::1] xp,
                                 const floating[::1] hp, const floating[::1] z,
                                 const floating[::1] hprev, Py_ssize_t B, Py_ssize_t H,
                                 Py_ssize_t ldx, Py_ssize_t ldh, int act, int nthreads=1):
    gru_darknet_state_forward(_p(c), _p(h), _c(xp), _c(hp), _c(z), _c(hprev), B, H, ldx,
                              ldh, act, nthreads)


def py_gru_reset_after_forward(floating[::1] z, floating[::1] r, floating[::1] q,
                               floating[::1] c, floating[::1] h, const floating[::1] xp,
                               const floating[::1] hp, const floating[::1] hprev,
                               Py_ssize_t B, Py_ssize_t H, Py_ssize_t ldx, Py_ssize_t ldh,
                               int act, int nthreads=1):
    gru_reset_after_forward(_p(z), _p(r), _p(q), _p(c), _p(h), _c(xp), _c(hp), _c(hprev),
                            B, H, ldx, ldh, act, nthreads)


def py_gru_darknet_gates_backward(floating[::1] dau, floating[::1] daw, floating[::1] dh,
                                  const floating[::1] dy not None, const floating[::1] z,
                                  const floating[::1] c, const floating[::1] hprev,
                                  Py_ssize_t B, Py_ssize_t H, Py_ssize_t ldd, int act,
                                  int nthreads=1):
    gru_darknet_gates_backward(_p(dau), _p(daw), _p(dh), _c(dy), _c(z), _c(c), _c(hprev),
                               B, H, ldd, act, nthreads)


def py_gru_darknet_reset_backward(floating[::1] dau, floating[::1] daw, floating[::1] dh,
                                  const floating[::1] ds, const floating[::1] r,
                                  const floating[::1] hprev, Py_ssize_t B, Py_ssize_t H,
                                  Py_ssize_t ldd, int nthreads=1):
    gru_darknet_reset_backward(_p(dau), _p(daw), _p(dh), _c(ds), _c(r), _c(hprev), B, H,
                               ldd, nthreads)


def py_gru_reset_after_backward(floating[::1] dau, floating[::1] daw, floating[::1] dh,
                                const floating[::1] dy not None, const floating[::1] z,
                                const floating[::1] r, const floating[::1] q,
                                const floating[::1] c, const floating[::1] hprev,
                                Py_ssize_t B, Py_ssize_t H, Py_ssize_t ldd, int act,
                                int nthreads=1):
    gru_reset_after_backward(_p(dau), _p(daw), _p(dh), _c(dy), _c(z), _c(r), _c(q), _c(c),
                             _c(hprev), B, H, ldd, act, nthreads)


def py_bn_backward(floating[::1] dY, floating[::1] dscales, floating[::1] dbiases,
                   const floating[::1] vhat, const floating[::1] sd,
                   const floating[::1] scales, Py_ssize_t G, Py_ssize_t B, Py_ssize_t C,
                   Py_ssize_t ld, int nthreads=1):
    bn_backward(_p(dY), _p(dscales), _p(dbiases), _c(vhat), _c(sd), _c(scales), G, B, C,
                ld, nthreads)


def py_col_sum(floating[::1] out, const floating[::1] A, Py_ssize_t R, Py_ssize_t C,
               Py_ssize_t lda, int nthreads=1):
    col_sum(_p(out), _c(A), R, C, lda, nthreads)


# The float32 activations of the row kernels, for tests/test_fastmath.py.  Not
# py_*: gru_cy._cpu lists the py_* wrappers as the engine's kernels.
def fast_logistic_f32(x):
    """float32 logistic as the engine evaluates it (tests/test_fastmath.py).

    Parameters
    ----------
    x : array_like, any shape (converted to C-contiguous float32)

    Returns
    -------
    ndarray of float32, the shape of x
    """
    return _map_f32(x, False)


def fast_tanh_f32(x):
    """float32 tanh as the engine evaluates it; as ``fast_logistic_f32``."""
    return _map_f32(x, True)


cdef cnp.ndarray _map_f32(x, bint tanh):
    cdef cnp.ndarray a = np.ascontiguousarray(x, dtype=np.float32)
    cdef cnp.ndarray out = np.empty_like(a)
    cdef float* po = <float*>cnp.PyArray_DATA(out)
    cdef float* pa = <float*>cnp.PyArray_DATA(a)
    if tanh:
        gru_tanh_map_f(po, pa, a.size)
    else:
        gru_logistic_map_f(po, pa, a.size)
    return out
