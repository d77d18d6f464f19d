/* The engine's gemm kernels: packing, register-blocked micro-kernels, tiles.
 *
 * Row-major C (M, N) = alpha * op(A) @ op(B) + beta * C (see gemm.pxd).  The
 * OpenMP loops live in gemm.pyx (Cython prange); this header supplies the work
 * done by one loop iteration:
 *
 *   gk_plan         choose the path, the blocking and the tiles; allocate the
 *                   per-thread pack buffers.
 *   gk_tile_[sd]    one tile of C over all of K: pack its rows of A and, a
 *                   block at a time, its columns of B; run the micro-kernels.
 *   gk_direct_[sd]  small M: one fixed-width column chunk, no packing.
 *
 * Determinism.  Every C element is computed by one thread as
 *     acc = 0; for k in K block (ascending): acc = acc + a_ik * b_kj
 *     C = alpha * acc [+ beta * C]  (first K block)  or  C = C + alpha * acc
 * with K blocks in ascending order and a K blocking that depends on K only.
 * Partial tiles run the same vector code on a scratch tile, so an element's
 * arithmetic does not depend on where tile or thread boundaries fall: results
 * are bit-identical for any thread count.  (The direct path is chosen by the
 * shape alone and uses a fixed column grid, so the same holds there.)
 *
 * Dispatch.  Each kernel is compiled three times from gemm_kernels_impl.h
 * under `#pragma GCC target`: AVX-512F, AVX2+FMA and the baseline ISA, and
 * the plan picks one with __builtin_cpu_supports, so a portable build (no
 * -march) still runs the wide kernels where the CPU has them.  Which one runs
 * is fixed per process, so bit-identity across thread counts holds.
 */
#ifndef GRU_CY_GEMM_KERNELS_H
#define GRU_CY_GEMM_KERNELS_H

#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include "omp_compat.h"

#define GK_ISA_BASE 0
#define GK_ISA_AVX2 1
#define GK_ISA_AVX512 2

#define GK_PATH_NONE 0     /* nothing to multiply (C already scaled) */
#define GK_PATH_DIRECT 1   /* small M, no packing, prange over column chunks */
#define GK_PATH_BLOCKED 2  /* packed, prange over tiles */

/* Blocking (elements).  K runs in equal blocks of at most GK_KC_MAX (the
 * blocking depends on K alone: determinism).  Per K block a tile packs its
 * rows of A (at most GK_MRANGE_MAX), then B a block of kc x ncl at a time,
 * ncl chosen so that block fills half of L2; the micro-kernel then reads an
 * A panel (MR x kc) from L1 and B panels (kc x NR) from L2. */
#define GK_KC_MAX 512
#define GK_DIRECT_MAX_M 3     /* M <= this (and not A^T B^T): direct path */
#define GK_DIRECT_CHUNK 512   /* direct path column chunk (fixed grid) */

static int gk_isa_forced = -1;

static int gk_isa_detect(void)
{
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma"))
        return GK_ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return GK_ISA_AVX2;
#endif
    return GK_ISA_BASE;
}

/* The ISA the kernels use: detected, or lowered by gk_isa_set (tests). */
static inline int gk_isa(void)
{
    int m = gk_isa_detect();
    return (gk_isa_forced >= 0 && gk_isa_forced < m) ? gk_isa_forced : m;
}

/* Force a lower ISA (tests and benchmarks); -1 restores detection. */
static inline void gk_isa_set(int isa) { gk_isa_forced = isa; }

