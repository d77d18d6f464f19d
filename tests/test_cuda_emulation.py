"""The CUDA kernels, run without a GPU: src_kernels/*.cu compiled by g++ through
tests/cuda_emulation/cuda_shim.h (real threads per block, a barrier for
__syncthreads, shared memory per block), launched with gru_cy.cuda's geometry.

Every kernel of gru_cy.kernels runs on small odd shapes (B=3, H=5, T=4, 13
columns in rows of stride 16, gemm 13x17x19 and 70x67x35 in every transpose)
and is compared with two oracles: a NumPy float64 rendering of the contract
(below) and the Cython engine's test wrapper ``py_<name>`` (when built).  All
buffers are compared after the call, including padding and the parts a kernel
must not touch.
"""
import os
import tempfile

import numpy as np
import pytest
from numpy.lib.stride_tricks import as_strided
from numpy.testing import assert_allclose

from gru_cy.kernels import ACTIVATIONS, BN_EPS, BN_MOMENTUM, KERNEL_NAMES

from cuda_emulation import emu

try:
    from gru_cy._cpu import CPU_KERNELS, cpu_kernel
except ImportError:  # the Cython engine is not built
    CPU_KERNELS, cpu_kernel = (), None

# One tolerance table keyed by dtype.  float64: both sides evaluate the same
# formulas, differing only in summation order (gemm, <= 35 terms of O(1)) and
# libm vs. CUDA-math rounding: a few ulp, far below 1e-12.  float32: the CPU
# twin and NumPy evaluate some formulas in double and round once; the kernels
# sum up to 35 float32 products: |error| <~ 35 * 6e-8 * O(1) = 2e-6.
TOL = {np.dtype(np.float64): dict(rtol=1e-12, atol=1e-12),
       np.dtype(np.float32): dict(rtol=2e-5, atol=2e-5)}
DTYPES = (np.float32, np.float64)
B, H, T = 3, 5, 4
H3 = 3 * H


@pytest.fixture(scope="session")
def emulator():
    reason = emu.compiler_missing()
    if reason:
        pytest.skip(reason)
    path = emu.build(os.path.join(tempfile.gettempdir(), "gru_cy_cuda_emulation"))
    return emu.Emulator(path)


# ------------------------------------------------------------------ cases ---

class Buffers:
    """Flat arrays of one case, recorded so that all can be compared after a call."""

    def __init__(self, seed, dtype):
        self.rng = np.random.default_rng(seed)
        self.dtype = np.dtype(dtype)
        self.all = {}

    def __call__(self, key, n, low=-1.0, high=1.0, fill=None):
        if fill is None:
            a = self.rng.uniform(low, high, n).astype(self.dtype)
        else:
            a = np.full(n, fill, self.dtype)
        self.all[key] = a
        return a


def mat(flat, rows, cols, ld):
    """A writable (rows, cols) view of flat memory with row stride ld."""
    s = flat.itemsize
    return as_strided(flat, (rows, cols), (ld * s, s))


def case_gemm(buf, transA, transB, M, N, K, alpha, beta):
    lda = (M if transA else K) + 2
    ldb = (K if transB else N) + 1
    ldc = N + 3
    A = buf("A", (K if transA else M) * lda)
    Bm = buf("B", (N if transB else K) * ldb)
    # beta == 0 must not read C: NaN there would show.
    C = buf("C", M * ldc, fill=np.nan) if beta == 0 else buf("C", M * ldc)
    return dict(C=C, A=A, B=Bm, M=M, N=N, K=K, lda=lda, ldb=ldb, ldc=ldc,
                transA=int(transA), transB=int(transB), alpha=alpha, beta=beta)


def case_bias_forward(buf):
    R, C, ld = T * B, 13, 16
    return dict(Y=buf("Y", R * ld), bias=buf("bias", C), R=R, C=C, ldy=ld)


def case_bn_forward_train(buf):
    C, ld = 13, 16
    Y = buf("Y", T * B * ld, -2, 3)
    Y[(1 * B) * ld:(2 * B) * ld:ld] = 0.25     # group 1, column 0 constant: var 0
    return dict(Y=Y, vhat=buf("vhat", T * B * ld, fill=7), sd=buf("sd", T * ld, fill=7),
                rolling_mean=buf("rolling_mean", C), rolling_variance=buf("rolling_variance",
                                                                          C, 0.5, 2),
                scales=buf("scales", C, 0.5, 1.5), biases=buf("biases", C),
                G=T, B=B, C=C, ld=ld)


