/* The bfloat16 inference forward (GRU(..., inference_precision="bfloat16")).
 *
 * Products with bf16 inputs and float32 accumulation (AVX512_BF16's
 * vdpbf16ps); biases, gates and state in float32 (darknet: rows.h's row
 * functions, the float32 engine's; reset_after: gb_reset_after_row, the same
 * row body with fused multiply-adds).  Inference only, lengths None
 * (bf16.pyx, layer.py say so).
 *
 *   gb_supported        does this CPU have AVX512_BF16 (and F, BW, VL)?
 *   gb_convert          float32 -> bf16 bits (round to nearest even, vcvtne2ps2bf16)
 *   gb_pack_size/_part  a (N, K) weight block -> bf16 column panels
 *   gb_forward          the whole forward in one parallel region
 *
 * Layouts (uint32 = one pair of bf16, the lower k in the low half):
 *   activations  row-major (M, KP) pairs, KP = ceil(K / 2), an odd K padded with 0
 *   weights      panels of GB_NW = 16 output columns: panel p holds [kp][lane] at
 *                p * KP * 16 + kp * 16 + lane, columns past N are 0
 * vdpbf16ps then computes, per lane, acc += a[2kp] * w[2kp] + a[2kp+1] * w[2kp+1]
 * (products of bf16 are exact in float32; two float32 additions).
 *
 * Determinism.  Every output element is computed by one thread as
 *     acc = 0; for kp = 0 .. KP-1: acc = dp(acc, a pair, w pair); out = acc + bias
 * whatever the thread count, the unit slice or the micro-tile it falls in (each
 * lane of a vector is its own column): results are bit-identical for any
 * thread count.
 *
 * Two shapes, chosen by the sizes alone (gb_forward), as the float32 fused
 * forward's: unit slices (gb_units_team: threads own whole 16-unit panels of
 * the H units and compute their units' columns of the input projection, a
 * chunk of steps at a time, of the recurrent products and their units' gates
 * and state; one barrier a step, two for darknet, whose candidate needs all of
 * s = r * h_{t-1}; each thread converts its slice of h_t and s_t to bf16 for
 * the next product, h's copies alternating between two buffers so that one
 * barrier a step suffices), and batch mode (gb_batch_team: threads own whole
 * sequences and run their steps without any barrier).  Both compute every
 * element as above, so they give the same bits.  The measurements:
 * docs/performance.md ("bfloat16 inference").
 */
#ifndef GRU_CY_BF16_KERNELS_H
#define GRU_CY_BF16_KERNELS_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "omp_compat.h"
#include "rows.h"

#define GB_NW 16          /* columns per weight panel (one zmm of float32) */
#define GB_MR 8           /* rows per micro-tile */
#define GB_CHUNK_ROWS 512 /* rows (steps x B) of one input-projection chunk */
#define GB_BATCH_WEIGHT_BYTES (1 << 20)  /* batch mode up to this much bf16 weight */

static int gb_forced_off = 0;   /* tests: act as if the CPU lacked AVX512_BF16 */

static inline void gb_force_off(int off) { gb_forced_off = off; }

static inline ptrdiff_t gb_pairs(ptrdiff_t K) { return (K + 1) / 2; }
static inline ptrdiff_t gb_panels(ptrdiff_t N) { return (N + GB_NW - 1) / GB_NW; }

/* uint32 elements of the packed weights of an (N, K) block. */
static inline ptrdiff_t gb_pack_size(ptrdiff_t N, ptrdiff_t K)
{
    return gb_panels(N) * gb_pairs(K) * GB_NW;
}

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define GB_HAVE_BF16 1
#include <immintrin.h>
#define GB_ATTR __attribute__((target("avx512bf16,avx512f,avx512bw,avx512vl,avx512dq")))

static inline int gb_supported(void)
{
    if (gb_forced_off)
        return 0;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512f")
           && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
}

/* One row of K float32 -> KP pairs of bf16 (round to nearest even; an odd K's
 * last pair has 0 above). */
