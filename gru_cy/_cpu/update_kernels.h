/* SGD's and Adam's steps and their checks over a range of the flat parameter
 * vector, in C so that the loops vectorise (update.pyx calls them; the Cython
 * loops they replaced branched on i < n_decay and on the clip per element and
 * ran scalar: 1 ns an element, the check slower still).
 *
 * Per element the same operations in the same order as those loops did (the
 * clip as selects: NaN passes, as the branches let it), each in the
 * parameters' type, fp-contract off and one clone per ISA as rows.h's rows:
 * the same bits as before, for any range split (the elements are
 * independent), so any thread count.
 */
#ifndef GRU_CY_UPDATE_KERNELS_H
#define GRU_CY_UPDATE_KERNELS_H

#include <math.h>
#include <stddef.h>
#include "rows.h"   /* GRU_ROW_ATTR, GRU_BODY_ATTR */

/* [i0, i1) split at n_decay: [i0, *split) gets the weight decay. */
static inline ptrdiff_t gru_decay_split(ptrdiff_t i0, ptrdiff_t i1, ptrdiff_t n_decay)
{
    return n_decay < i0 ? i0 : (n_decay > i1 ? i1 : n_decay);
}

/* One element of each rule, the expressions the step writes and the check
 * tests (one definition: the check judges exactly what the step would
 * write).  `decayed` is a constant at every use. */
#define GRU_DEFINE_RULES(T, SFX)                                                     \
static GRU_BODY_ATTR T gru_sgd_clip_##SFX(T g, T clip)                               \
{                                                                                    \
    T c = g > clip ? clip : (g < -clip ? -clip : g);                                 \
    return clip > 0 ? c : g;                                                         \
}                                                                                    \
                                                                                     \
/* u' = u - clip(g) (- decay*batch*w where decayed); w' = w + step*u';               \
   *un = momentum*u'. */                                                             \
static GRU_BODY_ATTR T gru_sgd_one_##SFX(T w, T u, T g, T step, T momentum,          \
                                         T decay, T batch, T clip, int decayed,      \
                                         T *un)                                      \
{                                                                                    \
    T ui = u - gru_sgd_clip_##SFX(g, clip);                                          \
    if (decayed)                                                                     \
        ui = ui - decay * batch * w;                                                 \
    *un = momentum * ui;                                                             \
    return w + step * ui;                                                            \
}                                                                                    \
                                                                                     \
/* Adam, as update.pyx's Cython wrote it (its C): 1 - b1 and 1 - b2 are double      \
   (the literal 1.0), so in float32 the moments' sums are double, rounded once;      \
   the root is libm's double sqrt of v/c2, rounded to T.  Returns w'. */            \
static GRU_BODY_ATTR T gru_adam_one_##SFX(T w, T m, T v, T g, T lr, T b1, T b2,      \
                                          T eps, T decay, T batch, T c1, T c2,       \
                                          T clip, T *mn, T *vn)                      \
{                                                                                    \
    T gi = gru_sgd_clip_##SFX(g, clip) + decay * batch * w;                          \
    T mi = b1 * m + (1.0 - b1) * gi;                                                 \
    T vi = b2 * v + (1.0 - b2) * gi * gi;                                            \
    *mn = mi;                                                                        \
    *vn = vi;                                                                        \
    return w - lr * (mi / c1) / ((T)sqrt(vi / c2) + eps);                            \
}                                                                                    \
                                                                                     \
/* SGD's step over [i0, i1): u = u - clip(g); u -= decay*batch*w (i < n_decay);      \
   w += (lr/batch)*u; u *= momentum; g = 0. */                                       \