def case_bn_forward_infer(buf):
    R, C, ld = T * B, 13, 16
    return dict(Y=buf("Y", R * ld, -2, 2), rolling_mean=buf("rolling_mean", C),
                rolling_variance=buf("rolling_variance", C, 0.1, 2),
                scales=buf("scales", C, 0.5, 1.5), biases=buf("biases", C),
                R=R, C=C, ldy=ld)


def case_gru_darknet_gates_forward(buf):
    ldx, ldh = H3 + 1, H3 + 2
    return dict(z=buf("z", B * H, fill=7), r=buf("r", B * H, fill=7),
                s=buf("s", B * H, fill=7), xp=buf("xp", B * ldx, -3, 3),
                hp=buf("hp", B * ldh, -3, 3), hprev=buf("hprev", B * H),
                B=B, H=H, ldx=ldx, ldh=ldh)


def case_gru_darknet_state_forward(buf, act):
    ldx, ldh = H3 + 1, H3 + 2
    xp, hp = buf("xp", B * ldx, -3, 3), buf("hp", B * ldh, -3, 3)
    return dict(c=buf("c", B * H, fill=7), h=buf("h", B * H, fill=7), xp=xp[2 * H:],
                hp=hp[2 * H:], z=buf("z", B * H, 0, 1), hprev=buf("hprev", B * H),
                B=B, H=H, ldx=ldx, ldh=ldh, act=act)


def case_gru_reset_after_forward(buf, act, with_q):
    ldx, ldh = H3 + 1, H3 + 2
    return dict(z=buf("z", B * H, fill=7), r=buf("r", B * H, fill=7),
                q=buf("q", B * H, fill=7) if with_q else None,
                c=buf("c", B * H, fill=7), h=buf("h", B * H, fill=7),
                xp=buf("xp", B * ldx, -3, 3), hp=buf("hp", B * ldh, -3, 3),
                hprev=buf("hprev", B * H), B=B, H=H, ldx=ldx, ldh=ldh, act=act)


def case_gru_darknet_gates_backward(buf, act, with_dy):
    ldd = H3 + 1
    return dict(dau=buf("dau", B * ldd, fill=7), daw=buf("daw", B * ldd, fill=7),
                dh=buf("dh", B * H), dy=buf("dy", B * H) if with_dy else None,
                z=buf("z", B * H, 0, 1), c=buf("c", B * H, -1 if act else 0, 1),
                hprev=buf("hprev", B * H), B=B, H=H, ldd=ldd, act=act)


def case_gru_darknet_reset_backward(buf):
    ldd = H3 + 1
    dau, daw = buf("dau", B * ldd, fill=7), buf("daw", B * ldd, fill=7)
    return dict(dau=dau[H:], daw=daw[H:], dh=buf("dh", B * H), ds=buf("ds", B * H),
                r=buf("r", B * H, 0, 1), hprev=buf("hprev", B * H), B=B, H=H, ldd=ldd)


def case_gru_reset_after_backward(buf, act, with_dy):
    ldd = H3 + 1
    return dict(dau=buf("dau", B * ldd, fill=7), daw=buf("daw", B * ldd, fill=7),
                dh=buf("dh", B * H), dy=buf("dy", B * H) if with_dy else None,
                z=buf("z", B * H, 0, 1), r=buf("r", B * H, 0, 1), q=buf("q", B * H, -2, 2),
                c=buf("c", B * H, -1 if act else 0, 1), hprev=buf("hprev", B * H),
                B=B, H=H, ldd=ldd, act=act)


def case_bn_backward(buf):
    C, ld = 13, 16
    sd = buf("sd", T * ld, 0.2, 2)
    sd[ld + 3] = 0                              # group 1, column 3: sd == 0
    return dict(dY=buf("dY", T * B * ld), dscales=buf("dscales", C),
                dbiases=buf("dbiases", C), vhat=buf("vhat", T * B * ld, -2, 2), sd=sd,
                scales=buf("scales", C, 0.5, 1.5), G=T, B=B, C=C, ld=ld)


def case_col_sum(buf):
    R, C, ld = T * B, 13, 16
    return dict(out=buf("out", C), A=buf("A", R * ld), R=R, C=C, lda=ld)


def case_sgd_update(buf, clip):
    n = 37
    return dict(w=buf("w", n), u=buf("u", n), g=buf("g", n), n=n, n_decay=20, lr=0.1,
                momentum=0.9, decay=1e-3, batch=6.0, clip=clip)


def case_adam_update(buf, clip):
    n = 37
    return dict(w=buf("w", n), m=buf("m", n), v=buf("v", n, 0, 1), g=buf("g", n), n=n,
                lr=0.01, b1=0.9, b2=0.999, eps=1e-7, decay=1e-3, batch=6.0, t=3, clip=clip)


