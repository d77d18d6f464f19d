# cython: language_level=3
"""The GRU kernels and the forward/backward step drivers of the CPU engine.

Tiers, as in scikit-learn's Cython:

1. ``cdef ... noexcept nogil`` kernels on raw pointers, one per name in
   ``gru_cy.kernels.KERNELS`` (same argument order as the CUDA twins, plus a
   trailing ``nthreads``).
2. ``_forward`` / ``_backward``: the step loops, in C, with no Python per step.
3. ``Engine``: holds the pointers of one layer's storage and its caches; the
   lean per-call path used by ``gru_cy.layer.GRU``.
4. ``py_<name>``: thin wrappers for the tests (the CUDA emulation compares
   every kernel against these).

Sizes: T steps, B batch, I inputs, H outputs.  Gate blocks are [z | r | h].
Parameter storage (``theta``, flat): U (3H, I) rows [uz; ur; uh], W (3H, H)
rows [wz; wr; wh], biases (6, H) rows [uz, ur, uh, wz, wr, wh], then with BN
scales (6, H) in the same order.  ``rolling``: (2, 6, H) mean then variance.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport sqrt
from libc.stdlib cimport malloc, calloc, free
from libc.string cimport memcpy, memset
cimport numpy as cnp
import numpy as np

from gru_cy._cpu.common cimport team, gru_max_threads, gru_have_openmp
from gru_cy._cpu.gemm cimport (gemm_sel, gemm_sel_pre, gemv_bias, GEMV_MAX_M, prepack,
                               prepack_part, prepack_size)
from gru_cy._cpu.gemm import aligned_empty
from gru_cy.kernels import cache_shapes, scratch_shapes

cnp.import_array()

# The elementwise row loops are C (rows.h): `restrict` lets gcc vectorise them,
# target_clones picks AVX-512 / AVX2 / baseline code at load time.  _f: float32
# (fastmath.h's logistic / tanh), _d: float64 (libm, bit for bit as before).
cdef extern from "rows.h" nogil:
    void gru_reset_after_cand_row_f(float* c, const float* r, const float* q, Py_ssize_t H,
                                    int act)
    void gru_reset_after_cand_row_d(double* c, const double* r, const double* q,
                                    Py_ssize_t H, int act)
    void gru_darknet_gates_row_f(float* z, float* r, float* s, const float* xp,
                                 const float* hp, const float* hprev, Py_ssize_t H,
                                 Py_ssize_t gs)
    void gru_darknet_gates_row_d(double* z, double* r, double* s, const double* xp,
                                 const double* hp, const double* hprev, Py_ssize_t H,
                                 Py_ssize_t gs)
    void gru_darknet_state_row_f(float* c, float* h, const float* xp, const float* hp,
                                 const float* z, const float* hprev, Py_ssize_t H,
                                 int act)
    void gru_darknet_state_row_d(double* c, double* h, const double* xp,
                                 const double* hp, const double* z, const double* hprev,
                                 Py_ssize_t H, int act)
    void gru_reset_after_row_f(float* z, float* r, float* q, float* c, float* h,
                               const float* xp, const float* hp, const float* hprev,
                               Py_ssize_t H, Py_ssize_t gs, int act)
    void gru_reset_after_row_d(double* z, double* r, double* q, double* c, double* h,
                               const double* xp, const double* hp, const double* hprev,
                               Py_ssize_t H, Py_ssize_t gs, int act)
    void gru_darknet_gates_bwd_row_f(float* dau, float* daw, float* dh, const float* dy,
                                     const float* z, const float* c, const float* hprev,
                                     Py_ssize_t H, int act)
    void gru_darknet_gates_bwd_row_d(double* dau, double* daw, double* dh,
                                     const double* dy, const double* z, const double* c,
                                     const double* hprev, Py_ssize_t H, int act)
    void gru_darknet_reset_bwd_row_f(float* dau, float* daw, float* dh, const float* ds,
                                     const float* r, const float* hprev, Py_ssize_t H)
    void gru_darknet_reset_bwd_row_d(double* dau, double* daw, double* dh,
                                     const double* ds, const double* r,
                                     const double* hprev, Py_ssize_t H)
    void gru_reset_after_bwd_row_f(float* dau, float* daw, float* dh, const float* dy,
                                   const float* z, const float* r, const float* q,
                                   const float* c, const float* hprev, Py_ssize_t H,
                                   int act)
    void gru_reset_after_bwd_row_d(double* dau, double* daw, double* dh,
                                   const double* dy, const double* z, const double* r,
                                   const double* q, const double* c, const double* hprev,
                                   Py_ssize_t H, int act)
    void gru_logistic_map_f(float* out, const float* x, Py_ssize_t n)
    void gru_tanh_map_f(float* out, const float* x, Py_ssize_t n)

cdef double BN_EPS = 1e-6


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
        rolling_mean[c] = <floating>(0.99 * rolling_mean[c] + 0.01 * mu)
        rolling_variance[c] = <floating>(0.99 * rolling_variance[c] + 0.01 * var)


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


cdef inline void _darknet_gates_row(floating* z, floating* r, floating* s,
                                    const floating* xp, const floating* hp,
                                    const floating* hprev, Py_ssize_t H,
                                    Py_ssize_t gs) noexcept nogil:
    # z = sig(xp_z + hp_z); r = sig(xp_r + hp_r); s = r*hprev (rows.h); the r
    # columns of xp and hp start gs after the z columns.
    if floating is float:
        gru_darknet_gates_row_f(z, r, s, xp, hp, hprev, H, gs)
    else:
        gru_darknet_gates_row_d(z, r, s, xp, hp, hprev, H, gs)


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


cdef inline void _darknet_state_row(floating* c, floating* h, const floating* xp,
                                    const floating* hp, const floating* z,
                                    const floating* hprev, Py_ssize_t H,
                                    int act) noexcept nogil:
    # c = act(xp_h + hp_h); h = z*hprev + (1 - z)*c (rows.h).
    if floating is float:
        gru_darknet_state_row_f(c, h, xp, hp, z, hprev, H, act)
    else:
        gru_darknet_state_row_d(c, h, xp, hp, z, hprev, H, act)


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


cdef inline void _reset_after_row(floating* z, floating* r, floating* q, floating* c,
                                  floating* h, const floating* xp, const floating* hp,
                                  const floating* hprev, Py_ssize_t H, Py_ssize_t gs,
                                  int act) noexcept nogil:
    # z, r; q = hp_h (if q); c = act(xp_h + r*hp_h); h = z*hprev + (1 - z)*c
    # (rows.h); gate columns of xp and hp gs apart.
    if floating is float:
        gru_reset_after_row_f(z, r, q, c, h, xp, hp, hprev, H, gs, act)
    else:
        gru_reset_after_row_d(z, r, q, c, h, xp, hp, hprev, H, gs, act)


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
                                   (dy + b * H) if dy != NULL else NULL,
                                   z + b * H, c + b * H, hprev + b * H, H, act)
    else:
        for b in prange(B, nogil=True, schedule="static", num_threads=nt):
            _darknet_gates_bwd_row(dau + b * ldd, daw + b * ldd, dh + b * H,
                                   (dy + b * H) if dy != NULL else NULL,
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
                                 (dy + b * H) if dy != NULL else NULL, z + b * H,
                                 r + b * H, q + b * H, c + b * H, hprev + b * H, H, act)
    else:
        for b in prange(B, nogil=True, schedule="static", num_threads=nt):
            _reset_after_bwd_row(dau + b * ldd, daw + b * ldd, dh + b * H,
                                 (dy + b * H) if dy != NULL else NULL, z + b * H,
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


# ---------------------------------------------------------------- drivers ---

cdef struct Dims:
    # In = I: a C field may not be called I (complex.h defines it as a macro).
    Py_ssize_t T, B, In, H
    int reset_after, act, bn, use_blas, nthreads
    int c_recompute          # training, reset_after without BN, native gemm: the
                             # forward keeps no c (p.c: one step's scratch), the
                             # backward recomputes it per chunk (_recompute_c)


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


cdef inline void _sublayer_out(floating* Y, floating* vhat, floating* sd,
                               floating* rmean, floating* rvar, const floating* scales,
                               const floating* biases, Py_ssize_t G, Py_ssize_t B,
                               Py_ssize_t C, Py_ssize_t ld, int bn, bint train,
                               int nthreads) noexcept nogil:
    # The part of a sublayer after its product: bias, or BN (train / inference).
    if not bn:
        bias_forward(Y, biases, G * B, C, ld, nthreads)
    elif train:
        bn_forward_train(Y, vhat, sd, rmean, rvar, scales, biases, G, B, C, ld, nthreads)
    else:
        bn_forward_infer(Y, rmean, rvar, scales, biases, G * B, C, ld, nthreads)


cdef enum:
    # Rows (steps x batch) per chunk of the input projection and of the
    # gradient buffers: big enough for efficient gemms, small enough that no
    # (T, B, 3H) buffer is ever held.  Depends on B only, never on threads.
    CHUNK_ROWS = 512


cdef inline Py_ssize_t chunk_steps(Py_ssize_t T, Py_ssize_t B) noexcept nogil:
    cdef Py_ssize_t n = CHUNK_ROWS // B
    if n < 1:
        n = 1
    return n if n < T else T


cdef void _forward(floating* theta, Dims d, Ptrs p, bint train) noexcept nogil:
    # x (T, B, I) -> y (T, B, H); train: caches z, r, c, s|q (T, B, H) and BN's
    # vhat/sd.  xp is a chunk buffer (chunk_steps * B, 3H).
    cdef Py_ssize_t T = d.T, B = d.B, I = d.In, H = d.H, H3 = 3 * H, t, t0, nc
    cdef Py_ssize_t cs = chunk_steps(T, B)
    cdef int nt = d.nthreads
    cdef floating* U = theta
    cdef floating* W = U + H3 * I
    cdef floating* bias = W + H3 * H
    cdef floating* scales = bias + 6 * H
    cdef floating* rmean = <floating*>p.rolling
    cdef floating* rvar = rmean + 6 * H
    cdef floating* x = <floating*>p.x
    cdef floating* y = <floating*>p.y
    cdef floating* xp = <floating*>p.xp
    cdef floating* hp = <floating*>p.hp
    cdef floating* vw = NULL
    cdef floating* sw = NULL
    cdef floating* hprev
    cdef floating* ht
    cdef floating* xpt
    cdef floating* zt
    cdef floating* rt
    cdef floating* ct
    cdef floating* sqt
    cdef Py_ssize_t step = B * H if train else 0
    if p.wpre != NULL:
        if d.reset_after:
            prepack(W, H3, H, H, True, <floating*>p.wpre)
        else:
            prepack(W, 2 * H, H, H, True, <floating*>p.wpre)
            prepack(W + 2 * H * H, H, H, H, True, <floating*>p.wpre2)
    for t in range(T):
        if t % cs == 0:
            # uz, ur, uh for steps [t, t + nc): xp = x @ U.T, then bias / BN.
            t0 = t
            nc = cs if t + cs <= T else T - t
            gemm_sel(d.use_blas, xp, x + t * B * I, U, nc * B, H3, I, I, I, H3, False,
                     True, <floating>1, <floating>0, nt)
            _sublayer_out(xp, (<floating*>p.vu + t * B * H3) if train and d.bn else NULL,
                          (<floating*>p.su + t * H3) if train and d.bn else NULL,
                          rmean, rvar, scales, bias, nc, B, H3, H3, d.bn, train, nt)
        hprev = <floating*>p.h0 if t == 0 else y + (t - 1) * B * H
        ht = y + t * B * H
        xpt = xp + (t - t0) * B * H3
        zt = <floating*>p.z + t * step
        rt = <floating*>p.r + t * step
        ct = <floating*>p.c + (0 if d.c_recompute else t * step)
        sqt = <floating*>p.sq + t * step
        if train and d.bn:
            vw = <floating*>p.vw + t * B * H3
            sw = <floating*>p.sw + t * H3
        if not d.reset_after:
            # wz, wr: hp[:, 0:2H] = hprev @ [Wz; Wr].T
            gemm_sel_pre(d.use_blas, hp, hprev, W, <floating*>p.wpre, B, 2 * H, H, H, H,
                         H3, False, True, <floating>1, <floating>0, nt)
            _sublayer_out(hp, vw, sw, rmean + H3, rvar + H3, scales + H3, bias + H3,
                          1, B, 2 * H, H3, d.bn, train, nt)
            gru_darknet_gates_forward(zt, rt, sqt, xpt, hp, hprev, B, H, H3, H3, nt)
            # wh: hp[:, 2H:3H] = s @ Wh.T
            gemm_sel_pre(d.use_blas, hp + 2 * H, sqt, W + 2 * H * H, <floating*>p.wpre2, B,
                         H, H, H, H, H3, False, True, <floating>1, <floating>0, nt)
            _sublayer_out(hp + 2 * H, (vw + 2 * H) if vw != NULL else NULL,
                          (sw + 2 * H) if sw != NULL else NULL, rmean + 5 * H,
                          rvar + 5 * H, scales + 5 * H, bias + 5 * H, 1, B, H, H3,
                          d.bn, train, nt)
            gru_darknet_state_forward(ct, ht, xpt + 2 * H, hp + 2 * H, zt, hprev, B, H,
                                      H3, H3, d.act, nt)
        else:
            # wz, wr, wh in one product: hp (B, 3H) = hprev @ W.T
            gemm_sel_pre(d.use_blas, hp, hprev, W, <floating*>p.wpre, B, H3, H, H, H, H3,
                         False, True, <floating>1, <floating>0, nt)
            _sublayer_out(hp, vw, sw, rmean + H3, rvar + H3, scales + H3, bias + H3,
                          1, B, H3, H3, d.bn, train, nt)
            gru_reset_after_forward(zt, rt, sqt if train else NULL, ct, ht, xpt, hp,
                                    hprev, B, H, H3, H3, d.act, nt)


# ---------------------------------------------------------- fused forward ---
# The forward without BN (native gemm) as one parallel region around the whole
# step loop.  Each thread owns a fixed slice of the H units (whole granules of
# FUSED_GRAN units) and computes its units' columns of the input projection
# (per chunk), of the recurrent product (one gemm per gate block, on its rows
# of U and W, W packed once per call where the blocked gemm path runs) and
# its units' gates, so the only synchronisation is one barrier per step (two
# for darknet, whose candidate needs all of s = r * h_{t-1}).  The slice's
# weights stay in its core's cache across steps, and no OpenMP region opens
# per step.  The buffers keep the engine's layout ([z | r | h] columns).
#
# Results are bit-identical to the per-kernel driver (_forward) for any thread
# count: every element of xp and hp is the same gemm arithmetic whatever the
# column slice (gemm_kernels.h: determinism), bias and row kernels are the
# same elementwise operations.  The per-step barrier is omp_compat.h's
# gru_bar_wait (per-thread epochs, spinning: one cache-line transfer per
# teammate; OpenMP's barrier cost ~0.5 us here).

cdef extern from "omp_compat.h" nogil:
    ctypedef void (*gru_team_fn)(void* arg, int tid, int n) noexcept nogil
    void gru_run_team(int nt, gru_team_fn fn, void* arg)
    void gru_barrier()
    int gru_claim(int* c)
    ctypedef struct gru_bar:
        int n
        int slots
    void gru_bar_init(gru_bar* b, int n)
    void gru_bar_wait(gru_bar* b, int tid)
    int gru_bar_arrive(gru_bar* b, int tid)
    void gru_bar_await(gru_bar* b, int tid, int gen)
    void gru_step_wait(int* done, int v)
    int gru_num_procs()
    void gru_step_done(int* done, int v)
    void gru_count_done(int* done)
    double gru_now()


cdef enum:
    FUSED_GRAN = 32          # units per granule of a thread's slice
    FUSED_MIN_FLOPS = 50000  # recurrent flops per step below which one thread runs,
    FUSED_MIN_CALL = 1000000 # and per call (a region costs microseconds to open)
    BATCH_ROWS = 16          # batch mode: B >= 2 * 16, chunks of 16..31 rows, or of 8..15
                             # where that makes fewer than two chunks per thread
    BATCH_MAX_WEIGHTS = 2097152 # batch mode: U and W at most this many bytes (each chunk
                                # reads them at every step: they must stay in cache)


cdef struct FusedArg:
    void* theta
    Dims d
    Ptrs p
    bint train
    gru_bar bar              # the per-step barrier (thread 0 initialises it)
    # batch mode: chunks of rows claimed one at a time, W packed once (shared)
    int nchunks
    int next                 # the next (chunk, step) item, step-major
    int* steps_done          # per chunk: its steps finished
    void* wpk[3]
    void* upk[3]             # U packed once too (upk[0]), shared
    int pack_parts           # each pack (U, W's) in this many parts, claimed as
    int npieces              # the first npieces items (0: no packs)
    int packs_done           # pack parts finished


cdef inline void _slice_gemm(floating* C, Py_ssize_t ldc, const floating* A,
                             Py_ssize_t lda, Py_ssize_t M, Py_ssize_t K,
                             const floating* Wg, floating** Wpk, Py_ssize_t H,
                             Py_ssize_t w, Py_ssize_t ng,
                             const floating* bias) noexcept nogil:
    # For gate blocks g < ng: C[:, g*H : g*H + w] = A (M, K) @ (w rows of K at
    # Wg + g*H*K).T + bias[g*H ..], one gemm per block; Wpk[g]: those rows
    # packed, or NULL.  The whole layer (w == H): one gemm over the ng blocks,
    # packed as one at Wpk[0].
    cdef Py_ssize_t g
    if M <= GEMV_MAX_M:
        # batch 1 to 3: the direct path with the bias added, without a plan
        if w == H:
            gemv_bias(C, A, Wg, bias, M, ng * H, K, lda, K, ldc)
        else:
            for g in range(ng):
                gemv_bias(C + g * H, A, Wg + g * H * K, bias + g * H, M, w, K, lda, K, ldc)
        return
    if w == H:
        gemm_sel_pre(False, C, A, Wg, Wpk[0], M, ng * H, K, lda, K, ldc, False, True,
                     <floating>1, <floating>0, 1)
        bias_forward(C, bias, M, ng * H, ldc, 1)
        return
    for g in range(ng):
        gemm_sel_pre(False, C + g * H, A, Wg + g * H * K, Wpk[g], M, w, K, lda, K, ldc,
                     False, True, <floating>1, <floating>0, 1)
        bias_forward(C + g * H, bias + g * H, M, w, ldc, 1)


cdef inline Py_ssize_t _pack_elems(bint dbl, Py_ssize_t N, Py_ssize_t K,
                                   Py_ssize_t es) noexcept nogil:
    # prepack_size rounded up to whole 64-byte lines (packs stay aligned).
    return (prepack_size(dbl, N, K) * es + 63) // 64 * 64 // es


cdef inline Py_ssize_t _w_pack_size(bint dbl, Py_ssize_t H, Py_ssize_t w,
                                    bint reset_after) noexcept nogil:
    # Elements of the packs _pack_w writes for a slice of w units.
    cdef Py_ssize_t es = 8 if dbl else 4
    if w < H:
        return 3 * _pack_elems(dbl, w, H, es)
    if reset_after:
        return _pack_elems(dbl, 3 * H, H, es)
    return _pack_elems(dbl, 2 * H, H, es) + _pack_elems(dbl, H, H, es)


cdef void _pack_w_ptrs(Py_ssize_t H, Py_ssize_t w, bint reset_after, floating* out,
                       floating** Wpk) noexcept nogil:
    # Where _pack_w's packs start in out (NULL where none starts): per gate
    # block (w < H), or the whole layer's [wz; wr; wh] | [wz; wr], wh (darknet).
    cdef bint dbl = floating is double
    cdef Py_ssize_t es = sizeof(floating), g
    Wpk[0] = out
    Wpk[1] = Wpk[2] = NULL
    if w < H:
        for g in range(3):
            Wpk[g] = out + g * _pack_elems(dbl, w, H, es)
    elif not reset_after:
        Wpk[2] = out + _pack_elems(dbl, 2 * H, H, es)


cdef inline int _w_whole_packs(bint reset_after) noexcept nogil:
    # The whole layer's packs of W: [wz; wr; wh], or darknet's [wz; wr] and wh.
    return 1 if reset_after else 2


cdef void _pack_w_whole_part(const floating* W, Py_ssize_t H, bint reset_after, int which,
                             int part, int parts, floating** Wpk) noexcept nogil:
    # Part `part` of `parts` of the whole layer's pack `which` of W (see
    # _w_whole_packs), at _pack_w_ptrs's places: Wpk[0], darknet's wh Wpk[2].
    if which == 0:
        prepack_part(W, (3 if reset_after else 2) * H, H, H, True, part, parts, Wpk[0])
    else:
        prepack_part(W + 2 * H * H, H, H, H, True, part, parts, Wpk[2])


cdef void _pack_w(const floating* W, Py_ssize_t H, Py_ssize_t w, bint reset_after,
                  floating* out, floating** Wpk) noexcept nogil:
    # A slice's rows of W (W: its first row of wz) packed as _slice_gemm reads
    # them (_pack_w_ptrs).  out: 64-byte aligned, _w_pack_size elements.
    cdef Py_ssize_t g
    cdef int which
    _pack_w_ptrs(H, w, reset_after, out, Wpk)
    if w < H:
        for g in range(3):
            prepack(W + g * H * H, w, H, H, True, Wpk[g])
    else:
        for which in range(_w_whole_packs(reset_after)):
            _pack_w_whole_part(W, H, reset_after, which, 0, 1, Wpk)


cdef inline void _step_part(floating* theta, Dims* d, bint train, int phase,
                            Py_ssize_t M, Py_ssize_t j0, Py_ssize_t w, floating** Wpk,
                            floating* xpt, floating* hpt, const floating* hprev,
                            floating* ht, floating* zt, floating* rt, floating* ct,
                            floating* sqt) noexcept nogil:
    # Units j0 .. j0 + w of M rows of one step (both fused modes): phase 0 the
    # reset_after step, or darknet's gates (z, r, s = r * h_{t-1}); phase 1
    # darknet's candidate and h; phases 2 and 3 darknet's gates in two parts
    # for a team (2: r and s, which the candidate needs from every thread;
    # 3: z, computed while the others finish theirs) of unit slices (w < H).
    # xpt, hpt: the rows' xp and hp at column j0 (row stride 3H); ht, zt, rt,
    # ct: at unit j0; hprev and sqt (s | q) at unit 0 (the products read whole
    # rows); row stride H.
    cdef Py_ssize_t I = d.In, H = d.H, H3 = 3 * H, b
    cdef floating* W = theta + H3 * I + j0 * H
    cdef floating* bw = theta + H3 * I + H3 * H + H3 + j0
    if d.reset_after:
        _slice_gemm(hpt, H3, hprev, H, M, H, W, Wpk, H, w, 3, bw)
        for b in range(M):
            _reset_after_row(zt + b * H, rt + b * H, (sqt + j0 + b * H) if train else NULL,
                             ct + b * H, ht + b * H, xpt + b * H3, hpt + b * H3,
                             hprev + j0 + b * H, w, H, d.act)
    elif phase == 0:
        _slice_gemm(hpt, H3, hprev, H, M, H, W, Wpk, H, w, 2, bw)
        for b in range(M):
            _darknet_gates_row(zt + b * H, rt + b * H, sqt + j0 + b * H, xpt + b * H3,
                               hpt + b * H3, hprev + j0 + b * H, w, H)
    elif phase == 2:
        _slice_gemm(hpt + H, H3, hprev, H, M, H, W + H * H, Wpk + 1, H, w, 1, bw + H)
        for b in range(M):
            _darknet_gates_row(<floating*>NULL, rt + b * H, sqt + j0 + b * H,
                               xpt + b * H3, hpt + b * H3, hprev + j0 + b * H, w, H)
    elif phase == 3:
        _slice_gemm(hpt, H3, hprev, H, M, H, W, Wpk, H, w, 1, bw)
        for b in range(M):
            _darknet_gates_row(zt + b * H, <floating*>NULL, <floating*>NULL,
                               xpt + b * H3, hpt + b * H3, hprev + j0 + b * H, w, H)
    else:
        _slice_gemm(hpt + 2 * H, H3, sqt, H, M, H, W + 2 * H * H, Wpk + 2, H, w, 1,
                    bw + 2 * H)
        for b in range(M):
            _darknet_state_row(ct + b * H, ht + b * H, xpt + 2 * H + b * H3,
                               hpt + 2 * H + b * H3, zt + b * H, hprev + j0 + b * H, w,
                               d.act)


cdef void _fused_thread(floating* theta, FusedArg* a, int tid, int n) noexcept nogil:
    cdef Dims d = a.d
    cdef Ptrs* p = &a.p
    cdef bint train = a.train
    cdef Py_ssize_t T = d.T, B = d.B, I = d.In, H = d.H, H3 = 3 * H
    cdef Py_ssize_t cs = chunk_steps(T, B), t, t0 = 0, nc, g
    cdef Py_ssize_t G = (H + FUSED_GRAN - 1) // FUSED_GRAN
    cdef Py_ssize_t j0 = G * tid // n * FUSED_GRAN
    cdef Py_ssize_t j1 = G * (tid + 1) // n * FUSED_GRAN
    cdef Py_ssize_t w, es = sizeof(floating)
    cdef Py_ssize_t step = B * H if train else 0
    cdef int tok
    cdef bint dbl = floating is double
    cdef floating* U
    cdef floating* W
    cdef floating* bu
    cdef floating* nopack[3]
    cdef floating* Wpk[3]            # the slice's W rows packed (see _slice_gemm)
    cdef void* raw_p = NULL
    cdef floating* x = <floating*>p.x
    cdef floating* y = <floating*>p.y
    cdef floating* xp = <floating*>p.xp
    cdef floating* hp = <floating*>p.hp
    cdef floating* hprev
    cdef floating* ht
    cdef floating* xpt
    cdef floating* zt
    cdef floating* rt
    cdef floating* ct
    cdef floating* sqt
    if j0 > H:
        j0 = H
    if j1 > H:
        j1 = H
    w = j1 - j0
    # The slice: rows j0.. of each gate block of U and W, the biases of U's.
    U = theta + j0 * I
    W = theta + H3 * I + j0 * H
    bu = theta + H3 * I + H3 * H + j0
    for g in range(3):
        nopack[g] = NULL
        Wpk[g] = NULL
    if B > 3 and T > 1 and w > 0:
        # The per-step products take the blocked path (M = B > 3): pack the
        # slice's rows of W once (without memory the products pack per call).
        raw_p = malloc(_w_pack_size(dbl, H, w, d.reset_after) * es + 64)
        if raw_p != NULL:
            _pack_w(W, H, w, d.reset_after, <floating*>((<size_t>raw_p + 63) // 64 * 64),
                    Wpk)
    if tid == 0:
        gru_bar_init(&a.bar, n)
    if n > 1:
        gru_barrier()    # OpenMP's: the packs and the step barrier are ready
    for t in range(T):
        if t % cs == 0:
            # uz, ur, uh of the slice for steps [t, t + nc), with their biases.
            t0 = t
            nc = cs if t + cs <= T else T - t
            if w > 0:
                _slice_gemm(xp + j0, H3, x + t * B * I, I, nc * B, I, U, nopack, H, w,
                            3, bu)
        hprev = <floating*>p.h0 if t == 0 else y + (t - 1) * B * H
        ht = y + t * B * H + j0
        xpt = xp + (t - t0) * B * H3 + j0
        zt = <floating*>p.z + t * step + j0
        rt = <floating*>p.r + t * step + j0
        ct = <floating*>p.c + (0 if d.c_recompute else t * step) + j0
        sqt = <floating*>p.sq + t * step
        if d.reset_after or n == 1:
            if w > 0:
                _step_part(theta, &d, train, 0, B, j0, w, Wpk, xpt, hp + j0, hprev, ht,
                           zt, rt, ct, sqt)
            gru_bar_wait(&a.bar, tid)
        else:
            # darknet's candidate needs all of s = r * h_{t-1}: r and s first,
            # then z between the barrier's halves (no other thread's writes
            # needed), so that a late teammate costs the others less spinning.
            # Config A, 2 threads, alternating builds: medians 0.252-0.262 ms a
            # call against 0.256-0.274; in a phase where the team ran slowly
            # (one thread alone 0.33) 0.536-0.566 against 0.618-0.671.
            if w > 0:
                _step_part(theta, &d, train, 2, B, j0, w, Wpk, xpt, hp + j0, hprev, ht,
                           zt, rt, ct, sqt)
            tok = gru_bar_arrive(&a.bar, tid)
            if w > 0:
                _step_part(theta, &d, train, 3, B, j0, w, Wpk, xpt, hp + j0, hprev, ht,
                           zt, rt, ct, sqt)
            gru_bar_await(&a.bar, tid, tok)
        if not d.reset_after:
            if w > 0:
                _step_part(theta, &d, train, 1, B, j0, w, Wpk, xpt, hp + j0, hprev, ht,
                           zt, rt, ct, sqt)
            gru_bar_wait(&a.bar, tid)
    free(raw_p)


cdef void _batch_thread(floating* theta, FusedArg* a, int tid, int n) noexcept nogil:
    # Batch mode: the B sequences are independent, so a chunk of rows runs its
    # T steps without the others.  Threads claim (chunk, step) items in
    # step-major order, one at a time, and wait only for the chunk's previous
    # step (claimed nch items earlier): no barrier, and the threads finish
    # within one item of each other; a slow or time-shared core simply does
    # fewer items.  Every chunk has at least BATCH_ROWS / 2 > 3 rows, so its
    # products take the blocked gemm path, as the full batch does: the same
    # arithmetic per element whichever thread runs it (bit-identical).
    cdef Dims d = a.d
    cdef Ptrs* p = &a.p
    cdef bint train = a.train
    cdef Py_ssize_t T = d.T, B = d.B, I = d.In, H = d.H, H3 = 3 * H
    cdef Py_ssize_t step = B * H if train else 0
    cdef Py_ssize_t nch = a.nchunks, r0, m, t, b, k
    cdef int c
    cdef floating* U = theta
    cdef floating* bias = U + H3 * I + H3 * H
    cdef floating* Upk[3]            # U packed (shared), or NULL
    cdef floating* Wpk[3]            # W packed (shared): [wz; wr; wh] | [wz; wr], wh
    cdef floating* x = <floating*>p.x
    cdef floating* y = <floating*>p.y
    cdef floating* xpc
    cdef floating* hpc
    cdef floating* hprev
    cdef floating* ht
    cdef floating* zt
    cdef floating* rt
    cdef floating* ct
    cdef floating* sqt
    for b in range(3):
        Upk[b] = <floating*>a.upk[b]
        Wpk[b] = <floating*>a.wpk[b]
    # this thread's step buffers: xp and hp of at most 2 * BATCH_ROWS rows
    xpc = <floating*>malloc(2 * (2 * BATCH_ROWS) * H3 * sizeof(floating))
    if xpc == NULL:
        return                        # claims nothing: the others do the chunks
    hpc = xpc + (2 * BATCH_ROWS) * H3
    while True:
        k = gru_claim(&a.next)
        if k < a.npieces:
            # a part of the packs: every step reads them, step 0 waits for all
            _batch_pack_piece(theta, a, <int>k)
            gru_count_done(&a.packs_done)
            continue
        k -= a.npieces
        if k >= nch * T:
            break
        c = <int>(k % nch)
        t = k // nch
        r0 = B * c // nch
        m = B * (c + 1) // nch - r0
        # the chunk's step t - 1 (claimed nch items earlier) must be done;
        # its step 0 waits for the packs (later steps follow from it)
        if t == 0:
            gru_step_wait(&a.packs_done, a.npieces)
        gru_step_wait(a.steps_done + c, <int>t)
        hprev = (<floating*>p.h0 if t == 0 else y + (t - 1) * B * H) + r0 * H
        ht = y + t * B * H + r0 * H
        zt = <floating*>p.z + t * step + r0 * H
        rt = <floating*>p.r + t * step + r0 * H
        ct = <floating*>p.c + (0 if d.c_recompute else t * step) + r0 * H
        sqt = <floating*>p.sq + t * step + r0 * H
        # uz, ur, uh of the chunk's rows at step t, then the step
        _slice_gemm(xpc, H3, x + (t * B + r0) * I, I, m, I, U, Upk, H, H, 3, bias)
        _step_part(theta, &d, train, 0, m, 0, H, Wpk, xpc, hpc, hprev, ht, zt, rt, ct,
                   sqt)
        if not d.reset_after:
            _step_part(theta, &d, train, 1, m, 0, H, Wpk, xpc, hpc, hprev, ht, zt, rt,
                       ct, sqt)
        gru_step_done(a.steps_done + c, <int>t + 1)
    free(xpc)


cdef void _batch_thread_f(void* arg, int tid, int n) noexcept nogil:
    _batch_thread(<float*>(<FusedArg*>arg).theta, <FusedArg*>arg, tid, n)


cdef void _batch_thread_d(void* arg, int tid, int n) noexcept nogil:
    _batch_thread(<double*>(<FusedArg*>arg).theta, <FusedArg*>arg, tid, n)


cdef void _fused_thread_f(void* arg, int tid, int n) noexcept nogil:
    _fused_thread(<float*>(<FusedArg*>arg).theta, <FusedArg*>arg, tid, n)


cdef void _fused_thread_d(void* arg, int tid, int n) noexcept nogil:
    _fused_thread(<double*>(<FusedArg*>arg).theta, <FusedArg*>arg, tid, n)


cdef inline int resolve_threads(int nthreads) noexcept nogil:
    # The threads a call may use: nthreads (< 1: OpenMP's current count), at
    # most one per processor.  The engine's threads wait for each other (a
    # barrier per step, a chunk's previous step, a region's end); with more
    # threads than cores a waiting thread spins while the one it waits for is
    # not running: num_threads=4 on this 2-core machine took config A 64 ms a
    # call (0.25 with 2), B 22.6 ms (8.4) and a B training step 42.7 ms (29.1).
    cdef int nt = nthreads if nthreads >= 1 else gru_max_threads()
    cdef int procs = gru_num_procs()
    if procs >= 1 and nt > procs:
        nt = procs
    return nt if nt >= 1 else 1


cdef int fused_team(Dims d, Py_ssize_t units) noexcept nogil:
    # Threads for the fused forward: at most one per unit of work (granule or
    # chunk of rows), one when a step's recurrent product is too small to
    # share.  d.nthreads: resolved by the engine (resolve_threads: at most one
    # per processor).
    cdef int nt = d.nthreads
    cdef double per_step = 6.0 * d.B * d.H * d.H
    if per_step < FUSED_MIN_FLOPS or per_step * d.T < FUSED_MIN_CALL:
        return 1
    if nt > units:
        nt = <int>units
    return nt if nt >= 1 else 1


cdef void _batch_pack_ptrs(FusedArg* a, floating* out) noexcept nogil:
    # Batch mode: U, then W as _pack_w packs the whole layer, go to out
    # (64-byte aligned); a.upk[0] and a.wpk point at them.  The team packs
    # them (_batch_pack_piece): the first a.npieces items of the call.
    cdef Py_ssize_t H = a.d.H, I = a.d.In, g
    cdef floating* Wpk[3]
    a.upk[0] = out
    _pack_w_ptrs(H, H, a.d.reset_after,
                 out + _pack_elems(floating is double, 3 * H, I, sizeof(floating)), Wpk)
    for g in range(3):
        a.wpk[g] = Wpk[g]
    a.npieces = a.pack_parts * (1 + _w_whole_packs(a.d.reset_after))


cdef void _batch_pack_piece(floating* theta, FusedArg* a, int k) noexcept nogil:
    # Piece k of the batch-mode packs: part k % pack_parts of U (k / parts 0)
    # or of W's whole-layer pack k / parts - 1 (_pack_w_whole_part).  Packing
    # B's 1.5 MB took one thread 0.5 ms while the other waited.
    cdef Py_ssize_t H = a.d.H, I = a.d.In, g
    cdef int parts = a.pack_parts, part = k % parts, which = k // parts
    cdef floating* Wpk[3]
    if which == 0:
        prepack_part(theta, 3 * H, I, I, True, part, parts, <floating*>a.upk[0])
        return
    for g in range(3):
        Wpk[g] = <floating*>a.wpk[g]
    _pack_w_whole_part(theta + 3 * H * I, H, a.d.reset_after, which - 1, part, parts, Wpk)


cdef inline bint _batch_mode(Dims d, bint dbl) noexcept nogil:
    # The fused forward splits the batch (rather than the units) among its
    # threads: a team of two or more on chunks of 16 rows, weights that stay
    # in each core's cache.
    return fused_team(d, d.B // BATCH_ROWS) > 1 and \
        3 * d.H * (d.In + d.H) * (8 if dbl else 4) <= BATCH_MAX_WEIGHTS


cdef bint _forward_fused(void* theta, Dims d, Ptrs p, bint train, bint dbl,
                         int* used) noexcept nogil:
    # The fused forward (no BN, native gemm): batch mode where the batch makes
    # at least two chunks and the weights are small enough to stay in each
    # core's cache, else the unit slices.  False when the caller should run
    # _forward instead (batch mode without memory for its buffers; one unit
    # slice where the per-kernel driver threads the input projection).
    # *used: the threads asked for (0 when False).
    cdef FusedArg a
    cdef Py_ssize_t H = d.H, es = 8 if dbl else 4
    cdef int nt = fused_team(d, d.B // BATCH_ROWS)
    cdef void* raw = NULL
    a.theta = theta
    a.d = d
    a.p = p
    a.train = train
    a.nchunks = <int>(d.B // BATCH_ROWS)
    used[0] = 0
    if _batch_mode(d, dbl):
        if a.nchunks < 2 * nt:
            # Half-size chunks: a thread that is descheduled mid-call then
            # holds back a smaller share (config B with a CPU hog on the
            # machine: median 17.2 ms against 21.1 with two chunks of 16;
            # the same 9.0 ms on a quiet machine).  Config D keeps 16 rows
            # (8 rows cost it 12%).
            a.nchunks = <int>(d.B // (BATCH_ROWS // 2))
            nt = fused_team(d, a.nchunks)
        if a.nchunks * d.T >= (1 << 30):
            return False                # items counted in an int
        # chunks x steps items, claimed step-major: every thread runs any
        # chunk's next step, so the threads finish together.  Whole chunks as
        # items left one thread idle for 0.2 ms of B's 8.8 (median; 0.65 in one
        # call of ten); with a CPU hog on the machine, D took 2.0-4.6 ms
        # against 1.3-1.4 now, B 17.5-20.9 against 17.0-18.1.
        a.steps_done = <int*>calloc(a.nchunks, sizeof(int))
        if a.steps_done == NULL:
            return False
        a.next = 0
        a.wpk[0] = a.wpk[1] = a.wpk[2] = NULL
        a.upk[0] = a.upk[1] = a.upk[2] = NULL
        a.npieces = 0
        a.packs_done = 0
        # U and W packed once for every chunk's products (or, without memory,
        # per call: each step's products would pack them again)
        raw = malloc((_pack_elems(dbl, 3 * H, d.In, es) + _w_pack_size(dbl, H, H, d.reset_after))
                     * es + 64)
        nt = nt if nt < a.nchunks else a.nchunks
        a.pack_parts = 2 * nt
        if raw != NULL:
            if dbl:
                _batch_pack_ptrs[double](&a, <double*>((<size_t>raw + 63) // 64 * 64))
            else:
                _batch_pack_ptrs[float](&a, <float*>((<size_t>raw + 63) // 64 * 64))
        gru_run_team(nt, _batch_thread_d if dbl else _batch_thread_f, &a)
        free(raw)
        free(a.steps_done)
        if a.next < a.npieces + a.nchunks * d.T:   # nothing claimed (no memory): not done
            return False
        used[0] = nt
        return True
    nt = fused_team(d, (H + FUSED_GRAN - 1) // FUSED_GRAN)
    if nt == 1 and d.nthreads != 1 and 6.0 * d.T * d.B * d.In * H >= 4e5:
        # One slice, but the input projection is worth threads: the
        # per-kernel driver threads it (and the row kernels).
        return False
    gru_run_team(nt, _fused_thread_d if dbl else _fused_thread_f, &a)
    used[0] = nt
    return True


cdef void _backward_chunk(floating* theta, Dims d, Ptrs p, Py_ssize_t t0,
                          Py_ssize_t nc) noexcept nogil:
    # The per-chunk tail of the backward, steps [t0, t0 + nc): dau, daw hold
    # those steps' sublayer gradients (rows from 0).
    cdef Py_ssize_t B = d.B, I = d.In, H = d.H, H3 = 3 * H, R = nc * B
    cdef int nt = d.nthreads
    cdef floating one = 1
    cdef floating* U = theta
    cdef floating* scales = U + H3 * I + H3 * H + 6 * H
    cdef floating* dU = <floating*>p.grad
    cdef floating* dW = dU + H3 * I
    cdef floating* dbias = dW + H3 * H
    cdef floating* dscales = dbias + 6 * H
    cdef floating* hs = <floating*>p.h0 + t0 * B * H     # h_{t-1} of the chunk
    cdef floating* dau = <floating*>p.dau
    cdef floating* daw = <floating*>p.daw
    # u sublayers: BN (one group per step) or bias.
    if d.bn:
        bn_backward(dau, dscales, dbias, <floating*>p.vu + t0 * B * H3,
                    <floating*>p.su + t0 * H3, scales, nc, B, H3, H3, nt)
    else:
        col_sum(dbias, dau, R, H3, H3, nt)
        col_sum(dbias + H3, daw, R, H3, H3, nt)
    # xp = x @ U.T  ->  dx = dau @ U;  dU += dau.T @ x
    gemm_sel(d.use_blas, <floating*>p.dx + t0 * B * I, dau, U, R, I, H3, H3, I, I,
             False, False, one, <floating>0, nt)
    gemm_sel(d.use_blas, dU, dau, <floating*>p.x + t0 * B * I, H3, I, R, H3, I, I,
             True, False, one, one, nt)
    if not d.reset_after:
        # dWz, dWr += daw_{z,r}.T @ hprev;  dWh += daw_h.T @ s
        gemm_sel(d.use_blas, dW, daw, hs, 2 * H, H, R, H3, H, H, True, False, one,
                 one, nt)
        gemm_sel(d.use_blas, dW + 2 * H * H, daw + 2 * H, <floating*>p.sq + t0 * B * H,
                 H, H, R, H3, H, H, True, False, one, one, nt)
    else:
        # dW += daw.T @ hprev
        gemm_sel(d.use_blas, dW, daw, hs, H3, H, R, H3, H, H, True, False, one, one, nt)


cdef Py_ssize_t _c_recompute_bytes = 16 << 20
# The CPU engine recomputes reset_after's c in the backward (no BN, native
# gemm) where the cache's c would take at least this many bytes: config C's
# training step then peaks at +160 MiB instead of +183 (torch: +302 to +333)
# for ~4% more time; below it the memory is small and the time is not (config
# B's step took 5-7% longer, D's 8-10%).


def c_recompute_threshold(nbytes=None):
    """The size of c (bytes) from which the backward recomputes it (see
    _recompute_c); ``nbytes`` sets a new one (tests).  Returns the old."""
    global _c_recompute_bytes
    old = _c_recompute_bytes
    if nbytes is not None:
        _c_recompute_bytes = nbytes
    return old


cdef void _recompute_c(floating* theta, Dims d, Ptrs p, Py_ssize_t t0,
                       Py_ssize_t nc) noexcept nogil:
    # reset_after's candidates c = act(xp_h + r * q) of steps [t0, t0 + nc)
    # into p.c (nc * B rows): xp_h = x @ Uh.T + uh's biases, the forward's
    # product (the same gemm arithmetic per element for any rows or columns,
    # gemm_kernels.h), then the forward's expression (rows.h).  The same bits
    # as the c the forward computed, for a quarter less cache (config C's
    # training step: 25 MiB of 183) and one more (rows, I) x (I, H) gemm per
    # chunk (a ninth of the step's flops).
    cdef Py_ssize_t B = d.B, I = d.In, H = d.H, H3 = 3 * H, R = nc * B, i
    cdef floating* c = <floating*>p.c
    cdef floating* Uh = theta + 2 * H * I
    cdef floating* buh = theta + H3 * I + H3 * H + 2 * H
    cdef floating* r = <floating*>p.r + t0 * B * H
    cdef floating* q = <floating*>p.sq + t0 * B * H
    gemm_sel_pre(False, c, <floating*>p.x + t0 * B * I, Uh, NULL, R, H, I, I, I, H, False,
                 True, <floating>1, <floating>0, d.nthreads)
    bias_forward(c, buh, R, H, H, d.nthreads)
    for i in range(R):
        if floating is float:
            gru_reset_after_cand_row_f(c + i * H, r + i * H, q + i * H, H, d.act)
        else:
            gru_reset_after_cand_row_d(c + i * H, r + i * H, q + i * H, H, d.act)


cdef void _backward(floating* theta, Dims d, Ptrs p) noexcept nogil:
    # Reverse steps; every chunk of steps (aligned as in the forward) ends with
    # its batched weight-gradient gemms.  dh: dstate in, dh0 out.
    cdef Py_ssize_t T = d.T, B = d.B, H = d.H, H3 = 3 * H, t, t0, nc
    cdef Py_ssize_t cs = chunk_steps(T, B)
    cdef int nt = d.nthreads
    cdef floating one = 1
    cdef floating* W = theta + H3 * d.In
    cdef floating* scales = W + H3 * H + 6 * H
    cdef floating* dbias = <floating*>p.grad + H3 * d.In + H3 * H
    cdef floating* dscales = dbias + 6 * H
    cdef floating* hs = <floating*>p.h0          # (T+1, B, H): h0, then y
    cdef floating* dh = <floating*>p.dh
    cdef floating* ds = <floating*>p.ds
    cdef floating* hprev
    cdef floating* dyt
    cdef floating* daut
    cdef floating* dawt
    cdef floating* zt
    cdef floating* rt
    cdef floating* ct
    cdef floating* sqt
    cdef floating* vw
    cdef floating* sw
    if p.wpre != NULL:
        if d.reset_after:
            prepack(W, H, H3, H, False, <floating*>p.wpre)
        else:
            prepack(W + 2 * H * H, H, H, H, False, <floating*>p.wpre)
            prepack(W, H, 2 * H, H, False, <floating*>p.wpre2)
    for t in range(T - 1, -1, -1):
        t0 = (t // cs) * cs
        nc = cs if t0 + cs <= T else T - t0
        if d.c_recompute and t == t0 + nc - 1:
            _recompute_c(theta, d, p, t0, nc)
        hprev = hs + t * B * H
        dyt = (<floating*>p.dy + t * B * H) if p.dy != NULL else NULL
        daut = <floating*>p.dau + (t - t0) * B * H3
        dawt = <floating*>p.daw + (t - t0) * B * H3
        zt = <floating*>p.z + t * B * H
        rt = <floating*>p.r + t * B * H
        ct = <floating*>p.c + ((t - t0) if d.c_recompute else t) * B * H
        sqt = <floating*>p.sq + t * B * H
        vw = (<floating*>p.vw + t * B * H3) if d.bn else NULL
        sw = (<floating*>p.sw + t * H3) if d.bn else NULL
        if not d.reset_after:
            # h = z*hprev + (1 - z)*c;  c = act(uh(x) + wh(s))
            gru_darknet_gates_backward(daut, dawt, dh, dyt, zt, ct, hprev, B, H, H3,
                                       d.act, nt)
            if d.bn:
                bn_backward(dawt + 2 * H, dscales + 5 * H, dbias + 5 * H, vw + 2 * H,
                            sw + 2 * H, scales + 5 * H, 1, B, H, H3, nt)
            # wh(s) = s @ Wh.T  ->  ds = dah_w @ Wh
            gemm_sel_pre(d.use_blas, ds, dawt + 2 * H, W + 2 * H * H, <floating*>p.wpre, B,
                         H, H, H3, H, H, False, False, one, <floating>0, nt)
            # s = r*hprev;  r = sig(ur(x) + wr(hprev))
            gru_darknet_reset_backward(daut + H, dawt + H, dh, ds, rt, hprev, B, H, H3, nt)
            if d.bn:
                bn_backward(dawt, dscales + H3, dbias + H3, vw, sw, scales + H3, 1, B,
                            2 * H, H3, nt)
            # [wz; wr](hprev) = hprev @ [Wz; Wr].T  ->  dh += [daz|dar]_w @ [Wz; Wr]
            gemm_sel_pre(d.use_blas, dh, dawt, W, <floating*>p.wpre2, B, H, 2 * H, H3, H,
                         H, False, False, one, one, nt)
        else:
            # c = act(uh(x) + r*wh(hprev)), z, r as above
            gru_reset_after_backward(daut, dawt, dh, dyt, zt, rt, sqt, ct, hprev, B, H,
                                     H3, d.act, nt)
            if d.bn:
                bn_backward(dawt, dscales + H3, dbias + H3, vw, sw, scales + H3, 1, B,
                            H3, H3, nt)
            # [wz; wr; wh](hprev) = hprev @ W.T  ->  dh += daw @ W
            gemm_sel_pre(d.use_blas, dh, dawt, W, <floating*>p.wpre, B, H, H3, H3, H, H,
                         False, False, one, one, nt)
        if t == t0:
            _backward_chunk(theta, d, p, t0, nc)


cdef inline void* _ptr(object a):
    return NULL if a is None else cnp.PyArray_DATA(<cnp.ndarray>a)


ROWS_PER_CHUNK = CHUNK_ROWS
"""Rows per chunk of the input projection and gradient buffers (the CUDA engine uses it too)."""


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


def have_openmp():
    """True when the engine was built with OpenMP."""
    return bool(gru_have_openmp())


def max_threads():
    """OpenMP's current thread count (honours OMP_NUM_THREADS and threadpoolctl)."""
    return gru_max_threads()


