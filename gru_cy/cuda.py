"""The CUDA engine: CuPy loading of ``src_kernels/*.cu`` and one launcher per kernel.

The kernels are the CUDA twins of the Cython engine's (``gru_cy.kernels``
lists them with their contracts).  Each ``<name>`` below launches
``<name>_f32`` or ``<name>_f64`` with the arguments of the Cython twin in the
same order, minus ``nthreads``: the launcher chooses the grid itself
(:func:`launch_geometry`).  :class:`Engine` runs the GRU forward and backward
with the same sequence of kernel calls as ``gru_cy._cpu.gru``'s drivers, and
:func:`backend` hands it (with CuPy and the update kernels) to
``gru_cy.layer``.

CuPy is optional: nothing here imports it before a function needs it, and
:func:`available` says why CUDA cannot be used.  The sources are compiled
through NVRTC once per process (``cupy.RawModule``); they are read from the
installed package data (``gru_cy/cuda_src``) or, in a source checkout, from
``<repo>/src_kernels``.
"""
import functools
import os
import re

import numpy as np

from gru_cy.kernels import KERNEL_NAMES, KERNELS, cache_shapes, scratch_shapes

SOURCE_FILES = ("gemm.cu", "gru.cu", "update.cu", "net.cu")
"""The kernel sources, compiled as one module (each includes ``common.cuh``)."""
HEADER = "common.cuh"
NVRTC_OPTIONS = ("-std=c++17",)

BLOCK = 256
"""Threads per block of the elementwise kernels (grid-stride loops)."""
LINE_BLOCK = 64
"""Threads per block of the kernels giving one thread to a row or a column:
small blocks spread few (hundreds of) columns over more multiprocessors."""
MAX_BLOCKS = 65535
"""Grid cap of the grid-stride kernels (more blocks than this only loop)."""
GEMM_TILE = 64
GEMM_BLOCK = (16, 16, 1)

_DTYPE_SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}
_CTYPES = {"long long": np.int64, "int": np.int32, "float": np.float32,
           "double": np.float64}


# --------------------------------------------------------------- availability --

def available():
    """Whether the CUDA engine can run here.

    Returns
    -------
    ok : bool
    reason : str
        Why not ("CuPy is not installed", "CuPy is installed but no CUDA
        device is visible: ..."), or a description of the device when ``ok``.
    """
    try:
        import cupy
    except ImportError:
        return False, "CuPy is not installed"
    except Exception as exc:  # a broken CuPy install raises other errors
        return False, f"CuPy failed to import: {type(exc).__name__}: {exc}"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return False, ("CuPy is installed but no CUDA device is visible: "
                       f"{type(exc).__name__}: {exc}")
    if count < 1:
        return False, "CuPy is installed but no CUDA device is visible: 0 devices"
    return True, f"CuPy {cupy.__version__}, {count} CUDA device(s)"


def require():
    """Raise ``RuntimeError`` with the reason when CUDA cannot be used."""
    ok, reason = available()
    if not ok:
        raise RuntimeError(f"device 'cuda' is not available: {reason}")


# -------------------------------------------------------------------- sources --

def source_dir():
    """The folder holding the ``.cu`` sources: package data, else the checkout's."""
    here = os.path.dirname(os.path.abspath(__file__))
    for path in (os.path.join(here, "cuda_src"),
                 os.path.join(os.path.dirname(here), "src_kernels")):
        if all(os.path.isfile(os.path.join(path, f)) for f in SOURCE_FILES + (HEADER,)):
            return path
    raise RuntimeError("the CUDA kernel sources were not found (expected "
                       f"gru_cy/cuda_src/ or src_kernels/ holding {', '.join(SOURCE_FILES)})")


@functools.cache
def kernel_sources():
    """dict file name -> text of ``common.cuh`` and every ``.cu`` file."""
    folder = source_dir()
    out = {}
    for name in (HEADER,) + SOURCE_FILES:
        with open(os.path.join(folder, name), encoding="utf-8") as f:
            out[name] = f.read()
    return out


_INCLUDE = re.compile(r'^\s*#include\s+"common\.cuh"\s*$', re.M)