def _activation_inputs(buf, key, n):
    x = buf(key, n, -6, 6)
    x[:6] = (-800.0, 800.0, -1.0, 1.0, 0.0, 4.0)   # overflow and branch edges
    return x


def case_activation_forward(buf, act):
    n = 41
    return dict(Y=_activation_inputs(buf, "Y", n), n=n, act=act)


def case_activation_backward(buf, act):
    n = 41
    Y = buf("Y", n, -1.5, 1.5)
    Y[:4] = (-1.0, 0.0, 1.0, 0.5)
    return dict(dY=buf("dY", n), Y=Y, n=n, act=act)


def case_softmax_forward(buf):
    R, C, ld = 5, 11, 13
    X = buf("X", R * ld, -4, 4)
    X[ld:ld + C] += 1000.0                      # needs the max subtraction
    return dict(P=buf("P", R * C, fill=7), X=X, R=R, C=C, ldx=ld)


def case_softmax_cross_entropy_backward(buf):
    R, C = 5, 11
    P = buf("P", R * C, 0, 1)
    P[3] = 0.0                                  # log(max(P, tiny))
    target = buf("target", R * C, 0, 1)
    target[::4] = 0.0
    return dict(dX=buf("dX", R * C, fill=7), loss=buf("loss", R, fill=7), P=P,
                target=target, R=R, C=C, scale=0.5)


def case_mse_backward(buf):
    R, C = 5, 11
    return dict(dX=buf("dX", R * C, fill=7), loss=buf("loss", R, fill=7),
                Y=buf("Y", R * C, -2, 2), target=buf("target", R * C, -2, 2),
                R=R, C=C, scale=0.25)


def _cases():
    out = []
    for tA in (0, 1):
        for tB in (0, 1):
            for (M, N, K) in ((13, 17, 19), (70, 67, 35)):
                for alpha, beta in ((1.5, 0.0), (-0.75, 0.5)):
                    out.append(("gemm", f"tA{tA}tB{tB}_{M}x{N}x{K}_b{beta}",
                                lambda b, a=(tA, tB, M, N, K, alpha, beta): case_gemm(b, *a)))
    simple = ("bias_forward", "bn_forward_train", "bn_forward_infer",
              "gru_darknet_gates_forward", "gru_darknet_reset_backward", "bn_backward",
              "col_sum", "softmax_forward", "softmax_cross_entropy_backward",
              "mse_backward")
    for name in simple:
        out.append((name, "", globals()[f"case_{name}"]))
    for act in (0, 1):
        out.append(("gru_darknet_state_forward", f"act{act}",
                    lambda b, act=act: case_gru_darknet_state_forward(b, act)))
        for flag in (True, False):
            out.append(("gru_reset_after_forward", f"act{act}_q{int(flag)}",
                        lambda b, a=act, f=flag: case_gru_reset_after_forward(b, a, f)))
            out.append(("gru_darknet_gates_backward", f"act{act}_dy{int(flag)}",
                        lambda b, a=act, f=flag: case_gru_darknet_gates_backward(b, a, f)))
            out.append(("gru_reset_after_backward", f"act{act}_dy{int(flag)}",
                        lambda b, a=act, f=flag: case_gru_reset_after_backward(b, a, f)))
    for clip in (0.0, 0.5):
        out.append(("sgd_update", f"clip{clip}", lambda b, c=clip: case_sgd_update(b, c)))
        out.append(("adam_update", f"clip{clip}", lambda b, c=clip: case_adam_update(b, c)))
    for act in range(len(ACTIVATIONS)):
        out.append(("activation_forward", ACTIVATIONS[act],
                    lambda b, a=act: case_activation_forward(b, a)))
        out.append(("activation_backward", ACTIVATIONS[act],
                    lambda b, a=act: case_activation_backward(b, a)))
    return out


CASES = _cases()


def _make(builder, dtype, seed=1234):
    buf = Buffers(seed, dtype)
    args = builder(buf)
    return args, buf.all


# --------------------------------------------------------- NumPy oracle ---
# Each reference updates the case's arrays in place, computing in float64.

