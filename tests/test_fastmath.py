"""The float32 logistic and tanh of the CPU engine (gru_cy/_cpu/fastmath.h)
against float64 NumPy, and the row kernels that use them (gru_cy/_cpu/rows.h):
the contract's formulas, dy = None, dau == daw, odd row lengths and thread
counts."""
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from tolerances import tol

cell = pytest.importorskip("gru_cy._cpu.cell", reason="the Cython engine is not built")

F32 = np.finfo(np.float32)
TINY = float(F32.tiny)          # FLT_MIN, the smallest normal float32
BIG = [1e30, float(F32.max), np.inf]

# Error bounds against the exact value, for every finite float32 x, absolute
# and (where the exact result is a normal number) relative: tolerances.py's
# "fastmath_abs" and "fastmath_rel".
ABS_BOUND = tol(np.float32, "fastmath_abs")
REL_BOUND = tol(np.float32, "fastmath_rel")


def _ulps_around(points, k=40):
    """float32 values within k ulps of +-each point."""
    pts = np.asarray(points, dtype=np.float32)
    out = [pts]
    lo, hi = pts.copy(), pts.copy()
    for _ in range(k):
        lo = np.nextafter(lo, np.float32(-np.inf))
        hi = np.nextafter(hi, np.float32(np.inf))
        out += [lo, hi]
    x = np.concatenate(out)
    return np.concatenate([x, -x])


def _sweep():
    """Dense finite float32 inputs: a fine grid, every binade, the seams."""
    grid = np.linspace(-100, 100, 2_000_001, dtype=np.float32)        # step 1e-4
    bits = np.arange(0, 2**32, 4099, dtype=np.uint64).astype(np.uint32).view(np.float32)
    mags = np.geomspace(1e-45, 1e38, 100_001).astype(np.float32)
    seams = _ulps_around([0.0, TINY, 1e-4, 0.1, 0.2, 0.25, 0.3125, 0.4, 0.5, 0.625,
                          1.0, 9.0, 9.01, 20.0, 43.67, 87.0, 87.33655, 88.0, 103.0])
    x = np.concatenate([grid, bits, mags, -mags, seams])
    return x[np.isfinite(x)]


def logistic_ref(x):
    x = x.astype(np.float64)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def tanh_ref(x):
    return np.tanh(x.astype(np.float64))


@pytest.fixture(scope="module")
def sweep():
    return _sweep()


@pytest.mark.parametrize("name", ["logistic", "tanh"])
def test_absolute_error_bound(sweep, name):
    fast, ref = (cell.fast_logistic_f32, logistic_ref) if name == "logistic" \
        else (cell.fast_tanh_f32, tanh_ref)
    y = fast(sweep)
    assert y.dtype == np.float32 and y.shape == sweep.shape
    assert_allclose(y.astype(np.float64), ref(sweep), **ABS_BOUND)


@pytest.mark.parametrize("name", ["logistic", "tanh"])
def test_relative_error_bound_on_normal_results(sweep, name):
    fast, ref = (cell.fast_logistic_f32, logistic_ref) if name == "logistic" \
        else (cell.fast_tanh_f32, tanh_ref)
    want = ref(sweep)
    keep = np.abs(want) >= TINY
    y = fast(sweep[keep]).astype(np.float64)
    assert_allclose(y, want[keep], **REL_BOUND)


def test_logistic_special_values():
    x = np.array([0.0, -0.0, 1e-45, -1e-45, 88.0, -88.0, -103.0] + BIG
                 + [-v for v in BIG], dtype=np.float32)
    # logistic(-88) = 6.1e-39 and logistic(-103) = 1.4e-45 lie below FLT_MIN:
    # flushed to 0 (documented in fastmath.h).
    want = np.array([0.5, 0.5, 0.5, 0.5, 1.0, 0.0, 0.0] + [1.0] * 3 + [0.0] * 3,
                    dtype=np.float32)
    assert_array_equal(cell.fast_logistic_f32(x), want)
    assert np.isnan(cell.fast_logistic_f32(np.array([np.nan, -np.nan], np.float32))).all()


def test_tanh_special_values():
    x = np.array([9.1, 20.0, 88.0] + BIG, dtype=np.float32)
    assert_array_equal(cell.fast_tanh_f32(x), np.ones_like(x))
    assert_array_equal(cell.fast_tanh_f32(-x), -np.ones_like(x))
    assert np.isnan(cell.fast_tanh_f32(np.array([np.nan, -np.nan], np.float32))).all()
    zeros = cell.fast_tanh_f32(np.array([0.0, -0.0], np.float32))
    assert_array_equal(np.signbit(zeros), [False, True])
    # |x| < 2^-12: tanh(x) = x(1 - x^2/3 + ...) rounds to x itself.
    tiny = np.geomspace(1e-45, 2.0**-12, 2001).astype(np.float32)
    assert_array_equal(cell.fast_tanh_f32(tiny), tiny)
    assert_array_equal(cell.fast_tanh_f32(-tiny), -tiny)


def test_tanh_is_exactly_odd(sweep):
    assert_array_equal(cell.fast_tanh_f32(-sweep), -cell.fast_tanh_f32(sweep))


# ------------------------------------------------------------ row kernels ---

def _act(x, act):
    return np.tanh(x) if act == 1 else logistic_ref(x)


def _act_grad(y, act):
    return (1 - y * y) if act == 1 else y * (1 - y)


def _case(dtype, B, H, seed):
    rng = np.random.default_rng(seed)
    H3 = 3 * H

    def f(*shape, scale=2.0):
        return (rng.standard_normal(shape) * scale).astype(dtype)

    return dict(
        xp=f(B, H3), hp=f(B, H3), hprev=f(B, H, scale=1.0),
        z=rng.uniform(0, 1, (B, H)).astype(dtype), r=rng.uniform(0, 1, (B, H)).astype(dtype),
        c=rng.uniform(-1, 1, (B, H)).astype(dtype), q=f(B, H), ds=f(B, H),
        dy=f(B, H), dh=f(B, H))


