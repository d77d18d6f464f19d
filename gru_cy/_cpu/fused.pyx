# cython: language_level=3
"""The fused forward: one parallel region around the whole step loop.

Runs the forward without BN (native gemm) in one of two shapes, chosen by
``plan_forward`` before anything is allocated:

* **Unit slices** (``PATH_UNITS``).  Each thread owns a fixed slice of the H
  units (whole granules of FUSED_GRAN units) and computes its units' columns
  of the input projection (per chunk), of the recurrent product (one gemm per
  gate block, on its rows of U and W, W packed once per call where the blocked
  gemm path runs) and its units' gates, so the only synchronisation is one
  barrier per step (two for darknet, whose candidate needs all of
  s = r * h_{t-1}).  The slice's weights stay in its core's cache across steps.
* **Batch mode** (``PATH_BATCH``), for batches of two or more chunks of
  BATCH_ROWS sequences and weights small enough to stay in each core's cache:
  the sequences are independent, so a chunk of rows runs its T steps without
  the others.  Threads claim (chunk, step) items in step-major order and wait
  only for the chunk's previous step; no barrier.  The team packs U and W
  once, in parts, as the first items of the call.

A padded batch's inference (``p.limits``: the rows sorted by decreasing
length) runs each step's running rows only.  In unit slices, which a limited
call prefers from UNITS_FIRST_H units on (``d.units_first``), each chunk's
input projection covers the rows its steps run, gathered into ``p.xc``, and
with ``p.xrows`` the slices read the caller's padded x and write its padded y
themselves (``Engine.forward_limited``).

Results are bit-identical to the per-kernel loop (``steps.pyx``) for any
thread count: every element of xp and hp is the same gemm arithmetic whatever
the column slice or row chunk (``gemm_kernels.h``: determinism), and the bias
and row functions are the same elementwise operations.  The per-step barrier
is ``omp_compat.h``'s ``gru_bar_wait`` (per-thread epochs, spinning).  The
measurements behind the shapes and sizes: docs/performance.md ("The fused
forward").

Sizes: T steps, B batch, I inputs, H outputs.  Layout: ``layout.pxd``.
"""
from cython cimport floating
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, memset

from gru_cy._cpu.cell cimport (_darknet_gates_row, _darknet_state_row,
                               _reset_after_row)
from gru_cy._cpu.gemm cimport (gemm_pre_bias, gemv_bias, GEMV_MAX_M, prepack,
                               prepack_blocks, prepack_part, prepack_size)
from gru_cy._cpu.common cimport (gru_bar, gru_bar_arrive, gru_bar_await, gru_bar_init,
                                 gru_bar_wait, gru_barrier, gru_claim, gru_count_done,
                                 gru_run_team, gru_step_done, gru_step_wait)
from gru_cy._cpu.layout cimport Dims, Ptrs, _running, chunk_steps
from gru_cy._cpu.team cimport fused_team


cdef struct FusedArg:
    void* theta
    Dims d
    Ptrs p
    bint train
    gru_bar bar              # the per-step barrier (thread 0 initialises it)
    int comb_fail            # unit slices: a thread could not pack its slice as one
    # batch mode: (chunk, step) items claimed one at a time, U and W packed once
    int nchunks
    int next                 # the next item, step-major
    int* steps_done          # per chunk: its steps finished
    void* wpk[3]
    void* upk                # U packed once too, shared
    int pack_parts           # each pack (U, W's) in this many parts, claimed as
    int npieces              # the first npieces items
    int packs_done           # pack parts finished
    void* bufs               # per thread: xp and hp of one item's rows,
    Py_ssize_t buf_bytes     # this many bytes apart