typedef struct {
    /* problem */
    void *C;
    const void *A, *B;
    ptrdiff_t M, N, K, lda, ldb, ldc;
    int transA, transB;
    double alpha, beta;
    /* plan */
    int isa, path, mr, nr, nthreads;
    ptrdiff_t kc_blk, nkb;        /* K blocking: depth, count */
    ptrdiff_t mp, tm, mrange;     /* M: MR panels, tiles, tallest tile */
    ptrdiff_t np, tn, nrange;     /* N: NR panels, tiles, widest tile */
    ptrdiff_t ncl;                /* B block width packed at a time */
    ptrdiff_t ntiles;             /* blocked path: tiles (tm * tn) */
    ptrdiff_t nchunks;            /* direct path: column chunks */
    /* buffers: per thread packed A (mrange x kc) and B (kc x ncl) */
    char *mem;
    int cached;                   /* mem is the lent cache block */
    void **abuf, **bbuf;
    /* op(B) packed once in advance (gk_prepack), or NULL: K block kb's
     * panels start at bpre + kb * bpre_kstride, panel of column j at j * kc */
    const void *bpre;
    ptrdiff_t bpre_kstride;
    /* C row += bias after the store (the same two roundings as a separate
     * bias pass), or NULL: the direct path, B transposed (gk_gemv_bias),
     * and the blocked path (each micro-tile after its last K block) */
    const void *bias;
} gk_ctx;

static inline ptrdiff_t gk_min(ptrdiff_t a, ptrdiff_t b) { return a < b ? a : b; }
static inline ptrdiff_t gk_cdiv(ptrdiff_t a, ptrdiff_t b) { return (a + b - 1) / b; }
static inline ptrdiff_t gk_rup(ptrdiff_t a, ptrdiff_t b) { return gk_cdiv(a, b) * b; }

/* Pack buffers.  Each thread keeps one grow-only block (at most
 * GK_CACHE_MAX bytes) and lends it to one call at a time: large mallocs are
 * fresh mmaps in glibc, and faulting their pages in on every call costs as
 * much as a mid-sized product.  Per thread, because the fused forward's
 * threads each run serial products at every step.  A larger need mallocs. */
#define GK_CACHE_MAX ((size_t)64 << 20)
#if defined(_MSC_VER)
#define GK_TLS __declspec(thread)
#else
#define GK_TLS _Thread_local
#endif
static GK_TLS void *gk_cache_mem = NULL;
static GK_TLS size_t gk_cache_size = 0;
static GK_TLS int gk_cache_busy = 0;

/* A thread's block is freed when the thread exits (POSIX: a key destructor),
 * so short-lived threads calling the engine do not leave their blocks behind. */
#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
static pthread_key_t gk_cache_key;
static pthread_once_t gk_cache_once = PTHREAD_ONCE_INIT;
static void gk_cache_key_make(void) { (void)pthread_key_create(&gk_cache_key, free); }
static void gk_cache_track(void *mem)
{
    (void)pthread_once(&gk_cache_once, gk_cache_key_make);
    (void)pthread_setspecific(gk_cache_key, mem);
}
#else
static void gk_cache_track(void *mem) { (void)mem; }
#endif

static void *gk_alloc(size_t n, int *cached)
{
    *cached = 0;
    if (n <= GK_CACHE_MAX && !gk_cache_busy) {
        gk_cache_busy = 1;
        if (gk_cache_size < n) {
            free(gk_cache_mem);
            gk_cache_mem = malloc(n);
            gk_cache_size = gk_cache_mem != NULL ? n : 0;
            gk_cache_track(gk_cache_mem);
        }
        if (gk_cache_mem != NULL) {
            *cached = 1;
            return gk_cache_mem;
        }
        gk_cache_busy = 0;
    }
    return malloc(n);
}

static inline void gk_free(gk_ctx *x)
{
    if (x->cached)
        gk_cache_busy = 0;   /* this thread's block (gk_alloc ran on it) */
    else
        free(x->mem);
    x->mem = NULL;
    x->cached = 0;
}

/* Threads worth using: serial below GK_SERIAL_FLOPS (an OpenMP region costs
 * microseconds), at most one per GK_FLOPS_PER_THREAD. */
#define GK_SERIAL_FLOPS 4.0e5
#define GK_FLOPS_PER_THREAD 2.0e5

#define GK_ALIGN 64
#define GK_L2_BYTES (1 << 20)   /* per-core L2 assumed for blocking */
#define GK_MRANGE_MAX 4096      /* rows of packed A per thread (bounds memory) */

