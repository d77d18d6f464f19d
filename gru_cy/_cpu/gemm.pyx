# cython: language_level=3
"""The engine's own gemm (row-major, fused float/double).

Tier 1 (``gemm``, ``gemm_pre``, ``gemm_blas``, ``gemv_bias``, ``prepack_part``, fused
float/double): ``noexcept nogil`` pointer functions used by the
GRU drivers.  Tier 2 (``py_gemm``, ``gemm_py``, ``gemm_strided_py``,
``gemm_time``, ``gemm_info``, ``gemm_isa``): thin wrappers for the tests and the
benchmark.

The native gemm is a packed, cache-blocked gemm whose micro-kernels live in
``gemm_kernels.h`` (C, GCC vector extensions, compiled for AVX-512F, AVX2+FMA
and the baseline ISA and picked at run time).  The OpenMP loops are the
``prange`` loops below: over tiles of C (blocked path) or fixed column chunks
(direct path, M <= 3).  Each C element's k-sum runs on one thread in a fixed
order that depends on K alone, so results are bit-identical for any
``nthreads`` (see the header's comment).  Products below ~4e5 flops run
serially without entering an OpenMP region.
"""
from cython cimport floating
from cython.parallel cimport prange, threadid
cimport scipy.linalg.cython_blas as blas
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC
import numpy as np


cdef extern from "gemm_kernels.h" nogil:
    enum: GK_DIRECT_MAX_M
    ctypedef struct gk_ctx:
        int isa
        int path
        int mr
        int nr
        int nthreads
        Py_ssize_t kc_blk
        Py_ssize_t nkb
        Py_ssize_t tm
        Py_ssize_t tn
        Py_ssize_t mrange
        Py_ssize_t nrange
        Py_ssize_t ncl
        Py_ssize_t ntiles
        Py_ssize_t nchunks
        const void* bpre
        Py_ssize_t bpre_kstride
        const void* bias
    int GK_PATH_NONE
    int GK_PATH_DIRECT
    int GK_PATH_BLOCKED
    int gk_plan(gk_ctx* x, int dbl, void* C, const void* A, const void* B,
                Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, Py_ssize_t lda,
                Py_ssize_t ldb, Py_ssize_t ldc, int transA, int transB,
                double alpha, double beta, int nthreads)
    void gk_free(gk_ctx* x)
    void gk_tile_s(gk_ctx* x, Py_ssize_t t, int tid)
    void gk_tile_d(gk_ctx* x, Py_ssize_t t, int tid)
    void gk_direct_s(gk_ctx* x, Py_ssize_t t)
    void gk_direct_d(gk_ctx* x, Py_ssize_t t)
    void gk_gemv_bias_s(float* C, const float* A, const float* B, const float* bias,
                        Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, Py_ssize_t lda,
                        Py_ssize_t ldb, Py_ssize_t ldc)
    void gk_gemv_bias_d(double* C, const double* A, const double* B, const double* bias,
                        Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, Py_ssize_t lda,
                        Py_ssize_t ldb, Py_ssize_t ldc)
    void gk_scale_s(float* C, Py_ssize_t M, Py_ssize_t N, Py_ssize_t ldc, float beta)
    void gk_scale_d(double* C, Py_ssize_t M, Py_ssize_t N, Py_ssize_t ldc, double beta)
    int gk_isa()
    void gk_isa_set(int isa)
    Py_ssize_t gk_prepack_size(int dbl, Py_ssize_t N, Py_ssize_t K)
    void gk_prepack_s(const float* B, Py_ssize_t N, Py_ssize_t K, Py_ssize_t ldb,
                      int transB, int part, int nparts, float* out)
    void gk_prepack_d(const double* B, Py_ssize_t N, Py_ssize_t K, Py_ssize_t ldb,
                      int transB, int part, int nparts, double* out)
    int gk_prepack_blocks_s(const float* B, Py_ssize_t nb, Py_ssize_t bstride,
                            Py_ssize_t w, Py_ssize_t K, Py_ssize_t ldb, float* out)
    int gk_prepack_blocks_d(const double* B, Py_ssize_t nb, Py_ssize_t bstride,
                            Py_ssize_t w, Py_ssize_t K, Py_ssize_t ldb, double* out)


