"""The CUDA backend: CuPy arrays, the kernels of ``src_kernels`` (through
``gru_cy.cuda``'s launchers) and the GRU engine built on them.

CuPy is optional: nothing here imports it before :func:`backend` is called,
and that raises ``RuntimeError`` saying why when CUDA cannot be used.
"""
import numpy as np

from gru_cy import cuda
from gru_cy.backends.base import Backend, to_host
from gru_cy.kernels import (backward_buffers, chunk_steps, param_layout, scratch,
                            training_cache)


class Engine:
    """One layer's GPU storage and caches: the CUDA twin of ``gru_cy._cpu.engine.Engine``.

    Same constructor, attributes (``cache``, ``cache_T``, ``cache_B``) and
    methods; arrays are C-contiguous CuPy arrays of the engine's dtype, of
    sizes the layer validated (this class does no validation).  The forward
    and backward issue the same kernel calls, in the same order and on the
    same buffer offsets, as the CPU engine's per-kernel step loops
    (``gru_cy/_cpu/steps.pyx``: ``forward_steps``, ``backward_steps``,
    ``_backward_chunk``).  Storage layout: ``gru_cy.kernels.param_layout``.
    ``use_blas`` is accepted and ignored: the GPU always runs the engine's own
    gemm.
    """

    def __init__(self, theta, grad, rolling, inputs, outputs, reset_after, act, bn,
                 use_blas):
        self.theta = theta
        self.grad = grad
        self.rolling = rolling
        self.dtype = np.dtype(theta.dtype)
        self.inputs = int(inputs)
        self.outputs = int(outputs)
        self.reset_after = bool(reset_after)
        self.act = int(act)
        self.bn = bool(bn)
        self.use_blas = bool(use_blas)
        self.cache = None
        self.work = None
        self.work_shape = None
        self.cache_T = 0
        self.cache_B = 0
        # offsets of W, the biases and the scales (the same with or without BN)
        layout = param_layout(self.inputs, self.outputs, True)
        self.oW, self.ob, self.os = (layout[k][0] for k in ("W", "biases", "scales"))

    def invalidate(self):
        """Drop the training cache (backward then needs a new training forward)."""
        self.cache = None
        self.cache_T = 0
        self.cache_B = 0

    def plans_batch(self, T, B, nthreads):
        """The CPU engine's batch mode question: never here (segments run)."""
        return False

    def plans_limited(self, T, B, nthreads):
        """The CPU engine's fused-forward question: never here (segments run)."""
        return False

    def limited_mode(self, T, B, nthreads):
        """The CPU engine's limited-call question: 0, never here."""
        return 0

    def limited_train(self, T, B):
        """The CPU engine's limited-training question: never here."""
        return False

    def forward_limited(self, x, h0, y, limits, nthreads, rows=None, yout=None, order=None,
                        train=False):
        """The CPU engine's chunk-limited inference; never runs here."""
        return False

    def hold(self, hold):
        """The CPU engine's run of segments (packs kept, no adaptive team);
        nothing to do here (the CUDA gemm reads the weights as they are)."""

    def take_cache(self):
        """The training cache as an opaque record, the engine left without one
        (as the CPU engine's)."""
        rec = (self.cache, self.cache_T, self.cache_B)
        self.invalidate()
        return rec

    def put_cache(self, rec):
        """Make a record of :meth:`take_cache` the training cache again."""
        self.cache, self.cache_T, self.cache_B = rec

    def _k(self, name, *args):
        cuda._call(name, self.dtype, args)

    def _scratch(self, T, B):
        # Per-shape scratch: xp chunk (inference and training), step buffers
        # (inference), zero state.
        if self.work is None or self.work_shape != (T, B):
            self.work = scratch(cuda._cupy(), chunk_steps(T, B) * B, B, self.outputs,
                                self.dtype)
            self.work_shape = (T, B)
        return self.work

    def infer_lean(self, x, state, nthreads):
        """The CPU engine's per-call shortcut; here always None: the layer
        takes its general path (its checks and conversions are negligible
        next to the kernel launches)."""
        return None

    def forward(self, x, h0, y, train, nthreads=1):
        """x (T, B, I), h0 (B, H) or None (zeros), y (T, B, H) written.

        Training keeps x (not copied: the caller hands a private array),
        h_{-1..T-1}, z, r, c, s|q and BN's statistics for ``backward``.
        ``nthreads`` is accepted for the CPU engine's signature and ignored.
        Returns h_{T-1}, a fresh (B, H) array.
        """
        T, B, H = x.shape[0], x.shape[1], self.outputs
        w = self._scratch(T, B)
        self.invalidate()
        if train:
            cache = training_cache(cuda._cupy(), x, h0, H, self.bn, self.dtype)
            hs = cache["hs"]
            p_h0 = cuda._ptr(hs)
            p_y = p_h0 + B * H
        else:
            cache = w
            p_h0 = cuda._ptr(w["zeros"] if h0 is None else h0)
            p_y = cuda._ptr(y)
        self._forward(T, B, train, cuda._ptr(x), p_h0, p_y, w, cache)
        if train:
            y[...] = hs[1:]
            self.cache = cache
            self.cache_T = T
            self.cache_B = B
        return y[T - 1].copy()

    def _forward(self, T, B, train, x, h0, y, w, cache):
        # Mirrors forward_steps (gru_cy/_cpu/steps.pyx) call for call.
        I, H, H3, act, bn = self.inputs, self.outputs, 3 * self.outputs, self.act, self.bn
        k = self._k
        cs = chunk_steps(T, B)
        U = cuda._ptr(self.theta)
        W = U + self.oW
        bias = U + self.ob
        scales = U + self.os
        rmean = cuda._ptr(self.rolling)
        rvar = rmean + 6 * H
        xp, hp = cuda._ptr(w["xp"]), cuda._ptr(w["hp"])
        z, r, c, sq = (cuda._ptr(cache[key]) for key in ("z", "r", "c", "sq"))
        vu, su = cuda._ptr(cache.get("vu")), cuda._ptr(cache.get("su"))
        vw_all, sw_all = cuda._ptr(cache.get("vw")), cuda._ptr(cache.get("sw"))
        vw = sw = None
        step = B * H if train else 0
        t0 = 0

        def sublayer_out(Y, vhat, sd, rm, rv, sc, bi, G, Bn, C, ld):
            # The part of a sublayer after its product: bias, or BN (train / inference).
            if not bn:
                k("bias_forward", Y, bi, G * Bn, C, ld)
            elif train:
                k("bn_forward_train", Y, vhat, sd, rm, rv, sc, bi, G, Bn, C, ld)
            else:
                k("bn_forward_infer", Y, rm, rv, sc, bi, G * Bn, C, ld)

        for t in range(T):
            if t % cs == 0:
                # uz, ur, uh for steps [t, t + nc): xp = x @ U.T, then bias / BN.
                t0 = t
                nc = cs if t + cs <= T else T - t
                k("gemm", xp, x + t * B * I, U, nc * B, H3, I, I, I, H3, 0, 1, 1, 0)
                sublayer_out(xp, vu + t * B * H3 if train and bn else None,
                             su + t * H3 if train and bn else None,
                             rmean, rvar, scales, bias, nc, B, H3, H3)
            hprev = h0 if t == 0 else y + (t - 1) * B * H
            ht = y + t * B * H
            xpt = xp + (t - t0) * B * H3
            zt, rt, ct, sqt = z + t * step, r + t * step, c + t * step, sq + t * step
            if train and bn:
                vw = vw_all + t * B * H3
                sw = sw_all + t * H3
            if not self.reset_after:
                # wz, wr: hp[:, 0:2H] = hprev @ [Wz; Wr].T
                k("gemm", hp, hprev, W, B, 2 * H, H, H, H, H3, 0, 1, 1, 0)
                sublayer_out(hp, vw, sw, rmean + H3, rvar + H3, scales + H3, bias + H3,
                             1, B, 2 * H, H3)
                k("gru_darknet_gates_forward", zt, rt, sqt, xpt, hp, hprev, B, H, H3, H3)
                # wh: hp[:, 2H:3H] = s @ Wh.T
                k("gemm", hp + 2 * H, sqt, W + 2 * H * H, B, H, H, H, H, H3, 0, 1, 1, 0)
                sublayer_out(hp + 2 * H, None if vw is None else vw + 2 * H,
                             None if sw is None else sw + 2 * H, rmean + 5 * H,
                             rvar + 5 * H, scales + 5 * H, bias + 5 * H, 1, B, H, H3)
                k("gru_darknet_state_forward", ct, ht, xpt + 2 * H, hp + 2 * H, zt, hprev,
                  B, H, H3, H3, act)
            else:
                # wz, wr, wh in one product: hp (B, 3H) = hprev @ W.T
                k("gemm", hp, hprev, W, B, H3, H, H, H, H3, 0, 1, 1, 0)
                sublayer_out(hp, vw, sw, rmean + H3, rvar + H3, scales + H3, bias + H3,
                             1, B, H3, H3)
                k("gru_reset_after_forward", zt, rt, sqt if train else None, ct, ht, xpt,
                  hp, hprev, B, H, H3, H3, act)

    def backward(self, dy, dstate, dx, dh0, nthreads=1):
        """dy (T, B, H), dstate (B, H) or None; writes dx (T, B, I), dh0 (B, H).

        Parameter gradients accumulate into ``grad``.  The gradient buffers
        hold one chunk of steps; for the darknet variant without BN the u and
        w sublayers' gradients are equal and share one buffer.  ``nthreads``
        is ignored.
        """
        T, B = self.cache_T, self.cache_B
        if dstate is None:
            dh0[...] = 0
        else:
            dh0[...] = dstate
        bufs = backward_buffers(cuda._cupy(), chunk_steps(T, B) * B, B, self.outputs,
                                self.dtype, not self.reset_after and not self.bn)
        self._backward(T, B, self.cache, cuda._ptr(dy), cuda._ptr(dx), cuda._ptr(dh0),
                       *(cuda._ptr(bufs[k]) for k in ("dau", "daw", "ds")))

    def _backward(self, T, B, cache, dy, dx, dh, dau, daw, ds):
        # Mirrors backward_steps (gru_cy/_cpu/steps.pyx) call for call.
        I, H, H3, act, bn = self.inputs, self.outputs, 3 * self.outputs, self.act, self.bn
        k = self._k
        cs = chunk_steps(T, B)
        W = cuda._ptr(self.theta) + self.oW
        scales = cuda._ptr(self.theta) + self.os
        dbias = cuda._ptr(self.grad) + self.ob
        dscales = cuda._ptr(self.grad) + self.os
        hs = cuda._ptr(cache["hs"])                  # (T+1, B, H): h0, then y
        z, r, c, sq = (cuda._ptr(cache[key]) for key in ("z", "r", "c", "sq"))
        vw_all, sw_all = cuda._ptr(cache.get("vw")), cuda._ptr(cache.get("sw"))
        for t in range(T - 1, -1, -1):
            t0 = (t // cs) * cs
            nc = cs if t0 + cs <= T else T - t0
            hprev = hs + t * B * H
            dyt = dy + t * B * H
            daut = dau + (t - t0) * B * H3
            dawt = daw + (t - t0) * B * H3
            zt, rt, ct, sqt = z + t * B * H, r + t * B * H, c + t * B * H, sq + t * B * H
            vw = vw_all + t * B * H3 if bn else None
            sw = sw_all + t * H3 if bn else None
            if not self.reset_after:
                # h = z*hprev + (1 - z)*c;  c = act(uh(x) + wh(s))
                k("gru_darknet_gates_backward", daut, dawt, dh, dyt, zt, ct, hprev, B, H,
                  H3, act)
                if bn:
                    k("bn_backward", dawt + 2 * H, dscales + 5 * H, dbias + 5 * H,
                      vw + 2 * H, sw + 2 * H, scales + 5 * H, 1, B, H, H3)
                # wh(s) = s @ Wh.T  ->  ds = dah_w @ Wh
                k("gemm", ds, dawt + 2 * H, W + 2 * H * H, B, H, H, H3, H, H, 0, 0, 1, 0)
                # s = r*hprev;  r = sig(ur(x) + wr(hprev))
                k("gru_darknet_reset_backward", daut + H, dawt + H, dh, ds, rt, hprev, B,
                  H, H3)
                if bn:
                    k("bn_backward", dawt, dscales + H3, dbias + H3, vw, sw, scales + H3,
                      1, B, 2 * H, H3)
                # [wz; wr](hprev) = hprev @ [Wz; Wr].T  ->  dh += [daz|dar]_w @ [Wz; Wr]
                k("gemm", dh, dawt, W, B, H, 2 * H, H3, H, H, 0, 0, 1, 1)
            else:
                # c = act(uh(x) + r*wh(hprev)), z, r as above
                k("gru_reset_after_backward", daut, dawt, dh, dyt, zt, rt, sqt, ct, hprev,
                  B, H, H3, act)
                if bn:
                    k("bn_backward", dawt, dscales + H3, dbias + H3, vw, sw, scales + H3,
                      1, B, H3, H3)
                # [wz; wr; wh](hprev) = hprev @ W.T  ->  dh += daw @ W
                k("gemm", dh, dawt, W, B, H, H3, H3, H, H, 0, 0, 1, 1)
            if t == t0:
                self._backward_chunk(B, cache, dx, dau, daw, t0, nc)

    def _backward_chunk(self, B, cache, dx, dau, daw, t0, nc):
        # Mirrors _backward_chunk (gru_cy/_cpu/steps.pyx): the per-chunk tail of the
        # backward, steps [t0, t0 + nc); dau, daw hold their gradients (rows from 0).
        I, H, H3 = self.inputs, self.outputs, 3 * self.outputs
        k = self._k
        R = nc * B
        U = cuda._ptr(self.theta)
        scales = U + self.os
        dU = cuda._ptr(self.grad)
        dW = dU + self.oW
        dbias = dU + self.ob
        dscales = dU + self.os
        hs = cuda._ptr(cache["hs"]) + t0 * B * H     # h_{t-1} of the chunk
        x = cuda._ptr(cache["x"])
        # u sublayers: BN (one group per step) or bias.
        if self.bn:
            k("bn_backward", dau, dscales, dbias, cuda._ptr(cache["vu"]) + t0 * B * H3,
              cuda._ptr(cache["su"]) + t0 * H3, scales, nc, B, H3, H3)
        else:
            k("col_sum", dbias, dau, R, H3, H3)
            k("col_sum", dbias + H3, daw, R, H3, H3)
        # xp = x @ U.T  ->  dx = dau @ U;  dU += dau.T @ x
        k("gemm", dx + t0 * B * I, dau, U, R, I, H3, H3, I, I, 0, 0, 1, 0)
        k("gemm", dU, dau, x + t0 * B * I, H3, I, R, H3, I, I, 1, 0, 1, 1)
        if not self.reset_after:
            # dWz, dWr += daw_{z,r}.T @ hprev;  dWh += daw_h.T @ s
            k("gemm", dW, daw, hs, 2 * H, H, R, H3, H, H, 1, 0, 1, 1)
            k("gemm", dW + 2 * H * H, daw + 2 * H, cuda._ptr(cache["sq"]) + t0 * B * H, H, H, R,
              H3, H, H, 1, 0, 1, 1)
        else:
            # dW += daw.T @ hprev
            k("gemm", dW, daw, hs, H3, H, R, H3, H, H, 1, 0, 1, 1)


class CudaBackend(Backend):
    """CuPy and the CUDA kernels; see ``gru_cy.backends`` for the protocol.

    ``nthreads`` arguments are accepted for the CPU backend's signatures and
    ignored: each launcher chooses its grid (``gru_cy.cuda.launch_geometry``).
    """

    name = "cuda"

    def __init__(self):
        self.xp = cuda._cupy()
        self.Engine = Engine
        self.forward_pair = None      # calls run one after the other on the device
        self.backward_pair = None
        self.forward_limited_pair = None      # (the CUDA engine runs no limited call)
        self.backward_limited_pair = None

    def _run(self, name, args, nthreads):
        cuda._call(name, args[0].dtype, args)

    def asarray(self, a):
        """``a`` as a CuPy array (host arrays and torch tensors are copied over)."""
        if isinstance(a, self.xp.ndarray):
            return a
        return self.xp.asarray(to_host(a))

    def storage(self, n, dtype):
        """Zeros, n elements: a layer's flat parameter vector."""
        return self.xp.zeros(n, dtype)

    def lean_input(self, x, dtype, inputs):
        """True when x is a C-contiguous CuPy array (T > 0, B > 0, inputs) of dtype."""
        if type(x) is not self.xp.ndarray:
            return False
        shape = x.shape
        return (len(shape) == 3 and x.dtype == dtype and shape[2] == inputs
                and shape[0] > 0 and shape[1] > 0 and x.flags.c_contiguous)

    @staticmethod
    def max_threads():
        return 1


_BACKEND = None


def backend():
    """The CUDA backend; ``RuntimeError`` saying why when CUDA is unavailable."""
    global _BACKEND
    if _BACKEND is None:
        cuda.require()
        _BACKEND = CudaBackend()
    return _BACKEND