/* --- kernel instantiations ---------------------------------------------- */

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__)) && !defined(__clang__)
#define GK_HAVE_X86_CLONES 1
#endif

#ifdef GK_HAVE_X86_CLONES
#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma")
#define GK_T float
#define GK_IT int
#define GK_SFX s_avx512
#define GK_VW 16
#define GK_MR 8
#define GK_NV 2
#include "gemm_kernels_impl.h"
#define GK_T double
#define GK_IT long long
#define GK_SFX d_avx512
#define GK_VW 8
#define GK_MR 8
#define GK_NV 2
#include "gemm_kernels_impl.h"
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define GK_T float
#define GK_IT int
#define GK_SFX s_avx2
#define GK_VW 8
#define GK_MR 6
#define GK_NV 2
#include "gemm_kernels_impl.h"
#define GK_T double
#define GK_IT long long
#define GK_SFX d_avx2
#define GK_VW 4
#define GK_MR 6
#define GK_NV 2
#include "gemm_kernels_impl.h"
#pragma GCC pop_options
#endif

#define GK_T float
#define GK_IT int
#define GK_SFX s_base
#define GK_VW 4
#define GK_MR 4
#define GK_NV 2
#include "gemm_kernels_impl.h"
#define GK_T double
#define GK_IT long long
#define GK_SFX d_base
#define GK_VW 2
#define GK_MR 4
#define GK_NV 2
#include "gemm_kernels_impl.h"

/* --- dispatch ------------------------------------------------------------- */

#ifdef GK_HAVE_X86_CLONES
#define GK_DISPATCH(T, name, args)                                       \
    switch (x->isa) {                                                    \
    case GK_ISA_AVX512: name##_##T##_avx512 args; break;                 \
    case GK_ISA_AVX2: name##_##T##_avx2 args; break;                     \
    default: name##_##T##_base args;                                     \
    }
#else
#define GK_DISPATCH(T, name, args) name##_##T##_base args;
#endif

static void gk_tile_geom(int isa, int dbl, int *mr, int *nr)
{
    switch (isa) {
#ifdef GK_HAVE_X86_CLONES
    case GK_ISA_AVX512:
        *mr = dbl ? gk_MR_d_avx512 : gk_MR_s_avx512;
        *nr = dbl ? gk_NR_d_avx512 : gk_NR_s_avx512;
        return;
    case GK_ISA_AVX2:
        *mr = dbl ? gk_MR_d_avx2 : gk_MR_s_avx2;
        *nr = dbl ? gk_NR_d_avx2 : gk_NR_s_avx2;
        return;
#endif
    default:
        *mr = dbl ? gk_MR_d_base : gk_MR_s_base;
        *nr = dbl ? gk_NR_d_base : gk_NR_s_base;
    }
}

/* Plan a call: pick the path and blocking, allocate buffers.  Returns the
 * number of threads to use (1: run the loops serially, no OpenMP region), or
 * -1 when the buffers cannot be allocated (the caller then falls back). */
