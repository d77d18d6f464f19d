# cython: language_level=3
"""Network building blocks of the Cython engine (fused float/double).

Tier 1: ``noexcept nogil`` pointer functions with the names, argument order
and write rule of ``gru_cy.kernels.KERNELS`` (``activation_forward``,
``activation_backward``, ``softmax_forward``,
``softmax_cross_entropy_backward``, ``mse_backward``, ``seq_gather``), each with a trailing
``nthreads``.  Tier 2: ``py_<name>`` wrappers taking flat C-contiguous arrays of one float
type (typed memoryviews), sizes, scalars and ``nthreads``; they check the
sizes against the arrays and are what the CPU backend
(``gru_cy.backends.cpu``) calls.

Activations follow Darknet's ``activations.h`` (codes of
``gru_cy.kernels.ACTIVATIONS``), evaluated in double like Darknet and written
back in the array's precision; logistic, loggy, elu and selu are written so
that no finite input overflows.  Each row (or element) is handled by one
thread, so results do not depend on ``nthreads``.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport exp, expm1, tanh, log, fabs
from libc.float cimport FLT_MIN, DBL_MIN
from libc.stdint cimport int64_t
from libc.string cimport memcpy, memset

from gru_cy._cpu.common cimport team

cdef int N_ACT = 13


cdef inline double _logistic(double x) noexcept nogil:
    # 1 / (1 + e^-x) with e = e^-|x| in (0, 1]: no overflow.
    cdef double e = exp(-fabs(x))
    cdef double s = 1.0 / (1.0 + e)
    return s if x >= 0 else e * s


cdef inline double act_value(double x, int act) noexcept nogil:
    # y = act(x), Darknet's activate() for codes 0..12 (kernels.ACTIVATIONS).
    if act == 0:        # logistic
        return _logistic(x)
    elif act == 1:      # tanh
        return tanh(x)
    elif act == 2:      # linear
        return x
    elif act == 3:      # relu
        return x if x > 0 else 0.0
    elif act == 4:      # leaky
        return x if x > 0 else 0.1 * x
    elif act == 5:      # elu
        return x if x >= 0 else expm1(x)
    elif act == 6:      # selu
        return 1.0507 * x if x >= 0 else 1.0507 * 1.6732 * expm1(x)
    elif act == 7:      # relie
        return x if x > 0 else 0.01 * x
    elif act == 8:      # ramp
        return (x if x > 0 else 0.0) + 0.1 * x
    elif act == 9:      # hardtan
        if x < -1:
            return -1.0
        return 1.0 if x > 1 else x
    elif act == 10:     # lhtan
        if x < 0:
            return 0.001 * x
        return 0.001 * (x - 1) + 1 if x > 1 else x
    elif act == 11:     # plse
        if x < -4:
            return 0.01 * (x + 4)
        return 0.01 * (x - 4) + 1 if x > 4 else 0.125 * x + 0.5
    else:               # loggy: 2 / (1 + e^-x) - 1
        return 2.0 * _logistic(x) - 1.0


cdef inline double act_gradient(double y, int act) noexcept nogil:
    # act'(x) written through y = act(x), Darknet's gradient() (no division).
    if act == 0:
        return (1 - y) * y
    elif act == 1:
        return 1 - y * y
    elif act == 2:
        return 1.0
    elif act == 3:
        return 1.0 if y > 0 else 0.0
    elif act == 4:
        return 1.0 if y > 0 else 0.1
    elif act == 5:
        return 1.0 if y >= 0 else y + 1
    elif act == 6:
        return 1.0507 if y >= 0 else y + 1.0507 * 1.6732
    elif act == 7:
        return 1.0 if y > 0 else 0.01
    elif act == 8:
        return 1.1 if y > 0 else 0.1
    elif act == 9:
        return 1.0 if (y > -1 and y < 1) else 0.0
    elif act == 10:
        return 1.0 if (y > 0 and y < 1) else 0.001
    elif act == 11:
        return 0.01 if (y < 0 or y > 1) else 0.125
    else:
        return 2 * (1 - (y + 1) / 2) * ((y + 1) / 2)


cdef void activation_forward(floating* Y, Py_ssize_t n, int act,
                             int nthreads) noexcept nogil:
    # Y (n,) in place: Y = act(Y).
    cdef Py_ssize_t i
    cdef int nt = team(n, n, nthreads)
    if act == 2:
        return
    for i in prange(n, schedule="static", num_threads=nt):
        Y[i] = <floating>act_value(Y[i], act)


cdef void activation_backward(floating* dY, const floating* Y, Py_ssize_t n,
                              int act, int nthreads) noexcept nogil:
    # dY (n,) in place, Y (n,) = act(x):  dY *= act'(x)   (differentiates Y = act(x)).
    cdef Py_ssize_t i
    cdef int nt = team(n, n, nthreads)
    if act == 2:
        return
    for i in prange(n, schedule="static", num_threads=nt):
        dY[i] = <floating>(dY[i] * act_gradient(Y[i], act))


cdef void softmax_forward(floating* P, const floating* X, Py_ssize_t R,
                          Py_ssize_t C, Py_ssize_t ldx, int nthreads) noexcept nogil:
    # P (R, C) contiguous, X (R, C) rows of stride ldx: P = softmax(X) per row.
    cdef Py_ssize_t r, c
    cdef double mx, s, e
    cdef int nt = team(R, R * C, nthreads)
    if C <= 0:
        return
    for r in prange(R, schedule="static", num_threads=nt):
        mx = X[r * ldx]
        for c in range(1, C):
            if X[r * ldx + c] > mx:
                mx = X[r * ldx + c]
        s = 0
        for c in range(C):
            e = exp(X[r * ldx + c] - mx)
            s = s + e
            P[r * C + c] = <floating>e
        for c in range(C):
            P[r * C + c] = <floating>(P[r * C + c] / s)


cdef void softmax_cross_entropy_backward(floating* dX, floating* loss,
                                         const floating* P, const floating* target,
                                         Py_ssize_t R, Py_ssize_t C, floating scale,
                                         int nthreads) noexcept nogil:
    # dX, P, target (R, C), loss (R,):  loss = -sum_c t log p;  dX = scale*(P - t).
    cdef Py_ssize_t r, c
    cdef double acc, p, tiny
    cdef int nt = team(R, R * C, nthreads)
    if floating is float:
        tiny = FLT_MIN
    else:
        tiny = DBL_MIN
    for r in prange(R, schedule="static", num_threads=nt):
        acc = 0
        for c in range(C):
            p = P[r * C + c]
            if target[r * C + c] != 0:
                acc = acc - target[r * C + c] * log(p if p > tiny else tiny)
            dX[r * C + c] = scale * (P[r * C + c] - target[r * C + c])
        loss[r] = <floating>acc


cdef void mse_backward(floating* dX, floating* loss, const floating* Y,
                       const floating* target, Py_ssize_t R, Py_ssize_t C,
                       floating scale, int nthreads) noexcept nogil:
    # dX, Y, target (R, C), loss (R,):  loss = sum_c (Y - t)^2 / 2;  dX = scale*(Y - t).
    cdef Py_ssize_t r, c
    cdef double acc, d
    cdef int nt = team(R, R * C, nthreads)
    for r in prange(R, schedule="static", num_threads=nt):
        acc = 0
        for c in range(C):
            d = <double>Y[r * C + c] - target[r * C + c]
            acc = acc + d * d
            dX[r * C + c] = <floating>(scale * d)
        loss[r] = <floating>(0.5 * acc)


# --- Tier 2: thin wrappers -------------------------------------------------
cdef void seq_gather(floating* Y, const floating* X, const int64_t* rows, Py_ssize_t R,
                     Py_ssize_t C, Py_ssize_t ldy, Py_ssize_t ldx,
                     int nthreads) noexcept nogil:
    # Y[i, :C] = X[rows[i], :C] (rows of strides ldy / ldx), zeros where rows[i] < 0.
    cdef Py_ssize_t i
    cdef int64_t j
    cdef int nt = team(R, R * C, nthreads)
    for i in prange(R, schedule="static", num_threads=nt):
        j = rows[i]
        if j >= 0:
            memcpy(Y + i * ldy, X + j * ldx, C * sizeof(floating))
        else:
            memset(Y + i * ldy, 0, C * sizeof(floating))


# Flat C-contiguous arrays of one float type (inputs may be read-only); the sizes
# are checked against them.

cdef int _size(Py_ssize_t have, str name, Py_ssize_t n) except -1:
    if have < n:
        raise ValueError(f"{name}: expected at least {n} elements, got {have}")
    return 0


cdef int _check_act(int act) except -1:
    if act < 0 or act >= N_ACT:
        raise ValueError(f"act: expected an activation code in [0, {N_ACT}), got {act}")
    return 0


def py_activation_forward(floating[::1] Y, Py_ssize_t n, int act, int nthreads=1):
    """Y[:n] = act(Y[:n]) in place (code from ``kernels.ACTIVATIONS``)."""
    _check_act(act)
    _size(Y.shape[0], "Y", n)
    with nogil:
        activation_forward(&Y[0], n, act, nthreads)


def py_activation_backward(floating[::1] dY, const floating[::1] Y, Py_ssize_t n, int act,
                           int nthreads=1):
    """dY[:n] *= act'(x) with Y = act(x), in place."""
    _check_act(act)
    _size(dY.shape[0], "dY", n)
    _size(Y.shape[0], "Y", n)
    with nogil:
        activation_backward(&dY[0], &Y[0], n, act, nthreads)