# ---------------------------------------------------------- adaptive team --
# The fused forward's team works in lockstep (unit slices meet at a barrier
# every step) or splits the batch into a few chunks; on a machine whose cores
# are shared, one descheduled thread stalls the whole call.  Config A with a
# CPU hog on the second core: 14 ms a call on two threads, 0.44 ms on one.
# The backward's parallel regions meet at barriers too.  Results are
# bit-identical for any thread count, so the engine may run either: it times
# its fused forward calls (no BN, native gemm) and its backward calls (native
# gemm) per batch size and runs the faster of the team and one thread.  Times
# are kept per step, so sequences of varying length share one record.
#
# Where a call takes under TUNE_QUICK and the team meets at barriers (unit
# slices, the backward; not the batch mode, whose threads wait for no one),
# one thread is timed up front (the third call: a team slow from its first
# call has no best to fall behind) and again after every wait; else only
# while the team runs slower than TUNE_SLOW times its best.  A timing of the
# other mode that wins switches to it; one that loses sets the wait before
# the next by what timing costs against what it may find: (its excess over
# the current mode, or the last lost timing's if smaller: one stalled call
# must not set a long wait; a first loss waits TUNE_WAIT) / (the current
# mode's time less the other's best), times TUNE_WAIT calls, within TUNE_WAIT
# .. TUNE_WAIT_MAX; where the other mode's best never beat the current mode,
# 8, 16, 32, ... calls (darknet A in one benchmark run: the team's first
# calls ran slow, and one thread was then kept for the whole run).  So a team
# that a slow phase made 30 times slower is timed again after hundreds of
# calls, and a team that was once slower than one thread by a little (config
# B: 22 ms against 17, best 8.5) after 8.  The current mode's average rising
# above the other's last timing switches too, and times the mode left again
# after TUNE_WAIT calls.  Timing costs two clock reads a call.

