"""Argument checks shared by the public classes and the commands.

The public classes check their arguments here (or, for checks of their own,
in the same words) before anything is allocated; below them nothing raises
for bad input.  Every message names the argument, the expected and the
received value.
"""
import argparse
import math
import numbers

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def choice(name, value, choices):
    """Return ``value`` if it is one of ``choices``, else raise ValueError."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name}: expected one of {', '.join(map(repr, choices))}, "
                         f"got {value!r}")
    return value


def positive_int(name, value):
    """A positive Python/NumPy integer (bool rejected)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected a positive integer, got {value!r} "
                        f"of type {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name}: expected a positive integer, got {value}")
    return int(value)


def float_dtype(value):
    """np.float32 or np.float64 (anything np.dtype understands), else TypeError."""
    try:
        dt = np.dtype(value)
    except TypeError:
        raise TypeError(f"dtype: expected float32 or float64, got {value!r}") from None
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"dtype: expected float32 or float64, got {dt}")
    return dt


MAX_SIZE = 2 ** 31 - 1
"""The largest size (inputs, outputs, batch, steps) the engines take: C ints
index their products."""

MAX_THREADS = 4096
"""The most threads a call may ask for (OpenMP then uses what the machine has)."""


def num_threads(value):
    """None (ask OpenMP on every call) or a positive integer up to MAX_THREADS."""
    if value is None:
        return None
    n = positive_int("num_threads", value)
    if n > MAX_THREADS:
        raise ValueError(f"num_threads: expected at most {MAX_THREADS}, got {n}")
    return n


def size(name, value):
    """A positive integer size up to MAX_SIZE."""
    n = positive_int(name, value)
    if n > MAX_SIZE:
        raise ValueError(f"{name}: expected at most {MAX_SIZE}, got {n}")
    return n


def available_memory():
    """Bytes of memory available to a new allocation (Linux: MemAvailable), or
    None where the system does not say."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import os
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def memory(name, nbytes, what):
    """ValueError naming ``name`` where ``nbytes`` (``what`` needs them) exceed the
    available memory; checked before anything is allocated."""
    have = available_memory()
    if have is not None and nbytes > have:
        raise ValueError(f"{name}: {what} would need {nbytes / 2**30:.3g} GiB, more than "
                         f"the {have / 2**30:.3g} GiB of memory available")


def hyper(name, value, *, low=0.0, high=math.inf, low_open=False, high_open=False):
    """A finite real hyper-parameter in the interval [low, high] (open ends optional)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {value!r} "
                        f"of type {type(value).__name__}")
    v = float(value)
    lo = "(" if low_open else "["
    hi = ")" if high_open else "]"
    bad = (not math.isfinite(v) or v < low or v > high
           or (low_open and v == low) or (high_open and v == high))
    if bad:
        raise ValueError(f"{name}: expected a finite number in {lo}{low}, {high}{hi}, "
                         f"got {value!r}")
    return v


def _kind_error(name, arr):
    return TypeError(f"{name}: expected a floating-point array, got dtype {arr.dtype}")


def array(name, a, dtype, shape, backend=None):
    """Return ``a`` as a C-contiguous array of ``backend`` (default the CPU's),
    of ``dtype`` and the given shape.

    ``shape`` is a tuple of ints, axis names (str: any positive size, named in
    messages) or None (any positive size); its length fixes ndim.  Float input
    of another precision is converted; integer, bool, complex and object input
    is a TypeError; a size 0 is a ValueError.  Non-contiguous input is copied
    (read-only input is used as it is: the kernels only read their inputs);
    NumPy, CuPy and torch arrays move to the backend's device.
    """
    if a is None:
        raise TypeError(f"{name}: expected an array, got None")
    if backend is None:
        from gru_cy import backends
        backend = backends.get("cpu")
    a = backend.asarray(a)
    if a.dtype.kind != "f":
        raise _kind_error(name, a)
    if a.ndim != len(shape):
        names = {2: "(B, H)", 3: "(T, B, features)"}
        raise ValueError(f"{name}: expected {len(shape)} dimensions "
                         f"{names.get(len(shape), '')}, got {a.ndim} (shape {a.shape})")
    for axis, (want, got) in enumerate(zip(shape, a.shape)):
        if got == 0:
            raise ValueError(f"{name}: expected a non-empty axis {axis}, got shape {a.shape}")
        if isinstance(want, int) and want != got:
            raise ValueError(f"{name}: expected shape {_fmt(shape)}, got {tuple(a.shape)}")
    if a.dtype != dtype or not a.flags.c_contiguous:
        a = backend.xp.ascontiguousarray(a, dtype=dtype)
    return a


