# Point functions shared by the engine's modules: stable activations, thread teams.
from cython cimport floating
from libc.math cimport exp, expf, tanh, fabs

cdef extern from "fastmath.h" nogil:
    # float32: branch-free, vectorisable (no libm); float64 uses libm (below).
    float gru_expneg_f(float x)
    float gru_logistic_f(float x)
    float gru_tanh_f(float x)

cdef extern from "omp_compat.h":
    int gru_max_threads() noexcept nogil
    int gru_have_openmp() noexcept nogil

# Work (elements) below which a kernel runs serially: an OpenMP region costs
# more than it saves there (batch-1 streaming).
cdef enum:
    PAR_MIN_WORK = 8192


cdef inline int team(Py_ssize_t units, Py_ssize_t work, int nthreads) noexcept nogil:
    """Threads for a loop over `units` independent units totalling `work` elements."""
    if nthreads <= 1 or units < 2 or work < PAR_MIN_WORK:
        return 1
    return <int>(units if units < nthreads else nthreads)


cdef inline floating fexp(floating x) noexcept nogil:
    if floating is float:
        return expf(x)
    else:
        return exp(x)


cdef inline floating logistic(floating x) noexcept nogil:
    # 1 / (1 + e^-x) without overflow: e = e^-|x| is in (0, 1].  float32:
    # fastmath.h's gru_logistic_f (the same formula, its own exp).
    cdef floating e, s
    if floating is float:
        return gru_logistic_f(x)
    else:
        e = exp(-fabs(x))
        s = 1 / (1 + e)
        return s if x >= 0 else e * s


cdef inline floating ftanh(floating x) noexcept nogil:
    if floating is float:
        return gru_tanh_f(x)
    else:
        return tanh(x)


cdef inline floating gate_act(floating x, int act) noexcept nogil:
    # Candidate activation: 0 logistic, 1 tanh.
    return ftanh(x) if act == 1 else logistic(x)


cdef inline floating gate_grad(floating y, int act) noexcept nogil:
    # act'(x) written through y = act(x).
    return (1 - y * y) if act == 1 else y * (1 - y)