cdef enum:
    TUNE_NEW = 0             # the next call warms up (first touch of buffers): untimed
    TUNE_ON = 1
    TUNE_WAIT = 8            # calls before the other mode is timed again (first wait)
    TUNE_WAIT_MAX = 1024     # the longest wait

cdef double TUNE_SLOW = 2.0    # the team is slow above this times its best step (config A:
                               # one thread takes 1.6 times the team's best; B, C, D: 1.8-2.5)
cdef double TUNE_AVG = 0.25    # weight of the newest call in a mode's average
cdef double TUNE_QUICK = 0.01  # seconds: shorter calls time one thread up front


def _env_adaptive():
    # GRU_CY_ADAPTIVE=0 turns the adaptive team off for new layers.
    import os
    return os.environ.get("GRU_CY_ADAPTIVE", "1").strip() not in ("0", "false", "no", "off")


cdef struct Tune:
    int state
    Py_ssize_t B             # the batch size tuned for (another starts anew)
    int nt                   # and the team size
    int mode                 # 1: the team, 0: one thread
    int wait                 # calls until the other mode is timed again
    int backoff              # that wait after a timing that showed no gain (doubles)
    int last                 # threads the last call was given
    double lost_excess       # the last lost timing's excess per step (< 0: none since a switch)
    bint early               # one thread timed up front for quick calls (lockstep teams)
    double est[2]            # seconds per step by mode, moving average (< 0: not timed)
    double best[2]           # fastest step by mode (< 0: not timed)