static GRU_ROW_ATTR void                                                             \
gru_sgd_range_##SFX(T* __restrict w, T* __restrict u, T* __restrict g, ptrdiff_t i0, \
                    ptrdiff_t i1, ptrdiff_t n_decay, T lr, T momentum, T decay,      \
                    T batch, T clip)                                                 \
{                                                                                    \
    ptrdiff_t split = gru_decay_split(i0, i1, n_decay), i;                           \
    T step = lr / batch;                                                             \
    for (i = i0; i < split; i++) {                                                   \
        w[i] = gru_sgd_one_##SFX(w[i], u[i], g[i], step, momentum, decay, batch,     \
                                 clip, 1, &u[i]);                                    \
        g[i] = 0;                                                                    \
    }                                                                                \
    for (; i < i1; i++) {                                                            \
        w[i] = gru_sgd_one_##SFX(w[i], u[i], g[i], step, momentum, decay, batch,     \
                                 clip, 0, &u[i]);                                    \
        g[i] = 0;                                                                    \
    }                                                                                \
}                                                                                    \
                                                                                     \
/* 1 where gru_sgd_range would write a non-finite w or u in [i0, i1) (x - x != 0    \
   holds for inf and NaN only); nothing written. */                                  \
static GRU_ROW_ATTR int                                                              \
gru_sgd_bad_range_##SFX(const T* __restrict w, const T* __restrict u,                \
                        const T* __restrict g, ptrdiff_t i0, ptrdiff_t i1,           \
                        ptrdiff_t n_decay, T lr, T momentum, T decay, T batch,       \
                        T clip)                                                      \
{                                                                                    \
    ptrdiff_t split = gru_decay_split(i0, i1, n_decay), i;                           \
    T step = lr / batch, un, wi;                                                     \
    int bad = 0;                                                                     \
    for (i = i0; i < split; i++) {                                                   \
        wi = gru_sgd_one_##SFX(w[i], u[i], g[i], step, momentum, decay, batch, clip, \
                               1, &un);                                              \
        bad |= (wi - wi != 0) | (un - un != 0);                                      \
    }                                                                                \
    for (; i < i1; i++) {                                                            \
        wi = gru_sgd_one_##SFX(w[i], u[i], g[i], step, momentum, decay, batch, clip, \
                               0, &un);                                              \
        bad |= (wi - wi != 0) | (un - un != 0);                                      \
    }                                                                                \
    return bad;                                                                      \
}                                                                                    \
                                                                                     \
/* Adam's step over [i0, i1): g' = clip(g) + decay*batch*w; m, v moments;            \
   w -= lr * (m/c1) / (sqrt(v/c2) + eps); g = 0. */                                  \
static GRU_ROW_ATTR void                                                             \
gru_adam_range_##SFX(T* __restrict w, T* __restrict m, T* __restrict v,              \
                     T* __restrict g, ptrdiff_t i0, ptrdiff_t i1, T lr, T b1, T b2,   \
                     T eps, T decay, T batch, T c1, T c2, T clip)                    \
{                                                                                    \
    for (ptrdiff_t i = i0; i < i1; i++) {                                            \
        w[i] = gru_adam_one_##SFX(w[i], m[i], v[i], g[i], lr, b1, b2, eps, decay,    \
                                  batch, c1, c2, clip, &m[i], &v[i]);                \
        g[i] = 0;                                                                    \
    }                                                                                \
}                                                                                    \
                                                                                     \
/* 1 where gru_adam_range would write a non-finite w, m or v in [i0, i1). */        \
static GRU_ROW_ATTR int                                                              \
gru_adam_bad_range_##SFX(const T* __restrict w, const T* __restrict m,               \
                         const T* __restrict v, const T* __restrict g, ptrdiff_t i0, \
                         ptrdiff_t i1, T lr, T b1, T b2, T eps, T decay, T batch,     \
                         T c1, T c2, T clip)                                         \
{                                                                                    \
    int bad = 0;                                                                     \
    for (ptrdiff_t i = i0; i < i1; i++) {                                            \
        T mi, vi, wi = gru_adam_one_##SFX(w[i], m[i], v[i], g[i], lr, b1, b2, eps,   \
                                          decay, batch, c1, c2, clip, &mi, &vi);     \
        bad |= (wi - wi != 0) | (mi - mi != 0) | (vi - vi != 0);                     \
    }                                                                                \
    return bad;                                                                      \
}

GRU_DEFINE_RULES(float, f)
GRU_DEFINE_RULES(double, d)

#undef GRU_DEFINE_RULES
#endif