static int gk_plan(gk_ctx *x, int dbl, void *C, const void *A, const void *B,
                   ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, ptrdiff_t lda,
                   ptrdiff_t ldb, ptrdiff_t ldc, int transA, int transB,
                   double alpha, double beta, int nthreads)
{
    size_t es = dbl ? sizeof(double) : sizeof(float);
    double flops = 2.0 * (double)M * (double)N * (double)K;
    ptrdiff_t i;
    int nt;
    memset(x, 0, sizeof(*x));
    x->C = C; x->A = A; x->B = B;
    x->M = M; x->N = N; x->K = K;
    x->lda = lda; x->ldb = ldb; x->ldc = ldc;
    x->transA = transA; x->transB = transB;
    x->alpha = alpha; x->beta = beta;
    if (nthreads < 1)
        nthreads = gru_max_threads();
    if (nthreads < 1)
        nthreads = 1;
    nt = nthreads;
    if (flops < GK_SERIAL_FLOPS) {
        nt = 1;
    } else {
        double cap = flops / GK_FLOPS_PER_THREAD;
        if ((double)nt > cap)
            nt = (int)cap;
        if (nt < 1)
            nt = 1;
    }
    x->isa = gk_isa();
    gk_tile_geom(x->isa, dbl, &x->mr, &x->nr);
    if (M <= 0 || N <= 0 || K <= 0 || alpha == 0) {
        x->path = GK_PATH_NONE;
        return 1;
    }
    /* K blocking: equal blocks of at most GK_KC_MAX (depends on K only). */
    x->nkb = gk_cdiv(K, GK_KC_MAX);
    x->kc_blk = gk_cdiv(K, x->nkb);

    if (M <= GK_DIRECT_MAX_M && !(transA && transB)) {
        x->path = GK_PATH_DIRECT;
        x->nchunks = gk_cdiv(N, GK_DIRECT_CHUNK);
        if (nt > x->nchunks)
            nt = (int)x->nchunks;
        x->nthreads = nt;
        return nt;
    }
    x->path = GK_PATH_BLOCKED;
    {
        /* Tiles of C, each computed over all of K by one thread with its
         * own packed A and B (no barrier inside a call).  Split the larger
         * of M and N (the other operand is then packed once per tile). */
        int mr = x->mr, nr = x->nr;
        ptrdiff_t kc = x->kc_blk, tm, tn, pmax;
        size_t abytes, bbytes, total;
        char *p;
        x->mp = gk_cdiv(M, mr);
        x->np = gk_cdiv(N, nr);
        tm = gk_cdiv(M, GK_MRANGE_MAX);
        tn = 1;
        if (nt > 1) {
            if (M >= N) {
                tm = gk_rup(tm, nt);
                if (tm > x->mp)
                    tm = x->mp;
                if (tm < nt)
                    tn = gk_cdiv(nt, tm);
            } else {
                tn = nt;
                if (tm * tn < nt)
                    tm = gk_cdiv(nt, tn);
            }
        }
        if (tm > x->mp)
            tm = x->mp;
        if (tn > x->np)
            tn = x->np;
        x->tm = tm;
        x->tn = tn;
        x->ntiles = tm * tn;
        x->mrange = gk_cdiv(x->mp, tm) * mr;
        x->nrange = gk_cdiv(x->np, tn) * nr;
        /* B is packed kc x ncl at a time, within half of L2 */
        pmax = (ptrdiff_t)(GK_L2_BYTES / 2 / ((size_t)kc * es * nr));
        if (pmax < 1)
            pmax = 1;
        x->ncl = gk_min(x->nrange, pmax * nr);
        if (nt > x->ntiles)
            nt = (int)x->ntiles;
        x->nthreads = nt;
        abytes = (size_t)x->mrange * kc * es;
        abytes = (abytes + GK_ALIGN - 1) / GK_ALIGN * GK_ALIGN;
        bbytes = (size_t)x->ncl * kc * es;
        bbytes = (bbytes + GK_ALIGN - 1) / GK_ALIGN * GK_ALIGN;
        total = (size_t)nt * (abytes + bbytes + 2 * sizeof(void *)) + GK_ALIGN;
        x->mem = (char *)gk_alloc(total, &x->cached);
        if (x->mem == NULL)
            return -1;
        p = (char *)(((size_t)x->mem + GK_ALIGN - 1) / GK_ALIGN * GK_ALIGN);
        x->abuf = (void **)(p + (size_t)nt * (abytes + bbytes));
        x->bbuf = x->abuf + nt;
        for (i = 0; i < nt; i++) {
            x->abuf[i] = p;
            p += abytes;
            x->bbuf[i] = p;
            p += bbytes;
        }
    }
    return nt;
}

static inline void gk_tile_s(gk_ctx *x, ptrdiff_t t, int tid) { GK_DISPATCH(s, gk_tile, (x, t, tid)) }