cdef void tune_reset(Tune* s, Py_ssize_t B, int nt, bint early) noexcept nogil:
    s.state = TUNE_NEW
    s.B = B
    s.nt = nt
    s.early = early
    s.mode = 1
    s.wait = 0
    s.backoff = TUNE_WAIT
    s.last = 0
    s.lost_excess = -1.0
    s.est[0] = s.est[1] = -1.0
    s.best[0] = s.best[1] = -1.0


cdef int tune_mode(Tune* s, Py_ssize_t T) noexcept nogil:
    # The mode to run the next call (T steps) in: 1 the team, 0 one thread.
    cdef bint slow, quick
    if s.state != TUNE_ON or s.est[1] < 0:
        return 1
    if s.mode == 1:
        slow = s.est[1] > TUNE_SLOW * s.best[1]
        quick = s.early and s.est[1] * T < TUNE_QUICK
        if s.est[0] < 0:
            return 0 if slow or quick else 1
        # quick calls: one thread again after every wait (8, 16, ... 1024
        # calls while it keeps losing), whether or not the team is slow: an
        # up-front timing that a stall made slow would otherwise stand while
        # a team slow from its first call never falls behind its own best
        # (config A darknet in a benchmark run: 0.55-0.60 ms a call on the
        # team for four samples, one thread 0.33)
        return 0 if s.wait <= 0 and (slow or quick) else 1
    return 1 if s.wait <= 0 else 0


