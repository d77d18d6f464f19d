/* One batch row of each elementwise GRU kernel, in C so that the loops vectorise.
 *
 * cell.pxd's row functions (_darknet_gates_row, ...) call these; the kernels
 * in cell.pyx loop over the B rows (serially or with prange), the fused
 * forward (fused.pyx) over its rows and units.  Semantics: the
 * contract in gru_cy/kernels.py, with the same operations in the same order as
 * the Cython loops they replace.  One definition per dtype (suffix _f float32,
 * _d float64) from a macro; float32 uses fastmath.h's branch-free logistic and
 * tanh (vectorised), float64 libm's (scalar, results unchanged bit for bit).
 * float32 arithmetic stays in float throughout, as in the CUDA twins (the
 * Cython loops computed 1 - z in double: Cython wrote the literal as 1.0).
 *
 * Why C: `restrict` tells gcc that the row's arrays do not overlap, so it
 * vectorises without run-time overlap checks; Cython cannot say `restrict`.
 * Where dau == daw (the engine shares one gradient buffer when the u and w
 * gradients agree) a backward row tests for it and writes through dau only,
 * leaving the values the Cython loops left.
 *
 * GRU_ROW_ATTR: gcc's target_clones builds AVX-512, AVX2 and baseline copies
 * of every row function and picks one at load time (the build is portable, no
 * -march).  fp-contract=off keeps a*b + c as two roundings in every copy, so
 * all copies give the same bits (and float64 the same bits as before).
 * Rows are independent and each is computed the same way whatever the thread
 * count, so results do not depend on it.
 */
#ifndef GRU_CY_ROWS_H
#define GRU_CY_ROWS_H

#include <stddef.h>
#include "fastmath.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && \
    defined(__GLIBC__) && !defined(GRU_CY_NO_CLONES)
#define GRU_ROW_ATTR __attribute__((target_clones("avx512f", "avx2", "default"), \
                                    optimize("fp-contract=off"), noinline))
#elif defined(__GNUC__) && !defined(__clang__)
#define GRU_ROW_ATTR __attribute__((optimize("fp-contract=off"), noinline))
#else
#define GRU_ROW_ATTR
#endif

#define GRU_R __restrict

/* Units per block of a row computed in passes (gru_reset_after_body). */
#define GRU_ROW_BLOCK 256
/* act(v): tanh where is_tanh (a constant), else logistic. */
#define GRU_ACT(is_tanh, TANH, LOGISTIC, v) ((is_tanh) ? TANH(v) : LOGISTIC(v))

/* The bodies the row functions specialise (is_tanh, has_daw constant) are
 * always inlined: gcc's size limits otherwise leave one of two calls out of
 * line in a small translation unit (bf16.pyx, cell.pyx), compiled for the
 * baseline ISA and called from the AVX-512 clone, unvectorised (half of a
 * bfloat16 config-D forward went there).  Same operations, same bits. */
#if defined(__GNUC__)
#define GRU_BODY_ATTR inline __attribute__((always_inline))
#else
#define GRU_BODY_ATTR inline
#endif

/* Calls F(ARGS..., a, b) with a, b as the constants 0/1 equal to the
   conditions A, B, so that F, inlined, is specialised for each case. */
#define GRU_UNPAREN(...) __VA_ARGS__
#define GRU_DISPATCH2(F, A, B, ARGS)                                                 \
    if (A) { if (B) F(GRU_UNPAREN ARGS, 1, 1); else F(GRU_UNPAREN ARGS, 1, 0); }     \
    else   { if (B) F(GRU_UNPAREN ARGS, 0, 1); else F(GRU_UNPAREN ARGS, 0, 0); }

#define GRU_DEFINE_ROWS(T, SFX, LOGISTIC, TANH)                                     \
                                                                                     \