/* Packing op(B) once for many products with the same B (the GRU's recurrent
 * weights, used once per step): the blocked path's panels for every K block.
 * The layout depends on N, K and the ISA only, so any later plan of the same
 * N and K (and any M, any thread count) reads it instead of packing per tile;
 * the arithmetic is unchanged. */
static ptrdiff_t gk_prepack_size(int dbl, ptrdiff_t N, ptrdiff_t K)
{
    int mr, nr;
    ptrdiff_t nkb, kc_blk;
    if (N <= 0 || K <= 0)
        return 0;
    gk_tile_geom(gk_isa(), dbl, &mr, &nr);
    nkb = gk_cdiv(K, GK_KC_MAX);
    kc_blk = gk_cdiv(K, nkb);
    return nkb * gk_rup(N, nr) * kc_blk;
}

static void gk_prepack_setup(gk_ctx *x, int dbl, const void *B, ptrdiff_t N, ptrdiff_t K,
                             ptrdiff_t ldb, int transB)
{
    memset(x, 0, sizeof(*x));
    x->B = B;
    x->N = N;
    x->K = K;
    x->ldb = ldb;
    x->transB = transB;
    x->isa = gk_isa();
    gk_tile_geom(x->isa, dbl, &x->mr, &x->nr);
    x->nkb = gk_cdiv(K, GK_KC_MAX);
    x->kc_blk = gk_cdiv(K, x->nkb);
}
static inline void gk_tile_d(gk_ctx *x, ptrdiff_t t, int tid) { GK_DISPATCH(d, gk_tile, (x, t, tid)) }
static inline void gk_direct_s(gk_ctx *x, ptrdiff_t t) { GK_DISPATCH(s, gk_direct, (x, t)) }

/* out (gk_prepack_size elements) = op(B) (K, N) in the blocked path's panels:
 * part `part` of `nparts` (0 of 1: all), balanced runs of whole panels; the
 * parts may be packed by different threads at once. */
static inline void gk_prepack_s(const float *B, ptrdiff_t N, ptrdiff_t K, ptrdiff_t ldb,
                                int transB, int part, int nparts, float *out)
{
    gk_ctx ctx;
    gk_ctx *x = &ctx;
    if (N <= 0 || K <= 0 || nparts < 1 || part < 0 || part >= nparts)
        return;
    gk_prepack_setup(x, 0, B, N, K, ldb, transB);
    GK_DISPATCH(s, gk_prepack, (x, part, nparts, out))
}

static inline void gk_prepack_d(const double *B, ptrdiff_t N, ptrdiff_t K, ptrdiff_t ldb,
                                int transB, int part, int nparts, double *out)
{
    gk_ctx ctx;
    gk_ctx *x = &ctx;
    if (N <= 0 || K <= 0 || nparts < 1 || part < 0 || part >= nparts)
        return;
    gk_prepack_setup(x, 1, B, N, K, ldb, transB);
    GK_DISPATCH(d, gk_prepack, (x, part, nparts, out))
}
static inline void gk_direct_d(gk_ctx *x, ptrdiff_t t) { GK_DISPATCH(d, gk_direct, (x, t)) }

/* out = the nb row blocks B + g * bstride (g < nb; each w rows of K, B stored
 * (N, K), rows ldb apart) packed as ONE matrix of N = nb * w columns, in
 * gk_prepack's layout for that N and K: column g * w + j of the product is
 * row j of block g.  A unit slice's rows of the three gate blocks then run as
 * one product (one packing of A per K block instead of three).  Needs w a
 * multiple of the ISA's NR (every block starts a panel); returns 0 (nothing
 * written) otherwise, 1 when packed. */