def _logistic(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _act(x, a):
    name = ACTIVATIONS[a]
    with np.errstate(over="ignore"):
        return {
            "logistic": lambda: _logistic(x),
            "tanh": lambda: np.tanh(x),
            "linear": lambda: x,
            "relu": lambda: np.where(x > 0, x, 0.0),
            "leaky": lambda: np.where(x > 0, x, 0.1 * x),
            "elu": lambda: np.where(x >= 0, x, np.expm1(np.minimum(x, 0))),
            "selu": lambda: np.where(x >= 0, 1.0507 * x,
                                     1.0507 * 1.6732 * np.expm1(np.minimum(x, 0))),
            "relie": lambda: np.where(x > 0, x, 0.01 * x),
            "ramp": lambda: np.where(x > 0, x, 0.0) + 0.1 * x,
            "hardtan": lambda: np.clip(x, -1, 1),
            "lhtan": lambda: np.where(x < 0, 0.001 * x, np.where(x > 1, 0.001 * (x - 1) + 1, x)),
            "plse": lambda: np.where(x < -4, 0.01 * (x + 4),
                                     np.where(x > 4, 0.01 * (x - 4) + 1, 0.125 * x + 0.5)),
            "loggy": lambda: 2 * _logistic(x) - 1,
        }[name]()


def _act_grad(y, a):
    name = ACTIVATIONS[a]
    p = (y + 1) / 2
    return {
        "logistic": (1 - y) * y, "tanh": 1 - y * y, "linear": np.ones_like(y),
        "relu": np.where(y > 0, 1.0, 0.0), "leaky": np.where(y > 0, 1.0, 0.1),
        "elu": np.where(y >= 0, 1.0, y + 1), "selu": np.where(y >= 0, 1.0507, y + 1.0507 * 1.6732),
        "relie": np.where(y > 0, 1.0, 0.01), "ramp": np.where(y > 0, 1.0, 0.0) + 0.1,
        "hardtan": np.where((y > -1) & (y < 1), 1.0, 0.0),
        "lhtan": np.where((y > 0) & (y < 1), 1.0, 0.001),
        "plse": np.where((y < 0) | (y > 1), 0.01, 0.125), "loggy": 2 * (1 - p) * p,
    }[name]


def _f(a):
    return a.astype(np.float64)


def ref_gemm(a):
    M, N, K = a["M"], a["N"], a["K"]
    A = mat(a["A"], K, M, a["lda"]).T if a["transA"] else mat(a["A"], M, K, a["lda"])
    Bm = mat(a["B"], N, K, a["ldb"]).T if a["transB"] else mat(a["B"], K, N, a["ldb"])
    C = mat(a["C"], M, N, a["ldc"])
    prod = a["alpha"] * (_f(A) @ _f(Bm))
    C[...] = prod if a["beta"] == 0 else prod + a["beta"] * _f(C)


def ref_bias_forward(a):
    Y = mat(a["Y"], a["R"], a["C"], a["ldy"])
    Y[...] = _f(Y) + _f(a["bias"][:a["C"]])


def ref_bn_forward_train(a):
    G, Bn, C, ld = a["G"], a["B"], a["C"], a["ld"]
    rm, rv = a["rolling_mean"], a["rolling_variance"]
    for g in range(G):
        Y = mat(a["Y"][g * Bn * ld:], Bn, C, ld)
        V = mat(a["vhat"][g * Bn * ld:], Bn, C, ld)
        y = _f(Y)
        mu = y.mean(0)
        var = ((y - mu) ** 2).sum(0) / (Bn - 1)
        vh = (y - mu) / (np.sqrt(var) + BN_EPS)
        V[...] = vh
        Y[...] = _f(a["scales"][:C]) * _f(V) + _f(a["biases"][:C])
        a["sd"][g * ld:g * ld + C] = np.sqrt(var)
        rm[:C] = BN_MOMENTUM * _f(rm[:C]) + 0.01 * mu
        rv[:C] = BN_MOMENTUM * _f(rv[:C]) + 0.01 * var


def ref_bn_forward_infer(a):
    C = a["C"]
    Y = mat(a["Y"], a["R"], C, a["ldy"])
    Y[...] = (_f(a["scales"][:C]) * (_f(Y) - _f(a["rolling_mean"][:C]))
              / (np.sqrt(_f(a["rolling_variance"][:C])) + BN_EPS) + _f(a["biases"][:C]))


def _gate_views(a, name, ld):
    return mat(a[name], a["B"], 3 * a["H"], a[ld])


def ref_gru_darknet_gates_forward(a):
    Bn, Hn = a["B"], a["H"]
    xp, hp = _f(_gate_views(a, "xp", "ldx")), _f(_gate_views(a, "hp", "ldh"))
    z = _logistic(xp[:, :Hn] + hp[:, :Hn])
    r = _logistic(xp[:, Hn:2 * Hn] + hp[:, Hn:2 * Hn])
    a["z"][:] = z.ravel()
    a["r"][:] = r.ravel()
    a["s"][:] = (_f(a["r"]).reshape(Bn, Hn) * _f(a["hprev"]).reshape(Bn, Hn)).ravel()


def ref_gru_darknet_state_forward(a):
    Bn, Hn = a["B"], a["H"]
    xp = _f(mat(a["xp"], Bn, Hn, a["ldx"]))
    hp = _f(mat(a["hp"], Bn, Hn, a["ldh"]))
    c = _act(xp + hp, a["act"]).ravel()
    a["c"][:] = c
    z = _f(a["z"])
    a["h"][:] = z * _f(a["hprev"]) + (1 - z) * _f(a["c"])


def ref_gru_reset_after_forward(a):
    Hn = a["H"]
    xp, hp = _f(_gate_views(a, "xp", "ldx")), _f(_gate_views(a, "hp", "ldh"))
    a["z"][:] = _logistic(xp[:, :Hn] + hp[:, :Hn]).ravel()
    a["r"][:] = _logistic(xp[:, Hn:2 * Hn] + hp[:, Hn:2 * Hn]).ravel()
    q = hp[:, 2 * Hn:].ravel()
    if a["q"] is not None:
        a["q"][:] = q
    a["c"][:] = _act(xp[:, 2 * Hn:].ravel() + _f(a["r"]) * q, a["act"])
    z = _f(a["z"])
    a["h"][:] = z * _f(a["hprev"]) + (1 - z) * _f(a["c"])


def _g(a):
    return _f(a["dh"]) + (0 if a["dy"] is None else _f(a["dy"]))


def ref_gru_darknet_gates_backward(a):
    Bn, Hn = a["B"], a["H"]
    g, z, c = _g(a), _f(a["z"]), _f(a["c"])
    daz = (g * (_f(a["hprev"]) - c) * z * (1 - z)).reshape(Bn, Hn)
    dah = (g * (1 - z) * _act_grad(c, a["act"])).reshape(Bn, Hn)
    for key in ("dau", "daw"):
        D = _gate_views(a, key, "ldd")
        D[:, :Hn] = daz
        D[:, 2 * Hn:] = dah
    a["dh"][:] = g * z


def ref_gru_darknet_reset_backward(a):
    Bn, Hn = a["B"], a["H"]
    r, ds = _f(a["r"]), _f(a["ds"])
    dar = (ds * _f(a["hprev"]) * r * (1 - r)).reshape(Bn, Hn)
    for key in ("dau", "daw"):
        mat(a[key], Bn, Hn, a["ldd"])[...] = dar
    a["dh"][:] = _f(a["dh"]) + ds * r


def ref_gru_reset_after_backward(a):
    Bn, Hn = a["B"], a["H"]
    g, z, r, c, q = _g(a), _f(a["z"]), _f(a["r"]), _f(a["c"]), _f(a["q"])
    daz = g * (_f(a["hprev"]) - c) * z * (1 - z)
    dah = g * (1 - z) * _act_grad(c, a["act"])
    dq = dah * r
    dar = dah * q * r * (1 - r)
    U, W = _gate_views(a, "dau", "ldd"), _gate_views(a, "daw", "ldd")
    for D, last in ((U, dah), (W, dq)):
        D[:, :Hn] = daz.reshape(Bn, Hn)
        D[:, Hn:2 * Hn] = dar.reshape(Bn, Hn)
        D[:, 2 * Hn:] = last.reshape(Bn, Hn)
    a["dh"][:] = g * z


def ref_bn_backward(a):
    G, Bn, C, ld = a["G"], a["B"], a["C"], a["ld"]
    scales = _f(a["scales"][:C])
    for g in range(G):
        dY = mat(a["dY"][g * Bn * ld:], Bn, C, ld)
        vh = _f(mat(a["vhat"][g * Bn * ld:], Bn, C, ld))
        dy = _f(dY)
        a["dscales"][:C] = _f(a["dscales"][:C]) + (dy * vh).sum(0)
        a["dbiases"][:C] = _f(a["dbiases"][:C]) + dy.sum(0)
        gv = dy * scales
        sd = _f(a["sd"][g * ld:g * ld + C])
        with np.errstate(divide="ignore", invalid="ignore"):
            second = np.where(sd > 0, vh * (gv * vh).sum(0) / ((Bn - 1) * sd), 0.0)
        dY[...] = (gv - gv.mean(0)) / (sd + BN_EPS) - second


def ref_col_sum(a):
    C = a["C"]
    a["out"][:C] = _f(a["out"][:C]) + _f(mat(a["A"], a["R"], C, a["lda"])).sum(0)


def _clipped(a):
    g = _f(a["g"])
    return np.clip(g, -a["clip"], a["clip"]) if a["clip"] > 0 else g


def ref_sgd_update(a):
    n, nd = a["n"], a["n_decay"]
    w, u = _f(a["w"]), _f(a["u"]) - _clipped(a)
    u[:nd] -= a["decay"] * a["batch"] * w[:nd]
    a["w"][:n] = w + (a["lr"] / a["batch"]) * u
    a["u"][:n] = a["momentum"] * u
    a["g"][:n] = 0


def ref_adam_update(a):
    t = a["t"]
    w = _f(a["w"])
    g = _clipped(a) + a["decay"] * a["batch"] * w
    m = a["b1"] * _f(a["m"]) + (1 - a["b1"]) * g
    v = a["b2"] * _f(a["v"]) + (1 - a["b2"]) * g * g
    a["m"][:], a["v"][:] = m, v
    a["w"][:] = w - a["lr"] * (m / (1 - a["b1"] ** t)) / (
        np.sqrt(v / (1 - a["b2"] ** t)) + a["eps"])
    a["g"][:] = 0


def ref_activation_forward(a):
    a["Y"][:] = _act(_f(a["Y"]), a["act"])


def ref_activation_backward(a):
    a["dY"][:] = _f(a["dY"]) * _act_grad(_f(a["Y"]), a["act"])


def ref_softmax_forward(a):
    R, C = a["R"], a["C"]
    X = _f(mat(a["X"], R, C, a["ldx"]))
    e = np.exp(X - X.max(1, keepdims=True))
    a["P"][:] = (e / e.sum(1, keepdims=True)).ravel()


def ref_softmax_cross_entropy_backward(a):
    R, C = a["R"], a["C"]
    P, t = _f(a["P"]).reshape(R, C), _f(a["target"]).reshape(R, C)
    tiny = np.finfo(a["P"].dtype).tiny
    a["loss"][:] = -(t * np.log(np.maximum(P, tiny))).sum(1)
    a["dX"][:] = (a["scale"] * (P - t)).ravel()


def ref_mse_backward(a):
    R, C = a["R"], a["C"]
    d = _f(a["Y"]).reshape(R, C) - _f(a["target"]).reshape(R, C)
    a["loss"][:] = (d * d).sum(1) / 2
    a["dX"][:] = (a["scale"] * d).ravel()


def _run_cpu(name, args):
    from gru_cy.cuda import contract_args
    cpu_kernel(name)(*[args[k] for k in contract_args(name)], 1)


# ------------------------------------------------------------------ tests ---

def test_every_kernel_has_a_case():
    assert {name for name, _, _ in CASES} == set(KERNEL_NAMES)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name, label, builder", CASES,
                         ids=[f"{n}-{lbl}" if lbl else n for n, lbl, _ in CASES])