/* z = sig(xp_z + hp_z); r = sig(xp_r + hp_r); s = r*hprev.  H units; the r      \
   gate's columns of xp and hp start gs after the z gate's (gs = H in the        \
   engine's [z | r | h] rows).  z NULL: r and s only; r NULL: z only (the       \
   fused forward's team computes r and s first, z while it waits). */            \
static GRU_ROW_ATTR void                                                             \
gru_darknet_gates_row_##SFX(T* GRU_R z, T* GRU_R r, T* GRU_R s,                      \
                            const T* GRU_R xp, const T* GRU_R hp,                    \
                            const T* GRU_R hprev, ptrdiff_t H, ptrdiff_t gs)         \
{                                                                                    \
    if (z == NULL) {                                                                 \
        for (ptrdiff_t j = 0; j < H; j++) {                                          \
            T rj = LOGISTIC(xp[gs + j] + hp[gs + j]);                                \
            r[j] = rj;                                                               \
            s[j] = rj * hprev[j];                                                    \
        }                                                                            \
        return;                                                                      \
    }                                                                                \
    if (r == NULL) {                                                                 \
        for (ptrdiff_t j = 0; j < H; j++)                                            \
            z[j] = LOGISTIC(xp[j] + hp[j]);                                          \
        return;                                                                      \
    }                                                                                \
    for (ptrdiff_t j = 0; j < H; j++) {                                              \
        T rj;                                                                        \
        z[j] = LOGISTIC(xp[j] + hp[j]);                                              \
        rj = LOGISTIC(xp[gs + j] + hp[gs + j]);                                      \
        r[j] = rj;                                                                   \
        s[j] = rj * hprev[j];                                                        \
    }                                                                                \
}                                                                                    \
                                                                                     \
/* c = act(xp_h + hp_h); h = z*hprev + (1 - z)*c (xp, hp at column 2H);          \
   act: tanh where is_tanh (a constant at each call), else logistic. */           \
static GRU_BODY_ATTR void                                                            \
gru_darknet_state_body_##SFX(T* GRU_R c, T* GRU_R h, const T* GRU_R xp,              \
                             const T* GRU_R hp, const T* GRU_R z,                    \
                             const T* GRU_R hprev, ptrdiff_t H, int is_tanh)         \
{                                                                                    \
    for (ptrdiff_t j = 0; j < H; j++) {                                              \
        T cj = is_tanh ? TANH(xp[j] + hp[j]) : LOGISTIC(xp[j] + hp[j]);              \
        c[j] = cj;                                                                   \
        h[j] = z[j] * hprev[j] + (1 - z[j]) * cj;                                    \
    }                                                                                \
}                                                                                    \
                                                                                     \
static GRU_ROW_ATTR void                                                             \
gru_darknet_state_row_##SFX(T* c, T* h, const T* xp, const T* hp, const T* z,        \
                            const T* hprev, ptrdiff_t H, int act)                    \
{                                                                                    \
    if (act == 1)                                                                    \
        gru_darknet_state_body_##SFX(c, h, xp, hp, z, hprev, H, 1);                  \
    else                                                                             \
        gru_darknet_state_body_##SFX(c, h, xp, hp, z, hprev, H, 0);                  \
}                                                                                    \
                                                                                     \
/* c = act(c + r*q) in place: c holds xp_h (the backward's recomputation of the     \
   forward's candidates; the same expression as below, the same bits). */          \
static GRU_BODY_ATTR void                                                            \
gru_reset_after_cand_body_##SFX(T* GRU_R c, const T* GRU_R r, const T* GRU_R q,      \
                                ptrdiff_t H, int is_tanh)                            \
{                                                                                    \
    for (ptrdiff_t j = 0; j < H; j++)                                                \
        c[j] = is_tanh ? TANH(c[j] + r[j] * q[j]) : LOGISTIC(c[j] + r[j] * q[j]);    \
}                                                                                    \
                                                                                     \