cdef void tune_record(Tune* s, int mode, double t, Py_ssize_t T, int used) noexcept nogil:
    # A call of mode, T steps, took t seconds; used: the threads the call
    # asked for (a team call that ran one thread anyway tells nothing).
    cdef int other = 1 - mode
    cdef double gain, w, excess
    if s.state == TUNE_NEW:
        s.state = TUNE_ON
        return
    if mode == 1 and used <= 1:
        return
    t = t / T
    if mode == s.mode:
        if s.best[mode] < 0 or t < s.best[mode]:
            # a fastest call restarts the average: the first calls of a shape
            # run cold (config B in a benchmark: 45, 34, then 9 ms), and their
            # average would make the team look slow
            s.best[mode] = s.est[mode] = t
        else:
            s.est[mode] = s.est[mode] + TUNE_AVG * (t - s.est[mode])
        if s.wait > 0:
            s.wait -= 1
        if 0 <= s.est[other] < s.est[mode]:
            # the other mode's last timing is better (maybe old): switch,
            # and time this mode again soon
            s.mode = other
            s.wait = s.backoff = TUNE_WAIT
            s.lost_excess = -1.0
        return
    # a timing of the other mode: it replaces that mode's average
    s.est[mode] = t
    if s.best[mode] < 0 or t < s.best[mode]:
        s.best[mode] = t
    if t < s.est[s.mode] or s.est[s.mode] < 0:
        s.mode = mode
        s.wait = s.backoff = TUNE_WAIT
        s.lost_excess = -1.0
        return
    gain = s.est[s.mode] - s.best[mode]
    if gain <= 0:
        # the other mode never beat this one: the wait doubles (its first
        # calls may have run cold or in a slow phase)
        s.wait = s.backoff
        if s.backoff < TUNE_WAIT_MAX:
            s.backoff *= 2
        return
    # The excess is the smaller of this timing's and the last losing one's:
    # one stalled call does not set a long wait (config A in a benchmark: one
    # 10 ms team timing set ~860 calls on one thread, 0.33 ms a call against
    # 0.23); a first loss waits TUNE_WAIT.
    excess = t - s.est[s.mode]
    w = TUNE_WAIT * (excess if excess < s.lost_excess else s.lost_excess) / gain \
        if s.lost_excess >= 0 else TUNE_WAIT
    s.lost_excess = excess
    s.wait = <int>(TUNE_WAIT if w < TUNE_WAIT else (TUNE_WAIT_MAX if w > TUNE_WAIT_MAX else w))