# gemv_bias gives gemm's bits only where gemm takes its direct path too.
if GEMV_MAX_M != GK_DIRECT_MAX_M:
    raise ImportError(f"gemm.pxd's GEMV_MAX_M ({GEMV_MAX_M}) must equal gemm_kernels.h's "
                      f"GK_DIRECT_MAX_M ({GK_DIRECT_MAX_M})")

_ISA_NAMES = ("baseline", "avx2", "avx512")


cdef void gemm_blas(floating* C, const floating* A, const floating* B,
                    Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                    Py_ssize_t lda, Py_ssize_t ldb, Py_ssize_t ldc,
                    bint transA, bint transB, floating alpha, floating beta) noexcept nogil:
    # Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T.
    cdef char ta = b'T' if transB else b'N'
    cdef char tb = b'T' if transA else b'N'
    cdef int m = <int>N, n = <int>M, k = <int>K
    cdef int la = <int>ldb, lb = <int>lda, lc = <int>ldc
    if M <= 0 or N <= 0:
        return
    if K <= 0:
        _scale(C, M, N, ldc, beta)
        return
    if floating is float:
        blas.sgemm(&ta, &tb, &m, &n, &k, &alpha, <float*>B, &la, <float*>A, &lb,
                   &beta, C, &lc)
    else:
        blas.dgemm(&ta, &tb, &m, &n, &k, &alpha, <double*>B, &la, <double*>A, &lb,
                   &beta, C, &lc)


cdef inline void _scale(floating* C, Py_ssize_t M, Py_ssize_t N, Py_ssize_t ldc,
                        floating beta) noexcept nogil:
    # C (M, N) = beta*C (beta == 0 writes zeros)
    if floating is float:
        gk_scale_s(C, M, N, ldc, beta)
    else:
        gk_scale_d(C, M, N, ldc, beta)


cdef void _gemm_ref(floating* C, const floating* A, const floating* B,
                    Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                    Py_ssize_t lda, Py_ssize_t ldb, Py_ssize_t ldc,
                    bint transA, bint transB, floating alpha,
                    floating beta) noexcept nogil:
    # Unblocked serial loops: used only when the pack buffers cannot be
    # allocated.  C (M, N) = beta*C, then += alpha * op(A) op(B), k ascending.
    cdef Py_ssize_t i, j, k
    cdef floating acc, a, b
    _scale(C, M, N, ldc, beta)
    for i in range(M):
        for j in range(N):
            acc = 0
            for k in range(K):
                a = A[k * lda + i] if transA else A[i * lda + k]
                b = B[j * ldb + k] if transB else B[k * ldb + j]
                acc = acc + a * b
            C[i * ldc + j] += alpha * acc


cdef void _gemm_ref_packed(floating* C, const floating* A, const floating* Bp,
                           Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, Py_ssize_t lda,
                           Py_ssize_t ldc, bint transA, floating alpha, floating beta,
                           Py_ssize_t nr, Py_ssize_t kc_blk) noexcept nogil:
    # _gemm_ref for an op(B) given only packed (prepack_blocks: N a multiple of
    # nr, whole panels): used only when the pack buffers cannot be allocated.
    cdef Py_ssize_t i, j, k, kb, kc, ks = (N + nr - 1) // nr * nr * kc_blk
    cdef floating acc, a, b
    _scale(C, M, N, ldc, beta)
    for i in range(M):
        for j in range(N):
            acc = 0
            for k in range(K):
                kb = k // kc_blk
                kc = kc_blk if (kb + 1) * kc_blk <= K else K - kb * kc_blk
                a = A[k * lda + i] if transA else A[i * lda + k]
                b = Bp[kb * ks + (j - j % nr) * kc + (k - kb * kc_blk) * nr + j % nr]
                acc = acc + a * b
            C[i * ldc + j] += alpha * acc


