// gemm: the CUDA engine's own row-major matrix product (twin of
// gru_cy/_cpu/gemm.pyx).
//
//   C (M, N) = alpha * op(A) @ op(B) + beta * C
//   op(A) (M, K): A stored (M, K) with row stride lda, or (K, M) when transA.
//   op(B) (K, N): B stored (K, N) with row stride ldb, or (N, K) when transB.
//   beta == 0 overwrites C without reading it (C may hold NaN or garbage).
//
// Tiling: a block of 16 x 16 threads computes a 64 x 64 tile of C, each thread
// the 4 x 4 elements (ty + 16 i, tx + 16 j).  K is walked in slabs of 16: the
// block stages op(A)[tile rows, slab] and op(B)[slab, tile columns] in shared
// memory, then every thread adds the slab's products to its accumulators in
// ascending k.  Each C element's k-sum therefore runs in one fixed order on
// one thread: results do not depend on the launch geometry or the GPU.
// Launch geometry (gru_cy.cuda.launch_geometry): grid (ceil(M/64), ceil(N/64)),
// block (16, 16); M = T*B may be large, so its tiles go on grid.x (2^31 - 1),
// N <= 3H on grid.y (65535 tiles).
#include "common.cuh"

namespace gru_cy {

#define GEMM_TILE 64   // C tile edge per block
#define GEMM_SLAB 16   // K slab staged in shared memory
#define GEMM_THREADS 16  // threads per block edge; GEMM_TILE / GEMM_THREADS each

template <typename T>
__device__ void gemm_body(T* C, const T* A, const T* B, long long M, long long N,
                          long long K, long long lda, long long ldb, long long ldc,
                          int transA, int transB, T alpha, T beta) {
    // As[k][m]: op(A) slab, transposed so the inner loop reads a row of m;
    // Bs[k][n]: op(B) slab.  The +1 pad keeps the transposed stores free of
    // bank conflicts.
    __shared__ T As[GEMM_SLAB][GEMM_TILE + 1];
    __shared__ T Bs[GEMM_SLAB][GEMM_TILE + 1];

    const int tx = threadIdx.x, ty = threadIdx.y;
    const int tid = ty * GEMM_THREADS + tx;
    const int nthr = GEMM_THREADS * GEMM_THREADS;
    const long long m0 = (long long)blockIdx.x * GEMM_TILE;
    const long long n0 = (long long)blockIdx.y * GEMM_TILE;
    const int per = GEMM_TILE / GEMM_THREADS;

    T acc[GEMM_TILE / GEMM_THREADS][GEMM_TILE / GEMM_THREADS];
    for (int i = 0; i < per; ++i)
        for (int j = 0; j < per; ++j) acc[i][j] = T(0);

    for (long long k0 = 0; k0 < K; k0 += GEMM_SLAB) {
        // Stage the slabs; consecutive threads read consecutive addresses of
        // the stored matrix in every transpose case.  Out-of-range entries
        // are zero and add nothing.
        for (int l = tid; l < GEMM_TILE * GEMM_SLAB; l += nthr) {
            int mm, kk;
            if (transA) { kk = l / GEMM_TILE; mm = l % GEMM_TILE; }
            else        { mm = l / GEMM_SLAB; kk = l % GEMM_SLAB; }
            const long long m = m0 + mm, k = k0 + kk;
            T a = T(0);
            if (m < M && k < K) a = transA ? A[k * lda + m] : A[m * lda + k];
            As[kk][mm] = a;

            int nn;
            if (transB) { nn = l / GEMM_SLAB; kk = l % GEMM_SLAB; }
            else        { kk = l / GEMM_TILE; nn = l % GEMM_TILE; }
            const long long n = n0 + nn, kb = k0 + kk;
            T b = T(0);
            if (n < N && kb < K) b = transB ? B[n * ldb + kb] : B[kb * ldb + n];
            Bs[kk][nn] = b;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < GEMM_SLAB; ++kk) {
            T a[GEMM_TILE / GEMM_THREADS], b[GEMM_TILE / GEMM_THREADS];
            for (int i = 0; i < per; ++i) a[i] = As[kk][ty + GEMM_THREADS * i];
            for (int j = 0; j < per; ++j) b[j] = Bs[kk][tx + GEMM_THREADS * j];
#pragma unroll
            for (int i = 0; i < per; ++i)
#pragma unroll
                for (int j = 0; j < per; ++j) acc[i][j] += a[i] * b[j];
        }
        __syncthreads();
    }

    for (int i = 0; i < per; ++i) {
        const long long m = m0 + ty + GEMM_THREADS * i;
        if (m >= M) continue;
        for (int j = 0; j < per; ++j) {
            const long long n = n0 + tx + GEMM_THREADS * j;
            if (n >= N) continue;
            T* c = C + m * ldc + n;
            *c = beta == T(0) ? alpha * acc[i][j] : alpha * acc[i][j] + beta * *c;
        }
    }
}

}  // namespace gru_cy

extern "C" __global__ void gemm_f32(float* C, const float* A, const float* B,
                                    long long M, long long N, long long K,
                                    long long lda, long long ldb, long long ldc,
                                    int transA, int transB, float alpha, float beta) {
    gru_cy::gemm_body<float>(C, A, B, M, N, K, lda, ldb, ldc, transA, transB, alpha, beta);
}

extern "C" __global__ void gemm_f64(double* C, const double* A, const double* B,
                                    long long M, long long N, long long K,
                                    long long lda, long long ldb, long long ldc,
                                    int transA, int transB, double alpha, double beta) {
    gru_cy::gemm_body<double>(C, A, B, M, N, K, lda, ldb, ldc, transA, transB, alpha, beta);
}