cdef int tune_begin(Tune* s, Dims* d, bint early) noexcept nogil:
    # A tuned call of d's shape starts: its record (anew for another batch
    # size or team), its mode; one thread: d.nthreads = 1.  early: time one
    # thread up front where calls are quick (teams that meet at barriers).
    cdef int mode
    if s.B != d.B or s.nt != d.nthreads:
        tune_reset(s, d.B, d.nthreads, early)
    mode = tune_mode(s, d.T)
    if mode == 0:
        d.nthreads = 1
    s.last = d.nthreads
    return mode


cdef struct BarCheck:
    gru_bar bar
    int* vals               # one per thread, 16 ints apart
    int rounds
    int slots
    int bad


cdef void _bar_check_thread(void* arg, int tid, int n) noexcept nogil:
    cdef BarCheck* c = <BarCheck*>arg
    cdef int r, i, tok
    if tid == 0:
        gru_bar_init(&c.bar, n)
        if not c.slots:
            c.bar.slots = 0
    gru_barrier()
    for r in range(1, c.rounds + 1):
        c.vals[16 * tid] = r
        tok = gru_bar_arrive(&c.bar, tid)
        gru_bar_await(&c.bar, tid, tok)
        for i in range(n):
            if c.vals[16 * i] != r:
                gru_claim(&c.bad)
        gru_bar_wait(&c.bar, tid)


def barrier_check(int nthreads, int rounds, bint slots=True):
    """Run ``rounds`` rounds of the fused forward's barrier on an OpenMP team
    of ``nthreads`` (not capped at the processors): each thread writes the
    round, passes the split barrier, reads every thread's value, passes the
    whole barrier.  ``slots`` False: the counter barrier of large teams.
    Returns (team size, values read that were not the round's); tests."""
    cdef BarCheck c
    cdef int[::1] vals = np.zeros(16 * max(nthreads, 1), np.intc)
    c.vals = &vals[0]
    c.rounds = rounds
    c.slots = slots
    c.bad = 0
    with nogil:
        gru_run_team(nthreads, _bar_check_thread, &c)
    return int(c.bar.n), int(c.bad)