static GB_ATTR void gb_convert_row(uint32_t *out, const float *a, ptrdiff_t K)
{
    ptrdiff_t k = 0;
    for (; k + 32 <= K; k += 32) {
        __m512 lo = _mm512_loadu_ps(a + k), hi = _mm512_loadu_ps(a + k + 16);
        _mm512_storeu_si512((void *)(out + k / 2), (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
    }
    if (k < K) {
        ptrdiff_t r = K - k;
        __mmask16 mlo = (__mmask16)(r >= 16 ? 0xFFFF : ((1u << r) - 1));
        __mmask16 mhi = (__mmask16)(r <= 16 ? 0 : ((1u << (r - 16)) - 1));
        __m512 lo = _mm512_maskz_loadu_ps(mlo, a + k);
        __m512 hi = _mm512_maskz_loadu_ps(mhi, a + k + 16);
        ptrdiff_t np = (r + 1) / 2;
        __mmask16 mout = (__mmask16)(np >= 16 ? 0xFFFF : ((1u << np) - 1));
        _mm512_mask_storeu_epi32((void *)(out + k / 2), mout,
                                 (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
    }
}

/* out (M, ldo pairs) <- bf16 of a (M, K) with row stride lda. */
static void gb_convert(uint32_t *out, const float *a, ptrdiff_t M, ptrdiff_t K,
                       ptrdiff_t lda, ptrdiff_t ldo)
{
    for (ptrdiff_t m = 0; m < M; m++)
        gb_convert_row(out + m * ldo, a + m * lda, K);
}

/* Panels [p0, p1) of the packed bf16 weights of W (N, K), row stride ldw.
 * Returns 0, or -1 where its row buffer could not be allocated. */
static int gb_pack_part(uint32_t *out, const float *W, ptrdiff_t N, ptrdiff_t K,
                        ptrdiff_t ldw, ptrdiff_t p0, ptrdiff_t p1)
{
    ptrdiff_t KP = gb_pairs(K);
    uint32_t *row = (uint32_t *)malloc((size_t)(KP + 16) * sizeof(uint32_t));
    if (row == NULL)
        return -1;
    for (ptrdiff_t p = p0; p < p1; p++) {
        uint32_t *pan = out + p * KP * GB_NW;
        for (ptrdiff_t lane = 0; lane < GB_NW; lane++) {
            ptrdiff_t n = p * GB_NW + lane;
            if (n < N)
                gb_convert_row(row, W + n * ldw, K);
            else
                memset(row, 0, (size_t)KP * sizeof(uint32_t));
            for (ptrdiff_t kp = 0; kp < KP; kp++)
                pan[kp * GB_NW + lane] = row[kp];
        }
    }
    free(row);
    return 0;
}

/* C (MR rows, NV panels' columns) = A (MR, KP pairs) @ panels + bias.
 * A rows lda pairs apart; panels bstride pairs apart; C rows ldc apart;
 * the last panel's columns masked by mlast.  MR, NV constants at each call. */
static inline GB_ATTR __attribute__((always_inline)) void
gb_ukr(int MR, int NV, const uint32_t *A, ptrdiff_t lda, const uint32_t *Bp,
       ptrdiff_t bstride, ptrdiff_t KP, float *C, ptrdiff_t ldc, const float *bias,
       __mmask16 mlast)
{
    __m512 acc[GB_MR][2];
    for (int r = 0; r < MR; r++)
        for (int v = 0; v < NV; v++)
            acc[r][v] = _mm512_setzero_ps();
    for (ptrdiff_t kp = 0; kp < KP; kp++) {
        __m512i b[2];
        for (int v = 0; v < NV; v++)
            b[v] = _mm512_loadu_si512((const void *)(Bp + v * bstride + kp * GB_NW));
        for (int r = 0; r < MR; r++) {
            __m512i a = _mm512_set1_epi32((int)A[r * lda + kp]);
            for (int v = 0; v < NV; v++)
                acc[r][v] = _mm512_dpbf16_ps(acc[r][v], (__m512bh)b[v], (__m512bh)a);
        }
    }
    for (int v = 0; v < NV; v++) {
        __mmask16 m = (v == NV - 1) ? mlast : (__mmask16)0xFFFF;
        __m512 bv = _mm512_maskz_loadu_ps(m, bias + v * GB_NW);
        for (int r = 0; r < MR; r++)
            _mm512_mask_storeu_ps(C + r * ldc + v * GB_NW, m, _mm512_add_ps(acc[r][v], bv));
    }
}

#define GB_UKR_CASE(MRX)                                                            \
    case MRX:                                                                       \
        if (nv == 2)                                                                \
            gb_ukr(MRX, 2, A, lda, Bp, bstride, KP, C, ldc, bias, mlast);           \
        else                                                                        \
            gb_ukr(MRX, 1, A, lda, Bp, bstride, KP, C, ldc, bias, mlast);           \
        break;

static GB_ATTR void gb_ukr_any(int mr, int nv, const uint32_t *A, ptrdiff_t lda,
                               const uint32_t *Bp, ptrdiff_t bstride, ptrdiff_t KP,
                               float *C, ptrdiff_t ldc, const float *bias, __mmask16 mlast)
{
    switch (mr) {
        GB_UKR_CASE(1) GB_UKR_CASE(2) GB_UKR_CASE(3) GB_UKR_CASE(4)
        GB_UKR_CASE(5) GB_UKR_CASE(6) GB_UKR_CASE(7) GB_UKR_CASE(8)
        default: break;
    }
}

/* C[:, c0 : c1] = A (M, K) @ W[c0 : c1].T + bias[c0 : c1], W packed (gb_pack_part)
 * with KP pairs, c0 a multiple of GB_NW; one thread.  Panel pairs outside,
 * row tiles inside: a pair of panels is read from L2 by every row tile. */
static void gb_gemm_cols(float *C, ptrdiff_t ldc, const uint32_t *A, ptrdiff_t lda,
                         const uint32_t *Wpk, ptrdiff_t KP, const float *bias,
                         ptrdiff_t M, ptrdiff_t c0, ptrdiff_t c1)
{
    ptrdiff_t pstride = KP * GB_NW;
    for (ptrdiff_t c = c0; c < c1; c += 2 * GB_NW) {
        ptrdiff_t w = c1 - c < 2 * GB_NW ? c1 - c : 2 * GB_NW;
        int nv = w > GB_NW ? 2 : 1;
        ptrdiff_t last = w - (nv - 1) * GB_NW;
        __mmask16 mlast = (__mmask16)(last >= 16 ? 0xFFFF : ((1u << last) - 1));
        const uint32_t *Bp = Wpk + (c / GB_NW) * pstride;
        for (ptrdiff_t m = 0; m < M; m += GB_MR) {
            int mr = (int)(M - m < GB_MR ? M - m : GB_MR);
            gb_ukr_any(mr, nv, A + m * lda, lda, Bp, pstride, KP, C + m * ldc + c, ldc,
                       bias + c, mlast);
        }
    }
}

/* reset_after's gates and state of one row's units for inference: rows.h's
 * row body (gru_reset_after_body_f) writing h only, inlined here with fused
 * multiply-adds.  The float32 engine's rows keep a*b + c as two roundings so
 * that every ISA clone gives the same bits; this path runs on AVX512_BF16
 * CPUs only, one build of it, so contracting keeps its results the same for
 * any thread count (its bits are its own: bf16 products).  1.25-1.44 ns a
 * unit against 1.66 for the float32 engine's row (rows of 256-1024 units, in
 * L1; 1.62-1.64 and 2.24 before the body ran in two passes). */
static GB_ATTR __attribute__((noinline)) void
gb_reset_after_row(float *h, const float *xp, const float *hp, const float *hprev,
                   ptrdiff_t H, ptrdiff_t gs, int act)
{
    if (act == 1)
        gru_reset_after_body_f(NULL, NULL, NULL, h, xp, hp, hprev, H, gs, 1, 0);
    else
        gru_reset_after_body_f(NULL, NULL, NULL, h, xp, hp, hprev, H, gs, 0, 0);
}

#else  /* no x86-64 GNU C: no bf16 path */
#define GB_HAVE_BF16 0
static inline int gb_supported(void) { return 0; }
static void gb_convert(uint32_t *out, const float *a, ptrdiff_t M, ptrdiff_t K,
                       ptrdiff_t lda, ptrdiff_t ldo)
{ (void)out; (void)a; (void)M; (void)K; (void)lda; (void)ldo; }
static int gb_pack_part(uint32_t *out, const float *W, ptrdiff_t N, ptrdiff_t K,
                        ptrdiff_t ldw, ptrdiff_t p0, ptrdiff_t p1)
{ (void)out; (void)W; (void)N; (void)K; (void)ldw; (void)p0; (void)p1; return -1; }
static void gb_gemm_cols(float *C, ptrdiff_t ldc, const uint32_t *A, ptrdiff_t lda,
                         const uint32_t *Wpk, ptrdiff_t KP, const float *bias,
                         ptrdiff_t M, ptrdiff_t c0, ptrdiff_t c1)
{ (void)C; (void)ldc; (void)A; (void)lda; (void)Wpk; (void)KP; (void)bias; (void)M;
  (void)c0; (void)c1; }
static void gb_reset_after_row(float *h, const float *xp, const float *hp, const float *hprev,
                               ptrdiff_t H, ptrdiff_t gs, int act)
{ (void)h; (void)xp; (void)hp; (void)hprev; (void)H; (void)gs; (void)act; }
#endif

/* The packed weights of a layer: U's three gate blocks (H, NI) then W's three
 * (H, H), each gb_pack_size(H, K) elements, in the order z, r, h. */
static inline ptrdiff_t gb_layer_pack_size(ptrdiff_t NI, ptrdiff_t H)
{
    return 3 * gb_pack_size(H, NI) + 3 * gb_pack_size(H, H);
}

typedef struct {
    /* inputs */
    const uint32_t *pk;     /* gb_layer_pack_size elements */
    const float *x;         /* (T, B, NI) */
    const float *h0;        /* (B, H), or NULL: zeros */
    const float *bu, *bw;   /* biases (3H): [uz | ur | uh], [wz | wr | wh] */
    float *y;               /* (T, B, H) */
    ptrdiff_t T, B, NI, H;
    int reset_after, act;
    /* scratch (64-byte aligned pieces of one block) */
    ptrdiff_t chunk;        /* steps per input-projection chunk */
    float *xp;              /* (chunk * B, 3H) */
    uint32_t *xb;           /* (chunk * B, KPI) */
    uint32_t *hb[2];        /* (B, KPH) each: bf16 of h_{t-1} */
    uint32_t *sb;           /* (B, KPH): bf16 of s (darknet) */
    float *hp;              /* (B, 3H) */
    float *z, *r, *c, *zero;/* (B, H) each */
    gru_bar bar;
} gb_fwd;

/* This thread's slice of the H units: whole panels, [*j0, *j1). */
static inline void gb_slice(ptrdiff_t H, int tid, int n, ptrdiff_t *j0, ptrdiff_t *j1)
{
    ptrdiff_t np = gb_panels(H);
    ptrdiff_t p0 = np * tid / n, p1 = np * (tid + 1) / n;
    *j0 = p0 * GB_NW < H ? p0 * GB_NW : H;
    *j1 = p1 * GB_NW < H ? p1 * GB_NW : H;
}

/* Step t of rows [b0, b0 + nb) and units [j0, j1) (w = j1 - j0 > 0): the
 * recurrent product(s) with their biases, the gates and h_t, and h_t's bf16
 * copy for step t + 1.  xpt: the input projection of row b0 at step t (rows
 * 3H apart).  sync: meet the team at darknet's second product (it needs every
 * unit of s = r * h_{t-1}); without it the rows are this thread's alone. */
static void gb_step(gb_fwd *f, ptrdiff_t t, const float *xpt, ptrdiff_t b0, ptrdiff_t nb,
                    ptrdiff_t j0, ptrdiff_t j1, int tid, int sync)
{
    const ptrdiff_t B = f->B, NI = f->NI, H = f->H, w = j1 - j0;
    const ptrdiff_t KPH = gb_pairs(H), H3 = 3 * H, wsz = gb_pack_size(H, H);
    const uint32_t *Wpk = f->pk + 3 * gb_pack_size(H, NI);
    const uint32_t *hb = f->hb[(t + 1) & 1] + b0 * KPH;   /* bf16 of h_{t-1} */
    uint32_t *hb_out = f->hb[t & 1] + b0 * KPH, *sb = f->sb + b0 * KPH;
    const float *hprev = (t == 0 ? (f->h0 ? f->h0 : f->zero) : f->y + (t - 1) * B * H)
                         + b0 * H;
    float *h = f->y + t * B * H + b0 * H;
    float *hp = f->hp + b0 * H3, *z = f->z + b0 * H, *r = f->r + b0 * H, *c = f->c + b0 * H;
    if (f->reset_after) {
        for (int g = 0; g < 3; g++)
            gb_gemm_cols(hp + g * H, H3, hb, KPH, Wpk + g * wsz, KPH, f->bw + g * H, nb,
                         j0, j1);
        for (ptrdiff_t b = 0; b < nb; b++)
            gb_reset_after_row(h + b * H + j0, xpt + b * H3 + j0, hp + b * H3 + j0,
                               hprev + b * H + j0, w, H, f->act);
    } else {
        for (int g = 0; g < 2; g++)
            gb_gemm_cols(hp + g * H, H3, hb, KPH, Wpk + g * wsz, KPH, f->bw + g * H, nb,
                         j0, j1);
        for (ptrdiff_t b = 0; b < nb; b++)
            gru_darknet_gates_row_f(z + b * H + j0, r + b * H + j0, c + b * H + j0,
                                    xpt + b * H3 + j0, hp + b * H3 + j0,
                                    hprev + b * H + j0, w, H);
        /* s = r * h_{t-1} (in c) to bf16 for wh's product */
        gb_convert(sb + j0 / 2, c + j0, nb, w, H, KPH);
        if (sync)
            gru_bar_wait(&f->bar, tid);   /* all of s */
        gb_gemm_cols(hp + 2 * H, H3, sb, KPH, Wpk + 2 * wsz, KPH, f->bw + 2 * H, nb, j0, j1);
        for (ptrdiff_t b = 0; b < nb; b++)
            gru_darknet_state_row_f(c + b * H + j0, h + b * H + j0, xpt + b * H3 + 2 * H + j0,
                                    hp + b * H3 + 2 * H + j0, z + b * H + j0,
                                    hprev + b * H + j0, w, f->act);
    }
    gb_convert(hb_out + j0 / 2, h + j0, nb, w, H, KPH);
}

/* Unit slices: thread tid owns units [j0, j1) of every row; per chunk of
 * steps the chunk's x in bf16 (rows split over the team), a barrier, the
 * slice's columns of the input projection; per step gb_step and a barrier. */
static void gb_units_team(void *arg, int tid, int n)
{
    gb_fwd *f = (gb_fwd *)arg;
    const ptrdiff_t T = f->T, B = f->B, NI = f->NI, H = f->H;
    const ptrdiff_t KPI = gb_pairs(NI), KPH = gb_pairs(H), H3 = 3 * H;
    const ptrdiff_t usz = gb_pack_size(H, NI);
    ptrdiff_t j0, j1;
    gb_slice(H, tid, n, &j0, &j1);
    const ptrdiff_t w = j1 - j0;
    if (tid == 0)
        gru_bar_init(&f->bar, n);
    if (n > 1)
        gru_barrier();    /* OpenMP's: the step barrier is ready */
    /* h_{-1} in bf16, this thread's units (pairs never straddle a slice) */
    if (w > 0)
        gb_convert(f->hb[1] + j0 / 2, (f->h0 ? f->h0 : f->zero) + j0, B, w, H, KPH);
    for (ptrdiff_t t0 = 0; t0 < T; t0 += f->chunk) {
        ptrdiff_t steps = T - t0 < f->chunk ? T - t0 : f->chunk;
        ptrdiff_t R = steps * B;
        ptrdiff_t r0 = R * tid / n, r1 = R * (tid + 1) / n;
        gb_convert(f->xb + r0 * KPI, f->x + (t0 * B + r0) * NI, r1 - r0, NI, NI, KPI);
        gru_bar_wait(&f->bar, tid);
        /* xp[:, g*H + j0 .. j1] = x @ U_g[j0 .. j1].T + bu_g */
        if (w > 0)
            for (int g = 0; g < 3; g++)
                gb_gemm_cols(f->xp + g * H, H3, f->xb, KPI, f->pk + g * usz, KPI,
                             f->bu + g * H, R, j0, j1);
        for (ptrdiff_t t = t0; t < t0 + steps; t++) {
            if (w > 0)
                gb_step(f, t, f->xp + (t - t0) * B * H3, 0, B, j0, j1, tid, 1);
            else if (!f->reset_after)
                gru_bar_wait(&f->bar, tid);   /* darknet's barrier inside gb_step */
            gru_bar_wait(&f->bar, tid);       /* all of h_t */
        }
    }
}

/* Batch mode: thread tid owns rows [b0, b1) (whole sequences) and runs their
 * T steps alone, no barrier: per step its rows' x in bf16, their input
 * projection (all 3H columns), gb_step.  For weights that stay in a core's
 * L2 cache (every thread reads all of them each step). */
static void gb_batch_team(void *arg, int tid, int n)
{
    gb_fwd *f = (gb_fwd *)arg;
    const ptrdiff_t T = f->T, B = f->B, NI = f->NI, H = f->H;
    const ptrdiff_t KPI = gb_pairs(NI), KPH = gb_pairs(H), H3 = 3 * H;
    const ptrdiff_t usz = gb_pack_size(H, NI);
    const ptrdiff_t b0 = B * tid / n, nb = B * (tid + 1) / n - b0;
    if (nb <= 0)
        return;
    gb_convert(f->hb[1] + b0 * KPH, (f->h0 ? f->h0 : f->zero) + b0 * H, nb, H, H, KPH);
    for (ptrdiff_t t = 0; t < T; t++) {
        uint32_t *xb = f->xb + b0 * KPI;
        float *xp = f->xp + b0 * H3;
        gb_convert(xb, f->x + (t * B + b0) * NI, nb, NI, NI, KPI);
        for (int g = 0; g < 3; g++)
            gb_gemm_cols(xp + g * H, H3, xb, KPI, f->pk + g * usz, KPI, f->bu + g * H, nb,
                         0, H);
        gb_step(f, t, xp, b0, nb, 0, H, tid, 0);
    }
}

static inline size_t gb_up64(size_t n) { return (n + 63) / 64 * 64; }

/* The forward: y (T, B, H) from x (T, B, NI), h0 (B, H) or NULL, the packed
 * weights pk and the biases bu, bw (3H each); nthreads: at most this many
 * threads (the result does not depend on it).  Returns 0, or -1 where the
 * scratch could not be allocated (nothing written). */
static int gb_forward(float *y, const float *x, const float *h0, const uint32_t *pk,
                      const float *bu, const float *bw, ptrdiff_t T, ptrdiff_t B,
                      ptrdiff_t NI, ptrdiff_t H, int reset_after, int act, int nthreads)
{
    gb_fwd f;
    ptrdiff_t KPI = gb_pairs(NI), KPH = gb_pairs(H);
    ptrdiff_t chunk = GB_CHUNK_ROWS / B > 0 ? GB_CHUNK_ROWS / B : 1;
    if (chunk > T)
        chunk = T;
    size_t sz[10] = {
        gb_up64(sizeof(float) * chunk * B * 3 * H), gb_up64(4 * chunk * B * KPI),
        gb_up64(4 * B * KPH), gb_up64(4 * B * KPH), gb_up64(4 * B * KPH),
        gb_up64(sizeof(float) * B * 3 * H), gb_up64(sizeof(float) * B * H),
        gb_up64(sizeof(float) * B * H), gb_up64(sizeof(float) * B * H),
        gb_up64(sizeof(float) * B * H)};
    size_t total = 0;
    for (int i = 0; i < 10; i++)
        total += sz[i];
    char *mem = (char *)aligned_alloc(64, total), *p = mem;
    if (mem == NULL)
        return -1;
    f.pk = pk; f.x = x; f.h0 = h0; f.bu = bu; f.bw = bw; f.y = y;
    f.T = T; f.B = B; f.NI = NI; f.H = H; f.reset_after = reset_after; f.act = act;
    f.chunk = chunk;
    f.xp = (float *)p; p += sz[0];
    f.xb = (uint32_t *)p; p += sz[1];
    f.hb[0] = (uint32_t *)p; p += sz[2];
    f.hb[1] = (uint32_t *)p; p += sz[3];
    f.sb = (uint32_t *)p; p += sz[4];
    f.hp = (float *)p; p += sz[5];
    f.z = (float *)p; p += sz[6];
    f.r = (float *)p; p += sz[7];
    f.c = (float *)p; p += sz[8];
    f.zero = (float *)p;
    memset(f.zero, 0, sizeof(float) * B * H);
    /* One thread where a step or the call is little work (the float32 fused
     * forward's rule: a region and its barriers cost more than they save;
     * streaming).  Batch mode where every thread has a whole
     * micro-tile of rows and the bf16 weights fit a core's L2 cache (each
     * thread reads all of them every step); else unit slices, at most one
     * thread per panel. */
    int small = 2.0 * B * 3 * H * H < 5e4 || 2.0 * T * B * 3 * H * (H + NI) < 1e6;
    int batch = !small && nthreads > 1 && B >= 2 * GB_MR
                && 2.0 * 3 * H * (H + NI) <= (double)GB_BATCH_WEIGHT_BYTES;
    ptrdiff_t most = batch ? B / GB_MR : gb_panels(H);
    int nt = small ? 1 : (nthreads < most ? nthreads : (int)most);
    if (nt < 1)
        nt = 1;
    gru_run_team(nt, batch ? gb_batch_team : gb_units_team, &f);
    free(mem);
    return 0;
}

#endif