def test_kernel_matches_oracles(emulator, name, label, builder, dtype):
    tol = TOL[np.dtype(dtype)]
    args, bufs = _make(builder, dtype)
    emulator.run(name, args)

    ref_args, ref_bufs = _make(builder, dtype)
    globals()[f"ref_{name}"](ref_args)
    for key in bufs:
        assert_allclose(bufs[key], ref_bufs[key], **tol, err_msg=f"{name}: {key} vs NumPy")

    if name in CPU_KERNELS:
        cpu_args, cpu_bufs = _make(builder, dtype)
        _run_cpu(name, cpu_args)
        for key in bufs:
            assert_allclose(bufs[key], cpu_bufs[key], **tol,
                            err_msg=f"{name}: {key} vs the Cython engine")


@pytest.mark.parametrize("name, label, builder",
                         [c for c in CASES if c[0] != "gemm"],
                         ids=[f"{n}-{lbl}" if lbl else n for n, lbl, _ in CASES if n != "gemm"])
def test_results_do_not_depend_on_the_grid(emulator, name, label, builder):
    # The launchers' geometry versus 2 blocks of 3 threads (every grid-stride
    # loop wraps): each element and each sum is computed by one thread in one
    # order, so the results are bit-identical.
    args, bufs = _make(builder, np.float64)
    emulator.run(name, args)
    odd, odd_bufs = _make(builder, np.float64)
    emulator.run(name, odd, geometry=((2, 1, 1), (3, 1, 1)))
    for key in bufs:
        assert_allclose(bufs[key], odd_bufs[key], rtol=0, atol=0, err_msg=f"{name}: {key}")