def module_source():
    """All kernels as one translation unit: the header once, then each file."""
    src = kernel_sources()
    parts = [src[HEADER]]
    for name in SOURCE_FILES:
        parts.append(f"// ---- {name}\n" + _INCLUDE.sub("", src[name]))
    return "\n".join(parts)


_ENTRY = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(([^)]*)\)', re.S)


def parse_entry_points(text):
    """The ``extern "C" __global__`` functions of CUDA source text.

    Returns
    -------
    dict
        entry name -> tuple of (C type, parameter name), e.g.
        ``("const float*", "A")`` or ``("long long", "M")``.
    """
    out = {}
    for m in _ENTRY.finditer(text):
        params = []
        for decl in m.group(2).split(","):
            decl = " ".join(decl.split())
            pm = re.match(r"(.*?)\s*(\w+)$", decl)
            ctype, pname = pm.group(1).replace(" *", "*"), pm.group(2)
            params.append((ctype, pname))
        out[m.group(1)] = tuple(params)
    return out


@functools.cache
def entry_points():
    """:func:`parse_entry_points` of every source file, merged."""
    out = {}
    for name in SOURCE_FILES:
        out.update(parse_entry_points(kernel_sources()[name]))
    return out


@functools.cache
def contract_args(name):
    """The contract's argument names of kernel ``name`` (gru_cy.kernels)."""
    return tuple(a.strip() for a in KERNELS[name][0].split(","))


# ------------------------------------------------------------------ geometry --