def fused_team_size(Py_ssize_t T, Py_ssize_t B, Py_ssize_t H, int nthreads,
                    Py_ssize_t units):
    """The threads the fused forward runs for these sizes, ``nthreads`` asked
    for and ``units`` of work (granules or chunks); tests."""
    cdef Dims d
    memset(&d, 0, sizeof(Dims))
    d.T = T
    d.B = B
    d.H = H
    d.nthreads = resolve_threads(nthreads)
    return fused_team(d, units)


def num_procs():
    """Processors OpenMP says this process may use (1 without OpenMP)."""
    return gru_num_procs()


def tune_trace(team_times, one_times, int used=2, steps=None, bint early=True):
    """The modes the adaptive team picks for synthetic call times (tests).

    ``team_times[i]`` / ``one_times[i]``: seconds call ``i`` takes on the team
    / on one thread; ``steps[i]``: its steps (default 1); ``used``: the
    threads the team call asks for (1: none to pick); ``early``: one thread
    is timed up front for quick calls (a lockstep team).  Returns the list of
    modes run (1 team, 0 one thread).
    """
    cdef Tune s
    cdef int m
    cdef Py_ssize_t T
    tune_reset(&s, 1, 2, early)
    modes = []
    for i in range(len(team_times)):
        T = 1 if steps is None else steps[i]
        m = tune_mode(&s, T)
        tune_record(&s, m, team_times[i] if m else one_times[i], T, used)
        modes.append(m)
    return modes


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
    cdef Py_ssize_t work_T, work_B     # its shape
    cdef Ptrs wp                       # its pointers (h0: the zero state)
    cdef Dims d
    cdef bint f64
    cdef public Py_ssize_t cache_T, cache_B
    cdef public bint adaptive           # pick team or one thread by timing (see Tune)
    cdef Tune tune[3]                  # inference, training forward, backward
    cdef bint cache_c                  # the cache keeps no c: the backward recomputes it

    def __init__(self, theta, grad, rolling, Py_ssize_t inputs, Py_ssize_t outputs,
                 bint reset_after, int act, bint bn, bint use_blas):
        self.theta = theta
        self.grad = grad
        self.rolling = rolling
        self.f64 = theta.dtype == np.float64
        self.d.In = inputs
        self.d.H = outputs
        self.d.reset_after = reset_after
        self.d.act = act
        self.d.bn = bn
        self.d.use_blas = use_blas
        self.cache = None
        self.spare = None
        self.work = None
        self.work_T = 0
        self.work_B = 0
        self.cache_T = 0
        self.cache_B = 0
        self.adaptive = _env_adaptive()
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
        cdef Tune* s = &self.tune[_tune_index(which)]
        return {"state": ("new", "on")[s.state], "threads": s.nt,
                "mode": "team" if s.mode else "one thread",
                "seconds_per_step": {m: (s.est[i] if s.est[i] >= 0 else None)
                                     for i, m in ((1, "team"), (0, "one thread"))},
                "best": s.best[1] if s.best[1] >= 0 else None, "last_threads": s.last}

    def _tune_force(self, which, int mode):
        # Tests: the next calls run in mode (1 team, 0 one thread), both modes
        # timed as equal so that no call times the other.
        cdef Tune* s = &self.tune[_tune_index(which)]
        s.state = TUNE_ON
        s.mode = mode
        s.est[0] = s.est[1] = s.best[0] = s.best[1] = 1.0
        s.wait = TUNE_WAIT_MAX

    def set_storage(self, theta, grad, rolling):
        self.theta = theta
        self.grad = grad
        self.rolling = rolling

    def invalidate(self):
        """Drop the training cache (backward then needs a new training forward).

        Its arrays are kept for the next training forward of the same shape
        (no fresh pages to fault in per training step).
        """
        if self.cache is not None:
            self.spare = self.cache
        self.cache = None
        self.cache_T = 0
        self.cache_B = 0

    cdef dict _scratch(self, Py_ssize_t T, Py_ssize_t B):
        # Per-shape scratch: xp chunk (inference and training), step buffers
        # (inference), zero state; their pointers are kept in self.wp.
        cdef dict w = self.work
        if w is not None and self.work_T == T and self.work_B == B:
            return w
        H = self.d.H
        dt = self.theta.dtype
        w = {k: np.zeros(shape, dt)
             for k, shape in scratch_shapes(chunk_steps(T, B) * B, B, H).items()}
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

    cdef bint _fused(self, Ptrs p, bint train) noexcept nogil:
        # The fused forward, on the team or one thread (see Tune).
        cdef Tune* s = &self.tune[1 if train else 0]
        cdef Dims d = self.d
        cdef int mode, used = 0
        cdef double t0
        cdef bint done
        if not self.adaptive or d.nthreads <= 1 or fused_team(d, 1 << 30) <= 1:
            # (too small for a team: nothing to pick, no clock to read)
            return _forward_fused(p.theta, d, p, train, self.f64, &used)
        # the batch mode's threads wait for no one (a slow thread takes fewer
        # items), so one thread is timed only once the team is slow: timed up
        # front, config B's first benchmark sample took 10-11 ms against 8.2
        mode = tune_begin(s, &d, not _batch_mode(d, self.f64))
        t0 = gru_now()
        done = _forward_fused(p.theta, d, p, train, self.f64, &used)
        if done:                      # (else the per-kernel driver runs this call)
            tune_record(s, mode, gru_now() - t0, d.T, used)
        return done

    def forward(self, x, h0, y, bint train, int nthreads):
        """x (T, B, I), h0 (B, H) or None (zeros), y (T, B, H) written.

        Training keeps x (not copied: the caller hands a private array), h_{-1..T-1},
        z, r, c, s|q and BN's statistics for ``backward``; h0 is copied.
        ``nthreads`` < 1: OpenMP's current count.  Returns h_{T-1}, a fresh
        (B, H) array.
        """
        return self._run(<cnp.ndarray?>x, h0, y, train, nthreads)

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
        cdef Py_ssize_t T = cnp.PyArray_DIM(xa, 0), B = cnp.PyArray_DIM(xa, 1)
        cdef Py_ssize_t H = self.d.H
        cdef Ptrs p
        cdef dict cache
        cdef bint done = False
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
            dt = self.theta.dtype
            cache = self.spare
            self.spare = None
            shapes = cache_shapes(T, B, H, self.d.bn)
            if self.d.c_recompute:
                del shapes["c"]      # recomputed by the backward (_recompute_c)
            if cache is None or set(cache) - {"x"} != set(shapes) or any(
                    cache[k].shape != shape for k, shape in shapes.items()):
                cache = {k: np.empty(shape, dt) for k, shape in shapes.items()}
            cache["x"] = xa
            hs = cache["hs"]
            if h0 is None:
                hs[0] = 0
            else:
                hs[0] = h0
            p.h0 = _ptr(hs)
            p.y = <char*>p.h0 + B * H * (<Py_ssize_t>hs.itemsize)
            p.z = _ptr(cache["z"])
            p.r = _ptr(cache["r"])
            # without c in the cache: one step's scratch (the scratch's c)
            p.c = _ptr(cache["c"]) if "c" in cache else self.wp.c
            p.sq = _ptr(cache["sq"])
            p.vu = _ptr(cache.get("vu"))
            p.su = _ptr(cache.get("su"))
            p.vw = _ptr(cache.get("vw"))
            p.sw = _ptr(cache.get("sw"))
        else:
            if h0 is not None:
                p.h0 = _ptr(h0)
            p.y = _ptr(y)
        if not self.d.bn and not self.d.use_blas:
            with nogil:
                done = self._fused(p, train)
        if not done:
            packs = self._packs(T, B, True)
            p.wpre = _ptr(packs[0])
            p.wpre2 = _ptr(packs[1])
            if self.f64:
                with nogil:
                    _forward(<double*>p.theta, self.d, p, train)
            else:
                with nogil:
                    _forward(<float*>p.theta, self.d, p, train)
        if train:
            y[...] = hs[1:]
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
        memcpy(cnp.PyArray_DATA(<cnp.ndarray>state), <char*>p.y + (T - 1) * B * H * es,
               B * H * es)
        return state

    def backward(self, dy, dstate, dx, dh0, int nthreads):
        """dy (T, B, H) or None, dstate (B, H) or None; writes dx (T, B, I), dh0 (B, H).

        Parameter gradients accumulate into ``grad``.  The gradient buffers
        hold one chunk of steps; for the darknet variant without BN the u and
        w sublayers' gradients are equal and share one buffer.
        """
        cdef dict w = self.cache
        cdef Py_ssize_t T = self.cache_T, B = self.cache_B, H = self.d.H
        cdef Ptrs p
        memset(&p, 0, sizeof(Ptrs))
        dt = self.theta.dtype
        self.d.T = T
        self.d.B = B
        self.d.nthreads = resolve_threads(nthreads)
        self.d.c_recompute = self.cache_c
        if dstate is None:
            dh0[...] = 0
        else:
            dh0[...] = dstate
        rows = chunk_steps(T, B) * B
        dau = np.empty((rows, 3 * H), dt)
        daw = dau if (not self.d.reset_after and not self.d.bn) else np.empty((rows, 3 * H), dt)
        ds = np.empty((B, H), dt)
        cbuf = np.empty((rows, H), dt) if self.cache_c else None
        p.theta = _ptr(self.theta)
        p.grad = _ptr(self.grad)
        p.rolling = _ptr(self.rolling)
        p.x = _ptr(w["x"])
        p.h0 = _ptr(w["hs"])
        p.z = _ptr(w["z"])
        p.r = _ptr(w["r"])
        p.c = _ptr(cbuf) if self.cache_c else _ptr(w["c"])
        p.sq = _ptr(w["sq"])
        p.vu = _ptr(w.get("vu"))
        p.su = _ptr(w.get("su"))
        p.vw = _ptr(w.get("vw"))
        p.sw = _ptr(w.get("sw"))
        p.dy = _ptr(dy)
        p.dh = _ptr(dh0)
        p.dx = _ptr(dx)
        p.dau = _ptr(dau)
        p.daw = _ptr(daw)
        p.ds = _ptr(ds)
        packs = self._packs(T, B, False)
        p.wpre = _ptr(packs[0])
        p.wpre2 = _ptr(packs[1])
        with nogil:
            self._backward_tuned(p)

    cdef void _backward_tuned(self, Ptrs p) noexcept nogil:
        # The backward, on the team or one thread (see Tune; its parallel
        # regions meet at barriers as the fused forward's threads do).  Not
        # with SciPy's BLAS: its threads are not the engine's to choose.
        cdef Tune* s = &self.tune[2]
        cdef Dims d = self.d
        cdef int mode = 1
        cdef double t0
        cdef bint tuned = self.adaptive and d.nthreads > 1 and not d.use_blas
        if tuned:
            mode = tune_begin(s, &d, True)
        t0 = gru_now()
        if self.f64:
            _backward(<double*>p.theta, d, p)
        else:
            _backward(<float*>p.theta, d, p)
        if tuned:
            tune_record(s, mode, gru_now() - t0, d.T, self.d.nthreads)


