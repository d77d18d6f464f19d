"""Argument checks: the one place that raises for bad input.

Every message names the argument, the expected and the received value.
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


def num_threads(value):
    """None (ask OpenMP on every call) or a positive integer."""
    if value is None:
        return None
    return positive_int("num_threads", value)


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


def array(name, a, dtype, shape, xp=np):
    """Return ``a`` as a C-contiguous array of ``dtype`` and the given shape.

    ``shape`` is a tuple of ints or None (any positive size); its length fixes
    ndim.  Float input of another precision is converted; integer, bool,
    complex and object input is a TypeError; a size 0 is a ValueError.
    Read-only and non-contiguous input is copied.
    """
    if a is None:
        raise TypeError(f"{name}: expected an array, got None")
    if xp is np:
        if not isinstance(a, np.ndarray):
            if hasattr(a, "__cuda_array_interface__") and hasattr(a, "get"):
                a = a.get()
            else:
                a = np.asarray(a)
    elif not isinstance(a, xp.ndarray):
        a = xp.asarray(np.asarray(a) if not hasattr(a, "__cuda_array_interface__") else a)
    if a.dtype.kind != "f":
        raise _kind_error(name, a)
    if a.ndim != len(shape):
        names = {2: "(B, H)", 3: "(T, B, features)"}
        raise ValueError(f"{name}: expected {len(shape)} dimensions "
                         f"{names.get(len(shape), '')}, got {a.ndim} (shape {a.shape})")
    for axis, (want, got) in enumerate(zip(shape, a.shape)):
        if got == 0:
            raise ValueError(f"{name}: expected a non-empty axis {axis}, got shape {a.shape}")
        if want is not None and want != got:
            raise ValueError(f"{name}: expected shape {_fmt(shape)}, got {tuple(a.shape)}")
    if a.dtype != dtype or not a.flags.c_contiguous:
        a = xp.ascontiguousarray(a, dtype=dtype)
    return a


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