def _cdiv(a, b):
    return -(-int(a) // b)


# Work items of each kernel: elements (grid-stride, BLOCK threads) or lines
# (rows / columns, one thread each, LINE_BLOCK threads).
_ELEMENTS = {
    "bias_forward": lambda a: a["R"] * a["C"],
    "bn_forward_infer": lambda a: a["R"] * a["C"],
    "gru_darknet_gates_forward": lambda a: a["B"] * a["H"],
    "gru_darknet_state_forward": lambda a: a["B"] * a["H"],
    "gru_reset_after_forward": lambda a: a["B"] * a["H"],
    "gru_darknet_gates_backward": lambda a: a["B"] * a["H"],
    "gru_darknet_reset_backward": lambda a: a["B"] * a["H"],
    "gru_reset_after_backward": lambda a: a["B"] * a["H"],
    "sgd_update": lambda a: a["n"],
    "adam_update": lambda a: a["n"],
    "activation_forward": lambda a: a["n"],
    "activation_backward": lambda a: a["n"],
}
_LINES = {
    "bn_forward_train": lambda a: a["C"],
    "bn_backward": lambda a: a["C"],
    "col_sum": lambda a: a["C"],
    "softmax_forward": lambda a: a["R"],
    "softmax_cross_entropy_backward": lambda a: a["R"],
    "mse_backward": lambda a: a["R"],
}


def launch_geometry(name, args):
    """The grid and block a launcher uses for kernel ``name``.

    Parameters
    ----------
    name : str
        A kernel of ``gru_cy.kernels.KERNEL_NAMES``.
    args : mapping
        The kernel's arguments by contract name; only the sizes are read.

    Returns
    -------
    grid, block : tuple of 3 ints
        ``grid`` has 0 blocks when there is no work (the launch is skipped).
    """
    if name == "gemm":
        M, N = int(args["M"]), int(args["N"])
        if M <= 0 or N <= 0:
            return (0, 1, 1), GEMM_BLOCK
        return (_cdiv(M, GEMM_TILE), _cdiv(N, GEMM_TILE), 1), GEMM_BLOCK
    if name in _ELEMENTS:
        work, block = _ELEMENTS[name](args), BLOCK
    elif name in _LINES:
        work, block = _LINES[name](args), LINE_BLOCK
    else:
        raise ValueError(f"name: expected one of {KERNEL_NAMES}, got {name!r}")
    return (min(max(_cdiv(work, block), 0), MAX_BLOCKS), 1, 1), (block, 1, 1)


# ----------------------------------------------------------------- launching --

@functools.cache
def _cupy():
    """CuPy, once CUDA is known to be usable (RuntimeError otherwise)."""
    require()
    import cupy
    return cupy


@functools.cache
def _module():
    # The entry points are extern "C" (unmangled), so no name_expressions are
    # needed.  CuPy adds -arch for the device current at the first launch;
    # the launchers assume the layer's arrays live on that device.
    cupy = _cupy()
    return cupy.RawModule(code=module_source(), options=NVRTC_OPTIONS)


@functools.cache
def _kernel(name, suffix):
    """(CuPy function, argument converters) of entry ``<name>_<suffix>``."""
    entry = f"{name}_{suffix}"
    convert = []
    for ctype, _ in entry_points()[entry]:
        convert.append(None if ctype.endswith("*") else _CTYPES[ctype])
    return _module().get_function(entry), tuple(convert)


def _pointer(value):
    # A CuPy array passes its data pointer; None is NULL; an int is a device
    # address (the engine's offsets into its buffers).
    if value is None:
        return np.uint64(0)
    if isinstance(value, int):
        return np.uint64(value)
    return value


def _call(name, dtype, args):
    """Launch ``<name>_<f32|f64>`` on ``args`` (contract order)."""
    fn, convert = _kernel(name, _DTYPE_SUFFIX[np.dtype(dtype)])
    grid, block = launch_geometry(name, dict(zip(contract_args(name), args)))
    if grid[0] == 0:
        return
    cargs = tuple(_pointer(v) if c is None else c(v) for c, v in zip(convert, args))
    fn(grid, block, cargs)


def _launch(name, args):
    """Launch kernel ``name``; the element type is the first array's dtype."""
    for a in args:
        if hasattr(a, "__cuda_array_interface__"):
            dtype = a.dtype
            break
    else:
        raise TypeError(f"{name}: expected at least one CuPy array argument")
    if np.dtype(dtype) not in _DTYPE_SUFFIX:
        raise TypeError(f"{name}: expected float32 or float64 arrays, got {dtype}")
    _call(name, dtype, args)


# One launcher per kernel: same name and argument order as the Cython twin
# (gru_cy.kernels), without nthreads.  Pointer arguments are CuPy arrays (their
# data pointer is used, views included), None for NULL, or int device addresses.

def gemm(C, A, B, M, N, K, lda, ldb, ldc, transA, transB, alpha, beta):
    """C (M, N) = alpha * op(A) @ op(B) + beta * C (see gru_cy.kernels)."""
    _launch("gemm", (C, A, B, M, N, K, lda, ldb, ldc, transA, transB, alpha, beta))


def bias_forward(Y, bias, R, C, ldy):
    """Y[r, c] += bias[c]."""
    _launch("bias_forward", (Y, bias, R, C, ldy))


def bn_forward_train(Y, vhat, sd, rolling_mean, rolling_variance, scales, biases, G, B,
                     C, ld):
    """Training batch normalisation over the B rows of each of G groups."""
    _launch("bn_forward_train", (Y, vhat, sd, rolling_mean, rolling_variance, scales,
                                 biases, G, B, C, ld))


def bn_forward_infer(Y, rolling_mean, rolling_variance, scales, biases, R, C, ldy):
    """Inference batch normalisation with the rolling statistics."""
    _launch("bn_forward_infer", (Y, rolling_mean, rolling_variance, scales, biases, R,
                                 C, ldy))


def gru_darknet_gates_forward(z, r, s, xp, hp, hprev, B, H, ldx, ldh):
    """z, r gates and s = r * hprev (variant "darknet")."""
    _launch("gru_darknet_gates_forward", (z, r, s, xp, hp, hprev, B, H, ldx, ldh))


def gru_darknet_state_forward(c, h, xp, hp, z, hprev, B, H, ldx, ldh, act):
    """Candidate c and new state h (variant "darknet")."""
    _launch("gru_darknet_state_forward", (c, h, xp, hp, z, hprev, B, H, ldx, ldh, act))


def gru_reset_after_forward(z, r, q, c, h, xp, hp, hprev, B, H, ldx, ldh, act):
    """One step's gates, candidate and state (variant "reset_after")."""
    _launch("gru_reset_after_forward", (z, r, q, c, h, xp, hp, hprev, B, H, ldx, ldh,
                                        act))


def gru_darknet_gates_backward(dau, daw, dh, dy, z, c, hprev, B, H, ldd, act):
    """daz, dah and dh = g*z (variant "darknet")."""
    _launch("gru_darknet_gates_backward", (dau, daw, dh, dy, z, c, hprev, B, H, ldd,
                                           act))


def gru_darknet_reset_backward(dau, daw, dh, ds, r, hprev, B, H, ldd):
    """dar and dh += ds*r (variant "darknet")."""
    _launch("gru_darknet_reset_backward", (dau, daw, dh, ds, r, hprev, B, H, ldd))


def gru_reset_after_backward(dau, daw, dh, dy, z, r, q, c, hprev, B, H, ldd, act):
    """One step's gate gradients (variant "reset_after")."""
    _launch("gru_reset_after_backward", (dau, daw, dh, dy, z, r, q, c, hprev, B, H, ldd,
                                         act))


def bn_backward(dY, dscales, dbiases, vhat, sd, scales, G, B, C, ld):
    """Batch-normalisation backward; dscales, dbiases accumulate."""
    _launch("bn_backward", (dY, dscales, dbiases, vhat, sd, scales, G, B, C, ld))


def col_sum(out, A, R, C, lda):
    """out[c] += sum_r A[r, c]."""
    _launch("col_sum", (out, A, R, C, lda))


def sgd_update(w, u, g, n, n_decay, lr, momentum, decay, batch, clip):
    """Darknet's SGD step in place; zeroes g."""
    _launch("sgd_update", (w, u, g, n, n_decay, lr, momentum, decay, batch, clip))


def adam_update(w, m, v, g, n, lr, b1, b2, eps, decay, batch, t, clip):
    """Darknet's Adam step in place; zeroes g."""
    _launch("adam_update", (w, m, v, g, n, lr, b1, b2, eps, decay, batch, t, clip))


def activation_forward(Y, n, act):
    """Y = act(Y) in place."""
    _launch("activation_forward", (Y, n, act))


def activation_backward(dY, Y, n, act):
    """dY *= act'(x) through Y = act(x)."""
    _launch("activation_backward", (dY, Y, n, act))


def softmax_forward(P, X, R, C, ldx):
    """P = row-wise softmax of X."""
    _launch("softmax_forward", (P, X, R, C, ldx))


def softmax_cross_entropy_backward(dX, loss, P, target, R, C, scale):
    """dX = scale*(P - target); loss per row."""
    _launch("softmax_cross_entropy_backward", (dX, loss, P, target, R, C, scale))


def mse_backward(dX, loss, Y, target, R, C, scale):
    """dX = scale*(Y - target); loss per row."""
    _launch("mse_backward", (dX, loss, Y, target, R, C, scale))


# -------------------------------------------------------------------- engine --

@functools.cache
def _pointer_type(itemsize):
    class Ptr(int):
        """A device address; ``p + n`` is ``n`` elements further (as in C)."""
        __slots__ = ()

        def __add__(self, n):
            return Ptr(int(self) + n * itemsize)

    return Ptr


def _address(a):
    return a.data.ptr


def _ptr(a):
    """The element-stepping device address of CuPy array ``a``; None for None."""
    if a is None:
        return None
    return _pointer_type(a.itemsize)(_address(a))


from gru_cy._cpu.gru import ROWS_PER_CHUNK as CHUNK_ROWS  # noqa: E402
"""Rows (steps x batch) per chunk of the input projection and of the gradient
buffers: ``CHUNK_ROWS`` of ``gru_cy._cpu.gru``, so both engines chunk alike."""


def chunk_steps(T, B):
    """Steps per chunk (as ``gru_cy._cpu.gru.chunk_steps``)."""
    return min(max(CHUNK_ROWS // B, 1), T)


class Engine:
    """One layer's GPU storage and caches: the CUDA twin of ``gru_cy._cpu.gru.Engine``.

    Same constructor, attributes (``cache``, ``cache_T``, ``cache_B``) and
    methods; arrays are C-contiguous CuPy arrays of the engine's dtype, of
    sizes the layer validated (this class does no validation).  The forward
    and backward issue the same kernel calls, in the same order and on the
    same buffer offsets, as the Cython drivers ``_forward`` / ``_backward`` /
    ``_backward_chunk``.  Storage layout as there: ``theta`` = U (3H, I) rows
    [uz; ur; uh], W (3H, H) rows [wz; wr; wh], biases (6, H), then with BN
    scales (6, H); ``rolling`` (2, 6H).  ``use_blas`` is accepted and ignored:
    the GPU always runs the engine's own gemm.
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
        self.cache_T = 0
        self.cache_B = 0

    def set_storage(self, theta, grad, rolling):
        self.theta = theta
        self.grad = grad
        self.rolling = rolling

    def invalidate(self):
        """Drop the training cache (backward then needs a new training forward)."""
        self.cache = None
        self.cache_T = 0
        self.cache_B = 0

    def _k(self, name, *args):
        _call(name, self.dtype, args)

    def _scratch(self, T, B):
        # Per-shape scratch: xp chunk (inference and training), step buffers
        # (inference), zero state.
        w = self.work
        if w is not None and w["T"] == T and w["B"] == B:
            return w
        cupy = _cupy()
        H, dt = self.outputs, self.dtype
        w = {k: cupy.zeros(shape, dt)
             for k, shape in scratch_shapes(chunk_steps(T, B) * B, B, H).items()}
        w["T"] = T
        w["B"] = B
        self.work = w
        return w

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
        cupy = _cupy()
        T, B, H, dt = x.shape[0], x.shape[1], self.outputs, self.dtype
        w = self._scratch(T, B)
        self.invalidate()
        if train:
            cache = {k: cupy.empty(shape, dt)
                     for k, shape in cache_shapes(T, B, H, self.bn).items()}
            cache["x"] = x
            hs = cache["hs"]
            if h0 is None:
                hs[0] = 0
            else:
                hs[0] = h0
            p_h0 = _ptr(hs)
            p_y = p_h0 + B * H
        else:
            cache = w
            p_h0 = _ptr(w["zeros"] if h0 is None else h0)
            p_y = _ptr(y)
        self._forward(T, B, train, _ptr(x), p_h0, p_y, w, cache)
        if train:
            y[...] = hs[1:]
            self.cache = cache
            self.cache_T = T
            self.cache_B = B
        return y[T - 1].copy()

    def _forward(self, T, B, train, x, h0, y, w, cache):
        # Mirrors gru_cy._cpu.gru._forward call for call.
        I, H, H3, act, bn = self.inputs, self.outputs, 3 * self.outputs, self.act, self.bn
        k = self._k
        cs = chunk_steps(T, B)
        U = _ptr(self.theta)
        W = U + H3 * I
        bias = W + H3 * H
        scales = bias + 6 * H
        rmean = _ptr(self.rolling)
        rvar = rmean + 6 * H
        xp, hp = _ptr(w["xp"]), _ptr(w["hp"])
        z, r, c, sq = (_ptr(cache[key]) for key in ("z", "r", "c", "sq"))
        vu, su = _ptr(cache.get("vu")), _ptr(cache.get("su"))
        vw_all, sw_all = _ptr(cache.get("vw")), _ptr(cache.get("sw"))
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
        """dy (T, B, H) or None, dstate (B, H) or None; writes dx (T, B, I), dh0 (B, H).

        Parameter gradients accumulate into ``grad``.  The gradient buffers
        hold one chunk of steps; for the darknet variant without BN the u and
        w sublayers' gradients are equal and share one buffer.  ``nthreads``
        is ignored.
        """
        cupy = _cupy()
        T, B, H, dt = self.cache_T, self.cache_B, self.outputs, self.dtype
        if dstate is None:
            dh0[...] = 0
        else:
            dh0[...] = dstate
        rows = chunk_steps(T, B) * B
        dau = cupy.empty((rows, 3 * H), dt)
        daw = dau if (not self.reset_after and not self.bn) else cupy.empty((rows, 3 * H), dt)
        ds = cupy.empty((B, H), dt)
        self._backward(T, B, self.cache, _ptr(dy), _ptr(dx), _ptr(dh0), _ptr(dau),
                       _ptr(daw), _ptr(ds))

    def _backward(self, T, B, cache, dy, dx, dh, dau, daw, ds):
        # Mirrors gru_cy._cpu.gru._backward call for call.
        I, H, H3, act, bn = self.inputs, self.outputs, 3 * self.outputs, self.act, self.bn
        k = self._k
        cs = chunk_steps(T, B)
        W = _ptr(self.theta) + H3 * I
        scales = W + H3 * H + 6 * H
        dbias = _ptr(self.grad) + H3 * I + H3 * H
        dscales = dbias + 6 * H
        hs = _ptr(cache["hs"])                  # (T+1, B, H): h0, then y
        z, r, c, sq = (_ptr(cache[key]) for key in ("z", "r", "c", "sq"))
        vw_all, sw_all = _ptr(cache.get("vw")), _ptr(cache.get("sw"))
        for t in range(T - 1, -1, -1):
            t0 = (t // cs) * cs
            nc = cs if t0 + cs <= T else T - t0
            hprev = hs + t * B * H
            dyt = None if dy is None else dy + t * B * H
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
        # Mirrors gru_cy._cpu.gru._backward_chunk: the per-chunk tail of the
        # backward, steps [t0, t0 + nc); dau, daw hold their gradients (rows from 0).
        I, H, H3 = self.inputs, self.outputs, 3 * self.outputs
        k = self._k
        R = nc * B
        U = _ptr(self.theta)
        scales = U + H3 * I + H3 * H + 6 * H
        dU = _ptr(self.grad)
        dW = dU + H3 * I
        dbias = dW + H3 * H
        dscales = dbias + 6 * H
        hs = _ptr(cache["hs"]) + t0 * B * H     # h_{t-1} of the chunk
        x = _ptr(cache["x"])
        # u sublayers: BN (one group per step) or bias.
        if self.bn:
            k("bn_backward", dau, dscales, dbias, _ptr(cache["vu"]) + t0 * B * H3,
              _ptr(cache["su"]) + t0 * H3, scales, nc, B, H3, H3)
        else:
            k("col_sum", dbias, dau, R, H3, H3)
            k("col_sum", dbias + H3, daw, R, H3, H3)
        # xp = x @ U.T  ->  dx = dau @ U;  dU += dau.T @ x
        k("gemm", dx + t0 * B * I, dau, U, R, I, H3, H3, I, I, 0, 0, 1, 0)
        k("gemm", dU, dau, x + t0 * B * I, H3, I, R, H3, I, I, 1, 0, 1, 1)
        if not self.reset_after:
            # dWz, dWr += daw_{z,r}.T @ hprev;  dWh += daw_h.T @ s
            k("gemm", dW, daw, hs, 2 * H, H, R, H3, H, H, 1, 0, 1, 1)
            k("gemm", dW + 2 * H * H, daw + 2 * H, _ptr(cache["sq"]) + t0 * B * H, H, H, R,
              H3, H, H, 1, 0, 1, 1)
        else:
            # dW += daw.T @ hprev
            k("gemm", dW, daw, hs, H3, H, R, H3, H, H, 1, 0, 1, 1)


class _CudaBackend:
    """What gru_cy.layer needs of a device: array module, engine, updates."""

    name = "cuda"

    def __init__(self):
        self.xp = _cupy()
        self.Engine = Engine

    def lean_input(self, x, dtype, inputs):
        """True when x is a C-contiguous CuPy array (T > 0, B > 0, inputs) of dtype."""
        if type(x) is not self.xp.ndarray:
            return False
        shape = x.shape
        return (len(shape) == 3 and x.dtype == dtype and shape[2] == inputs
                and shape[0] > 0 and shape[1] > 0 and x.flags.c_contiguous)

    # The CPU backend's signatures (trailing nthreads, ignored here).
    @staticmethod
    def sgd_update(w, u, g, n, n_decay, lr, momentum, decay, batch, clip, nthreads=1):
        _call("sgd_update", w.dtype, (w, u, g, n, n_decay, lr, momentum, decay, batch, clip))

    @staticmethod
    def adam_update(w, m, v, g, n, lr, b1, b2, eps, decay, batch, t, clip, nthreads=1):
        _call("adam_update", w.dtype,
              (w, m, v, g, n, lr, b1, b2, eps, decay, batch, t, clip))

    @staticmethod
    def max_threads():
        return 1


_BACKEND = None


def backend():
    """The CUDA backend; ``RuntimeError`` saying why when CUDA is unavailable."""
    global _BACKEND
    if _BACKEND is None:
        _BACKEND = _CudaBackend()
    return _BACKEND