static GRU_ROW_ATTR void                                                             \
gru_reset_after_cand_row_##SFX(T* c, const T* r, const T* q, ptrdiff_t H, int act)   \
{                                                                                    \
    if (act == 1)                                                                    \
        gru_reset_after_cand_body_##SFX(c, r, q, H, 1);                              \
    else                                                                             \
        gru_reset_after_cand_body_##SFX(c, r, q, H, 0);                              \
}                                                                                    \
                                                                                     \
/* The two passes of n units of reset_after's row: z and r (into z, r), then c       \
   (into c where keep) and h.  Gate columns gs apart.  Short loop bodies: the        \
   core overlaps several iterations' dependency chains (one loop with all three      \
   functions ran 2.24 ns a unit on Zen 4, the two passes 1.62). */                   \
static GRU_BODY_ATTR void                                                            \
gru_reset_after_passes_##SFX(T* GRU_R z, T* GRU_R r, T* GRU_R c, T* GRU_R h,         \
                             const T* GRU_R xp, const T* GRU_R hp,                   \
                             const T* GRU_R hprev, ptrdiff_t n, ptrdiff_t gs,        \
                             int is_tanh, int keep)                                  \
{                                                                                    \
    for (ptrdiff_t j = 0; j < n; j++) {                                              \
        z[j] = LOGISTIC(xp[j] + hp[j]);                                              \
        r[j] = LOGISTIC(xp[gs + j] + hp[gs + j]);                                    \
    }                                                                                \
    for (ptrdiff_t j = 0; j < n; j++) {                                              \
        T v = xp[2 * gs + j] + r[j] * hp[2 * gs + j];                                \
        T cj = GRU_ACT(is_tanh, TANH, LOGISTIC, v);                                  \
        if (keep)                                                                    \
            c[j] = cj;                                                               \
        h[j] = z[j] * hprev[j] + (1 - z[j]) * cj;                                    \
    }                                                                                \
}                                                                                    \
                                                                                     \
/* z, r as above; q = hp_h (q may be NULL); c = act(xp_h + r*hp_h);                  \
   h = z*hprev + (1 - z)*c.  Gate columns gs apart, as above.  keep (a constant      \
   at each call): z, r and c are written (the passes over the whole row); else       \
   h only (they may be NULL; blocks of GRU_ROW_BLOCK units, z and r in local         \
   buffers). */                                                                      \
static GRU_BODY_ATTR void                                                            \
gru_reset_after_body_##SFX(T* GRU_R z, T* GRU_R r, T* GRU_R c, T* GRU_R h,           \
                           const T* GRU_R xp, const T* GRU_R hp,                     \
                           const T* GRU_R hprev, ptrdiff_t H, ptrdiff_t gs,          \
                           int is_tanh, int keep)                                    \
{                                                                                    \
    T zbuf[GRU_ROW_BLOCK], rbuf[GRU_ROW_BLOCK];                                      \
    if (keep) {                                                                      \
        gru_reset_after_passes_##SFX(z, r, c, h, xp, hp, hprev, H, gs, is_tanh, 1);  \
        return;                                                                      \
    }                                                                                \
    for (ptrdiff_t j0 = 0; j0 < H; j0 += GRU_ROW_BLOCK)                              \
        gru_reset_after_passes_##SFX(zbuf, rbuf, NULL, h + j0, xp + j0, hp + j0,     \
                                     hprev + j0,                                     \
                                     H - j0 < GRU_ROW_BLOCK ? H - j0 : GRU_ROW_BLOCK,\
                                     gs, is_tanh, 0);                                \
}                                                                                    \
                                                                                     \