# ------------------------------------------------------ test-tier wrappers ---
# py_<name>(arrays..., sizes..., scalars..., nthreads): the kernel on the data
# pointers of NumPy arrays (None = NULL).  The dtype of the first array decides.

cdef inline bint _is64(object a):
    return (<cnp.ndarray>a).dtype == np.float64


def py_bias_forward(Y, bias, Py_ssize_t R, Py_ssize_t C, Py_ssize_t ldy, int nthreads=1):
    if _is64(Y):
        bias_forward(<double*>_ptr(Y), <double*>_ptr(bias), R, C, ldy, nthreads)
    else:
        bias_forward(<float*>_ptr(Y), <float*>_ptr(bias), R, C, ldy, nthreads)


def py_bn_forward_train(Y, vhat, sd, rolling_mean, rolling_variance, scales, biases,
                        Py_ssize_t G, Py_ssize_t B, Py_ssize_t C, Py_ssize_t ld,
                        int nthreads=1):
    if _is64(Y):
        bn_forward_train(<double*>_ptr(Y), <double*>_ptr(vhat), <double*>_ptr(sd),
                         <double*>_ptr(rolling_mean), <double*>_ptr(rolling_variance),
                         <double*>_ptr(scales), <double*>_ptr(biases), G, B, C, ld, nthreads)
    else:
        bn_forward_train(<float*>_ptr(Y), <float*>_ptr(vhat), <float*>_ptr(sd),
                         <float*>_ptr(rolling_mean), <float*>_ptr(rolling_variance),
                         <float*>_ptr(scales), <float*>_ptr(biases), G, B, C, ld, nthreads)


def py_bn_forward_infer(Y, rolling_mean, rolling_variance, scales, biases,
                        Py_ssize_t R, Py_ssize_t C, Py_ssize_t ldy, int nthreads=1):
    if _is64(Y):
        bn_forward_infer(<double*>_ptr(Y), <double*>_ptr(rolling_mean),
                         <double*>_ptr(rolling_variance), <double*>_ptr(scales),
                         <double*>_ptr(biases), R, C, ldy, nthreads)
    else:
        bn_forward_infer(<float*>_ptr(Y), <float*>_ptr(rolling_mean),
                         <float*>_ptr(rolling_variance), <float*>_ptr(scales),
                         <float*>_ptr(biases), R, C, ldy, nthreads)


def py_gru_darknet_gates_forward(z, r, s, xp, hp, hprev, Py_ssize_t B, Py_ssize_t H,
                                 Py_ssize_t ldx, Py_ssize_t ldh, int nthreads=1):
    if _is64(z):
        gru_darknet_gates_forward(<double*>_ptr(z), <double*>_ptr(r), <double*>_ptr(s),
                                  <double*>_ptr(xp), <double*>_ptr(hp),
                                  <double*>_ptr(hprev), B, H, ldx, ldh, nthreads)
    else:
        gru_darknet_gates_forward(<float*>_ptr(z), <float*>_ptr(r), <float*>_ptr(s),
                                  <float*>_ptr(xp), <float*>_ptr(hp),
                                  <float*>_ptr(hprev), B, H, ldx, ldh, nthreads)


def py_gru_darknet_state_forward(c, h, xp, hp, z, hprev, Py_ssize_t B, Py_ssize_t H,
                                 Py_ssize_t ldx, Py_ssize_t ldh, int act, int nthreads=1):
    if _is64(c):
        gru_darknet_state_forward(<double*>_ptr(c), <double*>_ptr(h), <double*>_ptr(xp),
                                  <double*>_ptr(hp), <double*>_ptr(z),
                                  <double*>_ptr(hprev), B, H, ldx, ldh, act, nthreads)
    else:
        gru_darknet_state_forward(<float*>_ptr(c), <float*>_ptr(h), <float*>_ptr(xp),
                                  <float*>_ptr(hp), <float*>_ptr(z),
                                  <float*>_ptr(hprev), B, H, ldx, ldh, act, nthreads)


def py_gru_reset_after_forward(z, r, q, c, h, xp, hp, hprev, Py_ssize_t B, Py_ssize_t H,
                               Py_ssize_t ldx, Py_ssize_t ldh, int act, int nthreads=1):
    if _is64(z):
        gru_reset_after_forward(<double*>_ptr(z), <double*>_ptr(r), <double*>_ptr(q),
                                <double*>_ptr(c), <double*>_ptr(h), <double*>_ptr(xp),
                                <double*>_ptr(hp), <double*>_ptr(hprev), B, H, ldx, ldh,
                                act, nthreads)
    else:
        gru_reset_after_forward(<float*>_ptr(z), <float*>_ptr(r), <float*>_ptr(q),
                                <float*>_ptr(c), <float*>_ptr(h), <float*>_ptr(xp),
                                <float*>_ptr(hp), <float*>_ptr(hprev), B, H, ldx, ldh,
                                act, nthreads)


def py_gru_darknet_gates_backward(dau, daw, dh, dy, z, c, hprev, Py_ssize_t B,
                                  Py_ssize_t H, Py_ssize_t ldd, int act, int nthreads=1):
    if _is64(dau):
        gru_darknet_gates_backward(<double*>_ptr(dau), <double*>_ptr(daw),
                                   <double*>_ptr(dh), <double*>_ptr(dy), <double*>_ptr(z),
                                   <double*>_ptr(c), <double*>_ptr(hprev), B, H, ldd, act,
                                   nthreads)
    else:
        gru_darknet_gates_backward(<float*>_ptr(dau), <float*>_ptr(daw),
                                   <float*>_ptr(dh), <float*>_ptr(dy), <float*>_ptr(z),
                                   <float*>_ptr(c), <float*>_ptr(hprev), B, H, ldd, act,
                                   nthreads)


def py_gru_darknet_reset_backward(dau, daw, dh, ds, r, hprev, Py_ssize_t B, Py_ssize_t H,
                                  Py_ssize_t ldd, int nthreads=1):
    if _is64(dau):
        gru_darknet_reset_backward(<double*>_ptr(dau), <double*>_ptr(daw),
                                   <double*>_ptr(dh), <double*>_ptr(ds), <double*>_ptr(r),
                                   <double*>_ptr(hprev), B, H, ldd, nthreads)
    else:
        gru_darknet_reset_backward(<float*>_ptr(dau), <float*>_ptr(daw),
                                   <float*>_ptr(dh), <float*>_ptr(ds), <float*>_ptr(r),
                                   <float*>_ptr(hprev), B, H, ldd, nthreads)


def py_gru_reset_after_backward(dau, daw, dh, dy, z, r, q, c, hprev, Py_ssize_t B,
                                Py_ssize_t H, Py_ssize_t ldd, int act, int nthreads=1):
    if _is64(dau):
        gru_reset_after_backward(<double*>_ptr(dau), <double*>_ptr(daw), <double*>_ptr(dh),
                                 <double*>_ptr(dy), <double*>_ptr(z), <double*>_ptr(r),
                                 <double*>_ptr(q), <double*>_ptr(c), <double*>_ptr(hprev),
                                 B, H, ldd, act, nthreads)
    else:
        gru_reset_after_backward(<float*>_ptr(dau), <float*>_ptr(daw), <float*>_ptr(dh),
                                 <float*>_ptr(dy), <float*>_ptr(z), <float*>_ptr(r),
                                 <float*>_ptr(q), <float*>_ptr(c), <float*>_ptr(hprev),
                                 B, H, ldd, act, nthreads)


def py_bn_backward(dY, dscales, dbiases, vhat, sd, scales, Py_ssize_t G, Py_ssize_t B,
                   Py_ssize_t C, Py_ssize_t ld, int nthreads=1):
    if _is64(dY):
        bn_backward(<double*>_ptr(dY), <double*>_ptr(dscales), <double*>_ptr(dbiases),
                    <double*>_ptr(vhat), <double*>_ptr(sd), <double*>_ptr(scales),
                    G, B, C, ld, nthreads)
    else:
        bn_backward(<float*>_ptr(dY), <float*>_ptr(dscales), <float*>_ptr(dbiases),
                    <float*>_ptr(vhat), <float*>_ptr(sd), <float*>_ptr(scales),
                    G, B, C, ld, nthreads)


def py_col_sum(out, A, Py_ssize_t R, Py_ssize_t C, Py_ssize_t lda, int nthreads=1):
    if _is64(out):
        col_sum(<double*>_ptr(out), <double*>_ptr(A), R, C, lda, nthreads)
    else:
        col_sum(<float*>_ptr(out), <float*>_ptr(A), R, C, lda, nthreads)


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
    x = np.ascontiguousarray(x, dtype=np.float32)
    cdef cnp.ndarray out = np.empty_like(x)
    gru_logistic_map_f(<float*>_ptr(out), <float*>_ptr(x), x.size)
    return out


def fast_tanh_f32(x):
    """float32 tanh as the engine evaluates it (tests/test_fastmath.py).

    Parameters
    ----------
    x : array_like, any shape (converted to C-contiguous float32)

    Returns
    -------
    ndarray of float32, the shape of x
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    cdef cnp.ndarray out = np.empty_like(x)
    gru_tanh_map_f(<float*>_ptr(out), <float*>_ptr(x), x.size)
    return out
