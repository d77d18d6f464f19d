"""The kernel contracts of ``gru_cy.kernels`` rendered in float64 NumPy, and
the cases every engine's kernels are run on (shared by the CUDA emulation,
the GPU tests and the CPU kernel tests).

``CASES``: (kernel name, label, builder) on small odd shapes (B=3, H=5, T=4,
13 columns in rows of stride 16, gemm 13x17x19 and 70x67x35 in every
transpose), each buffer recorded so that a test can compare all of them after
a call, padding and the parts a kernel must not touch included.
``ORACLES[name](args)`` updates a case's arrays in place as the contract says.
``act`` / ``act_grad``: Darknet's activations and their gradients.
"""
import numpy as np
from numpy.lib.stride_tricks import as_strided

from gru_cy import reference
from gru_cy.kernels import ACTIVATIONS, BN_EPS, BN_MOMENTUM, KERNEL_NAMES

B, H, T = 3, 5, 4
H3 = 3 * H


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


def case_gru_darknet_gates_backward(buf, act):
    ldd = H3 + 1
    return dict(dau=buf("dau", B * ldd, fill=7), daw=buf("daw", B * ldd, fill=7),
                dh=buf("dh", B * H), dy=buf("dy", B * H),
                z=buf("z", B * H, 0, 1), c=buf("c", B * H, -1 if act else 0, 1),
                hprev=buf("hprev", B * H), B=B, H=H, ldd=ldd, act=act)


def case_gru_darknet_reset_backward(buf):
    ldd = H3 + 1
    dau, daw = buf("dau", B * ldd, fill=7), buf("daw", B * ldd, fill=7)
    return dict(dau=dau[H:], daw=daw[H:], dh=buf("dh", B * H), ds=buf("ds", B * H),
                r=buf("r", B * H, 0, 1), hprev=buf("hprev", B * H), B=B, H=H, ldd=ldd)


def case_gru_reset_after_backward(buf, act):
    ldd = H3 + 1
    return dict(dau=buf("dau", B * ldd, fill=7), daw=buf("daw", B * ldd, fill=7),
                dh=buf("dh", B * H), dy=buf("dy", B * H),
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


def _non_finite_inputs(a, keys):
    # a few elements whose step is non-finite (inf and NaN inputs: the same
    # count in either precision), the rest ordinary
    a[keys[0]][5] = np.inf
    a[keys[1]][7] = np.nan
    a["w"][30] = -np.inf
    return a


def case_sgd_check(buf, clip, finite=False, only=None):
    a = case_sgd_update(buf, clip)
    a["out"] = buf("out", 1, fill=2)            # 1 after a non-finite step, else kept
    if only == "decay":                         # one element, in the weights' range
        a["g"][3] = np.inf
        return a
    if only == "rest":                          # one element, in the biases' range
        a["u"][33] = np.nan
        return a
    return a if finite else _non_finite_inputs(a, ("g", "u"))


def case_adam_check(buf, clip, finite=False):
    a = case_adam_update(buf, clip)
    a["out"] = buf("out", 1, fill=2)
    return a if finite else _non_finite_inputs(a, ("g", "m"))


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


def case_seq_gather(buf):
    # 7 source rows of stride 16, 9 gathered rows of stride 15 (2 padding: zeros,
    # one source row twice), 13 columns.
    R, C, ldy, ldx = 9, 13, 15, 16
    rows = np.array([3, -1, 0, 6, 2, 2, -1, 5, 1], np.int64)
    return dict(Y=buf("Y", R * ldy, fill=7), X=buf("X", 7 * ldx), rows=rows, R=R, C=C,
                ldy=ldy, ldx=ldx)


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
              "mse_backward", "seq_gather")
    for name in simple:
        out.append((name, "", globals()[f"case_{name}"]))
    for act in (0, 1):
        out.append(("gru_darknet_state_forward", f"act{act}",
                    lambda b, act=act: case_gru_darknet_state_forward(b, act)))
        for flag in (True, False):
            out.append(("gru_reset_after_forward", f"act{act}_q{int(flag)}",
                        lambda b, a=act, f=flag: case_gru_reset_after_forward(b, a, f)))
        out.append(("gru_darknet_gates_backward", f"act{act}",
                    lambda b, a=act: case_gru_darknet_gates_backward(b, a)))
        out.append(("gru_reset_after_backward", f"act{act}",
                    lambda b, a=act: case_gru_reset_after_backward(b, a)))
    for clip in (0.0, 0.5):
        out.append(("sgd_update", f"clip{clip}", lambda b, c=clip: case_sgd_update(b, c)))
        out.append(("adam_update", f"clip{clip}", lambda b, c=clip: case_adam_update(b, c)))
        for fin in (False, True):
            label = f"clip{clip}" + ("_finite" if fin else "")
            out.append(("sgd_check", label,
                        lambda b, c=clip, f=fin: case_sgd_check(b, c, f)))
            out.append(("adam_check", label,
                        lambda b, c=clip, f=fin: case_adam_check(b, c, f)))
        for only in ("decay", "rest"):
            out.append(("sgd_check", f"clip{clip}_only_{only}",
                        lambda b, c=clip, o=only: case_sgd_check(b, c, only=o)))
    for act in range(len(ACTIVATIONS)):
        out.append(("activation_forward", ACTIVATIONS[act],
                    lambda b, a=act: case_activation_forward(b, a)))
        out.append(("activation_backward", ACTIVATIONS[act],
                    lambda b, a=act: case_activation_backward(b, a)))
    return out