def test_gemm_shared_memory_tiles_are_per_block(emulator):
    # A product spanning 3 x 2 tiles and 5 K slabs: a block that read another
    # block's staged tile (or a stale slab) would give wrong sums.
    args, bufs = _make(lambda b: case_gemm(b, 1, 0, 150, 100, 70, 1.0, 0.0), np.float64)
    emulator.run("gemm", args)
    ref, ref_bufs = _make(lambda b: case_gemm(b, 1, 0, 150, 100, 70, 1.0, 0.0), np.float64)
    ref_gemm(ref)
    assert_allclose(bufs["C"], ref_bufs["C"], **TOL[np.dtype(np.float64)])


# ----------------------------------------------------------------- engine ---

@pytest.fixture
def emulated_cuda(monkeypatch, emulated_launchers):
    """gru_cy.cuda with NumPy as its array module and the emulator as its GPU:
    the engine's calls go through gru_cy.cuda._call and its argument
    conversion, as on a GPU."""
    cuda = emulated_launchers

    class NumpyAsCupy:
        empty = staticmethod(np.empty)
        zeros = staticmethod(np.zeros)

    monkeypatch.setattr(cuda, "_cupy", lambda: NumpyAsCupy)
    monkeypatch.setattr(cuda, "_address", lambda a: a.ctypes.data)
    return cuda


