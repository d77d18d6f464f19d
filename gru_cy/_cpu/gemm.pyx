# cython: language_level=3
"""The engine's own gemm (row-major, fused float/double).

Tier 1 (``sgemm``/``dgemm``): ``noexcept nogil`` pointer functions used by the
GRU drivers.  Tier 2 (``gemm_py``): a thin wrapper for the tests.
"""
from cython cimport floating
from cython.parallel cimport prange
cimport scipy.linalg.cython_blas as blas
cimport numpy as cnp
import numpy as np

cnp.import_array()


cdef void sgemm_blas(float* C, const float* A, const float* B,
                     Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                     Py_ssize_t lda, Py_ssize_t ldb, Py_ssize_t ldc,
                     bint transA, bint transB, float alpha, float beta) noexcept nogil:
    # Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T.
    cdef char ta = b'T' if transB else b'N'
    cdef char tb = b'T' if transA else b'N'
    cdef int m = <int>N, n = <int>M, k = <int>K
    cdef int la = <int>ldb, lb = <int>lda, lc = <int>ldc
    if M <= 0 or N <= 0:
        return
    if K <= 0:
        _scale_c(C, M, N, ldc, beta)
        return
    blas.sgemm(&ta, &tb, &m, &n, &k, &alpha, <float*>B, &la, <float*>A, &lb,
               &beta, C, &lc)


cdef void dgemm_blas(double* C, const double* A, const double* B,
                     Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                     Py_ssize_t lda, Py_ssize_t ldb, Py_ssize_t ldc,
                     bint transA, bint transB, double alpha, double beta) noexcept nogil:
    cdef char ta = b'T' if transB else b'N'
    cdef char tb = b'T' if transA else b'N'
    cdef int m = <int>N, n = <int>M, k = <int>K
    cdef int la = <int>ldb, lb = <int>lda, lc = <int>ldc
    if M <= 0 or N <= 0:
        return
    if K <= 0:
        _scale_c(C, M, N, ldc, beta)
        return
    blas.dgemm(&ta, &tb, &m, &n, &k, &alpha, <double*>B, &la, <double*>A, &lb,
               &beta, C, &lc)


cdef void _scale_c(floating* C, Py_ssize_t M, Py_ssize_t N, Py_ssize_t ldc,
                   floating beta) noexcept nogil:
    # C (M, N) *= beta; beta == 0 writes zeros (C is not read).
    cdef Py_ssize_t i, j
    for i in range(M):
        if beta == 0:
            for j in range(N):
                C[i * ldc + j] = 0
        elif beta != 1:
            for j in range(N):
                C[i * ldc + j] *= beta


cdef void _gemm(floating* C, const floating* A, const floating* B,
                Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                Py_ssize_t lda, Py_ssize_t ldb, Py_ssize_t ldc,
                bint transA, bint transB, floating alpha, floating beta,
                int nthreads) noexcept nogil:
    cdef Py_ssize_t i, j, k
    cdef floating acc, a
    if M <= 0 or N <= 0:
        return
    _scale_c(C, M, N, ldc, beta)
    if K <= 0 or alpha == 0:
        return
    if transB and not transA:
        # C[i, j] += alpha * dot(A[i, :], B[j, :])
        if M >= N:
            for i in prange(M, nogil=True, schedule="static", num_threads=nthreads):
                for j in range(N):
                    acc = 0
                    for k in range(K):
                        acc = acc + A[i * lda + k] * B[j * ldb + k]
                    C[i * ldc + j] += alpha * acc
        else:
            for j in prange(N, nogil=True, schedule="static", num_threads=nthreads):
                for i in range(M):
                    acc = 0
                    for k in range(K):
                        acc = acc + A[i * lda + k] * B[j * ldb + k]
                    C[i * ldc + j] += alpha * acc
    else:
        # C[i, j] += alpha * sum_k op(A)[i, k] * op(B)[k, j], k ascending.
        for i in prange(M, nogil=True, schedule="static", num_threads=nthreads):
            for k in range(K):
                if transA:
                    a = alpha * A[k * lda + i]
                else:
                    a = alpha * A[i * lda + k]
                if transB:
                    for j in range(N):
                        C[i * ldc + j] += a * B[j * ldb + k]
                else:
                    for j in range(N):
                        C[i * ldc + j] += a * B[k * ldb + j]


cdef void sgemm(float* C, const float* A, const float* B,
                Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                Py_ssize_t lda, Py_ssize_t ldb, Py_ssize_t ldc,
                bint transA, bint transB, float alpha, float beta,
                int nthreads) noexcept nogil:
    _gemm(C, A, B, M, N, K, lda, ldb, ldc, transA, transB, alpha, beta, nthreads)


cdef void dgemm(double* C, const double* A, const double* B,
                Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                Py_ssize_t lda, Py_ssize_t ldb, Py_ssize_t ldc,
                bint transA, bint transB, double alpha, double beta,
                int nthreads) noexcept nogil:
    _gemm(C, A, B, M, N, K, lda, ldb, ldc, transA, transB, alpha, beta, nthreads)


def gemm_py(floating[:, ::1] C, const floating[:, ::1] A, const floating[:, ::1] B,
            bint transA=False, bint transB=False, double alpha=1.0, double beta=0.0,
            int nthreads=1, bint use_blas=False):
    """Test wrapper: C = alpha * op(A) @ op(B) + beta * C on C-contiguous arrays."""
    cdef Py_ssize_t M = C.shape[0], N = C.shape[1]
    cdef Py_ssize_t K = A.shape[0] if transA else A.shape[1]
    if (A.shape[1] if transA else A.shape[0]) != M:
        raise ValueError("gemm_py: A does not match C's rows")
    if (B.shape[1] if not transB else B.shape[0]) != N or \
            (B.shape[0] if not transB else B.shape[1]) != K:
        raise ValueError("gemm_py: B does not match")
    with nogil:
        gemm_sel(use_blas, &C[0, 0], &A[0, 0], &B[0, 0], M, N, K, A.shape[1],
                 B.shape[1], C.shape[1], transA, transB, <floating>alpha,
                 <floating>beta, nthreads)


def py_gemm(C, A, B, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, Py_ssize_t lda,
            Py_ssize_t ldb, Py_ssize_t ldc, bint transA, bint transB, double alpha,
            double beta, int nthreads=1):
    """Test tier: ``gemm`` on the data pointers of NumPy arrays (kernels.py order)."""
    cdef cnp.ndarray c = C, a = A, b = B
    cdef void* pc = cnp.PyArray_DATA(c)
    cdef void* pa = cnp.PyArray_DATA(a)
    cdef void* pb = cnp.PyArray_DATA(b)
    if c.dtype == np.float64:
        with nogil:
            gemm(<double*>pc, <double*>pa, <double*>pb, M, N, K, lda, ldb, ldc,
                 transA, transB, alpha, beta, nthreads)
    else:
        with nogil:
            gemm(<float*>pc, <float*>pa, <float*>pb, M, N, K, lda, ldb, ldc,
                 transA, transB, <float>alpha, <float>beta, nthreads)