CASES = _cases()


def make(builder, dtype, seed=1234):
    buf = Buffers(seed, dtype)
    args = builder(buf)
    return args, buf.all


# --------------------------------------------------------- NumPy oracle ---
# Each reference updates the case's arrays in place, computing in float64.

def logistic(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def act(x, a):
    name = ACTIVATIONS[a]
    with np.errstate(over="ignore"):
        return {
            "logistic": lambda: logistic(x),
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
            "loggy": lambda: 2 * logistic(x) - 1,
        }[name]()


def act_grad(y, a):
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


def ref_seq_gather(a):
    R, C = a["R"], a["C"]
    Y = mat(a["Y"], R, C, a["ldy"])
    X = mat(a["X"], (a["X"].size - C) // a["ldx"] + 1, C, a["ldx"])
    for i, j in enumerate(a["rows"][:R]):
        Y[i] = X[j] if j >= 0 else 0


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
    z = logistic(xp[:, :Hn] + hp[:, :Hn])
    r = logistic(xp[:, Hn:2 * Hn] + hp[:, Hn:2 * Hn])
    a["z"][:] = z.ravel()
    a["r"][:] = r.ravel()
    a["s"][:] = (_f(a["r"]).reshape(Bn, Hn) * _f(a["hprev"]).reshape(Bn, Hn)).ravel()


def ref_gru_darknet_state_forward(a):
    Bn, Hn = a["B"], a["H"]
    xp = _f(mat(a["xp"], Bn, Hn, a["ldx"]))
    hp = _f(mat(a["hp"], Bn, Hn, a["ldh"]))
    c = act(xp + hp, a["act"]).ravel()
    a["c"][:] = c
    z = _f(a["z"])
    a["h"][:] = z * _f(a["hprev"]) + (1 - z) * _f(a["c"])


def ref_gru_reset_after_forward(a):
    Hn = a["H"]
    xp, hp = _f(_gate_views(a, "xp", "ldx")), _f(_gate_views(a, "hp", "ldh"))
    a["z"][:] = logistic(xp[:, :Hn] + hp[:, :Hn]).ravel()
    a["r"][:] = logistic(xp[:, Hn:2 * Hn] + hp[:, Hn:2 * Hn]).ravel()
    q = hp[:, 2 * Hn:].ravel()
    if a["q"] is not None:
        a["q"][:] = q
    a["c"][:] = act(xp[:, 2 * Hn:].ravel() + _f(a["r"]) * q, a["act"])
    z = _f(a["z"])
    a["h"][:] = z * _f(a["hprev"]) + (1 - z) * _f(a["c"])


def _g(a):
    return _f(a["dh"]) + _f(a["dy"])


def ref_gru_darknet_gates_backward(a):
    Bn, Hn = a["B"], a["H"]
    g, z, c = _g(a), _f(a["z"]), _f(a["c"])
    daz = (g * (_f(a["hprev"]) - c) * z * (1 - z)).reshape(Bn, Hn)
    dah = (g * (1 - z) * act_grad(c, a["act"])).reshape(Bn, Hn)
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
    dah = g * (1 - z) * act_grad(c, a["act"])
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


def ref_sgd_update(a):
    # reference.py's rule, weights (decay) then the rest
    n, nd = a["n"], a["n_decay"]
    clip = a["clip"] if a["clip"] > 0 else None
    for part, is_weight in ((slice(0, nd), True), (slice(nd, n), False)):
        a["w"][part], a["u"][part] = reference.sgd_update(
            a["w"][part], a["u"][part], a["g"][part], lr=a["lr"], momentum=a["momentum"],
            decay=a["decay"], batch=a["batch"], is_weight=is_weight, clip=clip)
    a["g"][:n] = 0


def ref_adam_update(a):
    a["w"][:], a["m"][:], a["v"][:] = reference.adam_update(
        a["w"], a["m"], a["v"], a["g"], lr=a["lr"], b1=a["b1"], b2=a["b2"], eps=a["eps"],
        decay=a["decay"], batch=a["batch"], t=a["t"], clip=a["clip"] if a["clip"] > 0 else None)
    a["g"][:] = 0


def _count_non_finite(a, rule, keys):
    copy = {k: (v.astype(np.float64) if isinstance(v, np.ndarray) else v) for k, v in a.items()}
    with np.errstate(all="ignore"):
        rule(copy)
    bad = np.zeros(a["n"], bool)
    for k in keys:
        bad |= ~np.isfinite(copy[k][:a["n"]])
    if bad.any():
        a["out"][0] = 1


def ref_sgd_check(a):
    _count_non_finite(a, ref_sgd_update, ("w", "u"))


def ref_adam_check(a):
    _count_non_finite(a, ref_adam_update, ("w", "m", "v"))


def ref_activation_forward(a):
    a["Y"][:] = act(_f(a["Y"]), a["act"])


def ref_activation_backward(a):
    a["dY"][:] = _f(a["dY"]) * act_grad(_f(a["Y"]), a["act"])


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


ORACLES = {name: globals()[f"ref_{name}"] for name in KERNEL_NAMES}
