/* One instantiation of the gemm kernels (included by gemm_kernels.h).
 *
 * Parameters (#defined by the includer, #undef'd at the end):
 *   GK_T    element type (float or double)
 *   GK_SFX  name suffix, e.g. s_avx512
 *   GK_VW   lanes per vector
 *   GK_MR   micro-tile rows (broadcast A values)
 *   GK_NV   micro-tile vectors per row (GK_NR = GK_NV * GK_VW columns)
 *
 * Packed layouts (zero padded):
 *   A block (mc x kc): panels of GK_MR rows; panel p holds [k][r] at
 *     p*GK_MR*kc + k*GK_MR + r.
 *   B block (kc x nc): panels of GK_NR columns; panel q holds [k][c] at
 *     q*GK_NR*kc + k*w + c, w = GK_NR, or for a last, narrower panel the
 *     number of its columns rounded up to whole vectors.
 */
#define GK_NR (GK_VW * GK_NV)
#define GK_CAT_(a, b) a##_##b
#define GK_CAT(a, b) GK_CAT_(a, b)
#define GK_FN(name) GK_CAT(name, GK_SFX)
#define GK_V GK_FN(gk_vec)
#define GK_U GK_FN(gk_uvec)
#define GK_I GK_FN(gk_ivec)

enum { GK_FN(gk_MR) = GK_MR, GK_FN(gk_NR) = GK_NR };

typedef GK_T GK_V __attribute__((vector_size(GK_VW * sizeof(GK_T))));
typedef GK_T GK_U __attribute__((vector_size(GK_VW * sizeof(GK_T)), aligned(sizeof(GK_T)), may_alias));
typedef GK_IT GK_I __attribute__((vector_size(GK_VW * sizeof(GK_T))));

#if GK_VW == 2
#define GK_MLO_1 {0, 2}
#define GK_MHI_1 {1, 3}
#elif GK_VW == 4
#define GK_MLO_2 {0, 1, 4, 5}
#define GK_MHI_2 {2, 3, 6, 7}
#define GK_MLO_1 {0, 4, 2, 6}
#define GK_MHI_1 {1, 5, 3, 7}
#elif GK_VW == 8
#define GK_MLO_4 {0, 1, 2, 3, 8, 9, 10, 11}
#define GK_MHI_4 {4, 5, 6, 7, 12, 13, 14, 15}
#define GK_MLO_2 {0, 1, 8, 9, 4, 5, 12, 13}
#define GK_MHI_2 {2, 3, 10, 11, 6, 7, 14, 15}
#define GK_MLO_1 {0, 8, 2, 10, 4, 12, 6, 14}
#define GK_MHI_1 {1, 9, 3, 11, 5, 13, 7, 15}
#elif GK_VW == 16
#define GK_MLO_8 {0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23}
#define GK_MHI_8 {8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31}
#define GK_MLO_4 {0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27}
#define GK_MHI_4 {4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31}
#define GK_MLO_2 {0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29}
#define GK_MHI_2 {2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31}
#define GK_MLO_1 {0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30}
#define GK_MHI_1 {1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31}
#else
#error "GK_VW must be 2, 4, 8 or 16"
#endif

/* Two-vector lane shuffle with a constant mask (lanes of a then b). */
#if defined(__GNUC__) && !defined(__clang__) && !defined(GK_NO_BUILTIN_SHUFFLE)
#define GK_SHUF(a, b, m) __builtin_shuffle(a, b, (GK_I)m)
#else
static inline GK_V GK_FN(gk_shuf)(GK_V a, GK_V b, const int *m)
{
    GK_T t[2 * GK_VW], r[GK_VW];
    GK_V v;
    int l;
    memcpy(t, &a, sizeof(a));
    memcpy(t + GK_VW, &b, sizeof(b));
    for (l = 0; l < GK_VW; l++)
        r[l] = t[m[l]];
    memcpy(&v, r, sizeof(v));
    return v;
}
#define GK_SHUF(a, b, m) GK_FN(gk_shuf)(a, b, (const int[])m)
#endif

