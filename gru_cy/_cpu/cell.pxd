# The GRU cell's elementwise and BN kernels (cell.pyx) and the row functions
# they share with the fused forward (fused.pyx).  Contracts: gru_cy.kernels.
from cython cimport floating

# The elementwise row loops are C (rows.h): `restrict` lets gcc vectorise them,
# target_clones picks AVX-512 / AVX2 / baseline code at load time.  _f: float32
# (fastmath.h's logistic / tanh), _d: float64 (libm).
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


# ------------------------------------------------------------- row functions ---
# One row (one sequence) of H units; the fused forward calls these on a slice
# of the units.  gs: the distance between gate columns ([z | r | h]).

cdef inline void _darknet_gates_row(floating* z, floating* r, floating* s,
                                    const floating* xp, const floating* hp,
                                    const floating* hprev, Py_ssize_t H,
                                    Py_ssize_t gs) noexcept nogil:
    # z = sig(xp_z + hp_z); r = sig(xp_r + hp_r); s = r*hprev; z NULL: r and s
    # only; r NULL: z only.
    if floating is float:
        gru_darknet_gates_row_f(z, r, s, xp, hp, hprev, H, gs)
    else:
        gru_darknet_gates_row_d(z, r, s, xp, hp, hprev, H, gs)


cdef inline void _darknet_state_row(floating* c, floating* h, const floating* xp,
                                    const floating* hp, const floating* z,
                                    const floating* hprev, Py_ssize_t H,
                                    int act) noexcept nogil:
    # c = act(xp_h + hp_h); h = z*hprev + (1 - z)*c.
    if floating is float:
        gru_darknet_state_row_f(c, h, xp, hp, z, hprev, H, act)
    else:
        gru_darknet_state_row_d(c, h, xp, hp, z, hprev, H, act)


cdef inline void _reset_after_row(floating* z, floating* r, floating* q, floating* c,
                                  floating* h, const floating* xp, const floating* hp,
                                  const floating* hprev, Py_ssize_t H, Py_ssize_t gs,
                                  int act) noexcept nogil:
    # z, r; q = hp_h (if q); c = act(xp_h + r*hp_h); h = z*hprev + (1 - z)*c.
    if floating is float:
        gru_reset_after_row_f(z, r, q, c, h, xp, hp, hprev, H, gs, act)
    else:
        gru_reset_after_row_d(z, r, q, c, h, xp, hp, hprev, H, gs, act)


cdef inline void _reset_after_cand_row(floating* c, const floating* r, const floating* q,
                                       Py_ssize_t H, int act) noexcept nogil:
    # c = act(c + r*q) in place (c holds xp_h): the forward's candidate again.
    if floating is float:
        gru_reset_after_cand_row_f(c, r, q, H, act)
    else:
        gru_reset_after_cand_row_d(c, r, q, H, act)


# ------------------------------------------------------------------- kernels ---
# The names, argument order and write rule of gru_cy.kernels.KERNELS, plus a
# trailing nthreads (the most threads the kernel may use).

cdef void bias_forward(floating* Y, const floating* bias, Py_ssize_t R, Py_ssize_t C,
                       Py_ssize_t ldy, int nthreads) noexcept nogil

cdef void bn_forward_train(floating* Y, floating* vhat, floating* sd,
                           floating* rolling_mean, floating* rolling_variance,
                           const floating* scales, const floating* biases,
                           Py_ssize_t G, Py_ssize_t B, Py_ssize_t C, Py_ssize_t ld,
                           int nthreads) noexcept nogil

cdef void bn_forward_infer(floating* Y, const floating* rolling_mean,
                           const floating* rolling_variance, const floating* scales,
                           const floating* biases, Py_ssize_t R, Py_ssize_t C,
                           Py_ssize_t ldy, int nthreads) noexcept nogil

cdef void gru_darknet_gates_forward(floating* z, floating* r, floating* s,
                                    const floating* xp, const floating* hp,
                                    const floating* hprev, Py_ssize_t B, Py_ssize_t H,
                                    Py_ssize_t ldx, Py_ssize_t ldh,
                                    int nthreads) noexcept nogil

cdef void gru_darknet_state_forward(floating* c, floating* h, const floating* xp,
                                    const floating* hp, const floating* z,
                                    const floating* hprev, Py_ssize_t B, Py_ssize_t H,
                                    Py_ssize_t ldx, Py_ssize_t ldh, int act,
                                    int nthreads) noexcept nogil

cdef void gru_reset_after_forward(floating* z, floating* r, floating* q, floating* c,
                                  floating* h, const floating* xp, const floating* hp,
                                  const floating* hprev, Py_ssize_t B, Py_ssize_t H,
                                  Py_ssize_t ldx, Py_ssize_t ldh, int act,
                                  int nthreads) noexcept nogil

cdef void gru_darknet_gates_backward(floating* dau, floating* daw, floating* dh,
                                     const floating* dy, const floating* z,
                                     const floating* c, const floating* hprev,
                                     Py_ssize_t B, Py_ssize_t H, Py_ssize_t ldd, int act,
                                     int nthreads) noexcept nogil

cdef void gru_darknet_reset_backward(floating* dau, floating* daw, floating* dh,
                                     const floating* ds, const floating* r,
                                     const floating* hprev, Py_ssize_t B, Py_ssize_t H,
                                     Py_ssize_t ldd, int nthreads) noexcept nogil

cdef void gru_reset_after_backward(floating* dau, floating* daw, floating* dh,
                                   const floating* dy, const floating* z,
                                   const floating* r, const floating* q,
                                   const floating* c, const floating* hprev,
                                   Py_ssize_t B, Py_ssize_t H, Py_ssize_t ldd, int act,
                                   int nthreads) noexcept nogil

cdef void bn_backward(floating* dY, floating* dscales, floating* dbiases,
                      const floating* vhat, const floating* sd, const floating* scales,
                      Py_ssize_t G, Py_ssize_t B, Py_ssize_t C, Py_ssize_t ld,
                      int nthreads) noexcept nogil

cdef void col_sum(floating* out, const floating* A, Py_ssize_t R, Py_ssize_t C,
                  Py_ssize_t lda, int nthreads) noexcept nogil
