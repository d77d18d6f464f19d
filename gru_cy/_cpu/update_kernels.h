/* SGD's step and its check over a range of the flat parameter vector, in C so
 * that the loops vectorise (update.pyx calls them; the Cython loops they
 * replace branched on i < n_decay and on the clip per element and ran scalar:
 * 1 ns an element, the check slower still).
 *
 * Per element the same operations in the same order as update.pyx's
 * _sgd_one / _sgd_bad did (the clip as selects: NaN passes, as the branches
 * let it), each in the parameters' type, fp-contract off and one clone per
 * ISA as rows.h's rows: the same bits as before, for any range split (the
 * elements are independent), so any thread count.
 */
#ifndef GRU_CY_UPDATE_KERNELS_H
#define GRU_CY_UPDATE_KERNELS_H

#include <stddef.h>
#include "rows.h"   /* GRU_ROW_ATTR, GRU_BODY_ATTR */

#define GRU_DEFINE_SGD(T, SFX)                                                       \
static GRU_BODY_ATTR T gru_sgd_clip_##SFX(T g, T clip)                               \
{                                                                                    \
    T c = g > clip ? clip : (g < -clip ? -clip : g);                                 \
    return clip > 0 ? c : g;                                                         \
}                                                                                    \
                                                                                     \
/* u = u - clip(g); u -= decay*batch*w (i < n_decay); w += (lr/batch)*u;            \
   u *= momentum; g = 0, for i in [i0, i1). */                                       \
static GRU_ROW_ATTR void                                                             \
gru_sgd_range_##SFX(T* __restrict w, T* __restrict u, T* __restrict g, ptrdiff_t i0, ptrdiff_t i1, \
                    ptrdiff_t n_decay, T lr, T momentum, T decay, T batch, T clip)   \
{                                                                                    \
    ptrdiff_t split = n_decay < i0 ? i0 : (n_decay > i1 ? i1 : n_decay), i;         \
    T step = lr / batch;                                                             \
    for (i = i0; i < split; i++) {                                                   \
        T ui = u[i] - gru_sgd_clip_##SFX(g[i], clip);                                \
        ui = ui - decay * batch * w[i];                                              \
        w[i] = w[i] + step * ui;                                                     \
        u[i] = momentum * ui;                                                        \
        g[i] = 0;                                                                    \
    }                                                                                \
    for (; i < i1; i++) {                                                            \
        T ui = u[i] - gru_sgd_clip_##SFX(g[i], clip);                                \
        w[i] = w[i] + step * ui;                                                     \
        u[i] = momentum * ui;                                                        \
        g[i] = 0;                                                                    \
    }                                                                                \
}                                                                                    \
                                                                                     \
/* 1 where gru_sgd_range would write a non-finite w or u in [i0, i1) (x - x != 0   \
   holds for inf and NaN only), by the same expressions; nothing written. */         \
static GRU_ROW_ATTR int                                                              \
gru_sgd_bad_range_##SFX(const T* __restrict w, const T* __restrict u, const T* __restrict g,        \
                        ptrdiff_t i0, ptrdiff_t i1, ptrdiff_t n_decay, T lr,         \
                        T momentum, T decay, T batch, T clip)                        \
{                                                                                    \
    ptrdiff_t split = n_decay < i0 ? i0 : (n_decay > i1 ? i1 : n_decay), i;         \
    T step = lr / batch;                                                             \
    int bad = 0;                                                                     \
    for (i = i0; i < split; i++) {                                                   \
        T ui = u[i] - gru_sgd_clip_##SFX(g[i], clip);                                \
        ui = ui - decay * batch * w[i];                                              \
        T wi = w[i] + step * ui, un = momentum * ui;                                 \
        bad |= (wi - wi != 0) | (un - un != 0);                                      \
    }                                                                                \
    for (; i < i1; i++) {                                                            \
        T ui = u[i] - gru_sgd_clip_##SFX(g[i], clip);                                \
        T wi = w[i] + step * ui, un = momentum * ui;                                 \
        bad |= (wi - wi != 0) | (un - un != 0);                                      \
    }                                                                                \
    return bad;                                                                      \
}

GRU_DEFINE_SGD(float, f)
GRU_DEFINE_SGD(double, d)

#undef GRU_DEFINE_SGD
#endif