cdef inline void _slice_gemm(floating* C, Py_ssize_t ldc, const floating* A,
                             Py_ssize_t lda, Py_ssize_t M, Py_ssize_t K,
                             const floating* Wg, floating** Wpk, Py_ssize_t H,
                             Py_ssize_t w, Py_ssize_t ng,
                             const floating* bias) noexcept nogil:
    # For gate blocks g < ng: C[:, g*H : g*H + w] = A (M, K) @ (w rows of K at
    # Wg + g*H*K).T + bias[g*H ..], one gemm per block; Wpk[g]: those rows
    # packed, or NULL.  The whole layer (w == H): one gemm over the ng blocks,
    # packed as one at Wpk[0].
    cdef Py_ssize_t g
    if M <= GEMV_MAX_M:
        # batch 1 to 3: the direct path with the bias added, without a plan
        if w == H:
            gemv_bias(C, A, Wg, bias, M, ng * H, K, lda, K, ldc)
        else:
            for g in range(ng):
                gemv_bias(C + g * H, A, Wg + g * H * K, bias + g * H, M, w, K, lda, K, ldc)
        return
    if w == H:
        gemm_pre_bias(C, A, Wg, Wpk[0], bias, M, ng * H, K, lda, K, ldc, False, True, 1)
        return
    for g in range(ng):
        gemm_pre_bias(C + g * H, A, Wg + g * H * K, Wpk[g], bias + g * H, M, w, K, lda, K,
                      ldc, False, True, 1)


cdef inline Py_ssize_t _pack_elems(bint dbl, Py_ssize_t N, Py_ssize_t K,
                                   Py_ssize_t es) noexcept nogil:
    # prepack_size rounded up to whole 64-byte lines (packs stay aligned).
    return (prepack_size(dbl, N, K) * es + 63) // 64 * 64 // es


cdef inline Py_ssize_t _w_pack_size(bint dbl, Py_ssize_t H, Py_ssize_t w,
                                    bint reset_after) noexcept nogil:
    # Elements of the packs _pack_w writes for a slice of w units.
    cdef Py_ssize_t es = 8 if dbl else 4
    if w < H:
        return 3 * _pack_elems(dbl, w, H, es)
    if reset_after:
        return _pack_elems(dbl, 3 * H, H, es)
    return _pack_elems(dbl, 2 * H, H, es) + _pack_elems(dbl, H, H, es)


cdef void _pack_w_ptrs(Py_ssize_t H, Py_ssize_t w, bint reset_after, floating* out,
                       floating** Wpk) noexcept nogil:
    # Where _pack_w's packs start in out (NULL where none starts): per gate
    # block (w < H), or the whole layer's [wz; wr; wh] | [wz; wr], wh (darknet).
    cdef bint dbl = floating is double
    cdef Py_ssize_t es = sizeof(floating), g
    Wpk[0] = out
    Wpk[1] = Wpk[2] = NULL
    if w < H:
        for g in range(3):
            Wpk[g] = out + g * _pack_elems(dbl, w, H, es)
    elif not reset_after:
        Wpk[2] = out + _pack_elems(dbl, 2 * H, H, es)


cdef inline int _w_whole_packs(bint reset_after) noexcept nogil:
    # The whole layer's packs of W: [wz; wr; wh], or darknet's [wz; wr] and wh.
    return 1 if reset_after else 2


cdef void _pack_w_whole_part(const floating* W, Py_ssize_t H, bint reset_after, int which,
                             int part, int parts, floating** Wpk) noexcept nogil:
    # Part `part` of `parts` of the whole layer's pack `which` of W (see
    # _w_whole_packs), at _pack_w_ptrs's places: Wpk[0], darknet's wh Wpk[2].
    if which == 0:
        prepack_part(W, (3 if reset_after else 2) * H, H, H, True, part, parts, Wpk[0])
    else:
        prepack_part(W + 2 * H * H, H, H, H, True, part, parts, Wpk[2])


cdef void _pack_w(const floating* W, Py_ssize_t H, Py_ssize_t w, bint reset_after,
                  floating* out, floating** Wpk) noexcept nogil:
    # A slice's rows of W (W: its first row of wz) packed as _slice_gemm reads
    # them (_pack_w_ptrs).  out: 64-byte aligned, _w_pack_size elements.
    cdef Py_ssize_t g
    cdef int which
    _pack_w_ptrs(H, w, reset_after, out, Wpk)
    if w < H:
        for g in range(3):
            prepack(W + g * H * H, w, H, H, True, Wpk[g])
    else:
        for which in range(_w_whole_packs(reset_after)):
            _pack_w_whole_part(W, H, reset_after, which, 0, 1, Wpk)