# Whole forward/backward passes chain gemms (different summation orders on
# the two engines), BN divisions by per-step standard deviations and T steps
# of accumulation, so the tolerance is looser than one kernel's.
ENGINE_TOL = {np.dtype(np.float64): dict(rtol=1e-10, atol=1e-10),
              np.dtype(np.float32): dict(rtol=1e-4, atol=1e-4)}


@pytest.mark.skipif(cpu_kernel is None, reason="the Cython engine is not built")
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("bn", (False, True), ids=("nobn", "bn"))
@pytest.mark.parametrize("act", (0, 1), ids=("logistic", "tanh"))
@pytest.mark.parametrize("variant", ("darknet", "reset_after"))
def test_engine_mirrors_the_cython_drivers(emulated_cuda, variant, act, bn, dtype):
    _compare_engines(emulated_cuda, variant, act, bn, dtype)


@pytest.mark.skipif(cpu_kernel is None, reason="the Cython engine is not built")
@pytest.mark.parametrize("bn", (False, True), ids=("nobn", "bn"))
@pytest.mark.parametrize("variant", ("darknet", "reset_after"))
def test_engine_chunks_of_steps(monkeypatch, emulated_cuda, variant, bn):
    # 6 rows = 2 steps of B = 3 per chunk: T = 3 runs a chunk of 2 steps and
    # one of 1 (the CPU engine, with 512 rows, one chunk; same sums otherwise).
    monkeypatch.setattr(emulated_cuda, "CHUNK_ROWS", 6)
    assert emulated_cuda.chunk_steps(3, 3) == 2
    _compare_engines(emulated_cuda, variant, 1, bn, np.float64)


def _compare_engines(emulated_cuda, variant, act, bn, dtype):
    from gru_cy._cpu.gru import Engine as CpuEngine
    Te, Be, Ie, He = 3, 3, 4, 5
    dt = np.dtype(dtype)
    rng = np.random.default_rng(7)
    n = 3 * He * Ie + 3 * He * He + 6 * He + (6 * He if bn else 0)
    theta = rng.uniform(-0.8, 0.8, n).astype(dt)
    grad = rng.uniform(-1, 1, n).astype(dt)            # gradients accumulate
    rolling = np.stack([rng.uniform(-0.5, 0.5, 6 * He), rng.uniform(0.5, 2, 6 * He)]).astype(dt)
    x = rng.uniform(-1, 1, (Te, Be, Ie)).astype(dt)
    h0 = rng.uniform(-1, 1, (Be, He)).astype(dt)
    dy = rng.uniform(-1, 1, (Te, Be, He)).astype(dt)
    dstate = rng.uniform(-1, 1, (Be, He)).astype(dt)
    reset_after = variant == "reset_after"

    results = []
    for make in (CpuEngine, emulated_cuda.Engine):
        th, gr, ro = theta.copy(), grad.copy(), rolling.copy()
        eng = make(th, gr, ro, Ie, He, reset_after, act, bn, False)
        y_train = np.empty((Te, Be, He), dt)
        eng.forward(x.copy(), h0, y_train, True, 1)
        dx = np.empty((Te, Be, Ie), dt)
        dh0 = np.empty((Be, He), dt)
        eng.backward(dy, dstate, dx, dh0, 1)
        y_infer = np.empty((Te, Be, He), dt)
        eng.forward(x.copy(), h0, y_infer, False, 1)
        y_zero = np.empty((Te, Be, He), dt)
        eng.forward(x.copy(), None, y_zero, False, 1)
        results.append(dict(y_train=y_train, dx=dx, dh0=dh0, grad=gr, rolling=ro,
                            y_infer=y_infer, y_zero=y_zero, theta=th))
    cpu, gpu = results
    for key in cpu:
        assert_allclose(gpu[key], cpu[key], **ENGINE_TOL[dt], err_msg=key)


# -------------------------------------------------------------- launchers ---

class DeviceArray(np.ndarray):
    """A NumPy array posing as a CuPy one (what gru_cy.cuda's launchers test for)."""

    @property
    def __cuda_array_interface__(self):
        return self.__array_interface__


