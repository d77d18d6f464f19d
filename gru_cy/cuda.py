"""CuPy loading of ``src_kernels/*.cu`` and one launcher per kernel.

The kernels are the CUDA twins of the Cython engine's (``gru_cy.kernels``
lists them with their contracts).  Each ``<name>`` below launches
``<name>_f32`` or ``<name>_f64`` with the arguments of the Cython twin in the
same order, minus ``nthreads``: the launcher chooses the grid itself
(:func:`launch_geometry`).  The CUDA backend (``gru_cy.backends.cuda``) runs
the GRU engine and the network pieces on these launchers.

CuPy is optional: nothing here imports it before a function needs it, and
:func:`available` says why CUDA cannot be used.  The sources are compiled
through NVRTC once per process (``cupy.RawModule``); they are read from the
installed package data (``gru_cy/cuda_src``) or, in a source checkout, from
``<repo>/src_kernels``.  This module imports nothing compiled.
"""
import functools
import os
import re

import numpy as np

from gru_cy.kernels import KERNEL_NAMES, KERNELS

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
    "sgd_check": lambda a: a["n"],
    "adam_check": lambda a: a["n"],
    "activation_forward": lambda a: a["n"],
    "activation_backward": lambda a: a["n"],
    "seq_gather": lambda a: a["R"] * a["C"],
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


def sgd_check(out, w, u, g, n, n_decay, lr, momentum, decay, batch, clip):
    """out[0] += the elements sgd_update would leave non-finite."""
    _launch("sgd_check", (out, w, u, g, n, n_decay, lr, momentum, decay, batch, clip))


def adam_check(out, w, m, v, g, n, lr, b1, b2, eps, decay, batch, t, clip):
    """out[0] += the elements adam_update would leave non-finite."""
    _launch("adam_check", (out, w, m, v, g, n, lr, b1, b2, eps, decay, batch, t, clip))


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


def seq_gather(Y, X, rows, R, C, ldy, ldx):
    """Y[i, :C] = X[rows[i], :C] where rows[i] >= 0, else 0 (rows: int64)."""
    _launch("seq_gather", (Y, X, rows, R, C, ldy, ldx))


# ---------------------------------------------------------- device addresses --

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
