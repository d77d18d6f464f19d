# cython: language_level=3
"""Darknet's update rules (SGD with momentum and decay, Adam), in place.

The flat parameter vector holds the weights first: elements ``i < n_decay``
get SGD's weight decay.  Both kernels zero the gradient they consume.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport sqrt, pow
cimport numpy as cnp
import numpy as np

from gru_cy._cpu.common cimport team

cnp.import_array()


cdef inline floating _clip(floating g, floating clip) noexcept nogil:
    if clip > 0:
        if g > clip:
            return clip
        if g < -clip:
            return -clip
    return g


cdef inline void _sgd_one(floating* w, floating* u, floating* g, Py_ssize_t i,
                          Py_ssize_t n_decay, floating lr, floating momentum,
                          floating decay, floating batch, floating clip) noexcept nogil:
    cdef floating ui = u[i] - _clip(g[i], clip)
    if i < n_decay:
        ui = ui - decay * batch * w[i]
    w[i] = w[i] + (lr / batch) * ui
    u[i] = momentum * ui
    g[i] = 0


cdef void sgd_update(floating* w, floating* u, floating* g, Py_ssize_t n,
                     Py_ssize_t n_decay, floating lr, floating momentum, floating decay,
                     floating batch, floating clip, int nthreads) noexcept nogil:
    # w, u, g: (n,).  u = u - g; u -= decay*batch*w (i < n_decay);
    # w += (lr/batch)*u; u *= momentum; g = 0.
    cdef Py_ssize_t i
    cdef int nt = team(n, n, nthreads)
    if nt == 1:
        for i in range(n):
            _sgd_one(w, u, g, i, n_decay, lr, momentum, decay, batch, clip)
    else:
        for i in prange(n, nogil=True, schedule="static", num_threads=nt):
            _sgd_one(w, u, g, i, n_decay, lr, momentum, decay, batch, clip)


cdef inline void _adam_one(floating* w, floating* m, floating* v, floating* g,
                           Py_ssize_t i, floating lr, floating b1, floating b2,
                           floating eps, floating decay, floating batch,
                           floating c1, floating c2, floating clip) noexcept nogil:
    cdef floating gi = _clip(g[i], clip) + decay * batch * w[i]
    cdef floating mi = b1 * m[i] + (1 - b1) * gi
    cdef floating vi = b2 * v[i] + (1 - b2) * gi * gi
    m[i] = mi
    v[i] = vi
    w[i] = w[i] - lr * (mi / c1) / (<floating>sqrt(vi / c2) + eps)
    g[i] = 0


cdef void adam_update(floating* w, floating* m, floating* v, floating* g, Py_ssize_t n,
                      floating lr, floating b1, floating b2, floating eps,
                      floating decay, floating batch, int t, floating clip,
                      int nthreads) noexcept nogil:
    # w, m, v, g: (n,).  g' = g + decay*batch*w; m, v moments; bias-corrected step.
    cdef Py_ssize_t i
    cdef floating c1 = <floating>(1 - pow(b1, t))
    cdef floating c2 = <floating>(1 - pow(b2, t))
    cdef int nt = team(n, n, nthreads)
    if nt == 1:
        for i in range(n):
            _adam_one(w, m, v, g, i, lr, b1, b2, eps, decay, batch, c1, c2, clip)
    else:
        for i in prange(n, nogil=True, schedule="static", num_threads=nt):
            _adam_one(w, m, v, g, i, lr, b1, b2, eps, decay, batch, c1, c2, clip)


cdef inline void* _ptr(object a):
    return NULL if a is None else cnp.PyArray_DATA(<cnp.ndarray>a)


def py_sgd_update(w, u, g, Py_ssize_t n, Py_ssize_t n_decay, double lr, double momentum,
                  double decay, double batch, double clip, int nthreads=1):
    """Test tier / layer path: ``sgd_update`` on NumPy arrays (see kernels.py)."""
    if w.dtype == np.float64:
        sgd_update(<double*>_ptr(w), <double*>_ptr(u), <double*>_ptr(g), n, n_decay,
                   lr, momentum, decay, batch, clip, nthreads)
    else:
        sgd_update(<float*>_ptr(w), <float*>_ptr(u), <float*>_ptr(g), n, n_decay,
                   <float>lr, <float>momentum, <float>decay, <float>batch,
                   <float>clip, nthreads)


def py_adam_update(w, m, v, g, Py_ssize_t n, double lr, double b1, double b2, double eps,
                   double decay, double batch, int t, double clip, int nthreads=1):
    """Test tier / layer path: ``adam_update`` on NumPy arrays (see kernels.py)."""
    if w.dtype == np.float64:
        adam_update(<double*>_ptr(w), <double*>_ptr(m), <double*>_ptr(v),
                        <double*>_ptr(g), n, lr, b1, b2, eps, decay, batch, t, clip,
                        nthreads)
    else:
        adam_update(<float*>_ptr(w), <float*>_ptr(m), <float*>_ptr(v),
                        <float*>_ptr(g), n, <float>lr, <float>b1, <float>b2,
                        <float>eps, <float>decay, <float>batch, t, <float>clip,
                        nthreads)