/* One transpose stage: swap the off-diagonal dd x dd blocks of each 2dd x 2dd
 * block (lane masks index the concatenation of two rows). */
#define GK_TR_STAGE(dd)                                                     \
    _Pragma("GCC unroll 16")                                                \
    for (i = 0; i < GK_VW; i++)                                             \
        if (!(i & dd)) {                                                    \
            GK_V a_ = r[i], b_ = r[i + dd];                                 \
            r[i] = GK_SHUF(a_, b_, GK_MLO_##dd);                            \
            r[i + dd] = GK_SHUF(a_, b_, GK_MHI_##dd);                       \
        }

/* d[k*ldd + c] = s[c*ld + k] for a GK_VW x GK_VW block, in registers. */
static inline __attribute__((always_inline)) void
GK_FN(gk_tr)(const GK_T *restrict s, ptrdiff_t ld, GK_T *restrict d, ptrdiff_t ldd)
{
    GK_V r[GK_VW];
    int i;
#pragma GCC unroll 16
    for (i = 0; i < GK_VW; i++)
        r[i] = *(const GK_U *)(s + i * ld);
#if GK_VW >= 16
    GK_TR_STAGE(8)
#endif
#if GK_VW >= 8
    GK_TR_STAGE(4)
#endif
#if GK_VW >= 4
    GK_TR_STAGE(2)
#endif
    GK_TR_STAGE(1)
#pragma GCC unroll 16
    for (i = 0; i < GK_VW; i++)
        *(GK_U *)(d + i * ldd) = r[i];
}

/* Reduction stage: pair (s[i], s[i+dd]) -> s[i], folding lanes dd apart;
 * after all stages, lane l of s[0] is the (pairwise-tree) sum of s[l]. */
#define GK_RED_STAGE(dd)                                                    \
    _Pragma("GCC unroll 16")                                                \
    for (q_ = 0; q_ < dd; q_++) {                                           \
        GK_V a_ = s[q_], b_ = s[q_ + dd];                                   \
        s[q_] = GK_SHUF(a_, b_, GK_MLO_##dd) + GK_SHUF(a_, b_, GK_MHI_##dd); \
    }

/* Store rule shared by every path:
 *   mode 0: c = alpha*acc;  1: c = c + alpha*acc;  2: c = beta*c + alpha*acc. */
static inline __attribute__((always_inline)) void
GK_FN(gk_vstore)(GK_T *c, GK_V acc, GK_T alpha, GK_T beta, int mode)
{
    GK_U *cp = (GK_U *)c;
    GK_V t = alpha * acc;
    if (mode == 0)
        *cp = t;
    else if (mode == 1)
        *cp = *cp + t;
    else
        *cp = beta * *cp + t;
}

static inline __attribute__((always_inline)) void
GK_FN(gk_store1)(GK_T *c, GK_T acc, GK_T alpha, GK_T beta, int mode)
{
    GK_T t = alpha * acc;
    if (mode == 0)
        *c = t;
    else if (mode == 1)
        *c = *c + t;
    else
        *c = beta * *c + t;
}

/* The micro-kernel body: acc (mr x nv*VW) = sum_k a[:, k] b[k, :] over kc
 * (k ascending, one fused multiply-add per term where the ISA has FMA), then
 * the store rule.  a(r, k) = a[r*ars + k*aks] (packed: ars = 1, aks = GK_MR;
 * or A itself), B panel rows are nv*VW apart.  mr and nv (and ars, aks for
 * packed A) are compile-time constants at every (inlined) use. */
static inline __attribute__((always_inline)) void
GK_FN(gk_ukr_body)(ptrdiff_t kc, const GK_T *restrict a, ptrdiff_t ars, ptrdiff_t aks,
                   const GK_T *restrict b, GK_T *restrict c, ptrdiff_t ldc, GK_T alpha,
                   GK_T beta, int mode, const int mr, const int nv)
{
    GK_V acc[GK_MR][GK_NV];
    ptrdiff_t k;
    int r, v;
#pragma GCC unroll 16
    for (r = 0; r < mr; r++)
#pragma GCC unroll 4
        for (v = 0; v < nv; v++)
            acc[r][v] = (GK_V){0};
#pragma GCC unroll 2
    for (k = 0; k < kc; k++) {
        GK_V bv[GK_NV];
#pragma GCC unroll 4
        for (v = 0; v < nv; v++)
            bv[v] = *(const GK_V *)(b + v * GK_VW);
#pragma GCC unroll 16
        for (r = 0; r < mr; r++) {
            GK_T ar = a[r * ars];
#pragma GCC unroll 4
            for (v = 0; v < nv; v++)
                acc[r][v] += ar * bv[v];
        }
        a += aks;
        b += nv * GK_VW;
    }
#pragma GCC unroll 16
    for (r = 0; r < mr; r++)
#pragma GCC unroll 4
        for (v = 0; v < nv; v++)
            GK_FN(gk_vstore)(c + r * ldc + v * GK_VW, acc[r][v], alpha, beta, mode);
}

/* Micro-kernel instances: 1..GK_MR rows on packed A (a partial tile runs
 * its own height: a padded batch's steps have any number of running rows),
 * and full height on A in place (strides ars, aks); 1..GK_NV vectors wide.
 * Every instance does the same arithmetic per element. */
#define GK_UKR_INST(name, MRX, NVX, ARS, AKS)                               \
    static __attribute__((noinline)) void GK_FN(name)(                      \
        ptrdiff_t kc, const GK_T *restrict a, ptrdiff_t ars, ptrdiff_t aks, \
        const GK_T *restrict b, GK_T *restrict c, ptrdiff_t ldc,            \
        GK_T alpha, GK_T beta, int mode)                                    \
    {                                                                       \
        (void)ars;                                                          \
        (void)aks;                                                          \
        GK_FN(gk_ukr_body)(kc, a, ARS, AKS, b, c, ldc, alpha, beta, mode,   \
                           MRX, NVX);                                       \
    }
/* packed A, mr rows (mr <= GK_MR, the panel's rows GK_MR apart), nv vectors
 * (GK_PICK_NV: the instance for nv, among those GK_NV allows) */
#if GK_NV >= 3
#define GK_UKR_PACKED(MRX)                                                  \
    GK_UKR_INST(gk_ukr_p##MRX##_1, MRX, 1, 1, GK_MR)                        \
    GK_UKR_INST(gk_ukr_p##MRX##_2, MRX, 2, 1, GK_MR)                        \
    GK_UKR_INST(gk_ukr_p##MRX##_3, MRX, 3, 1, GK_MR)
#define GK_PICK_NV(MRX) (nv == 3 ? GK_FN(gk_ukr_p##MRX##_3)                 \
                         : nv == 2 ? GK_FN(gk_ukr_p##MRX##_2) : GK_FN(gk_ukr_p##MRX##_1))
#elif GK_NV == 2
#define GK_UKR_PACKED(MRX)                                                  \
    GK_UKR_INST(gk_ukr_p##MRX##_1, MRX, 1, 1, GK_MR)                        \
    GK_UKR_INST(gk_ukr_p##MRX##_2, MRX, 2, 1, GK_MR)
#define GK_PICK_NV(MRX) (nv == 2 ? GK_FN(gk_ukr_p##MRX##_2) : GK_FN(gk_ukr_p##MRX##_1))
#else
#define GK_UKR_PACKED(MRX) GK_UKR_INST(gk_ukr_p##MRX##_1, MRX, 1, 1, GK_MR)
#define GK_PICK_NV(MRX) GK_FN(gk_ukr_p##MRX##_1)
#endif
GK_UKR_PACKED(1)
GK_UKR_PACKED(2)
GK_UKR_PACKED(3)
GK_UKR_PACKED(4)
#if GK_MR >= 5
GK_UKR_PACKED(5)
#endif
#if GK_MR >= 6
GK_UKR_PACKED(6)
#endif
#if GK_MR >= 7
GK_UKR_PACKED(7)
#endif
#if GK_MR >= 8
GK_UKR_PACKED(8)
#endif
#if GK_MR > 8
#error "GK_MR must be at most 8"
#endif
#undef GK_UKR_PACKED
GK_UKR_INST(gk_ukr_u1, GK_MR, 1, ars, aks)
#if GK_NV >= 2
GK_UKR_INST(gk_ukr_u2, GK_MR, 2, ars, aks)
#endif
#if GK_NV >= 3
GK_UKR_INST(gk_ukr_u3, GK_MR, 3, ars, aks)
#endif
#if GK_NV > 3
#error "GK_NV must be 1, 2 or 3"
#endif

typedef void (*GK_FN(gk_ukr_t))(ptrdiff_t, const GK_T *restrict, ptrdiff_t, ptrdiff_t,
                                 const GK_T *restrict, GK_T *restrict, ptrdiff_t, GK_T,
                                 GK_T, int);

/* The instance for a micro-tile of mr rows and nv vectors (unpacked: A in
 * place, full height only). */
static inline GK_FN(gk_ukr_t) GK_FN(gk_ukr_pick)(ptrdiff_t mr, int nv, int unpacked)
{
    if (unpacked) {
        switch (nv) {
#if GK_NV >= 3
        case 3: return GK_FN(gk_ukr_u3);
#endif
#if GK_NV >= 2
        case 2: return GK_FN(gk_ukr_u2);
#endif
        default: return GK_FN(gk_ukr_u1);
        }
    }
#define GK_PICK(MRX) case MRX: return GK_PICK_NV(MRX);
    switch (mr) {
    GK_PICK(1) GK_PICK(2) GK_PICK(3)
#if GK_MR >= 5
    GK_PICK(5)
#endif
#if GK_MR >= 6
    GK_PICK(6)
#endif
#if GK_MR >= 7
    GK_PICK(7)
#endif
#if GK_MR >= 8
    GK_PICK(8)
#endif
    default: break;
    }
#undef GK_PICK
    return GK_PICK_NV(4);   /* mr == 4 */
}
#undef GK_PICK_NV

/* Pack rows [i0, i0+mc) x K block of op(A). */
static void GK_FN(gk_pack_a)(const gk_ctx *x, ptrdiff_t i0, ptrdiff_t mc, ptrdiff_t k0,
                             ptrdiff_t kc, GK_T *restrict dst)
{
    const GK_T *A = (const GK_T *)x->A;
    ptrdiff_t lda = x->lda, i, k, r;
    for (i = 0; i < mc; i += GK_MR) {
        ptrdiff_t mr = gk_min(GK_MR, mc - i);
        GK_T *d = dst + i * kc;
        if (x->transA) {
            /* A stored (K, M): row k of the panel is contiguous */
            const GK_T *s = A + k0 * lda + i0 + i;
            if (mr == GK_MR) {
                for (k = 0; k < kc; k++)
#pragma GCC unroll 16
                    for (r = 0; r < GK_MR; r++)
                        d[k * GK_MR + r] = s[k * lda + r];
            } else {
                for (k = 0; k < kc; k++)
                    for (r = 0; r < GK_MR; r++)
                        d[k * GK_MR + r] = r < mr ? s[k * lda + r] : (GK_T)0;
            }
        } else {
            /* A stored (M, K): transpose MR rows */
            const GK_T *s = A + (i0 + i) * lda + k0;
            if (mr == GK_MR) {
                /* whole vectors of k per row (each cache line read once),
                 * then transposed out of a small L1 buffer */
                GK_T tb[GK_MR][GK_VW];
                for (k = 0; k + GK_VW <= kc; k += GK_VW) {
                    ptrdiff_t kk;
#pragma GCC unroll 16
                    for (r = 0; r < GK_MR; r++)
                        memcpy(tb[r], s + r * lda + k, sizeof(tb[r]));
#pragma GCC unroll 16
                    for (kk = 0; kk < GK_VW; kk++)
#pragma GCC unroll 16
                        for (r = 0; r < GK_MR; r++)
                            d[(k + kk) * GK_MR + r] = tb[r][kk];
                }
                for (; k < kc; k++)
                    for (r = 0; r < GK_MR; r++)
                        d[k * GK_MR + r] = s[r * lda + k];
            } else {
                for (k = 0; k < kc; k++)
                    for (r = 0; r < GK_MR; r++)
                        d[k * GK_MR + r] = r < mr ? s[r * lda + k] : (GK_T)0;
            }
        }
    }
}

/* Pack columns [j0, j0+nc) x K block of op(B) (j0 - block start is a
 * multiple of GK_NR). */
static void GK_FN(gk_pack_b)(const gk_ctx *x, ptrdiff_t j0, ptrdiff_t nc, ptrdiff_t k0,
                             ptrdiff_t kc, GK_T *restrict dst)
{
    const GK_T *B = (const GK_T *)x->B;
    ptrdiff_t ldb = x->ldb, j, k, c;
    for (j = 0; j < nc; j += GK_NR) {
        ptrdiff_t nr = gk_min(GK_NR, nc - j);
        GK_T *d = dst + j * kc;
        if (nr == GK_NR) {
            if (!x->transB) {
                /* B stored (K, N): row k of the panel is contiguous */
                const GK_T *s = B + k0 * ldb + j0 + j;
                for (k = 0; k < kc; k++)
#pragma GCC unroll 4
                    for (c = 0; c < GK_NV; c++)
                        *(GK_V *)(d + k * GK_NR + c * GK_VW) =
                            *(const GK_U *)(s + k * ldb + c * GK_VW);
            } else {
                /* B stored (N, K): transpose VW x VW blocks in registers */
                const GK_T *s = B + (j0 + j) * ldb + k0;
                for (k = 0; k + GK_VW <= kc; k += GK_VW)
#pragma GCC unroll 4
                    for (c = 0; c < GK_NV; c++)
                        GK_FN(gk_tr)(s + c * GK_VW * ldb + k, ldb,
                                     d + k * GK_NR + c * GK_VW, GK_NR);
                for (; k < kc; k++)
                    for (c = 0; c < GK_NR; c++)
                        d[k * GK_NR + c] = s[c * ldb + k];
            }
        } else {
            /* last, narrower panel: rows of w = whole vectors */
            ptrdiff_t w = gk_cdiv(nr, GK_VW) * GK_VW;
            for (k = 0; k < kc; k++)
                for (c = 0; c < w; c++)
                    d[k * w + c] = c >= nr ? (GK_T)0
                        : x->transB ? B[(j0 + j + c) * ldb + k0 + k]
                                    : B[(k0 + k) * ldb + j0 + j + c];
        }
    }
}

/* Part `part` of `nparts` of op(B) packed, every K block, as gk_pack_b packs
 * one block: K block kb at out + kb * rup(N, NR) * kc_blk, the panel of
 * column j at j * kc in it.  The parts are balanced runs of whole NR-column
 * panels; together (any order, any threads) they write the whole pack. */
static void GK_FN(gk_prepack)(const gk_ctx *x, int part, int nparts, GK_T *out)
{
    ptrdiff_t np = gk_cdiv(x->N, GK_NR), kb, stride = gk_rup(x->N, GK_NR) * x->kc_blk;
    ptrdiff_t j0 = np * part / nparts * GK_NR;
    ptrdiff_t j1 = gk_min(np * (part + 1) / nparts * GK_NR, x->N);
    if (j1 <= j0)
        return;
    for (kb = 0; kb < x->nkb; kb++) {
        ptrdiff_t k0 = kb * x->kc_blk, kc = gk_min(x->kc_blk, x->K - k0);
        GK_FN(gk_pack_b)(x, j0, j1 - j0, k0, kc, out + kb * stride + j0 * kc);
    }
}

/* Tile t = (ib, jb) of C, all of K, run by thread tid.  Loops: K blocks
 * (ascending) > pack A rows of the tile > B blocks of ncl columns (packed,
 * L2) > MR-row panels (A panel in L1) > NR-column panels > micro-kernel. */
/* C tile (mr x nr, row stride ldc) += bias[0 .. nr): the same one rounding
 * per element as a separate bias pass (cell.pyx's bias_forward). */
static inline void GK_FN(gk_add_bias)(GK_T *cp, ptrdiff_t ldc, ptrdiff_t mr, ptrdiff_t nr,
                                      const GK_T *bias)
{
    ptrdiff_t r, c;
    for (r = 0; r < mr; r++)
        for (c = 0; c < nr; c++)
            cp[r * ldc + c] = cp[r * ldc + c] + bias[c];
}

static void GK_FN(gk_tile)(gk_ctx *x, ptrdiff_t t, int tid)
{
    /* balanced runs of MR panels in M and NR panels in N */
    ptrdiff_t ib = t / x->tn, jb = t % x->tn;
    ptrdiff_t i0 = ib * x->mp / x->tm * GK_MR;
    ptrdiff_t mc = gk_min((ib + 1) * x->mp / x->tm * GK_MR, x->M) - i0;
    ptrdiff_t j0 = jb * x->np / x->tn * GK_NR;
    ptrdiff_t j1 = gk_min((jb + 1) * x->np / x->tn * GK_NR, x->N);
    ptrdiff_t ldc = x->ldc, kb, jc, ir, jr;
    GK_T *ap = (GK_T *)x->abuf[tid], *bp = (GK_T *)x->bbuf[tid];
    GK_T *C = (GK_T *)x->C;
    GK_T alpha = (GK_T)x->alpha, beta = (GK_T)x->beta;
    GK_T tmp[GK_MR * GK_NR] __attribute__((aligned(64)));
    if (mc <= 0 || j1 <= j0)
        return;
    for (kb = 0; kb < x->nkb; kb++) {
        ptrdiff_t k0 = kb * x->kc_blk, kc = gk_min(x->kc_blk, x->K - k0);
        /* x->bias: added to each micro-tile of C right after its last K
         * block (still in L1), instead of a separate pass over C */
        const GK_T *bias = kb == x->nkb - 1 ? (const GK_T *)x->bias : NULL;
        int mode = kb > 0 ? 1 : (beta == 0 ? 0 : (beta == 1 ? 1 : 2));
        /* A narrow tile reads each A panel once or twice, and a tile of one
         * panel's rows (the batch mode's 8-row chunks) keeps its rows in L1
         * anyway: use A in place (full panels) rather than pack it
         * (docs/performance.md, "The gemm"). */
        int inplace = j1 - j0 <= 2 * GK_NR || mc <= GK_MR;
        const GK_T *A = (const GK_T *)x->A;
        ptrdiff_t ars = x->transA ? 1 : x->lda, aks = x->transA ? x->lda : 1;
        if (!inplace)
            GK_FN(gk_pack_a)(x, i0, mc, k0, kc, ap);
        else if (mc % GK_MR)
            GK_FN(gk_pack_a)(x, i0 + mc / GK_MR * GK_MR, mc % GK_MR, k0, kc,
                             ap + mc / GK_MR * GK_MR * kc);
        for (jc = j0; jc < j1; jc += x->ncl) {
            ptrdiff_t nc = gk_min(x->ncl, j1 - jc);
            if (x->bpre != NULL)
                bp = (GK_T *)x->bpre + kb * x->bpre_kstride + jc * kc;
            else
                GK_FN(gk_pack_b)(x, jc, nc, k0, kc, bp);
            for (ir = 0; ir < mc; ir += GK_MR) {
                ptrdiff_t mr = gk_min(GK_MR, mc - ir);
                int un = inplace && mr == GK_MR;
                const GK_T *a = un ? A + (i0 + ir) * ars + k0 * aks : ap + ir * kc;
                for (jr = 0; jr < nc; jr += GK_NR) {
                    ptrdiff_t nr = gk_min(GK_NR, nc - jr), r, c;
                    int nv = (int)gk_cdiv(nr, GK_VW);
                    GK_T *cp = C + (i0 + ir) * ldc + jc + jr;
                    if (mr == GK_MR && nr == nv * GK_VW) {
                        GK_FN(gk_ukr_pick)(GK_MR, nv, un)(kc, a, ars, aks, bp + jr * kc, cp,
                                                          ldc, alpha, beta, mode);
                        if (bias != NULL)
                            GK_FN(gk_add_bias)(cp, ldc, mr, nr, bias + jc + jr);
                    } else {
                        /* partial tile: same arithmetic on a scratch tile */
                        if (mode != 0)
                            for (r = 0; r < mr; r++)
                                for (c = 0; c < nr; c++)
                                    tmp[r * GK_NR + c] = cp[r * ldc + c];
                        GK_FN(gk_ukr_pick)(mr, nv, un)(kc, a, ars, aks, bp + jr * kc, tmp,
                                                       GK_NR, alpha, beta, mode);
                        for (r = 0; r < mr; r++)
                            for (c = 0; c < nr; c++)
                                cp[r * ldc + c] = tmp[r * GK_NR + c];
                        if (bias != NULL)
                            GK_FN(gk_add_bias)(cp, ldc, mr, nr, bias + jc + jr);
                    }
                }
            }
        }
    }
}

/* Direct path, B not transposed: the chunk's rows of C accumulate in an L1
 * buffer while B streams row by row: acc_ij = sum_k a_ik B[k, j] in
 * ascending k (four rows of B per pass, one fused multiply-add each). */
static void GK_FN(gk_direct_n)(gk_ctx *x, ptrdiff_t t)
{
    const GK_T *A = (const GK_T *)x->A, *B = (const GK_T *)x->B;
    ptrdiff_t j0 = t * GK_DIRECT_CHUNK, nc = gk_min(x->N - j0, GK_DIRECT_CHUNK);
    ptrdiff_t M = x->M, K = x->K, ldb = x->ldb, ldc = x->ldc, i, j, k;
    ptrdiff_t sk = x->transA ? x->lda : 1, si = x->transA ? 1 : x->lda;
    GK_T alpha = (GK_T)x->alpha, beta = (GK_T)x->beta;
    int mode = beta == 0 ? 0 : (beta == 1 ? 1 : 2);
    GK_T acc[GK_DIRECT_MAX_M][GK_DIRECT_CHUNK] __attribute__((aligned(64)));
    for (i = 0; i < M; i++)
        for (j = 0; j < nc; j++)
            acc[i][j] = 0;
    for (k = 0; k + 4 <= K; k += 4) {
        const GK_T *b0 = B + k * ldb + j0, *b1 = b0 + ldb, *b2 = b1 + ldb, *b3 = b2 + ldb;
        for (i = 0; i < M; i++) {
            const GK_T *a = A + i * si + k * sk;
            GK_T a0 = a[0], a1 = a[sk], a2 = a[2 * sk], a3 = a[3 * sk];
            GK_T *restrict y = acc[i];
            for (j = 0; j < nc; j++) {
                GK_T s = y[j];
                s += a0 * b0[j];
                s += a1 * b1[j];
                s += a2 * b2[j];
                s += a3 * b3[j];
                y[j] = s;
            }
        }
    }
    for (; k < K; k++) {
        const GK_T *b0 = B + k * ldb + j0;
        for (i = 0; i < M; i++) {
            GK_T a0 = A[i * si + k * sk];
            GK_T *restrict y = acc[i];
            for (j = 0; j < nc; j++)
                y[j] += a0 * b0[j];
        }
    }
    for (i = 0; i < M; i++) {
        GK_T *c = (GK_T *)x->C + i * ldc + j0;
        for (j = 0; j + GK_VW <= nc; j += GK_VW)
            GK_FN(gk_vstore)(c + j, *(const GK_V *)(acc[i] + j), alpha, beta, mode);
        for (; j < nc; j++)
            GK_FN(gk_store1)(c + j, acc[i][j], alpha, beta, mode);
    }
}

/* Sum of a vector's lanes by the pairwise tree GK_RED_STAGE uses. */
static inline GK_T GK_FN(gk_hsum)(GK_V v)
{
    GK_T t[GK_VW];
    int w, l;
    memcpy(t, &v, sizeof(t));
    for (w = GK_VW / 2; w >= 1; w /= 2)
        for (l = 0; l < w; l++)
            t[l] = t[l] + t[l + w];
    return t[0];
}

/* Direct path, B transposed (A not): dot products of A's rows with B's rows.
 * Per column: lane partial sums over whole vectors of k, the lanes summed by
 * a pairwise tree, then the k tail in ascending order.  Groups of GK_VW
 * columns reduce their GK_VW accumulators together (same tree per column). */
static void GK_FN(gk_direct_t)(gk_ctx *x, ptrdiff_t t)
{
    const GK_T *B = (const GK_T *)x->B, *bias = (const GK_T *)x->bias;
    ptrdiff_t j0 = t * GK_DIRECT_CHUNK, j1 = gk_min(x->N, j0 + GK_DIRECT_CHUNK);
    ptrdiff_t K = x->K, ldb = x->ldb, kv = K / GK_VW * GK_VW, i, j, k;
    GK_T alpha = (GK_T)x->alpha, beta = (GK_T)x->beta;
    int mode = beta == 0 ? 0 : (beta == 1 ? 1 : 2);
    for (i = 0; i < x->M; i++) {
        const GK_T *a = (const GK_T *)x->A + i * x->lda;
        GK_T *c = (GK_T *)x->C + i * x->ldc;
        for (j = j0; j + GK_VW <= j1; j += GK_VW) {
            const GK_T *b = B + j * ldb;
            GK_V s[GK_VW];
            int l, q_;
            /* all GK_VW rows at once: GK_VW independent accumulators (the
               fused multiply-adds' latency hidden), kept in registers */
#pragma GCC unroll 16
            for (q_ = 0; q_ < GK_VW; q_++)
                s[q_] = (GK_V){0};
            for (k = 0; k < kv; k += GK_VW) {
                GK_V av = *(const GK_U *)(a + k);
#pragma GCC unroll 16
                for (q_ = 0; q_ < GK_VW; q_++)
                    s[q_] += av * *(const GK_U *)(b + q_ * ldb + k);
            }
#if GK_VW >= 16
            GK_RED_STAGE(8)
#endif
#if GK_VW >= 8
            GK_RED_STAGE(4)
#endif
#if GK_VW >= 4
            GK_RED_STAGE(2)
#endif
            GK_RED_STAGE(1)
            if (kv < K) {
                GK_T r[GK_VW];
                memcpy(r, &s[0], sizeof(r));
                for (l = 0; l < GK_VW; l++)
                    for (k = kv; k < K; k++)
                        r[l] += a[k] * b[l * ldb + k];
                memcpy(&s[0], r, sizeof(r));
            }
            GK_FN(gk_vstore)(c + j, s[0], alpha, beta, mode);
            if (bias != NULL)
                *(GK_U *)(c + j) = *(GK_U *)(c + j) + *(const GK_U *)(bias + j);
        }
        for (; j < j1; j++) {
            const GK_T *b = B + j * ldb;
            GK_V s0 = (GK_V){0};
            GK_T r;
            for (k = 0; k < kv; k += GK_VW)
                s0 += *(const GK_U *)(a + k) * *(const GK_U *)(b + k);
            r = GK_FN(gk_hsum)(s0);
            for (k = kv; k < K; k++)
                r += a[k] * b[k];
            GK_FN(gk_store1)(c + j, r, alpha, beta, mode);
            if (bias != NULL)
                c[j] = c[j] + bias[j];
        }
    }
}

/* Direct path: column chunk t (fixed GK_DIRECT_CHUNK grid), all rows. */
static void GK_FN(gk_direct)(gk_ctx *x, ptrdiff_t t)
{
    if (x->transB)
        GK_FN(gk_direct_t)(x, t);
    else
        GK_FN(gk_direct_n)(x, t);
}

#undef GK_RED_STAGE
#undef GK_UKR_INST
#undef GK_TR_STAGE
#undef GK_MLO_1
#undef GK_MHI_1
#undef GK_MLO_2
#undef GK_MHI_2
#undef GK_MLO_4
#undef GK_MHI_4
#undef GK_MLO_8
#undef GK_MHI_8
#undef GK_I
#undef GK_SHUF
#undef GK_IT
#undef GK_U
#undef GK_V
#undef GK_FN
#undef GK_CAT
#undef GK_CAT_
#undef GK_NR
#undef GK_T
#undef GK_SFX
#undef GK_VW
#undef GK_MR
#undef GK_NV