static GRU_ROW_ATTR void                                                             \
gru_reset_after_row_##SFX(T* GRU_R z, T* GRU_R r, T* GRU_R q, T* GRU_R c,            \
                          T* GRU_R h, const T* GRU_R xp, const T* GRU_R hp,          \
                          const T* GRU_R hprev, ptrdiff_t H, ptrdiff_t gs, int act)  \
{                                                                                    \
    if (act == 1)                                                                    \
        gru_reset_after_body_##SFX(z, r, c, h, xp, hp, hprev, H, gs, 1, 1);          \
    else                                                                             \
        gru_reset_after_body_##SFX(z, r, c, h, xp, hp, hprev, H, gs, 0, 1);          \
    if (q != NULL) {                                                                 \
        for (ptrdiff_t j = 0; j < H; j++)                                            \
            q[j] = hp[2 * gs + j];                                                   \
    }                                                                                \
}                                                                                    \
                                                                                     \
/* daz and dah of one unit, from g (the gradient reaching h):                       \
   h = z*hprev + (1 - z)*c, z = sig(a_z), c = act(a_h); act'(x) through c:           \
   1 - c^2 (tanh), c*(1 - c) (logistic).  Both variants' backward rows use it. */    \
static GRU_BODY_ATTR void                                                            \
gru_zh_grad_##SFX(T g, T zj, T cj, T hprevj, int is_tanh, T* daz, T* dah)            \
{                                                                                    \
    *daz = g * (hprevj - cj) * zj * (1 - zj);                                        \
    *dah = g * (1 - zj) * (is_tanh ? (1 - cj * cj) : cj * (1 - cj));                 \
}                                                                                    \
                                                                                     \
/* Differentiates h = z*hprev + (1 - z)*c, c = act(uh(x) + wh(s)):                   \
   g = dh + dy; dau/daw [0:H] = daz, [2H:3H] = dah; dh = g*z.  The flags are         \
   constants at each call (has_daw: daw distinct from dau): no branch in a loop. */  \
static GRU_BODY_ATTR void                                                            \
gru_darknet_gates_bwd_body_##SFX(T* GRU_R dau, T* GRU_R daw, T* GRU_R dh,            \
                                 const T* GRU_R dy, const T* GRU_R z,                \
                                 const T* GRU_R c, const T* GRU_R hprev,             \
                                 ptrdiff_t H, int is_tanh, int has_daw)              \
{                                                                                    \
    for (ptrdiff_t j = 0; j < H; j++) {                                              \
        T g = dh[j] + dy[j], daz, dah;                                               \
        gru_zh_grad_##SFX(g, z[j], c[j], hprev[j], is_tanh, &daz, &dah);             \
        dau[j] = daz;                                                                \
        dau[2 * H + j] = dah;                                                        \
        if (has_daw) {                                                               \
            daw[j] = daz;                                                            \
            daw[2 * H + j] = dah;                                                    \
        }                                                                            \
        dh[j] = g * z[j];                                                            \
    }                                                                                \
}                                                                                    \
                                                                                     \
/* dau == daw (one shared gradient buffer) is written once. */                      \
static GRU_ROW_ATTR void                                                             \
gru_darknet_gates_bwd_row_##SFX(T* dau, T* daw, T* dh, const T* dy, const T* z,      \
                                const T* c, const T* hprev, ptrdiff_t H, int act)    \
{                                                                                    \
    GRU_DISPATCH2(gru_darknet_gates_bwd_body_##SFX, act == 1, daw != dau,            \
                  (dau, daw, dh, dy, z, c, hprev, H))                                \
}                                                                                    \
                                                                                     \
/* Differentiates s = r*hprev, r = sig(ur(x) + wr(hprev)) (dau, daw at              \
   column H): dar = ds*hprev*r*(1 - r); dh += ds*r. */                               \
static GRU_BODY_ATTR void                                                            \
gru_darknet_reset_bwd_body_##SFX(T* GRU_R dau, T* GRU_R daw, T* GRU_R dh,            \
                                 const T* GRU_R ds, const T* GRU_R r,                \
                                 const T* GRU_R hprev, ptrdiff_t H, int has_daw)     \
{                                                                                    \
    for (ptrdiff_t j = 0; j < H; j++) {                                              \
        T rj = r[j];                                                                 \
        T dar = ds[j] * hprev[j] * rj * (1 - rj);                                    \
        dau[j] = dar;                                                                \
        if (has_daw)                                                                 \
            daw[j] = dar;                                                            \
        dh[j] += ds[j] * rj;                                                         \
    }                                                                                \
}                                                                                    \
                                                                                     \