_SCALAR_TYPES = {"long long": np.int64, "int": np.int32, "float": np.float32,
                 "double": np.float64}


@pytest.fixture
def emulated_launchers(monkeypatch, emulator):
    """gru_cy.cuda's launchers with the emulator in place of the compiled module.

    The stand-in function checks what CuPy would receive: a (3,) grid and
    block, and per parameter an array or a uint64 address for a pointer and
    the exact NumPy scalar type of the C parameter otherwise.
    """
    import functools
    from gru_cy import cuda

    class Function:
        def __init__(self, entry):
            self.entry = entry

        def __call__(self, grid, block, args):
            assert len(grid) == len(block) == 3
            values = []
            for (ctype, pname), v in zip(emulator.params[self.entry], args, strict=True):
                if ctype.endswith("*"):
                    if isinstance(v, np.ndarray):
                        values.append(v.ctypes.data)
                    else:
                        assert type(v) is np.uint64, (self.entry, pname, type(v))
                        values.append(int(v) or None)
                else:
                    assert type(v) is _SCALAR_TYPES[ctype], (self.entry, pname, type(v))
                    values.append(v.item())
            emulator._fn(self.entry)(*grid, *block, *values)

    class Module:
        def get_function(self, entry):
            assert entry in emulator.params, entry
            return Function(entry)

    monkeypatch.setattr(cuda, "_module", lambda: Module())
    monkeypatch.setattr(cuda, "_kernel", functools.cache(cuda._kernel.__wrapped__))
    return cuda


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_launchers_pass_the_kernel_arguments(emulated_launchers, dtype):
    # Every case through gru_cy.cuda.<name>(...), the code path a GPU runs up
    # to CuPy, against the NumPy oracle.
    cuda = emulated_launchers
    for name, label, builder in CASES:
        args, bufs = _make(builder, dtype)
        launcher = getattr(cuda, name)
        launcher(*[v.view(DeviceArray) if isinstance(v, np.ndarray) else v
                   for v in (args[k] for k in cuda.contract_args(name))])
        ref_args, ref_bufs = _make(builder, dtype)
        globals()[f"ref_{name}"](ref_args)
        for key in bufs:
            assert_allclose(bufs[key], ref_bufs[key], **TOL[np.dtype(dtype)],
                            err_msg=f"{name} {label}: {key}")


@pytest.mark.skipif(cpu_kernel is None, reason="the Cython engine is not built")
@pytest.mark.parametrize("bn, optimizer", ((False, "sgd"), (True, "adam")), ids=("sgd", "bn-adam"))
@pytest.mark.parametrize("variant", ("darknet", "reset_after"))
def test_layer_api_on_emulated_cuda(monkeypatch, emulated_cuda, variant, bn, optimizer):
    # The public API with device="cuda": gru_cy.layer -> gru_cy.cuda.backend()
    # -> Engine / update kernels -> the emulator (NumPy arrays stand in for
    # CuPy's).  Against the same layer on the CPU.
    from gru_cy import GRU
    cuda = emulated_cuda
    monkeypatch.setattr(cuda, "require", lambda: None)
    monkeypatch.setattr(cuda, "_BACKEND", None)

    def init(backend):
        backend.xp = np
        backend.Engine = cuda.Engine

    monkeypatch.setattr(cuda._CudaBackend, "__init__", init)
    Te, Be, Ie, He = 3, 3, 4, 5
    kw = dict(variant=variant, batch_normalize=bn, optimizer=optimizer, dtype=np.float64,
              seed=3)
    cpu, gpu = GRU(Ie, He, **kw), GRU(Ie, He, device="cuda", **kw)
    assert gpu.device == "cuda"
    rng = np.random.default_rng(9)
    tol = ENGINE_TOL[np.dtype(np.float64)]
    for it in range(2):
        x = rng.uniform(-1, 1, (Te, Be, Ie))
        dy = rng.uniform(-1, 1, (Te, Be, He))
        assert_allclose(gpu.forward(x, train=True), cpu.forward(x, train=True), **tol)
        assert_allclose(gpu.backward(dy), cpu.backward(dy), **tol)
        assert_allclose(gpu.dh0, cpu.dh0, **tol)
        cpu.update(learning_rate=0.1, clip=0.5 if it else None)
        gpu.update(learning_rate=0.1, clip=0.5 if it else None)
        for key, p in cpu.params.items():
            assert_allclose(gpu.params[key], p, **tol, err_msg=key)
    assert_allclose(gpu.forward(x), cpu.forward(x), **tol)
    assert_allclose(gpu.state, cpu.state, **tol)