cdef inline void _step_part(floating* theta, Dims* d, bint train, int phase,
                            Py_ssize_t M, Py_ssize_t j0, Py_ssize_t w, floating** Wpk,
                            floating* xpt, floating* hpt, const floating* hprev,
                            floating* ht, floating* zt, floating* rt, floating* ct,
                            floating* sqt, Py_ssize_t gs) noexcept nogil:
    # Units j0 .. j0 + w of M rows of one step (both fused modes): phase 0 the
    # reset_after step, or darknet's gates (z, r, s = r * h_{t-1}); phase 1
    # darknet's candidate and h; phases 2 and 3 darknet's gates in two parts
    # for a team (2: r and s, which the candidate needs from every thread;
    # 3: z, computed while the others finish theirs) of unit slices (w < H).
    # xpt, hpt: the rows' xp and hp at column j0, gate blocks gs apart (row
    # stride 3 gs; gs = H, or w for a thread's own columns); ht, zt, rt,
    # ct: at unit j0; hprev and sqt (s | q) at unit 0 (the products read whole
    # rows); row stride H.
    cdef Py_ssize_t H = d.H, H3 = 3 * H, ld = 3 * gs, b
    cdef floating* W = theta + d.oW + j0 * H
    cdef floating* bw = theta + d.ob + H3 + j0
    if d.reset_after:
        _slice_gemm(hpt, ld, hprev, H, M, H, W, Wpk, H, w, 3, bw)
        for b in range(M):
            _reset_after_row(zt + b * H, rt + b * H, (sqt + j0 + b * H) if train else NULL,
                             ct + b * H, ht + b * H, xpt + b * ld, hpt + b * ld,
                             hprev + j0 + b * H, w, gs, d.act)
    elif phase == 0:
        _slice_gemm(hpt, ld, hprev, H, M, H, W, Wpk, H, w, 2, bw)
        for b in range(M):
            _darknet_gates_row(zt + b * H, rt + b * H, sqt + j0 + b * H, xpt + b * ld,
                               hpt + b * ld, hprev + j0 + b * H, w, gs)
    elif phase == 2:
        _slice_gemm(hpt + gs, ld, hprev, H, M, H, W + H * H, Wpk + 1, H, w, 1, bw + H)
        for b in range(M):
            _darknet_gates_row(<floating*>NULL, rt + b * H, sqt + j0 + b * H,
                               xpt + b * ld, hpt + b * ld, hprev + j0 + b * H, w, gs)
    elif phase == 3:
        _slice_gemm(hpt, ld, hprev, H, M, H, W, Wpk, H, w, 1, bw)
        for b in range(M):
            _darknet_gates_row(zt + b * H, <floating*>NULL, <floating*>NULL,
                               xpt + b * ld, hpt + b * ld, hprev + j0 + b * H, w, gs)
    else:
        _slice_gemm(hpt + 2 * gs, ld, sqt, H, M, H, W + 2 * H * H, Wpk + 2, H, w, 1,
                    bw + 2 * H)
        for b in range(M):
            _darknet_state_row(ct + b * H, ht + b * H, xpt + 2 * gs + b * ld,
                               hpt + 2 * gs + b * ld, zt + b * H, hprev + j0 + b * H, w,
                               d.act)