#define GK_PREPACK_BLOCKS(T, SFX, DBL)                                               \
static inline int gk_prepack_blocks_##SFX(const T *B, ptrdiff_t nb, ptrdiff_t bstride, \
                                          ptrdiff_t w, ptrdiff_t K, ptrdiff_t ldb,     \
                                          T *out)                                      \
{                                                                                      \
    gk_ctx ctx;                                                                        \
    gk_ctx *x = &ctx;                                                                  \
    ptrdiff_t g, kb, stride;                                                           \
    if (nb <= 0 || w <= 0 || K <= 0)                                                   \
        return 0;                                                                      \
    gk_prepack_setup(x, DBL, B, w, K, ldb, 1);                                         \
    if (w % x->nr)                                                                     \
        return 0;                                                                      \
    stride = nb * w * x->kc_blk;                                                       \
    for (g = 0; g < nb; g++) {                                                         \
        x->B = B + g * bstride;                                                        \
        for (kb = 0; kb < x->nkb; kb++) {                                              \
            ptrdiff_t k0 = kb * x->kc_blk, kc = gk_min(x->kc_blk, K - k0);             \
            GK_DISPATCH(SFX, gk_pack_b, (x, 0, w, k0, kc, out + kb * stride + g * w * kc)) \
        }                                                                              \
    }                                                                                  \
    return 1;                                                                          \
}
GK_PREPACK_BLOCKS(float, s, 0)
GK_PREPACK_BLOCKS(double, d, 1)

/* C (M, N) = A (M, K) @ B.T + bias (B stored (N, K)) for M <= GK_DIRECT_MAX_M,
 * serially, without a plan: the fused forward's per-step products at batch 1
 * to 3 (three per step and thread; plans and separate bias passes cost too
 * much there: docs/performance.md).  Same path, chunks and arithmetic as gk_plan's
 * direct path with alpha = 1, beta = 0, then bias added: the same bits. */
#define GK_GEMV_BIAS(T, SFX)                                                         \
static inline void gk_gemv_bias_##SFX(T *C, const T *A, const T *B, const T *bias,  \
                                      ptrdiff_t M, ptrdiff_t N, ptrdiff_t K,         \
                                      ptrdiff_t lda, ptrdiff_t ldb, ptrdiff_t ldc)   \
{                                                                                    \
    gk_ctx ctx;                                                                      \
    gk_ctx *x = &ctx;                                                                \
    ptrdiff_t t, nch;                                                                \
    if (M <= 0 || N <= 0)                                                            \
        return;                                                                      \
    memset(x, 0, sizeof(*x));                                                        \
    x->C = C; x->A = A; x->B = B; x->bias = bias;                                    \
    x->M = M; x->N = N; x->K = K;                                                    \
    x->lda = lda; x->ldb = ldb; x->ldc = ldc;                                        \
    x->transB = 1;                                                                   \
    x->alpha = 1.0;                                                                  \
    x->isa = gk_isa();                                                               \
    x->path = GK_PATH_DIRECT;                                                        \
    nch = gk_cdiv(N, GK_DIRECT_CHUNK);                                               \
    for (t = 0; t < nch; t++)                                                        \
        GK_DISPATCH(SFX, gk_direct, (x, t))                                          \
}
GK_GEMV_BIAS(float, s)
GK_GEMV_BIAS(double, d)

/* C (M, N) *= beta; beta == 0 writes zeros without reading C. */
static inline void gk_scale_s(float *C, ptrdiff_t M, ptrdiff_t N, ptrdiff_t ldc, float beta)
{
    ptrdiff_t i, j;
    if (beta == 1)
        return;
    for (i = 0; i < M; i++) {
        float *c = C + i * ldc;
        if (beta == 0)
            for (j = 0; j < N; j++) c[j] = 0;
        else
            for (j = 0; j < N; j++) c[j] *= beta;
    }
}

static inline void gk_scale_d(double *C, ptrdiff_t M, ptrdiff_t N, ptrdiff_t ldc, double beta)
{
    ptrdiff_t i, j;
    if (beta == 1)
        return;
    for (i = 0; i < M; i++) {
        double *c = C + i * ldc;
        if (beta == 0)
            for (j = 0; j < N; j++) c[j] = 0;
        else
            for (j = 0; j < N; j++) c[j] *= beta;
    }
}

#endif /* GRU_CY_GEMM_KERNELS_H */
