# The engine's gemm: row-major C (M, N) = alpha * op(A) @ op(B) + beta * C.
# op(A) is (M, K): A stored (M, K) with row stride lda, or (K, M) when transA.
# op(B) is (K, N): B stored (K, N) with row stride ldb, or (N, K) when transB.
# beta == 0 overwrites C without reading it.  Each element's k-sum runs in a
# fixed order on one thread, so results do not depend on nthreads.
from cython cimport floating

# The native gemm (gemm_kernels.h): packed, cache-blocked, threaded over tiles.
cdef void gemm(floating* C, const floating* A, const floating* B,
               Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
               Py_ssize_t lda, Py_ssize_t ldb, Py_ssize_t ldc,
               bint transA, bint transB, floating alpha, floating beta,
               int nthreads) noexcept nogil

# SciPy's BLAS (scipy.linalg.cython_blas), for gemm="blas"; its own threads.
cdef void gemm_blas(floating* C, const floating* A, const floating* B,
                    Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                    Py_ssize_t lda, Py_ssize_t ldb, Py_ssize_t ldc,
                    bint transA, bint transB, floating alpha, floating beta) noexcept nogil

# The native gemm with op(B) packed in advance (prepack): the blocked path reads
# Bpre, the others B.  Same arithmetic, same bits as gemm.
cdef void gemm_pre(floating* C, const floating* A, const floating* B, const floating* Bpre,
                   Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                   Py_ssize_t lda, Py_ssize_t ldb, Py_ssize_t ldc,
                   bint transA, bint transB, floating alpha, floating beta,
                   int nthreads) noexcept nogil

# gemm_pre with alpha 1, beta 0, then bias (N,) added to every row of C:
# C = op(A) @ op(B) + bias, the same bits as gemm_pre and a separate bias pass
# (the blocked path adds it to each tile of C while the tile is in L1).
cdef void gemm_pre_bias(floating* C, const floating* A, const floating* B,
                        const floating* Bpre, const floating* bias,
                        Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                        Py_ssize_t lda, Py_ssize_t ldb, Py_ssize_t ldc,
                        bint transA, bint transB, int nthreads) noexcept nogil

# The drivers call gemm_sel: use_blas selects SciPy's BLAS (gemm="blas").
cdef inline void gemm_sel(bint use_blas, floating* C, const floating* A, const floating* B,
                          Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                          Py_ssize_t lda, Py_ssize_t ldb, Py_ssize_t ldc,
                          bint transA, bint transB, floating alpha, floating beta,
                          int nthreads) noexcept nogil:
    if use_blas:
        gemm_blas(C, A, B, M, N, K, lda, ldb, ldc, transA, transB, alpha, beta)
    else:
        gemm(C, A, B, M, N, K, lda, ldb, ldc, transA, transB, alpha, beta, nthreads)


# gemm_sel with an optional prepacked B (NULL: plain gemm_sel).
cdef inline void gemm_sel_pre(bint use_blas, floating* C, const floating* A,
                              const floating* B, const floating* Bpre,
                              Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                              Py_ssize_t lda, Py_ssize_t ldb, Py_ssize_t ldc,
                              bint transA, bint transB, floating alpha, floating beta,
                              int nthreads) noexcept nogil:
    if use_blas or Bpre == NULL:
        gemm_sel(use_blas, C, A, B, M, N, K, lda, ldb, ldc, transA, transB, alpha, beta,
                 nthreads)
    else:
        gemm_pre(C, A, B, Bpre, M, N, K, lda, ldb, ldc, transA, transB, alpha, beta,
                 nthreads)


# C (M, N) = A (M, K) @ B.T + bias (B stored (N, K)), M <= GEMV_MAX_M: one
# thread, no plan; the same bits as gemm (alpha 1, beta 0) and a bias pass.
# GEMV_MAX_M is gemm_kernels.h's GK_DIRECT_MAX_M (gemm.pyx checks at import).
cdef enum:
    GEMV_MAX_M = 3

cdef void gemv_bias(floating* C, const floating* A, const floating* B,
                    const floating* bias, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                    Py_ssize_t lda, Py_ssize_t ldb, Py_ssize_t ldc) noexcept nogil


# Prepacked B: op(B) (K, N) packed once (prepack, prepack_size elements) for
# many products with the same B (gemm_pre).  prepack_part packs part `part` of
# `nparts` (whole column panels), so that threads can share the packing; all
# parts together are prepack's output.
cdef Py_ssize_t prepack_size(bint dbl, Py_ssize_t N, Py_ssize_t K) noexcept nogil

cdef void prepack_part(const floating* B, Py_ssize_t N, Py_ssize_t K, Py_ssize_t ldb,
                       bint transB, int part, int nparts, floating* out) noexcept nogil


cdef inline void prepack(const floating* B, Py_ssize_t N, Py_ssize_t K, Py_ssize_t ldb,
                         bint transB, floating* out) noexcept nogil:
    prepack_part(B, N, K, ldb, transB, 0, 1, out)


# nb row blocks of B (stored (N, K), w rows each, block g at B + g * bstride)
# packed as one (K, nb * w) operand in prepack's layout, for gemm_pre with that
# N (a slice's rows of the three gate blocks in one product).  False (nothing
# written) where w is not a multiple of the micro-kernel's width; out:
# prepack_size(dbl, nb * w, K) elements.
cdef bint prepack_blocks(const floating* B, Py_ssize_t nb, Py_ssize_t bstride,
                         Py_ssize_t w, Py_ssize_t K, Py_ssize_t ldb,
                         floating* out) noexcept nogil