def py_softmax_forward(floating[::1] P, const floating[::1] X, Py_ssize_t R, Py_ssize_t C,
                       Py_ssize_t ldx, int nthreads=1):
    """P (R, C) = row-wise softmax of X (rows of stride ldx)."""
    if ldx < C:
        raise ValueError(f"ldx: expected >= C = {C}, got {ldx}")
    _size(P.shape[0], "P", R * C)
    _size(X.shape[0], "X", (R - 1) * ldx + C if R > 0 else 0)
    with nogil:
        softmax_forward(&P[0], &X[0], R, C, ldx, nthreads)


def py_softmax_cross_entropy_backward(floating[::1] dX, floating[::1] loss,
                                      const floating[::1] P, const floating[::1] target,
                                      Py_ssize_t R,
                                      Py_ssize_t C, double scale, int nthreads=1):
    """dX = scale*(P - target); loss[r] = -sum_c target*log(P)."""
    _size(dX.shape[0], "dX", R * C)
    _size(loss.shape[0], "loss", R)
    _size(P.shape[0], "P", R * C)
    _size(target.shape[0], "target", R * C)
    with nogil:
        softmax_cross_entropy_backward(&dX[0], &loss[0], &P[0], &target[0], R, C,
                                       <floating>scale, nthreads)


