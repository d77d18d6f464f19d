# cython: language_level=3
"""The per-kernel step loops of the CPU engine: forward, backward, and the
backward's recomputation of reset_after's candidates.

Each step is a sequence of kernel calls (``cell.pyx``) and gemms
(``gemm.pyx``), every one with the whole team of ``d.nthreads``; the same
sequence, call for call, as the CUDA engine's (``gru_cy.backends.cuda``).
The input projections of a chunk of steps (``layout.chunk_steps``) are one
gemm; the weight gradients of a chunk are gemms over all its rows.  This path
serves every configuration; the engine runs the fused forward (``fused.pyx``)
instead where it is faster and gives the same bits.

Sizes: T steps, B batch, I inputs, H outputs.  Layout: ``layout.pxd``.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.string cimport memcpy, memset

from gru_cy._cpu.cell cimport (bias_forward, bn_backward, bn_forward_infer,
                               bn_forward_train, col_sum, gru_darknet_gates_backward,
                               gru_darknet_gates_forward, gru_darknet_reset_backward,
                               gru_darknet_state_forward, gru_reset_after_backward,
                               gru_reset_after_forward, _reset_after_cand_row)
from gru_cy._cpu.gemm cimport gemm_pre_bias, gemm_sel, gemm_sel_pre, prepack
from gru_cy._cpu.common cimport team
from gru_cy._cpu.layout cimport Dims, Ptrs, _running, chunk_steps


cdef inline void _sublayer_out(floating* Y, floating* vhat, floating* sd,
                               floating* rmean, floating* rvar, const floating* scales,
                               const floating* biases, Py_ssize_t G, Py_ssize_t B,
                               Py_ssize_t C, Py_ssize_t ld, int bn, bint train,
                               int nthreads) noexcept nogil:
    # The part of a sublayer after its product: bias, or BN (train / inference).
    if not bn:
        bias_forward(Y, biases, G * B, C, ld, nthreads)
    elif train:
        bn_forward_train(Y, vhat, sd, rmean, rvar, scales, biases, G, B, C, ld, nthreads)
    else:
        bn_forward_infer(Y, rmean, rvar, scales, biases, G * B, C, ld, nthreads)


cdef void forward_steps(floating* theta, Dims d, Ptrs p, bint train) noexcept nogil:
    # x (T, B, I) -> y (T, B, H); train: caches z, r, c, s|q (T, B, H) and BN's
    # vhat/sd.  xp is a chunk buffer (chunk_steps * B, 3H).
    cdef Py_ssize_t T = d.T, B = d.B, I = d.In, H = d.H, H3 = 3 * H, t, t0 = 0, nc
    cdef Py_ssize_t cs = chunk_steps(T, B)
    cdef int nt = d.nthreads
    cdef floating* U = theta
    cdef floating* W = theta + d.oW
    cdef floating* bias = theta + d.ob
    cdef floating* scales = theta + d.os
    cdef floating* rmean = <floating*>p.rolling
    cdef floating* rvar = rmean + 6 * H
    cdef floating* x = <floating*>p.x
    cdef floating* y = <floating*>p.y
    cdef floating* xp = <floating*>p.xp
    cdef floating* hp = <floating*>p.hp
    cdef floating* vw = NULL
    cdef floating* sw = NULL
    cdef floating* hprev
    cdef floating* ht
    cdef floating* xpt
    cdef floating* zt
    cdef floating* rt
    cdef floating* ct
    cdef floating* sqt
    cdef Py_ssize_t step = B * H if train else 0
    if p.wpre != NULL:
        if d.reset_after:
            prepack(W, H3, H, H, True, <floating*>p.wpre)
        else:
            prepack(W, 2 * H, H, H, True, <floating*>p.wpre)
            prepack(W + 2 * H * H, H, H, H, True, <floating*>p.wpre2)
    for t in range(T):
        if t % cs == 0:
            # uz, ur, uh for steps [t, t + nc): xp = x @ U.T, then bias / BN.
            t0 = t
            nc = cs if t + cs <= T else T - t
            gemm_sel(d.use_blas, xp, x + t * B * I, U, nc * B, H3, I, I, I, H3, False,
                     True, <floating>1, <floating>0, nt)
            _sublayer_out(xp, (<floating*>p.vu + t * B * H3) if train and d.bn else NULL,
                          (<floating*>p.su + t * H3) if train and d.bn else NULL,
                          rmean, rvar, scales, bias, nc, B, H3, H3, d.bn, train, nt)
        hprev = <floating*>p.h0 if t == 0 else y + (t - 1) * B * H
        ht = y + t * B * H
        xpt = xp + (t - t0) * B * H3
        zt = <floating*>p.z + t * step
        rt = <floating*>p.r + t * step
        ct = <floating*>p.c + (0 if d.c_recompute else t * step)
        sqt = <floating*>p.sq + t * step
        if train and d.bn:
            vw = <floating*>p.vw + t * B * H3
            sw = <floating*>p.sw + t * H3
        if not d.reset_after:
            # wz, wr: hp[:, 0:2H] = hprev @ [Wz; Wr].T
            gemm_sel_pre(d.use_blas, hp, hprev, W, <floating*>p.wpre, B, 2 * H, H, H, H,
                         H3, False, True, <floating>1, <floating>0, nt)
            _sublayer_out(hp, vw, sw, rmean + H3, rvar + H3, scales + H3, bias + H3,
                          1, B, 2 * H, H3, d.bn, train, nt)
            gru_darknet_gates_forward(zt, rt, sqt, xpt, hp, hprev, B, H, H3, H3, nt)
            # wh: hp[:, 2H:3H] = s @ Wh.T
            gemm_sel_pre(d.use_blas, hp + 2 * H, sqt, W + 2 * H * H, <floating*>p.wpre2, B,
                         H, H, H, H, H3, False, True, <floating>1, <floating>0, nt)
            _sublayer_out(hp + 2 * H, (vw + 2 * H) if vw != NULL else NULL,
                          (sw + 2 * H) if sw != NULL else NULL, rmean + 5 * H,
                          rvar + 5 * H, scales + 5 * H, bias + 5 * H, 1, B, H, H3,
                          d.bn, train, nt)
            gru_darknet_state_forward(ct, ht, xpt + 2 * H, hp + 2 * H, zt, hprev, B, H,
                                      H3, H3, d.act, nt)
        else:
            # wz, wr, wh in one product: hp (B, 3H) = hprev @ W.T
            gemm_sel_pre(d.use_blas, hp, hprev, W, <floating*>p.wpre, B, H3, H, H, H, H3,
                         False, True, <floating>1, <floating>0, nt)
            _sublayer_out(hp, vw, sw, rmean + H3, rvar + H3, scales + H3, bias + H3,
                          1, B, H3, H3, d.bn, train, nt)
            gru_reset_after_forward(zt, rt, sqt if train else NULL, ct, ht, xpt, hp,
                                    hprev, B, H, H3, H3, d.act, nt)


cdef void _backward_chunk(floating* theta, Dims d, Ptrs p, Py_ssize_t t0,
                          Py_ssize_t nc) noexcept nogil:
    # The per-chunk tail of the backward, steps [t0, t0 + nc): dau, daw hold
    # those steps' sublayer gradients (rows from 0).
    cdef Py_ssize_t B = d.B, I = d.In, H = d.H, H3 = 3 * H, R = nc * B
    cdef int nt = d.nthreads
    cdef floating one = 1
    cdef floating* U = theta
    cdef floating* scales = theta + d.os
    cdef floating* dU = <floating*>p.grad
    cdef floating* dW = dU + d.oW
    cdef floating* dbias = dU + d.ob
    cdef floating* dscales = dU + d.os
    cdef floating* hs = <floating*>p.h0 + t0 * B * H     # h_{t-1} of the chunk
    cdef floating* dau = <floating*>p.dau
    cdef floating* daw = <floating*>p.daw
    # u sublayers: BN (one group per step) or bias.
    if d.bn:
        bn_backward(dau, dscales, dbias, <floating*>p.vu + t0 * B * H3,
                    <floating*>p.su + t0 * H3, scales, nc, B, H3, H3, nt)
    else:
        col_sum(dbias, dau, R, H3, H3, nt)
        col_sum(dbias + H3, daw, R, H3, H3, nt)
    # xp = x @ U.T  ->  dx = dau @ U;  dU += dau.T @ x
    gemm_sel(d.use_blas, <floating*>p.dx + t0 * B * I, dau, U, R, I, H3, H3, I, I,
             False, False, one, <floating>0, nt)
    gemm_sel(d.use_blas, dU, dau, <floating*>p.x + t0 * B * I, H3, I, R, H3, I, I,
             True, False, one, one, nt)
    if not d.reset_after:
        # dWz, dWr += daw_{z,r}.T @ hprev;  dWh += daw_h.T @ s
        gemm_sel(d.use_blas, dW, daw, hs, 2 * H, H, R, H3, H, H, True, False, one,
                 one, nt)
        gemm_sel(d.use_blas, dW + 2 * H * H, daw + 2 * H, <floating*>p.sq + t0 * B * H,
                 H, H, R, H3, H, H, True, False, one, one, nt)
    else:
        # dW += daw.T @ hprev
        gemm_sel(d.use_blas, dW, daw, hs, H3, H, R, H3, H, H, True, False, one, one, nt)


cdef void _recompute_c(floating* theta, Dims d, Ptrs p, Py_ssize_t t0,
                       Py_ssize_t nc) noexcept nogil:
    # reset_after's candidates c = act(xp_h + r * q) of steps [t0, t0 + nc)
    # into p.c (nc * B rows): xp_h = x @ Uh.T + uh's biases, the forward's
    # product (the same gemm arithmetic per element for any rows or columns,
    # gemm_kernels.h; its bias added in the gemm, as the forward's), then the
    # forward's expression (rows.h), rows shared by the team: the same bits as
    # the c the forward computed (docs/performance.md: why).
    cdef Py_ssize_t B = d.B, I = d.In, H = d.H, R = nc * B, i
    cdef floating* c = <floating*>p.c
    cdef floating* Uh = theta + 2 * H * I
    cdef floating* buh = theta + d.ob + 2 * H
    cdef floating* r = <floating*>p.r + t0 * B * H
    cdef floating* q = <floating*>p.sq + t0 * B * H
    cdef int nt = team(R, R * H, d.nthreads)
    gemm_pre_bias(c, <floating*>p.x + t0 * B * I, Uh, NULL, buh, R, H, I, I, I, H, False,
                  True, d.nthreads)
    if nt == 1:
        for i in range(R):
            _reset_after_cand_row(c + i * H, r + i * H, q + i * H, H, d.act)
    else:
        for i in prange(R, nogil=True, schedule="static", num_threads=nt):
            _reset_after_cand_row(c + i * H, r + i * H, q + i * H, H, d.act)


cdef void _prepack_backward(floating* W, Dims d, Ptrs p) noexcept nogil:
    # The backward's per-step products' W, packed once per call (p.wpre:
    # W | Wh, p.wpre2: [Wz; Wr]), where the blocked path runs.
    cdef Py_ssize_t H = d.H
    if p.wpre == NULL:
        return
    if d.reset_after:
        prepack(W, H, 3 * H, H, False, <floating*>p.wpre)
    else:
        prepack(W + 2 * H * H, H, H, H, False, <floating*>p.wpre)
        prepack(W, H, 2 * H, H, False, <floating*>p.wpre2)


cdef void _step_backward(floating* theta, Dims d, Ptrs p, Py_ssize_t M, floating* daut,
                         floating* dawt, floating* dyt, floating* zt, floating* rt,
                         floating* ct, floating* sqt, floating* hprev, floating* vw,
                         floating* sw) noexcept nogil:
    # One step of the backward for M rows: the sublayers' gradients into daut
    # and dawt, dh (p.dh) from dh_t to dh_{t-1}; BN's vw, sw (or NULL).
    cdef Py_ssize_t H = d.H, H3 = 3 * H
    cdef int nt = d.nthreads
    cdef floating one = 1
    cdef floating* W = theta + d.oW
    cdef floating* scales = theta + d.os
    cdef floating* dbias = <floating*>p.grad + d.ob
    cdef floating* dscales = <floating*>p.grad + d.os
    cdef floating* dh = <floating*>p.dh
    cdef floating* ds = <floating*>p.ds
    if not d.reset_after:
        # h = z*hprev + (1 - z)*c;  c = act(uh(x) + wh(s))
        gru_darknet_gates_backward(daut, dawt, dh, dyt, zt, ct, hprev, M, H, H3,
                                   d.act, nt)
        if d.bn:
            bn_backward(dawt + 2 * H, dscales + 5 * H, dbias + 5 * H, vw + 2 * H,
                        sw + 2 * H, scales + 5 * H, 1, M, H, H3, nt)
        # wh(s) = s @ Wh.T  ->  ds = dah_w @ Wh
        gemm_sel_pre(d.use_blas, ds, dawt + 2 * H, W + 2 * H * H, <floating*>p.wpre, M,
                     H, H, H3, H, H, False, False, one, <floating>0, nt)
        # s = r*hprev;  r = sig(ur(x) + wr(hprev))
        gru_darknet_reset_backward(daut + H, dawt + H, dh, ds, rt, hprev, M, H, H3, nt)
        if d.bn:
            bn_backward(dawt, dscales + H3, dbias + H3, vw, sw, scales + H3, 1, M,
                        2 * H, H3, nt)
        # [wz; wr](hprev) = hprev @ [Wz; Wr].T  ->  dh += [daz|dar]_w @ [Wz; Wr]
        gemm_sel_pre(d.use_blas, dh, dawt, W, <floating*>p.wpre2, M, H, 2 * H, H3, H,
                     H, False, False, one, one, nt)
    else:
        # c = act(uh(x) + r*wh(hprev)), z, r as above
        gru_reset_after_backward(daut, dawt, dh, dyt, zt, rt, sqt, ct, hprev, M, H,
                                 H3, d.act, nt)
        if d.bn:
            bn_backward(dawt, dscales + H3, dbias + H3, vw, sw, scales + H3, 1, M,
                        H3, H3, nt)
        # [wz; wr; wh](hprev) = hprev @ W.T  ->  dh += daw @ W
        gemm_sel_pre(d.use_blas, dh, dawt, W, <floating*>p.wpre, M, H, H3, H3, H, H,
                     False, False, one, one, nt)


cdef void backward_steps(floating* theta, Dims d, Ptrs p) noexcept nogil:
    # Reverse steps; every chunk of steps (aligned as in the forward) ends with
    # its batched weight-gradient gemms.  dh: dstate in, dh0 out.
    cdef Py_ssize_t T = d.T, B = d.B, H = d.H, H3 = 3 * H, t, t0, nc
    cdef Py_ssize_t cs = chunk_steps(T, B)
    cdef floating* hs = <floating*>p.h0          # (T+1, B, H): h0, then y
    _prepack_backward(theta + d.oW, d, p)
    for t in range(T - 1, -1, -1):
        t0 = (t // cs) * cs
        nc = cs if t0 + cs <= T else T - t0
        if d.c_recompute and t == t0 + nc - 1:
            _recompute_c(theta, d, p, t0, nc)
        _step_backward(theta, d, p, B, <floating*>p.dau + (t - t0) * B * H3,
                       <floating*>p.daw + (t - t0) * B * H3, <floating*>p.dy + t * B * H,
                       <floating*>p.z + t * B * H, <floating*>p.r + t * B * H,
                       <floating*>p.c + ((t - t0) if d.c_recompute else t) * B * H,
                       <floating*>p.sq + t * B * H, hs + t * B * H,
                       (<floating*>p.vw + t * B * H3) if d.bn else NULL,
                       (<floating*>p.sw + t * H3) if d.bn else NULL)
        if t == t0:
            _backward_chunk(theta, d, p, t0, nc)


cdef void _limited_chunk(floating* theta, Dims d, Ptrs p, Py_ssize_t t0,
                         Py_ssize_t nc) noexcept nogil:
    # The weight-gradient tail of backward_limited's chunk [t0, t0 + nc):
    # dau, daw hold its steps' running rows from 0 (R in all); those rows'
    # h_{t-1}, s (darknet) and x gathered alongside, dx scattered back.
    cdef Py_ssize_t B = d.B, I = d.In, H = d.H, H3 = 3 * H, R = 0, s, i, m, k
    cdef Py_ssize_t rmax = chunk_steps(d.T, B) * B
    cdef int nt = d.nthreads
    cdef floating one = 1
    cdef const long long* lim = <const long long*>p.limits
    cdef const long long* xr = <const long long*>p.xrows
    cdef floating* U = theta
    cdef floating* dU = <floating*>p.grad
    cdef floating* dW = dU + d.oW
    cdef floating* dbias = dU + d.ob
    cdef floating* hs = <floating*>p.h0
    cdef floating* x = <floating*>p.x
    cdef floating* dx = <floating*>p.dx
    cdef floating* dau = <floating*>p.dau
    cdef floating* daw = <floating*>p.daw
    cdef floating* xc = <floating*>p.xc
    cdef floating* hc = <floating*>p.lbuf
    cdef floating* sc = hc + rmax * H
    cdef floating* dxc = sc + rmax * H
    m = B
    for s in range(nc):
        m = _running(lim, m, 0, t0 + s)
        memcpy(hc + R * H, hs + (t0 + s) * B * H, m * H * sizeof(floating))
        if not d.reset_after:
            memcpy(sc + R * H, <floating*>p.sq + (t0 + s) * B * H, m * H * sizeof(floating))
        for i in range(m):
            memcpy(xc + (R + i) * I, x + xr[(t0 + s) * B + i] * I, I * sizeof(floating))
        R += m
    col_sum(dbias, dau, R, H3, H3, nt)
    col_sum(dbias + H3, daw, R, H3, H3, nt)
    # dx = dau @ U, to the caller's rows; dU += dau.T @ x
    gemm_sel(d.use_blas, dxc, dau, U, R, I, H3, H3, I, I, False, False, one, <floating>0, nt)
    R = 0
    m = B
    for s in range(nc):
        m = _running(lim, m, 0, t0 + s)
        for i in range(m):
            memcpy(dx + xr[(t0 + s) * B + i] * I, dxc + (R + i) * I, I * sizeof(floating))
        R += m
    gemm_sel(d.use_blas, dU, dau, xc, H3, I, R, H3, I, I, True, False, one, one, nt)
    if not d.reset_after:
        gemm_sel(d.use_blas, dW, daw, hc, 2 * H, H, R, H3, H, H, True, False, one, one, nt)
        gemm_sel(d.use_blas, dW + 2 * H * H, daw + 2 * H, sc, H, H, R, H3, H, H, True,
                 False, one, one, nt)
    else:
        gemm_sel(d.use_blas, dW, daw, hc, H3, H, R, H3, H, H, True, False, one, one, nt)


cdef void backward_limited(floating* theta, Dims d, Ptrs p) noexcept nogil:
    # The backward of a padded batch's limited training forward (rows sorted
    # by decreasing length, p.limits; no BN, candidates kept): at step t the
    # rows still running (the first m), each joining at its last step with
    # the dh it came in with (its final state's gradient).  dy and dx are the
    # caller's padded arrays, read and written through p.xrows (dx zero where
    # a sequence has ended); p.x: the forward's x, padded likewise.  Per chunk
    # of steps the running rows' gradients lie packed in dau / daw, and the
    # weight gradients are gemms over those rows only.
    cdef Py_ssize_t T = d.T, B = d.B, I = d.In, H = d.H, H3 = 3 * H, t, t0, nc, m = 0
    cdef Py_ssize_t cs = chunk_steps(T, B), off = 0, s, i
    cdef const long long* lim = <const long long*>p.limits
    cdef const long long* xr = <const long long*>p.xrows
    cdef const long long* order = <const long long*>p.order
    cdef floating* hs = <floating*>p.h0
    cdef floating* dy = <floating*>p.dy
    cdef floating* dx = <floating*>p.dx
    cdef floating* dyb = <floating*>p.lbuf + cs * B * (2 * H + I)
    _prepack_backward(theta + d.oW, d, p)
    for t in range(T - 1, -1, -1):
        t0 = (t // cs) * cs
        nc = cs if t0 + cs <= T else T - t0
        if t == t0 + nc - 1:
            off = 0         # the chunk's rows: its steps' running rows
            m = B
            for s in range(nc):
                m = _running(lim, m, 0, t0 + s)
                off += m
        m = _running(lim, B, 0, t)
        off -= m
        for i in range(m):
            memcpy(dyb + i * H, dy + xr[t * B + i] * H, H * sizeof(floating))
        for i in range(m, B):
            memset(dx + (t * B + order[i]) * I, 0, I * sizeof(floating))
        _step_backward(theta, d, p, m, <floating*>p.dau + off * H3,
                       <floating*>p.daw + off * H3, dyb, <floating*>p.z + t * B * H,
                       <floating*>p.r + t * B * H, <floating*>p.c + t * B * H,
                       <floating*>p.sq + t * B * H, hs + t * B * H, NULL, NULL)
        if t == t0:
            _limited_chunk(theta, d, p, t0, nc)
