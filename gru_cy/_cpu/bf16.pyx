# cython: language_level=3
"""The bfloat16 inference forward (``GRU(..., inference_precision="bfloat16")``).

The products (the input projection of a chunk of steps, the recurrent product
of each step) take bf16 inputs and accumulate in float32 with AVX512_BF16's
``vdpbf16ps``; biases, gates and state stay float32 (the float32 engine's row
functions).  The C bodies, their layouts and the determinism argument:
``bf16_kernels.h``.  Inference only, lengths None; the layer (``layer.py``)
validates, converts the weights once (``pack``) and calls ``forward``.

Sizes: T steps, B batch, I inputs, H outputs.
"""
import numpy as np
cimport numpy as cnp
from libc.stdint cimport uint32_t

from gru_cy._cpu.common cimport gru_max_threads, gru_num_procs

cnp.import_array()

cdef extern from "bf16_kernels.h" nogil:
    int gb_supported()
    void gb_force_off(int off)
    Py_ssize_t gb_pairs(Py_ssize_t K)
    Py_ssize_t gb_pack_size(Py_ssize_t N, Py_ssize_t K)
    Py_ssize_t gb_layer_pack_size(Py_ssize_t I, Py_ssize_t H)
    void gb_convert(uint32_t* out, const float* a, Py_ssize_t M, Py_ssize_t K,
                    Py_ssize_t lda, Py_ssize_t ldo)
    int gb_pack_part(uint32_t* out, const float* W, Py_ssize_t N, Py_ssize_t K,
                     Py_ssize_t ldw, Py_ssize_t p0, Py_ssize_t p1)
    Py_ssize_t gb_panels(Py_ssize_t N)
    int gb_forward(float* y, const float* x, const float* h0, const uint32_t* pk,
                   const float* bu, const float* bw, Py_ssize_t T, Py_ssize_t B,
                   Py_ssize_t I, Py_ssize_t H, int reset_after, int act, int nthreads)


def supported():
    """True where the CPU has AVX512_BF16 (with AVX-512 F, BW, VL)."""
    return bool(gb_supported())


def _force_unsupported(bint off):
    """Tests: act as if the CPU lacked AVX512_BF16 (True) or detect again (False)."""
    gb_force_off(1 if off else 0)


def to_bf16(const float[:, ::1] a):
    """The bf16 bits (uint16, same shape) of a float32 (M, K) array, rounded to
    nearest even by the instruction the forward uses (``vcvtne2ps2bf16``)."""
    cdef Py_ssize_t M = a.shape[0], K = a.shape[1], KP = gb_pairs(K)
    out = np.zeros((M, KP), np.uint32)
    cdef uint32_t[:, ::1] o = out
    if M and K:
        with nogil:
            gb_convert(&o[0, 0], &a[0, 0], M, K, K, KP)
    return out.view(np.uint16).reshape(M, 2 * KP)[:, :K].copy()


def pack(const float[::1] theta, Py_ssize_t I, Py_ssize_t H):
    """The layer's weights in bf16 panels: U (3H, I) at theta[0], W (3H, H)
    after it (``gru_cy.kernels.param_layout``), each gate block packed alone.
    Returns a uint32 array of ``gb_layer_pack_size(I, H)`` elements.  The
    caller checks ``supported()`` first (the conversion is AVX512_BF16 code)."""
    cdef Py_ssize_t us, ws, g
    cdef int rc = 0
    if I <= 0 or H <= 0 or theta.shape[0] < 3 * H * (I + H):
        raise ValueError(f"theta: expected at least 3*H*(I+H) = {3 * H * (I + H)} values "
                         f"for I={I}, H={H} (positive), got {theta.shape[0]}")
    us, ws = gb_pack_size(H, I), gb_pack_size(H, H)
    out = np.empty(gb_layer_pack_size(I, H), np.uint32)
    cdef uint32_t[::1] o = out
    cdef const float* U = &theta[0]
    cdef const float* W = U + 3 * H * I
    with nogil:
        for g in range(3):
            rc |= gb_pack_part(&o[0] + g * us, U + g * H * I, H, I, I, 0, gb_panels(H))
            rc |= gb_pack_part(&o[0] + 3 * us + g * ws, W + g * H * H, H, H, H, 0,
                               gb_panels(H))
    if rc != 0:
        raise MemoryError("bfloat16 weights: could not allocate the packing's row buffer")
    return out


def forward(const uint32_t[::1] pk, const float[:, :, ::1] x, h0, float[:, :, ::1] y,
            const float[::1] bu, const float[::1] bw, bint reset_after, int act,
            int nthreads):
    """y (T, B, H) = the inference forward of x (T, B, I) from h0 (B, H) or None
    (zeros), with the packed weights ``pk`` and the biases ``bu`` = [uz | ur | uh],
    ``bw`` = [wz | wr | wh] (3H each).  nthreads: the most threads (0: OpenMP's
    count); the result does not depend on it."""
    cdef Py_ssize_t T = x.shape[0], B = x.shape[1], I = x.shape[2], H = y.shape[2]
    cdef const float[:, ::1] h0v
    cdef const float* h0p = NULL
    cdef int rc
    # the layer passes consistent sizes; a direct caller gets errors, not a crash
    if T <= 0 or B <= 0 or I <= 0 or H <= 0:
        raise ValueError(f"x, y: expected non-empty (T, B, I) and (T, B, H), got "
                         f"{(x.shape[0], x.shape[1], x.shape[2])} and "
                         f"{(y.shape[0], y.shape[1], y.shape[2])}")
    if y.shape[0] != T or y.shape[1] != B:
        raise ValueError(f"y: expected shape ({T}, {B}, {H}), got "
                         f"{(y.shape[0], y.shape[1], y.shape[2])}")
    if pk.shape[0] != gb_layer_pack_size(I, H):
        raise ValueError(f"pk: expected {gb_layer_pack_size(I, H)} packed values for I={I}, "
                         f"H={H} (pack()), got {pk.shape[0]}")
    if bu.shape[0] != 3 * H or bw.shape[0] != 3 * H:
        raise ValueError(f"bu, bw: expected {3 * H} biases each, got {bu.shape[0]} and "
                         f"{bw.shape[0]}")
    if h0 is not None:
        h0v = h0
        if h0v.shape[0] != B or h0v.shape[1] != H:
            raise ValueError(f"h0: expected shape ({B}, {H}), got "
                             f"{(h0v.shape[0], h0v.shape[1])}")
        h0p = &h0v[0, 0]
    if nthreads <= 0:
        nthreads = gru_max_threads()
    if nthreads > gru_num_procs():
        nthreads = gru_num_procs()
    with nogil:
        rc = gb_forward(&y[0, 0, 0], &x[0, 0, 0], h0p, &pk[0], &bu[0], &bw[0], T, B, I, H,
                        reset_after, act, nthreads)
    if rc != 0:
        raise MemoryError("bfloat16 forward: could not allocate its scratch")