def lengths(value, B, T):
    """Sequence lengths: a (B,) integer array-like (NumPy, CuPy, torch, list)
    with 1 <= lengths[b] <= T, as a host int64 array; None stays None."""
    if value is None:
        return None
    from gru_cy.backends.base import to_host
    try:
        arr = to_host(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"lengths: expected a ({B},) integer array, got "
                        f"{type(value).__name__} ({exc})") from None
    if arr.dtype == bool or arr.dtype.kind not in "iu":
        raise TypeError(f"lengths: expected a ({B},) integer array, got dtype {arr.dtype}")
    if arr.shape != (B,):
        raise ValueError(f"lengths: expected shape ({B},) (one length per sequence of "
                         f"the batch), got {arr.shape}")
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 1 or hi > T:
        bad = lo if lo < 1 else hi
        b = int(np.flatnonzero(arr == bad)[0])
        raise ValueError(f"lengths: expected integers in [1, T = {T}], got "
                         f"lengths[{b}] = {bad}")
    return np.array(arr, dtype=np.int64, copy=True)   # never the caller's (it may edit it)


def update_args(learning_rate, momentum, decay, batch, b1, b2, eps, clip, rows):
    """The hyper-parameters of ``update()``, checked (SPEC "Update").

    ``batch`` None is ``rows`` (the rows seen since the last update), which
    must then be positive.  ``clip`` None is 0 (no clipping).

    Returns
    -------
    dict
        ``learning_rate, momentum, decay, batch, b1, b2, eps, clip`` as floats.
    """
    out = {"learning_rate": hyper("learning_rate", learning_rate),
           "momentum": hyper("momentum", momentum),
           "decay": hyper("decay", decay),
           "b1": hyper("b1", b1, high=1.0, high_open=True),
           "b2": hyper("b2", b2, high=1.0, high_open=True),
           "eps": hyper("eps", eps, low_open=True),
           "clip": 0.0 if clip is None else hyper("clip", clip, low_open=True)}
    if batch is None:
        if rows == 0:
            raise ValueError("batch: expected a positive number of rows; none were "
                             "seen since the last update (pass batch= explicitly)")
        out["batch"] = float(rows)
    else:
        out["batch"] = hyper("batch", batch, low_open=True)
    return out


def _fmt(shape):
    return "(" + ", ".join("any" if s is None else str(s) for s in shape) + ")"


def cli_number(kind, *, positive=True):
    """An argparse ``type``: a finite ``kind`` (int or float), > 0 or (positive=False) >= 0."""
    what = ("positive " if positive else "non-negative ") + (
        "integer" if kind is int else "number")

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {what}, got {text!r}") from None
        if not math.isfinite(value) or value < 0 or (positive and value == 0):
            raise argparse.ArgumentTypeError(f"expected a {what}, got {text!r}")
        return value

    parse.__name__ = what.replace(" ", "_")
    return parse


# The argparse types of the commands (gru-cy train, gradcheck, bench).
def _cli_bounded(limit):
    base = cli_number(int)

    def parse(text):
        value = base(text)
        if value > limit:
            raise argparse.ArgumentTypeError(f"expected at most {limit}, got {text!r}")
        return value
    return parse


POSITIVE_INT = cli_number(int)
THREADS = _cli_bounded(MAX_THREADS)
"""argparse type of --threads: 1 .. MAX_THREADS."""
NONNEGATIVE_INT = cli_number(int, positive=False)
POSITIVE_FLOAT = cli_number(float)
NONNEGATIVE_FLOAT = cli_number(float, positive=False)