cdef void _fused_thread(floating* theta, FusedArg* a, int tid, int n) noexcept nogil:
    cdef Dims d = a.d
    cdef Ptrs* p = &a.p
    cdef bint train = a.train
    cdef Py_ssize_t T = d.T, B = d.B, I = d.In, H = d.H, H3 = 3 * H
    cdef Py_ssize_t cs = chunk_steps(T, B), t, t0 = 0, nc, g
    cdef Py_ssize_t G = (H + FUSED_GRAN - 1) // FUSED_GRAN
    cdef Py_ssize_t j0 = G * tid // n * FUSED_GRAN
    cdef Py_ssize_t j1 = G * (tid + 1) // n * FUSED_GRAN
    cdef Py_ssize_t w, es = sizeof(floating)
    cdef Py_ssize_t step = B * H if train else 0
    cdef int tok
    cdef bint dbl = floating is double
    cdef floating* U
    cdef floating* W
    cdef floating* bu
    cdef floating* nopack[3]
    cdef floating* Wpk[3]            # the slice's W rows packed (see _slice_gemm)
    cdef void* raw_p = NULL
    cdef void* raw_w = NULL
    cdef floating* hpt
    cdef Py_ssize_t gs
    # reset_after, a team of slices (w < H, whole granules), batch > 3: the
    # slice's rows of the three gate blocks of U and of W each packed as one
    # operand (prepack_blocks), so that a chunk's input projection and a
    # step's recurrent product are one gemm each (A packed once per K block,
    # not once per gate; U packed once per call, not per chunk) into this
    # thread's own xp and hp columns: (rows, 3w), gate g at column g * w.
    cdef bint comb = False
    cdef Py_ssize_t W3 = 0, nu, nw
    cdef floating* Upk3 = NULL
    cdef floating* Wpk3 = NULL
    cdef floating* b3 = NULL         # the slice's biases: U's 3w, then W's 3w
    cdef floating* xth = NULL        # this thread's xp (chunk rows, 3w)
    cdef floating* hth = NULL        # and hp (B, 3w)
    cdef floating* base
    cdef floating* x = <floating*>p.x
    cdef floating* y = <floating*>p.y
    cdef floating* xp = <floating*>p.xp
    cdef floating* hp = <floating*>p.hp
    cdef floating* hprev
    cdef floating* ht
    cdef floating* xpt
    cdef floating* zt
    cdef floating* rt
    cdef floating* ct
    cdef floating* sqt
    # inference on rows sorted by decreasing length (p.limits, their lengths):
    # the steps of the longest, each with its running rows (the first M, at
    # least 4 where B > 3: the blocked gemm path, the same bits as all B rows),
    # each chunk's input projection over the rows its steps run (as many steps
    # as fit xp's chunk_steps * B rows), those rows of x gathered first into
    # p.xc; xoff: the step's first row in xp, mprev: the last step's rows
    cdef const long long* lim = <const long long*>p.limits
    cdef Py_ssize_t Tl = T, M = B, mfloor = B if B <= GEMV_MAX_M else GEMV_MAX_M + 1, s, ms
    cdef floating* xc = <floating*>p.xc if lim != NULL and B > GEMV_MAX_M else NULL
    cdef Py_ssize_t tnext = 0, xoff = 0, mprev = 0, R, mt = B, i, k
    cdef const floating* xa
    cdef bint whole
    # with xc and p.xrows: x is the caller's padded x, read through xrows; each
    # step's outputs also go to the caller's y (yo) at those rows, zeros where
    # a sequence has ended (this thread's columns)
    cdef const long long* xr = <const long long*>p.xrows if xc != NULL else NULL
    cdef const long long* order = <const long long*>p.order
    cdef floating* yo = <floating*>p.yout if xr != NULL else NULL
    if lim != NULL and lim[0] < T:
        Tl = lim[0]
    if j0 > H:
        j0 = H
    if j1 > H:
        j1 = H
    w = j1 - j0
    # The slice: rows j0.. of each gate block of U and W, the biases of U's.
    U = theta + j0 * I
    W = theta + d.oW + j0 * H
    bu = theta + d.ob + j0
    for g in range(3):
        nopack[g] = NULL
        Wpk[g] = NULL
    # (decided for the whole team: the layouts of xp and hp differ)
    if B > GEMV_MAX_M and n > 1 and H % FUSED_GRAN == 0 and w > 0:
        W3 = 3 * w
        nu = _pack_elems(dbl, W3, I, es)
        nw = _pack_elems(dbl, W3, H, es) if d.reset_after else 0
        raw_p = malloc((nu + nw + 2 * W3) * es + 64)
        if raw_p != NULL:
            base = <floating*>((<size_t>raw_p + 63) // 64 * 64)
            Upk3 = base
            Wpk3 = base + nu
            b3 = base + nu + nw
            comb = (prepack_blocks(U, 3, H * I, w, I, I, Upk3)
                    and (not d.reset_after or prepack_blocks(W, 3, H * H, w, H, H, Wpk3)))
            if comb:
                for g in range(3):
                    for t in range(w):
                        b3[g * w + t] = bu[g * H + t]
                        b3[W3 + g * w + t] = theta[d.ob + H3 + g * H + j0 + t]
                xth = xp + cs * B * 3 * j0
                hth = hp + B * 3 * j0
            else:
                free(raw_p)
                raw_p = NULL
        if not comb:
            a.comb_fail = 1     # out of memory: the team runs the per-gate products
    if (not comb or not d.reset_after) and B > 3 and T > 1 and w > 0:
        # The per-step products take the blocked path (M = B > 3): pack the
        # slice's rows of W once (without memory the products pack per call);
        # darknet's per gate block (its step runs them apart) with or without
        # comb (which then packs U only).
        raw_w = malloc(_w_pack_size(dbl, H, w, d.reset_after) * es + 64)
        if raw_w != NULL:
            _pack_w(W, H, w, d.reset_after, <floating*>((<size_t>raw_w + 63) // 64 * 64),
                    Wpk)
    if tid == 0:
        gru_bar_init(&a.bar, n)
    if n > 1:
        gru_barrier()    # OpenMP's: the packs and the step barrier are ready
        if comb and a.comb_fail:
            comb = False     # (W and U then packed per product: slower, the same bits)
    for t in range(Tl):
        if lim != NULL:
            M = _running(lim, M, mfloor, t)
        if xc != NULL:
            xoff += mprev
            if t == tnext:
                # the chunk: steps t .. t + nc - 1, R rows in all, their rows
                # of x contiguous (each step's running rows are its first M)
                t0 = t
                xoff = 0
                R = 0
                nc = 0
                ms = M
                whole = True
                while t + nc < Tl:
                    ms = _running(lim, ms, mfloor, t + nc)
                    if nc > 0 and R + ms > cs * B:
                        break
                    whole = whole and ms == B
                    R += ms
                    nc += 1
                tnext = t + nc
                if xr == NULL and (whole or nc == 1):
                    xa = x + t * B * I      # (already contiguous)
                else:
                    # the team gathers them (step s by thread s % n), then
                    # each thread its columns of the chunk's product
                    ms = M
                    R = 0
                    for s in range(nc):
                        ms = _running(lim, ms, mfloor, t + s)
                        if s % n == tid:
                            if xr == NULL:
                                memcpy(xc + R * I, x + (t + s) * B * I, ms * I * es)
                            else:
                                # (a row past its sequence's end: any row of x)
                                for i in range(ms):
                                    k = xr[(t + s) * B + i]
                                    memcpy(xc + (R + i) * I, x + (k if k >= 0 else 0) * I,
                                           I * es)
                        R += ms
                    gru_bar_wait(&a.bar, tid)
                    xa = xc
                if comb:
                    gemm_pre_bias(xth, xa, <floating*>NULL, Upk3, b3, R, W3, I, I, I, W3,
                                  False, True, 1)
                elif w > 0:
                    _slice_gemm(xp + j0, H3, xa, I, R, I, U, nopack, H, w, 3, bu)
            mprev = M
        elif t % cs == 0:
            # uz, ur, uh of the slice for steps [t, t + nc), with their biases.
            t0 = t
            nc = cs if t + cs <= T else T - t
            if comb:
                gemm_pre_bias(xth, x + t * B * I, <floating*>NULL, Upk3, b3, nc * B, W3, I,
                              I, I, W3, False, True, 1)
            elif w > 0:
                _slice_gemm(xp + j0, H3, x + t * B * I, I, nc * B, I, U, nopack, H, w,
                            3, bu)
        if xc == NULL:
            xoff = (t - t0) * B
        hprev = <floating*>p.h0 if t == 0 else y + (t - 1) * B * H
        ht = y + t * B * H + j0
        if comb:        # this thread's own xp and hp columns, gate stride w
            xpt = xth + xoff * W3
            hpt = hth
            gs = w
        else:
            xpt = xp + xoff * H3 + j0
            hpt = hp + j0
            gs = H
        zt = <floating*>p.z + t * step + j0
        rt = <floating*>p.r + t * step + j0
        ct = <floating*>p.c + (0 if d.c_recompute else t * step) + j0
        sqt = <floating*>p.sq + t * step
        if comb and d.reset_after:
            # the step's three gate blocks in one product
            gemm_pre_bias(hth, hprev, <floating*>NULL, Wpk3, b3 + W3, M, W3, H, H, H, W3,
                          False, True, 1)
            for g in range(M):
                _reset_after_row(zt + g * H, rt + g * H,
                                 (sqt + j0 + g * H) if train else NULL, ct + g * H,
                                 ht + g * H, xpt + g * W3, hth + g * W3,
                                 hprev + j0 + g * H, w, w, d.act)
            gru_bar_wait(&a.bar, tid)
        elif d.reset_after or n == 1:
            if w > 0:
                _step_part(theta, &d, train, 0, M, j0, w, Wpk, xpt, hpt, hprev, ht,
                           zt, rt, ct, sqt, gs)
            gru_bar_wait(&a.bar, tid)
        else:
            # darknet's candidate needs all of s = r * h_{t-1}: r and s first,
            # then z between the barrier's halves (no other thread's writes
            # needed), so that a late teammate costs the others less spinning.
            if w > 0:
                _step_part(theta, &d, train, 2, M, j0, w, Wpk, xpt, hpt, hprev, ht,
                           zt, rt, ct, sqt, gs)
            tok = gru_bar_arrive(&a.bar, tid)
            if w > 0:
                _step_part(theta, &d, train, 3, M, j0, w, Wpk, xpt, hpt, hprev, ht,
                           zt, rt, ct, sqt, gs)
            gru_bar_await(&a.bar, tid, tok)
        if not d.reset_after:
            if w > 0:
                _step_part(theta, &d, train, 1, M, j0, w, Wpk, xpt, hpt, hprev, ht,
                           zt, rt, ct, sqt, gs)
            gru_bar_wait(&a.bar, tid)
        if yo != NULL and w > 0:
            # this thread's columns of the step's outputs, to the caller's rows
            mt = _running(lim, mt, 0, t)
            for i in range(mt):
                memcpy(yo + xr[t * B + i] * H + j0, ht + i * H, w * es)
            for i in range(mt, B):
                memset(yo + (t * B + order[i]) * H + j0, 0, w * es)
    free(raw_p)
    free(raw_w)


cdef void _batch_thread(floating* theta, FusedArg* a, int tid, int n) noexcept nogil:
    # Batch mode: the B sequences are independent, so a chunk of rows runs its
    # T steps without the others.  Threads claim (chunk, step) items in
    # step-major order, one at a time, and wait only for the chunk's previous
    # step (claimed nch items earlier): no barrier, and the threads finish
    # within one item of each other; a slow or time-shared core simply does
    # fewer items.  Every chunk has at least BATCH_ROWS / 2 > 3 rows, so its
    # products take the blocked gemm path, as the full batch does: the same
    # arithmetic per element whichever thread runs it (bit-identical).  With
    # p.limits (inference on rows sorted by decreasing length) a chunk stops
    # after its first row's steps, and each of its steps runs only its rows
    # still running (at least 4): work follows the sum of the lengths.
    cdef Dims d = a.d
    cdef Ptrs* p = &a.p
    cdef bint train = a.train
    cdef Py_ssize_t T = d.T, B = d.B, I = d.In, H = d.H, H3 = 3 * H
    cdef Py_ssize_t step = B * H if train else 0
    cdef Py_ssize_t nch = a.nchunks, r0, m, t, b, k
    cdef int c
    cdef const long long* lim
    cdef floating* U = theta
    cdef floating* bias = theta + d.ob
    cdef floating* Upk[3]            # U packed (shared)
    cdef floating* Wpk[3]            # W packed (shared): [wz; wr; wh] | [wz; wr], wh
    cdef floating* x = <floating*>p.x
    cdef floating* y = <floating*>p.y
    cdef floating* xpc
    cdef floating* hpc
    cdef floating* hprev
    cdef floating* ht
    cdef floating* zt
    cdef floating* rt
    cdef floating* ct
    cdef floating* sqt
    Upk[0] = <floating*>a.upk       # (_slice_gemm reads one whole-layer pack)
    Upk[1] = Upk[2] = NULL
    for b in range(3):
        Wpk[b] = <floating*>a.wpk[b]
    # this thread's step buffers: xp and hp of at most 2 * BATCH_ROWS rows
    xpc = <floating*>(<char*>a.bufs + tid * a.buf_bytes)
    hpc = xpc + (2 * BATCH_ROWS) * H3
    while True:
        k = gru_claim(&a.next)
        if k < a.npieces:
            # a part of the packs: every step reads them, step 0 waits for all
            _batch_pack_piece(theta, a, <int>k)
            gru_count_done(&a.packs_done)
            continue
        k -= a.npieces
        if k >= nch * T:
            break
        c = <int>(k % nch)
        t = k // nch
        r0 = B * c // nch
        m = B * (c + 1) // nch - r0
        if p.limits != NULL:
            lim = <const long long*>p.limits
            if t >= lim[r0]:
                continue        # the chunk's sequences have all ended
            # rows are sorted by decreasing length: the running ones are the
            # chunk's first; run those, at least 4 (GEMV_MAX_M + 1: the
            # blocked gemm path, the same arithmetic as the full chunk's)
            m = _running(lim + r0, m, GEMV_MAX_M + 1, t)
        # the chunk's step t - 1 (claimed nch items earlier) must be done;
        # its step 0 waits for the packs (later steps follow from it)
        if t == 0:
            gru_step_wait(&a.packs_done, a.npieces)
        gru_step_wait(a.steps_done + c, <int>t)
        hprev = (<floating*>p.h0 if t == 0 else y + (t - 1) * B * H) + r0 * H
        ht = y + t * B * H + r0 * H
        zt = <floating*>p.z + t * step + r0 * H
        rt = <floating*>p.r + t * step + r0 * H
        ct = <floating*>p.c + (0 if d.c_recompute else t * step) + r0 * H
        sqt = <floating*>p.sq + t * step + r0 * H
        # uz, ur, uh of the chunk's rows at step t, then the step
        _slice_gemm(xpc, H3, x + (t * B + r0) * I, I, m, I, U, Upk, H, H, 3, bias)
        _step_part(theta, &d, train, 0, m, 0, H, Wpk, xpc, hpc, hprev, ht, zt, rt, ct,
                   sqt, H)
        if not d.reset_after:
            _step_part(theta, &d, train, 1, m, 0, H, Wpk, xpc, hpc, hprev, ht, zt, rt,
                       ct, sqt, H)
        gru_step_done(a.steps_done + c, <int>t + 1)


cdef void _batch_thread_f(void* arg, int tid, int n) noexcept nogil:
    _batch_thread(<float*>(<FusedArg*>arg).theta, <FusedArg*>arg, tid, n)


cdef void _batch_thread_d(void* arg, int tid, int n) noexcept nogil:
    _batch_thread(<double*>(<FusedArg*>arg).theta, <FusedArg*>arg, tid, n)


cdef void _fused_thread_f(void* arg, int tid, int n) noexcept nogil:
    _fused_thread(<float*>(<FusedArg*>arg).theta, <FusedArg*>arg, tid, n)


cdef void _fused_thread_d(void* arg, int tid, int n) noexcept nogil:
    _fused_thread(<double*>(<FusedArg*>arg).theta, <FusedArg*>arg, tid, n)


cdef void _batch_pack_ptrs(FusedArg* a, floating* out) noexcept nogil:
    # Batch mode: U, then W as _pack_w packs the whole layer, go to out
    # (64-byte aligned); a.upk and a.wpk point at them.  The team packs
    # them (_batch_pack_piece): the first a.npieces items of the call.
    cdef Py_ssize_t H = a.d.H, I = a.d.In, g
    cdef floating* Wpk[3]
    a.upk = out
    _pack_w_ptrs(H, H, a.d.reset_after,
                 out + _pack_elems(floating is double, 3 * H, I, sizeof(floating)), Wpk)
    for g in range(3):
        a.wpk[g] = Wpk[g]
    a.npieces = a.pack_parts * (1 + _w_whole_packs(a.d.reset_after))


cdef void _batch_pack_piece(floating* theta, FusedArg* a, int k) noexcept nogil:
    # Piece k of the batch-mode packs: part k % pack_parts of U (k / parts 0)
    # or of W's whole-layer pack k / parts - 1 (_pack_w_whole_part): the team
    # shares the packing.
    cdef Py_ssize_t H = a.d.H, I = a.d.In, g
    cdef int parts = a.pack_parts, part = k % parts, which = k // parts
    cdef floating* Wpk[3]
    if which == 0:
        prepack_part(theta, 3 * H, I, I, True, part, parts, <floating*>a.upk)
        return
    for g in range(3):
        Wpk[g] = <floating*>a.wpk[g]
    _pack_w_whole_part(theta + a.d.oW, H, a.d.reset_after, which - 1, part, parts, Wpk)


cdef inline Py_ssize_t _round64(Py_ssize_t n) noexcept nogil:
    return (n + 63) // 64 * 64


cdef inline Py_ssize_t _batch_pack_bytes(Dims d, bint dbl) noexcept nogil:
    # U, then W as _pack_w packs the whole layer (_batch_pack_ptrs).
    cdef Py_ssize_t es = 8 if dbl else 4
    return (_pack_elems(dbl, 3 * d.H, d.In, es) + _w_pack_size(dbl, d.H, d.H, d.reset_after)) * es


cdef inline Py_ssize_t _batch_buf_bytes(Dims d, bint dbl) noexcept nogil:
    # One thread's xp and hp of at most 2 * BATCH_ROWS rows.
    return _round64(2 * (2 * BATCH_ROWS) * 3 * d.H * (8 if dbl else 4))


cdef Plan plan_forward(Dims* d, bint dbl) noexcept nogil:
    cdef Plan plan
    cdef int units_nt
    plan.path = PATH_STEPS
    plan.nt = d.nthreads
    plan.nchunks = 0
    plan.scratch_bytes = 0
    plan.packs_ready = 0
    if d.bn or d.use_blas:
        return plan
    units_nt = fused_team(d, (d.H + FUSED_GRAN - 1) // FUSED_GRAN)   # unit slices' team
    if d.units_first == 2:
        # a padded batch's limited training forward: unit slices on any team
        plan.nt = units_nt
        plan.path = PATH_UNITS
        return plan
    if batch_mode(d, dbl) and not (
            d.units_first and d.H >= UNITS_FIRST_H and units_nt > 1):
        plan.nchunks = <int>(d.B // BATCH_ROWS)
        plan.nt = fused_team(d, plan.nchunks)
        if plan.nchunks < 2 * plan.nt:
            # half-size chunks: a thread descheduled mid-call then holds back
            # a smaller share
            plan.nchunks = <int>(d.B // (BATCH_ROWS // 2))
            plan.nt = fused_team(d, plan.nchunks)
            if plan.nt < plan.nchunks < 2 * plan.nt:
                # fewer than two chunks per thread: as many (larger) chunks as
                # threads, not a round of steps with some threads idle
                plan.nchunks = plan.nt
        if plan.nchunks * d.T >= (1 << 30):
            # items are counted in an int: the per-kernel loop
            plan.nt = d.nthreads
            plan.nchunks = 0
            return plan
        if plan.nt > plan.nchunks:
            plan.nt = plan.nchunks
        plan.path = PATH_BATCH
        plan.scratch_bytes = (64 + _round64(_batch_pack_bytes(d[0], dbl))
                              + plan.nt * _batch_buf_bytes(d[0], dbl)
                              + plan.nchunks * sizeof(int))
        return plan
    plan.nt = units_nt
    if plan.nt == 1 and d.nthreads != 1 and 6.0 * d.T * d.B * d.In * d.H >= 4e5:
        # one slice, but the input projection is worth threads: the
        # per-kernel loop threads it (and the row kernels)
        plan.nt = d.nthreads
        return plan
    plan.path = PATH_UNITS
    return plan


cdef void forward_fused(void* theta, Dims d, Ptrs p, bint train, bint dbl, Plan* plan,
                        void* scratch) noexcept nogil:
    cdef FusedArg a
    cdef char* base
    a.theta = theta
    a.d = d
    a.p = p
    a.train = train
    a.comb_fail = 0
    if plan.path == PATH_UNITS:
        gru_run_team(plan.nt, _fused_thread_d if dbl else _fused_thread_f, &a)
        return
    # PATH_BATCH: packs, then the threads' step buffers, then steps_done
    base = <char*>((<size_t>scratch + 63) // 64 * 64)
    a.nchunks = plan.nchunks
    a.next = 0
    a.packs_done = 0
    a.pack_parts = 2 * plan.nt
    if dbl:
        _batch_pack_ptrs[double](&a, <double*>base)
    else:
        _batch_pack_ptrs[float](&a, <float*>base)
    if plan.packs_ready:
        a.npieces = 0           # the packs at base are current (Engine.hold_packs)
    a.buf_bytes = _batch_buf_bytes(d, dbl)
    a.bufs = base + _round64(_batch_pack_bytes(d, dbl))
    a.steps_done = <int*>(<char*>a.bufs + plan.nt * a.buf_bytes)
    memset(a.steps_done, 0, plan.nchunks * sizeof(int))
    gru_run_team(plan.nt, _batch_thread_d if dbl else _batch_thread_f, &a)