static GRU_ROW_ATTR void                                                             \
gru_darknet_reset_bwd_row_##SFX(T* dau, T* daw, T* dh, const T* ds, const T* r,      \
                                const T* hprev, ptrdiff_t H)                         \
{                                                                                    \
    if (daw != dau)                                                                  \
        gru_darknet_reset_bwd_body_##SFX(dau, daw, dh, ds, r, hprev, H, 1);          \
    else                                                                             \
        gru_darknet_reset_bwd_body_##SFX(dau, NULL, dh, ds, r, hprev, H, 0);         \
}                                                                                    \
                                                                                     \
/* Differentiates c = act(uh(x) + r*q), q = wh(hprev), and the z, r gates:          \
   dau = [daz|dar|dah], daw = [daz|dar|dah*r], dh = g*z, g = dh + dy.                \
   Without daw (dau == daw): dau = [daz|dar|dah*r], as if daw were written last. */  \
static GRU_BODY_ATTR void                                                            \
gru_reset_after_bwd_body_##SFX(T* GRU_R dau, T* GRU_R daw, T* GRU_R dh,              \
                               const T* GRU_R dy, const T* GRU_R z,                  \
                               const T* GRU_R r, const T* GRU_R q,                   \
                               const T* GRU_R c, const T* GRU_R hprev,               \
                               ptrdiff_t H, int is_tanh, int has_daw)                \
{                                                                                    \
    for (ptrdiff_t j = 0; j < H; j++) {                                              \
        T g = dh[j] + dy[j], daz, dah;                                               \
        T rj = r[j];                                                                 \
        gru_zh_grad_##SFX(g, z[j], c[j], hprev[j], is_tanh, &daz, &dah);             \
        T dar = dah * q[j] * rj * (1 - rj);                                          \
        dau[j] = daz;                                                                \
        dau[H + j] = dar;                                                            \
        dau[2 * H + j] = has_daw ? dah : dah * rj;                                   \
        if (has_daw) {                                                               \
            daw[j] = daz;                                                            \
            daw[H + j] = dar;                                                        \
            daw[2 * H + j] = dah * rj;                                               \
        }                                                                            \
        dh[j] = g * z[j];                                                            \
    }                                                                                \
}                                                                                    \
                                                                                     \
static GRU_ROW_ATTR void                                                             \
gru_reset_after_bwd_row_##SFX(T* dau, T* daw, T* dh, const T* dy, const T* z,        \
                              const T* r, const T* q, const T* c, const T* hprev,    \
                              ptrdiff_t H, int act)                                  \
{                                                                                    \
    GRU_DISPATCH2(gru_reset_after_bwd_body_##SFX, act == 1, daw != dau,              \
                  (dau, daw, dh, dy, z, r, q, c, hprev, H))                          \
}

GRU_DEFINE_ROWS(float, f, gru_logistic_f, gru_tanh_f)
GRU_DEFINE_ROWS(double, d, gru_logistic_d, gru_tanh_d)

/* out[k] = logistic(x[k]) / tanh(x[k]), k < n: the float32 functions exactly as
   the rows evaluate them (same clones), for tests/test_fastmath.py. */
static GRU_ROW_ATTR void
gru_logistic_map_f(float* GRU_R out, const float* GRU_R x, ptrdiff_t n)
{
    for (ptrdiff_t k = 0; k < n; k++)
        out[k] = gru_logistic_f(x[k]);
}

static GRU_ROW_ATTR void
gru_tanh_map_f(float* GRU_R out, const float* GRU_R x, ptrdiff_t n)
{
    for (ptrdiff_t k = 0; k < n; k++)
        out[k] = gru_tanh_f(x[k]);
}

#undef GRU_R
#endif