def _run(name, a, act, shared=False, nthreads=1):
    """Run one row kernel on copies of case a; return its outputs (float64).

    The wrappers take flat arrays: ``f(m)[k:]`` stands for a pointer k elements
    into the (B, 3H) matrix m (a column block of its rows)."""
    B, H = a["hprev"].shape
    H3, dt = 3 * H, a["hprev"].dtype
    o = [np.full((B, H), 7, dt) for _ in range(5)]
    dau = np.full((B, H3), 7, dt)
    daw = dau if shared else np.full((B, H3), 7, dt)
    dh = a["dh"].copy()
    f = {k: v.reshape(-1) for k, v in a.items()}
    of = [v.reshape(-1) for v in o]
    fu, fw = dau.reshape(-1), daw.reshape(-1)
    if name == "darknet_gates_forward":
        cell.py_gru_darknet_gates_forward(of[0], of[1], of[2], f["xp"], f["hp"], f["hprev"],
                                          B, H, H3, H3, nthreads)
        out = o[:3]
    elif name == "darknet_state_forward":
        cell.py_gru_darknet_state_forward(of[0], of[1], f["xp"][2 * H:], f["hp"][2 * H:],
                                          f["z"], f["hprev"], B, H, H3, H3, act, nthreads)
        out = o[:2]
    elif name == "reset_after_forward":
        cell.py_gru_reset_after_forward(*of, f["xp"], f["hp"], f["hprev"], B, H, H3, H3,
                                        act, nthreads)
        out = o
    elif name == "darknet_gates_backward":
        cell.py_gru_darknet_gates_backward(fu, fw, dh.reshape(-1), f["dy"], f["z"], f["c"],
                                           f["hprev"], B, H, H3, act, nthreads)
        out = [dau, daw, dh]
    elif name == "darknet_reset_backward":
        cell.py_gru_darknet_reset_backward(fu[H:], fw[H:], dh.reshape(-1), f["ds"], f["r"],
                                           f["hprev"], B, H, H3, nthreads)
        out = [dau, daw, dh]
    else:
        cell.py_gru_reset_after_backward(fu, fw, dh.reshape(-1), f["dy"], f["z"], f["r"],
                                         f["q"], f["c"], f["hprev"], B, H, H3, act, nthreads)
        out = [dau, daw, dh]
    return [v.astype(np.float64) for v in out]


def _expected(name, a, act, shared=False):
    """The contract (gru_cy/kernels.py) in float64 NumPy; 7 marks unwritten."""
    a = {k: v.astype(np.float64) for k, v in a.items()}
    B, H = a["hprev"].shape
    xz, xr, xh = np.split(a["xp"], 3, axis=1)
    hz, hr, hh = np.split(a["hp"], 3, axis=1)
    seven = np.full((B, H), 7.0)
    if name == "darknet_gates_forward":
        r = logistic_ref(xr + hr)
        return [logistic_ref(xz + hz), r, r * a["hprev"]]
    if name == "darknet_state_forward":
        c = _act(xh + hh, act)
        return [c, a["z"] * a["hprev"] + (1 - a["z"]) * c]
    if name == "reset_after_forward":
        z, r = logistic_ref(xz + hz), logistic_ref(xr + hr)
        c = _act(xh + r * hh, act)
        return [z, r, hh, c, z * a["hprev"] + (1 - z) * c]
    if name == "darknet_reset_backward":
        r = a["r"]
        dar = a["ds"] * a["hprev"] * r * (1 - r)
        d = np.hstack([seven, dar, seven])
        return [d, d, a["dh"] + a["ds"] * r]
    z, c = a["z"], a["c"]
    g = a["dh"] + a["dy"]
    daz = g * (a["hprev"] - c) * z * (1 - z)
    dah = g * (1 - z) * _act_grad(c, act)
    if name == "darknet_gates_backward":
        d = np.hstack([daz, seven, dah])
        return [d, d, g * z]
    r = a["r"]
    dar = dah * a["q"] * r * (1 - r)
    dau, daw = np.hstack([daz, dar, dah]), np.hstack([daz, dar, dah * r])
    return [daw, daw, g * z] if shared else [dau, daw, g * z]


KERNELS = ["darknet_gates_forward", "darknet_state_forward", "reset_after_forward",
           "darknet_gates_backward", "darknet_reset_backward", "reset_after_backward"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("H", [1, 5, 17, 40])
@pytest.mark.parametrize("name", KERNELS)
def test_row_kernels_follow_the_contract(name, H, dtype):
    # H not a multiple of the vector width: the loops' remainders.
    a = _case(dtype, 3, H, seed=H)
    for act in (0, 1):
        for shared in (False, True):
            if shared and "backward" not in name:
                continue
            got = _run(name, a, act, shared)
            want = _expected(name, a, act, shared)
            for i, (g, w) in enumerate(zip(got, want)):
                assert_allclose(g, w, **tol(dtype, "row"),
                                err_msg=f"{name} act={act} shared={shared} output {i}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", KERNELS)
def test_row_kernels_do_not_depend_on_the_thread_count(name, dtype):
    # B*H = 32768 reaches PAR_MIN_WORK, so nthreads > 1 runs a team.
    a = _case(dtype, 64, 512, seed=3)
    base = _run(name, a, act=1)
    for nt in (2, 3):
        for b, o in zip(base, _run(name, a, act=1, nthreads=nt)):
            assert_array_equal(o, b)