def py_mse_backward(floating[::1] dX, floating[::1] loss, const floating[::1] Y,
                    const floating[::1] target, Py_ssize_t R, Py_ssize_t C, double scale,
                    int nthreads=1):
    """dX = scale*(Y - target); loss[r] = sum_c (Y - target)^2 / 2."""
    _size(dX.shape[0], "dX", R * C)
    _size(loss.shape[0], "loss", R)
    _size(Y.shape[0], "Y", R * C)
    _size(target.shape[0], "target", R * C)
    with nogil:
        mse_backward(&dX[0], &loss[0], &Y[0], &target[0], R, C, <floating>scale, nthreads)


def py_seq_gather(floating[::1] Y, const floating[::1] X, const int64_t[::1] rows,
                  Py_ssize_t R, Py_ssize_t C, Py_ssize_t ldy, Py_ssize_t ldx,
                  int nthreads=1):
    """Y[i, :C] = X[rows[i], :C] where rows[i] >= 0, else 0 (rows of strides ldy, ldx)."""
    cdef Py_ssize_t i, nx
    if C < 0 or R < 0:
        raise ValueError(f"R, C: expected >= 0, got R={R}, C={C}")
    if ldy < C or ldx < C:
        raise ValueError(f"ldy, ldx: expected >= C = {C}, got ldy={ldy}, ldx={ldx}")
    _size(rows.shape[0], "rows", R)
    _size(Y.shape[0], "Y", (R - 1) * ldy + C if R > 0 else 0)
    if R == 0 or C == 0:
        return
    nx = (X.shape[0] - C) // ldx + 1 if X.shape[0] >= C else 0
    for i in range(R):
        if rows[i] >= nx:
            raise ValueError(f"rows[{i}]: expected < {nx} (rows of X), got {rows[i]}")
    with nogil:
        seq_gather(&Y[0], &X[0], &rows[0], R, C, ldy, ldx, nthreads)