cdef void _gemm(floating* C, const floating* A, const floating* B,
                Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                Py_ssize_t lda, Py_ssize_t ldb, Py_ssize_t ldc,
                bint transA, bint transB, floating alpha, floating beta,
                int nthreads, const floating* Bpre, const floating* bias) noexcept nogil:
    # C (M, N) = alpha op(A) op(B) + beta C, then + bias (N,) on every row
    # where bias is not NULL.  The plan (gemm_kernels.h) picks the path, the
    # blocking and the team size nt (1 below ~2e5 flops: no OpenMP region);
    # the loops here hand out the work.  The blocked path adds the bias to
    # each micro-tile as it finishes; the others in a pass after (the same
    # rounding either way).
    cdef gk_ctx ctx
    cdef gk_ctx* x = &ctx
    cdef Py_ssize_t t
    cdef int nt
    if M <= 0 or N <= 0:
        return
    nt = gk_plan(x, floating is double, C, A, B, M, N, K, lda, ldb, ldc,
                 transA, transB, alpha, beta, nthreads)
    if nt < 0:
        # Out of memory for the team's pack buffers: retry with one thread's.
        gk_free(x)
        nt = gk_plan(x, floating is double, C, A, B, M, N, K, lda, ldb, ldc,
                     transA, transB, alpha, beta, 1)
        if nt < 0:
            gk_free(x)
            if B == NULL:       # op(B) given packed only (prepack_blocks)
                _gemm_ref_packed(C, A, Bpre, M, N, K, lda, ldc, transA, alpha, beta,
                                 ctx.nr, ctx.kc_blk)
            else:
                _gemm_ref(C, A, B, M, N, K, lda, ldb, ldc, transA, transB, alpha, beta)
            _add_bias(C, bias, M, N, ldc)
            return
    if Bpre != NULL and ctx.path == GK_PATH_BLOCKED and (<size_t>Bpre) % 64 == 0:
        # op(B) was packed in advance (prepack): the tiles read it in place.
        ctx.bpre = Bpre
        ctx.bpre_kstride = ((N + ctx.nr - 1) // ctx.nr) * ctx.nr * ctx.kc_blk
    if ctx.path == GK_PATH_BLOCKED:
        ctx.bias = bias
    if ctx.path == GK_PATH_NONE:
        # K == 0 or alpha == 0: C = beta*C (beta == 0 writes zeros).
        _scale(C, M, N, ldc, beta)
    elif ctx.path == GK_PATH_DIRECT:
        # Small M: fixed column chunks, no packing.
        if nt > 1:
            for t in prange(ctx.nchunks, nogil=True, schedule="static", num_threads=nt):
                if floating is float:
                    gk_direct_s(x, t)
                else:
                    gk_direct_d(x, t)
        else:
            for t in range(ctx.nchunks):
                if floating is float:
                    gk_direct_s(x, t)
                else:
                    gk_direct_d(x, t)
    else:
        # Blocked: tiles of C, each over all of K (K blocks ascending) on one
        # thread with its own packed operands: one region, no barriers.
        if nt > 1:
            for t in prange(ctx.ntiles, nogil=True, schedule="static", num_threads=nt):
                if floating is float:
                    gk_tile_s(x, t, threadid())
                else:
                    gk_tile_d(x, t, threadid())
        else:
            for t in range(ctx.ntiles):
                if floating is float:
                    gk_tile_s(x, t, 0)
                else:
                    gk_tile_d(x, t, 0)
    if ctx.path != GK_PATH_BLOCKED:
        _add_bias(C, bias, M, N, ldc)
    gk_free(x)


cdef inline void _add_bias(floating* C, const floating* bias, Py_ssize_t M, Py_ssize_t N,
                           Py_ssize_t ldc) noexcept nogil:
    # C (M, N) += bias on every row (nothing where bias is NULL).
    cdef Py_ssize_t i, j
    if bias != NULL:
        for i in range(M):
            for j in range(N):
                C[i * ldc + j] = C[i * ldc + j] + bias[j]


cdef void gemv_bias(floating* C, const floating* A, const floating* B,
                    const floating* bias, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                    Py_ssize_t lda, Py_ssize_t ldb, Py_ssize_t ldc) noexcept nogil:
    if floating is float:
        gk_gemv_bias_s(C, A, B, bias, M, N, K, lda, ldb, ldc)
    else:
        gk_gemv_bias_d(C, A, B, bias, M, N, K, lda, ldb, ldc)


cdef Py_ssize_t prepack_size(bint dbl, Py_ssize_t N, Py_ssize_t K) noexcept nogil:
    return gk_prepack_size(dbl, N, K)


cdef void prepack_part(const floating* B, Py_ssize_t N, Py_ssize_t K, Py_ssize_t ldb,
                       bint transB, int part, int nparts, floating* out) noexcept nogil:
    if floating is float:
        gk_prepack_s(B, N, K, ldb, transB, part, nparts, out)
    else:
        gk_prepack_d(B, N, K, ldb, transB, part, nparts, out)


cdef bint prepack_blocks(const floating* B, Py_ssize_t nb, Py_ssize_t bstride,
                         Py_ssize_t w, Py_ssize_t K, Py_ssize_t ldb,
                         floating* out) noexcept nogil:
    if floating is float:
        return gk_prepack_blocks_s(B, nb, bstride, w, K, ldb, out) != 0
    else:
        return gk_prepack_blocks_d(B, nb, bstride, w, K, ldb, out) != 0


cdef void gemm_pre(floating* C, const floating* A, const floating* B, const floating* Bpre,
                   Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                   Py_ssize_t lda, Py_ssize_t ldb, Py_ssize_t ldc,
                   bint transA, bint transB, floating alpha, floating beta,
                   int nthreads) noexcept nogil:
    _gemm(C, A, B, M, N, K, lda, ldb, ldc, transA, transB, alpha, beta, nthreads, Bpre, NULL)


cdef void gemm_pre_bias(floating* C, const floating* A, const floating* B,
                        const floating* Bpre, const floating* bias,
                        Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                        Py_ssize_t lda, Py_ssize_t ldb, Py_ssize_t ldc,
                        bint transA, bint transB, int nthreads) noexcept nogil:
    _gemm(C, A, B, M, N, K, lda, ldb, ldc, transA, transB, <floating>1, <floating>0,
          nthreads, Bpre, bias)


cdef void gemm(floating* C, const floating* A, const floating* B,
               Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
               Py_ssize_t lda, Py_ssize_t ldb, Py_ssize_t ldc,
               bint transA, bint transB, floating alpha, floating beta,
               int nthreads) noexcept nogil:
    _gemm(C, A, B, M, N, K, lda, ldb, ldc, transA, transB, alpha, beta, nthreads, NULL,
          NULL)


def gemm_py(floating[:, ::1] C, const floating[:, ::1] A, const floating[:, ::1] B,
            bint transA=False, bint transB=False, double alpha=1.0, double beta=0.0,
            int nthreads=1, bint use_blas=False):
    """Test wrapper: C = alpha * op(A) @ op(B) + beta * C, in place.

    Parameters
    ----------
    C : ndarray, shape (M, N), float32 or float64, C-contiguous
        Output (read only when ``beta != 0``).
    A : ndarray, shape (M, K), or (K, M) when ``transA``; same dtype
    B : ndarray, shape (K, N), or (N, K) when ``transB``; same dtype
    transA, transB : bool
    alpha, beta : float
    nthreads : int
        OpenMP team size for the native gemm (< 1: OpenMP's default).
    use_blas : bool
        Use SciPy's BLAS instead of the native gemm.

    Strided operands: pass a view whose rows are a slice of a wider
    C-contiguous array through ``gemm_strided_py``.
    """
    cdef Py_ssize_t M = C.shape[0], N = C.shape[1]
    cdef Py_ssize_t K = A.shape[0] if transA else A.shape[1]
    if (A.shape[1] if transA else A.shape[0]) != M:
        raise ValueError(f"gemm_py: A has shape {tuple(A.shape)[:2]}, expected "
                         f"{M} {'columns' if transA else 'rows'} to match C")
    if (B.shape[1] if not transB else B.shape[0]) != N or \
            (B.shape[0] if not transB else B.shape[1]) != K:
        raise ValueError(f"gemm_py: B has shape {tuple(B.shape)[:2]}, expected "
                         f"{(N, K) if transB else (K, N)}")
    if M == 0 or N == 0:
        return
    with nogil:
        gemm_sel(use_blas, &C[0, 0], &A[0, 0] if A.shape[0] * A.shape[1] else NULL,
                 &B[0, 0] if B.shape[0] * B.shape[1] else NULL, M, N, K,
                 A.shape[1], B.shape[1], C.shape[1], transA, transB,
                 <floating>alpha, <floating>beta, nthreads)


def gemm_bias_py(floating[:, ::1] C, const floating[:, ::1] A, const floating[:, ::1] B,
                 const floating[::1] bias, bint transA=False, bint transB=False,
                 int nthreads=1):
    """Test wrapper: C = op(A) @ op(B) + bias (on every row), in place, through
    ``gemm_pre_bias`` (the blocked path adds the bias per tile of C)."""
    cdef Py_ssize_t M = C.shape[0], N = C.shape[1]
    cdef Py_ssize_t K = A.shape[0] if transA else A.shape[1]
    if (A.shape[1] if transA else A.shape[0]) != M or \
            (B.shape[1] if not transB else B.shape[0]) != N or \
            (B.shape[0] if not transB else B.shape[1]) != K or bias.shape[0] != N:
        raise ValueError(f"gemm_bias_py: shapes C {tuple(C.shape)[:2]}, A {tuple(A.shape)[:2]}, "
                         f"B {tuple(B.shape)[:2]}, bias {bias.shape[0]} do not agree")
    if M == 0 or N == 0 or K == 0:
        raise ValueError("gemm_bias_py: expected non-empty operands")
    with nogil:
        gemm_pre_bias(&C[0, 0], &A[0, 0], &B[0, 0], <floating*>NULL, &bias[0], M, N, K,
                      A.shape[1], B.shape[1], C.shape[1], transA, transB, nthreads)


def gemm_strided_py(floating[:, ::1] C, const floating[:, ::1] A, const floating[:, ::1] B,
                    Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                    Py_ssize_t lda, Py_ssize_t ldb, Py_ssize_t ldc,
                    bint transA=False, bint transB=False, double alpha=1.0,
                    double beta=0.0, int nthreads=1, bint use_blas=False):
    """Test wrapper with explicit sizes and row strides (BLAS-style).

    ``C``, ``A`` and ``B`` are the storage arrays; the operands are their
    leading ``(M, N)``, op-shaped ``(M, K)`` / ``(K, M)`` and ``(K, N)`` /
    ``(N, K)`` blocks with row strides ``ldc``, ``lda``, ``ldb`` (elements).

    Raises
    ------
    ValueError
        If a block does not fit its storage array or a stride is below the
        block's row length.
    """
    cdef Py_ssize_t ra = K if transA else M, ca = M if transA else K
    cdef Py_ssize_t rb = N if transB else K, cb = K if transB else N
    if M < 0 or N < 0 or K < 0:
        raise ValueError(f"gemm_strided_py: sizes must be >= 0, got M={M}, N={N}, K={K}")
    for name, rows, cols, ld, arr in (("A", ra, ca, lda, A), ("B", rb, cb, ldb, B),
                                      ("C", M, N, ldc, C)):
        if ld < cols or (rows > 0 and cols > 0 and
                         (rows - 1) * ld + cols > arr.shape[0] * arr.shape[1]):
            raise ValueError(f"gemm_strided_py: {name} block ({rows}, {cols}) with "
                             f"ld={ld} does not fit storage {tuple(arr.shape)[:2]}")
    if M == 0 or N == 0:
        return
    with nogil:
        gemm_sel(use_blas, &C[0, 0], &A[0, 0] if A.shape[0] * A.shape[1] else NULL,
                 &B[0, 0] if B.shape[0] * B.shape[1] else NULL, M, N, K, lda, ldb, ldc,
                 transA, transB, <floating>alpha, <floating>beta, nthreads)


def gemm_time(floating[:, ::1] C, const floating[:, ::1] A, const floating[:, ::1] B,
              bint transA=False, bint transB=False, double alpha=1.0, double beta=0.0,
              int nthreads=1, Py_ssize_t reps=100):
    """Benchmark helper: seconds per native gemm call, timed in C over ``reps``
    back-to-back calls (no Python overhead), on arrays as for ``gemm_py``."""
    cdef Py_ssize_t M = C.shape[0], N = C.shape[1], r
    cdef Py_ssize_t K = A.shape[0] if transA else A.shape[1]
    cdef timespec t0, t1
    if (A.shape[1] if transA else A.shape[0]) != M or \
            (B.shape[1] if not transB else B.shape[0]) != N or \
            (B.shape[0] if not transB else B.shape[1]) != K or M * N * K == 0:
        raise ValueError(f"gemm_time: shapes C {tuple(C.shape)[:2]}, A {tuple(A.shape)[:2]}, "
                         f"B {tuple(B.shape)[:2]} do not match (or are empty)")
    if reps < 1:
        raise ValueError(f"gemm_time: reps must be >= 1, got {reps}")
    with nogil:
        clock_gettime(CLOCK_MONOTONIC, &t0)
        for r in range(reps):
            gemm(&C[0, 0], &A[0, 0], &B[0, 0], M, N, K, A.shape[1], B.shape[1],
                 C.shape[1], transA, transB, <floating>alpha, <floating>beta, nthreads)
        clock_gettime(CLOCK_MONOTONIC, &t1)
    return ((t1.tv_sec - t0.tv_sec) + 1e-9 * (t1.tv_nsec - t0.tv_nsec)) / reps


def gemm_info(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, bint transA=False,
              bint transB=False, dtype="float32", int nthreads=1):
    """The native gemm's plan for a shape (tests and benchmarks).

    Returns
    -------
    dict
        ``path`` ("none", "direct" or "blocked"), ``nthreads`` (team size the
        call would use; 1 means no OpenMP region), ``isa``, ``mr``, ``nr``
        (micro-tile), ``kc`` (K block depth), ``nkb`` (K blocks), ``tm``,
        ``tn`` (tiles along M and N), ``mrange``, ``nrange`` (largest tile),
        ``ncl`` (B columns packed at a time), ``ntiles``, ``nchunks`` (direct
        path column chunks).
    """
    cdef gk_ctx ctx
    cdef int dbl = np.dtype(dtype) == np.float64
    cdef int nt = gk_plan(&ctx, dbl, NULL, NULL, NULL, M, N, K, max(K, 1), max(N, 1),
                          max(N, 1), transA, transB, 1.0, 0.0, nthreads)
    gk_free(&ctx)
    return {"path": ("none", "direct", "blocked")[ctx.path], "nthreads": nt,
            "isa": _ISA_NAMES[ctx.isa], "mr": ctx.mr, "nr": ctx.nr, "kc": ctx.kc_blk,
            "nkb": ctx.nkb, "tm": ctx.tm, "tn": ctx.tn, "mrange": ctx.mrange,
            "nrange": ctx.nrange, "ncl": ctx.ncl, "ntiles": ctx.ntiles,
            "nchunks": ctx.nchunks}


def gemm_isa(level=None):
    """Get (and optionally lower) the micro-kernel ISA the native gemm uses.

    Parameters
    ----------
    level : {None, "baseline", "avx2", "avx512", "auto"}
        None only reports.  A name selects that kernel set if the CPU supports
        it (a higher one than the CPU has is clamped); "auto" restores the
        run-time detection.  Meant for tests and benchmarks.

    Returns
    -------
    str
        The kernel set in use after the call.
    """
    if level is not None:
        if level == "auto":
            gk_isa_set(-1)
        elif level in _ISA_NAMES:
            gk_isa_set(_ISA_NAMES.index(level))
        else:
            raise ValueError(f"gemm_isa: level must be one of {_ISA_NAMES + ('auto',)} "
                             f"or None, got {level!r}")
    return _ISA_NAMES[gk_isa()]


def py_gemm(floating[::1] C, const floating[::1] A, const floating[::1] B, Py_ssize_t M,
            Py_ssize_t N, Py_ssize_t K, Py_ssize_t lda, Py_ssize_t ldb, Py_ssize_t ldc,
            bint transA, bint transB, double alpha, double beta, int nthreads=1):
    """Test tier: ``gemm`` on flat arrays of one float type (kernels.py order; A and B
    may be read-only)."""
    with nogil:
        gemm(&C[0], &A[0], &B[0], M, N, K, lda, ldb, ldc, transA, transB,
             <floating>alpha, <floating>beta, nthreads)


def aligned_empty(Py_ssize_t n, dtype):
    """An uninitialised 1-D array of n elements whose data is 64-byte aligned
    (the micro-kernels load packed panels with aligned vector loads)."""
    dt = np.dtype(dtype)
    raw = np.empty(n * dt.itemsize + 64, np.uint8)
    off = (-raw.ctypes.data) % 64
    return raw[off:off + n * dt.itemsize].view(dt)


def prepack_elements(bint dbl, Py_ssize_t N, Py_ssize_t K):
    """Elements a prepacked op(B) of N columns and depth K needs."""
    return prepack_size(dbl, N, K)


def gemm_prepacked_py(floating[:, ::1] C, const floating[:, ::1] A,
                      const floating[:, ::1] B, bint transA=False, bint transB=False,
                      double alpha=1.0, double beta=0.0, int nthreads=1,
                      int nparts=1):
    """Test wrapper: as ``gemm_py``, with op(B) packed in advance (prepack),
    in ``nparts`` parts (prepack_part), last part first."""
    cdef int part
    cdef Py_ssize_t M = C.shape[0], N = C.shape[1]
    cdef Py_ssize_t K = A.shape[0] if transA else A.shape[1]
    if (A.shape[1] if transA else A.shape[0]) != M:
        raise ValueError("gemm_prepacked_py: A does not match C's rows")
    if (B.shape[1] if not transB else B.shape[0]) != N or \
            (B.shape[0] if not transB else B.shape[1]) != K:
        raise ValueError("gemm_prepacked_py: B does not match")
    packed = aligned_empty(max(prepack_size(floating is double, N, K), 1),
                           np.float64 if floating is double else np.float32)
    cdef floating[::1] pk = packed
    with nogil:
        for part in range(nparts - 1, -1, -1):
            prepack_part(&B[0, 0], N, K, B.shape[1], transB, part, nparts, &pk[0])
        gemm_sel_pre(False, &C[0, 0], &A[0, 0], &B[0, 0], &pk[0], M, N, K, A.shape[1],
                     B.shape[1], C.shape[1], transA, transB, <floating>alpha,
                     <floating>beta, nthreads)


def gemv_bias_py(floating[:, ::1] C, const floating[:, ::1] A, const floating[:, ::1] B,
                 const floating[::1] bias):
    """Test wrapper: C = A @ B.T + bias (gemv_bias: M <= 3 rows, no plan)."""
    cdef Py_ssize_t M = C.shape[0], N = C.shape[1], K = A.shape[1]
    if M > GEMV_MAX_M or A.shape[0] != M or B.shape[0] != N or B.shape[1] != K \
            or bias.shape[0] != N:
        raise ValueError("gemv_bias_py: shapes do not match or M > 3")
    if M == 0 or N == 0:
        return
    with nogil:
        gemv_bias(&C[0, 0], &A[0, 0], &B[0, 0], &bias[0], M, N, K, A.shape[1],
                  B.shape[1], C.shape[1])
