# cython: language_level=3
"""Darknet's update rules (SGD with momentum and decay, Adam), in place.

The flat parameter vector holds the weights first: elements ``i < n_decay``
get SGD's weight decay.  Both kernels zero the gradient they consume.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport pow

from gru_cy._cpu.common cimport team


cdef extern from "update_kernels.h" nogil:
    void gru_sgd_range_f(float* w, float* u, float* g, Py_ssize_t i0, Py_ssize_t i1,
                         Py_ssize_t n_decay, float lr, float momentum, float decay,
                         float batch, float clip)
    void gru_sgd_range_d(double* w, double* u, double* g, Py_ssize_t i0, Py_ssize_t i1,
                         Py_ssize_t n_decay, double lr, double momentum, double decay,
                         double batch, double clip)
    int gru_sgd_bad_range_f(const float* w, const float* u, const float* g, Py_ssize_t i0,
                            Py_ssize_t i1, Py_ssize_t n_decay, float lr, float momentum,
                            float decay, float batch, float clip)
    int gru_sgd_bad_range_d(const double* w, const double* u, const double* g,
                            Py_ssize_t i0, Py_ssize_t i1, Py_ssize_t n_decay, double lr,
                            double momentum, double decay, double batch, double clip)
    void gru_adam_range_f(float* w, float* m, float* v, float* g, Py_ssize_t i0,
                          Py_ssize_t i1, float lr, float b1, float b2, float eps, float decay,
                          float batch, float c1, float c2, float clip)
    void gru_adam_range_d(double* w, double* m, double* v, double* g, Py_ssize_t i0,
                          Py_ssize_t i1, double lr, double b1, double b2, double eps,
                          double decay, double batch, double c1, double c2, double clip)
    int gru_adam_bad_range_f(const float* w, const float* m, const float* v, const float* g,
                             Py_ssize_t i0, Py_ssize_t i1, float lr, float b1, float b2,
                             float eps, float decay, float batch, float c1, float c2,
                             float clip)
    int gru_adam_bad_range_d(const double* w, const double* m, const double* v,
                             const double* g, Py_ssize_t i0, Py_ssize_t i1, double lr,
                             double b1, double b2, double eps, double decay, double batch,
                             double c1, double c2, double clip)


cdef inline void _sgd_range(floating* w, floating* u, floating* g, Py_ssize_t i0,
                            Py_ssize_t i1, Py_ssize_t n_decay, floating lr,
                            floating momentum, floating decay, floating batch,
                            floating clip) noexcept nogil:
    # SGD's step on [i0, i1) (update_kernels.h: vectorised, same bits as the
    # per-element loop it replaced)
    if floating is float:
        gru_sgd_range_f(w, u, g, i0, i1, n_decay, lr, momentum, decay, batch, clip)
    else:
        gru_sgd_range_d(w, u, g, i0, i1, n_decay, lr, momentum, decay, batch, clip)


cdef inline int _sgd_bad_range(const floating* w, const floating* u, const floating* g,
                               Py_ssize_t i0, Py_ssize_t i1, Py_ssize_t n_decay,
                               floating lr, floating momentum, floating decay,
                               floating batch, floating clip) noexcept nogil:
    # 1 where _sgd_range would write a non-finite w or u in [i0, i1)
    if floating is float:
        return gru_sgd_bad_range_f(w, u, g, i0, i1, n_decay, lr, momentum, decay, batch,
                                   clip)
    return gru_sgd_bad_range_d(w, u, g, i0, i1, n_decay, lr, momentum, decay, batch, clip)


cdef Py_ssize_t _PART = 1 << 14
# elements a thread's part of the rules' loops takes at a time (team runs)


cdef inline Py_ssize_t _parts(Py_ssize_t n) noexcept nogil:
    # parts of n elements: part k is [k * _PART, _part_end(n, k))
    return (n + _PART - 1) // _PART


cdef inline Py_ssize_t _part_end(Py_ssize_t n, Py_ssize_t k) noexcept nogil:
    return min(n, (k + 1) * _PART)


cdef int _UPDATE_SCALE = 64
# SGD's step and its check are memory-bound: one thread is faster on this
# 2-core machine up to at least 4.7 M elements (74 K: 17 us against 65;
# 4.7 M: 3.1 ms against 4.6), so they take a team only from 64 times the
# usual work per thread (0.5 M elements).


cdef void sgd_update(floating* w, floating* u, floating* g, Py_ssize_t n,
                     Py_ssize_t n_decay, floating lr, floating momentum, floating decay,
                     floating batch, floating clip, int nthreads) noexcept nogil:
    # w, u, g: (n,).  u = u - g; u -= decay*batch*w (i < n_decay);
    # w += (lr/batch)*u; u *= momentum; g = 0.
    cdef Py_ssize_t k, parts = _parts(n)
    cdef int nt = team(parts, n // _UPDATE_SCALE, nthreads)
    if nt == 1:
        _sgd_range(w, u, g, 0, n, n_decay, lr, momentum, decay, batch, clip)
    else:
        for k in prange(parts, nogil=True, schedule="static", num_threads=nt):
            _sgd_range(w, u, g, k * _PART, _part_end(n, k), n_decay, lr,
                       momentum, decay, batch, clip)


cdef inline void _adam_range(floating* w, floating* m, floating* v, floating* g,
                             Py_ssize_t i0, Py_ssize_t i1, floating lr, floating b1,
                             floating b2, floating eps, floating decay, floating batch,
                             floating c1, floating c2, floating clip) noexcept nogil:
    # Adam's step on [i0, i1) (update_kernels.h)
    if floating is float:
        gru_adam_range_f(w, m, v, g, i0, i1, lr, b1, b2, eps, decay, batch, c1, c2, clip)
    else:
        gru_adam_range_d(w, m, v, g, i0, i1, lr, b1, b2, eps, decay, batch, c1, c2, clip)


cdef inline int _adam_bad_range(const floating* w, const floating* m, const floating* v,
                                const floating* g, Py_ssize_t i0, Py_ssize_t i1,
                                floating lr, floating b1, floating b2, floating eps,
                                floating decay, floating batch, floating c1, floating c2,
                                floating clip) noexcept nogil:
    # 1 where _adam_range would write a non-finite w, m or v in [i0, i1)
    if floating is float:
        return gru_adam_bad_range_f(w, m, v, g, i0, i1, lr, b1, b2, eps, decay, batch, c1,
                                    c2, clip)
    return gru_adam_bad_range_d(w, m, v, g, i0, i1, lr, b1, b2, eps, decay, batch, c1, c2,
                                clip)


cdef void adam_update(floating* w, floating* m, floating* v, floating* g, Py_ssize_t n,
                      floating lr, floating b1, floating b2, floating eps,
                      floating decay, floating batch, int t, floating clip,
                      int nthreads) noexcept nogil:
    # w, m, v, g: (n,).  g' = g + decay*batch*w; m, v moments; bias-corrected step.
    cdef floating c1 = <floating>(1 - pow(b1, t))
    cdef floating c2 = <floating>(1 - pow(b2, t))
    cdef Py_ssize_t k, parts = _parts(n)
    cdef int nt = team(parts, n, nthreads)
    if nt == 1:
        _adam_range(w, m, v, g, 0, n, lr, b1, b2, eps, decay, batch, c1, c2, clip)
    else:
        for k in prange(parts, nogil=True, schedule="static", num_threads=nt):
            _adam_range(w, m, v, g, k * _PART, _part_end(n, k), lr, b1, b2,
                        eps, decay, batch, c1, c2, clip)


cdef void sgd_check(floating* out, const floating* w, const floating* u,
                    const floating* g, Py_ssize_t n, Py_ssize_t n_decay, floating lr,
                    floating momentum, floating decay, floating batch, floating clip,
                    int nthreads) noexcept nogil:
    # out[0] = 1 where sgd_update would leave an element non-finite; nothing
    # else written.
    cdef Py_ssize_t k, parts = _parts(n)
    cdef int bad = 0
    cdef int nt = team(parts, n // _UPDATE_SCALE, nthreads)
    if nt == 1:
        bad = _sgd_bad_range(w, u, g, 0, n, n_decay, lr, momentum, decay, batch, clip)
    else:
        for k in prange(parts, nogil=True, schedule="static", num_threads=nt):
            bad |= _sgd_bad_range(w, u, g, k * _PART, _part_end(n, k),
                                  n_decay, lr, momentum, decay, batch, clip)
    if bad:
        out[0] = 1


cdef void adam_check(floating* out, const floating* w, const floating* m,
                     const floating* v, const floating* g, Py_ssize_t n, floating lr,
                     floating b1, floating b2, floating eps, floating decay,
                     floating batch, int t, floating clip, int nthreads) noexcept nogil:
    # out[0] = 1 where adam_update would leave an element non-finite; nothing
    # else written.
    cdef int bad = 0
    cdef floating c1 = <floating>(1 - pow(b1, t))
    cdef floating c2 = <floating>(1 - pow(b2, t))
    cdef Py_ssize_t k, parts = _parts(n)
    cdef int nt = team(parts, n, nthreads)
    if nt == 1:
        bad = _adam_bad_range(w, m, v, g, 0, n, lr, b1, b2, eps, decay, batch, c1, c2, clip)
    else:
        for k in prange(parts, nogil=True, schedule="static", num_threads=nt):
            bad |= _adam_bad_range(w, m, v, g, k * _PART, _part_end(n, k),
                                   lr, b1, b2, eps, decay, batch, c1, c2, clip)
    if bad:
        out[0] = 1


def py_sgd_update(floating[::1] w, floating[::1] u, floating[::1] g, Py_ssize_t n,
                  Py_ssize_t n_decay, double lr, double momentum, double decay,
                  double batch, double clip, int nthreads=1):
    """``sgd_update`` on flat C-contiguous arrays of one float type (kernels.py)."""
    sgd_update(&w[0], &u[0], &g[0], n, n_decay, <floating>lr, <floating>momentum,
               <floating>decay, <floating>batch, <floating>clip, nthreads)


def py_adam_update(floating[::1] w, floating[::1] m, floating[::1] v, floating[::1] g,
                   Py_ssize_t n, double lr, double b1, double b2, double eps, double decay,
                   double batch, int t, double clip, int nthreads=1):
    """``adam_update`` on flat C-contiguous arrays of one float type (kernels.py)."""
    adam_update(&w[0], &m[0], &v[0], &g[0], n, <floating>lr, <floating>b1, <floating>b2,
                <floating>eps, <floating>decay, <floating>batch, t, <floating>clip, nthreads)


def _need(have, name, n):
    if have < n:
        raise ValueError(f"{name}: expected at least {n} elements, got {have}")


def py_sgd_check(floating[::1] out, const floating[::1] w, const floating[::1] u,
                 const floating[::1] g, Py_ssize_t n, Py_ssize_t n_decay, double lr,
                 double momentum, double decay, double batch, double clip, int nthreads=1):
    """``sgd_check`` on flat C-contiguous arrays of one float type (kernels.py)."""
    _need(out.shape[0], "out", 1)
    for name, a in (("w", w), ("u", u), ("g", g)):
        _need(a.shape[0], name, n)
    with nogil:
        sgd_check(&out[0], &w[0], &u[0], &g[0], n, n_decay, <floating>lr,
                  <floating>momentum, <floating>decay, <floating>batch, <floating>clip,
                  nthreads)


def py_adam_check(floating[::1] out, const floating[::1] w, const floating[::1] m,
                  const floating[::1] v, const floating[::1] g, Py_ssize_t n, double lr,
                  double b1, double b2, double eps, double decay, double batch, int t,
                  double clip, int nthreads=1):
    """``adam_check`` on flat C-contiguous arrays of one float type (kernels.py)."""
    _need(out.shape[0], "out", 1)
    for name, a in (("w", w), ("m", m), ("v", v), ("g", g)):
        _need(a.shape[0], name, n)
    with nogil:
        adam_check(&out[0], &w[0], &m[0], &v[0], &g[0], n, <floating>lr, <floating>b1,
                   <floating>b2, <floating>eps, <floating>decay, <floating>batch, t,
                   <floating>clip, nthreads)
