"""NumPy float64 reference of the GRU layer: the specification in code.

Everything here follows SPEC section 1 line by line and favours clarity over
speed: one Python loop over the time steps, one NumPy expression per formula.
The engines are tested against these functions, and these functions against
central finite differences and against Darknet's own outputs (``tests/data``).

Sizes: ``T`` steps, ``B`` sequences, ``I`` inputs, ``H`` outputs.  Tensors are
time-major: ``x`` is (T, B, I), ``y`` is (T, B, H), a state is (B, H).  Every
weight matrix is row-major ``[outputs][inputs]``, so a sublayer computes
``out = v @ W.T + b``.
"""

import numpy as np

SUBLAYERS = ("uz", "ur", "uh", "wz", "wr", "wh")
"""The six fully connected sublayers; ``u*`` read x_t, ``w*`` read the state."""

BN_EPS = 1e-6
BN_MOMENTUM = 0.99

VARIANTS = ("darknet", "reset_after")
ACTIVATIONS = ("tanh", "logistic")


def param_names(batch_normalize=False):
    """Names of every parameter, in SUBLAYERS order.

    Parameters
    ----------
    batch_normalize : bool
        Whether the BN arrays (scales, rolling statistics) are included.

    Returns
    -------
    list of str
        ``"<sub>.weights"``, ``"<sub>.biases"`` and, with BN,
        ``"<sub>.scales"``, ``"<sub>.rolling_mean"``, ``"<sub>.rolling_variance"``.
    """
    tails = ["weights", "biases"]
    if batch_normalize:
        tails += ["scales", "rolling_mean", "rolling_variance"]
    return [f"{sub}.{tail}" for sub in SUBLAYERS for tail in tails]


def trainable_names(batch_normalize=False):
    """Names of the trainable parameters (the keys of ``grads``).

    Parameters
    ----------
    batch_normalize : bool
        Whether the BN scales are included.

    Returns
    -------
    list of str
        ``"<sub>.weights"``, ``"<sub>.biases"`` and, with BN, ``"<sub>.scales"``.
    """
    tails = ["weights", "biases"] + (["scales"] if batch_normalize else [])
    return [f"{sub}.{tail}" for sub in SUBLAYERS for tail in tails]


def init_params(inputs, outputs, batch_normalize=False, seed=None, nondegenerate=False):
    """Random parameters initialised as Darknet's connected layer.

    Parameters
    ----------
    inputs, outputs : int
        ``I`` and ``H``.
    batch_normalize : bool
        Also create ``scales`` (1), ``rolling_mean`` (0), ``rolling_variance`` (1).
    seed : int or None
        Seed of ``numpy.random.default_rng``.
    nondegenerate : bool
        Draw biases ~ N(0, 0.3) and, with BN, scales ~ U(0.5, 1.5), rolling
        means ~ N(0, 0.3) and rolling variances ~ U(0.5, 2) instead of
        Darknet's 0 / 1, so that every term of a gradient is exercised.

    Returns
    -------
    dict of str to ndarray
        float64 arrays: weights (H, I) for ``u*`` and (H, H) for ``w*``, drawn as
        ``uniform(-1, 1) * sqrt(2 / fan_in)``; biases (H,) zero.
    """
    rng = np.random.default_rng(seed)
    params = {}
    for sub in SUBLAYERS:
        fan_in = inputs if sub[0] == "u" else outputs
        params[f"{sub}.weights"] = (rng.uniform(-1.0, 1.0, (outputs, fan_in))
                                    * np.sqrt(2.0 / fan_in))
        params[f"{sub}.biases"] = np.zeros(outputs)
        if batch_normalize:
            params[f"{sub}.scales"] = np.ones(outputs)
            params[f"{sub}.rolling_mean"] = np.zeros(outputs)
            params[f"{sub}.rolling_variance"] = np.ones(outputs)
    if nondegenerate:
        for sub in SUBLAYERS:
            params[f"{sub}.biases"] = rng.normal(0.0, 0.3, outputs)
            if batch_normalize:
                params[f"{sub}.scales"] = rng.uniform(0.5, 1.5, outputs)
                params[f"{sub}.rolling_mean"] = rng.normal(0.0, 0.3, outputs)
                params[f"{sub}.rolling_variance"] = rng.uniform(0.5, 2.0, outputs)
    return params


def logistic(a):
    """Numerically stable logistic ``1 / (1 + exp(-a))`` for every finite ``a``."""
    e = np.exp(-np.abs(a))
    return np.where(a >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _activate(a, activation):
    return np.tanh(a) if activation == "tanh" else logistic(a)


def _activation_gradient(c, activation):
    """act'(a) expressed through the output c = act(a)."""
    return 1.0 - c * c if activation == "tanh" else c * (1.0 - c)


def _check(variant, activation):
    if variant not in VARIANTS:
        raise ValueError(f"variant: expected one of {VARIANTS}, got {variant!r}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation: expected one of {ACTIVATIONS}, got {activation!r}")


def _sublayer_forward(p, sub, v, bn, train, rolling):
    """One sublayer on one step: ``v`` (B, in) -> out (B, H) and its BN cache.

    Without BN: ``out = v @ W.T + b``.  With BN (Darknet's CPU formula):
    train uses this step's batch statistics (unbiased variance) and advances
    ``rolling`` in place; inference uses the rolling statistics.
    """
    a = v @ p[f"{sub}.weights"].T
    if not bn:
        return a + p[f"{sub}.biases"], None
    scales, biases = p[f"{sub}.scales"], p[f"{sub}.biases"]
    if train:
        B = a.shape[0]
        mu = a.mean(axis=0)
        xc = a - mu
        var = (xc * xc).sum(axis=0) / (B - 1)
        sd = np.sqrt(var)
        d = sd + BN_EPS
        rm, rv = f"{sub}.rolling_mean", f"{sub}.rolling_variance"
        rolling[rm] = BN_MOMENTUM * rolling[rm] + (1.0 - BN_MOMENTUM) * mu
        rolling[rv] = BN_MOMENTUM * rolling[rv] + (1.0 - BN_MOMENTUM) * var
    else:
        xc = a - p[f"{sub}.rolling_mean"]
        sd = None
        d = np.sqrt(p[f"{sub}.rolling_variance"]) + BN_EPS
    vhat = xc / d
    return scales * vhat + biases, {"vhat": vhat, "xc": xc, "sd": sd, "d": d}


def _sublayer_backward(p, sub, g, v, bn_cache, grads):
    """Backward of ``_sublayer_forward``: g = dL/d(out) (B, H) -> dL/dv (B, in).

    Adds dL/dW, dL/db (and dL/dscales) into ``grads``.
    """
    grads[f"{sub}.biases"] += g.sum(axis=0)
    if bn_cache is None:
        da = g
    else:
        # out = scales * vhat + biases
        grads[f"{sub}.scales"] += (g * bn_cache["vhat"]).sum(axis=0)
        gv = g * p[f"{sub}.scales"]
        xc, sd, d = bn_cache["xc"], bn_cache["sd"], bn_cache["d"]
        if sd is None:
            # inference: vhat = (a - rolling_mean) / d, d constant
            da = gv / d
        else:
            # train: vhat = (a - mu) / (sqrt(var) + eps), mu and var of this batch
            B = g.shape[0]
            second = np.zeros_like(sd)
            nz = sd > 0
            second[nz] = 1.0 / ((B - 1) * sd[nz] * d[nz] ** 2)
            da = (gv - gv.mean(axis=0)) / d - xc * (gv * xc).sum(axis=0) * second
    # a = v @ W.T
    grads[f"{sub}.weights"] += da.T @ v
    return da @ p[f"{sub}.weights"]


def forward(params, x, h0=None, *, variant="darknet", activation="tanh",
            batch_normalize=False, train=False):
    """Run the GRU over ``T`` steps.

    Parameters
    ----------
    params : dict of str to array_like
        SPEC names: ``"<sub>.weights"`` (H, I) for uz, ur, uh and (H, H) for
        wz, wr, wh; ``"<sub>.biases"`` (H,); with BN also ``"<sub>.scales"``,
        ``"<sub>.rolling_mean"``, ``"<sub>.rolling_variance"`` (H,).  Not modified.
    x : array_like, (T, B, I)
        Input, time-major.
    h0 : array_like, (B, H), optional
        Initial state ``h_{-1}``; None means zeros.
    variant : {"darknet", "reset_after"}
        Where the reset gate acts (SPEC section 1).
    activation : {"tanh", "logistic"}
        Candidate activation; the gates are always logistic.
    batch_normalize : bool
        Batch-normalise each sublayer's product per step.
    train : bool
        With BN: use each step's batch statistics and advance the rolling
        statistics (in a copy); without BN it changes nothing.

    Returns
    -------
    y : ndarray, (T, B, H), float64
        ``y_t = h_t``.
    h_last : ndarray, (B, H), float64
        Final state ``h_{T-1}``.
    cache : dict
        Everything ``backward`` needs, the per-step gates ``"z"``, ``"r"``,
        ``"c"`` (T, B, H), each sublayer's output under ``"out"`` (dict of
        (T, B, H)), and with BN ``"rolling"``: the rolling statistics after
        the call (dict keyed ``"<sub>.rolling_mean"`` / ``"<sub>.rolling_variance"``).
    """
    _check(variant, activation)
    p = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    x = np.asarray(x, dtype=np.float64)
    T, B, _ = x.shape
    H = p["uz.weights"].shape[0]
    if batch_normalize and train and B < 2:
        raise ValueError(f"x: BN training needs a batch of at least 2 rows, got B={B}")
    h = np.zeros((B, H)) if h0 is None else np.array(h0, dtype=np.float64)
    rolling = {}
    if batch_normalize:
        rolling = {f"{sub}.{k}": p[f"{sub}.{k}"].copy() for sub in SUBLAYERS
                   for k in ("rolling_mean", "rolling_variance")}
    bn = batch_normalize
    y = np.empty((T, B, H))
    hprev = np.empty((T, B, H))
    z_all, r_all, c_all, sq_all = (np.empty((T, B, H)) for _ in range(4))
    out = {sub: np.empty((T, B, H)) for sub in SUBLAYERS}
    bn_cache = {sub: [None] * T for sub in SUBLAYERS}

    def sublayer(sub, v, t):
        o, bn_cache[sub][t] = _sublayer_forward(p, sub, v, bn, train, rolling)
        out[sub][t] = o
        return o

    for t in range(T):
        hprev[t] = h
        z = logistic(sublayer("uz", x[t], t) + sublayer("wz", h, t))
        r = logistic(sublayer("ur", x[t], t) + sublayer("wr", h, t))
        if variant == "darknet":
            s = r * h
            c = _activate(sublayer("uh", x[t], t) + sublayer("wh", s, t), activation)
            sq_all[t] = s
        else:
            q = sublayer("wh", h, t)
            c = _activate(sublayer("uh", x[t], t) + r * q, activation)
            sq_all[t] = q
        h = z * h + (1.0 - z) * c
        z_all[t], r_all[t], c_all[t], y[t] = z, r, c, h

    cache = {"x": x, "hprev": hprev, "z": z_all, "r": r_all,
             "c": c_all, "s" if variant == "darknet" else "q": sq_all,
             "out": out, "bn": bn_cache if bn else None, "variant": variant,
             "activation": activation, "batch_normalize": bn, "train": train}
    if bn and train:
        cache["rolling"] = rolling
    return y, h.copy(), cache


def backward(params, cache, dy, dstate=None):
    """Backpropagation through time over one ``forward`` call.

    Parameters
    ----------
    params : dict of str to array_like
        The parameters given to the ``forward`` call that made ``cache``.
    cache : dict
        Third result of ``forward``.
    dy : array_like, (T, B, H)
        ``dL/dy``.
    dstate : array_like, (B, H), optional
        ``dL/dh_{T-1}``; None means zeros.

    Returns
    -------
    dx : ndarray, (T, B, I), float64
        ``dL/dx``.
    dh0 : ndarray, (B, H), float64
        ``dL/dh_{-1}``.
    grads : dict of str to ndarray
        True gradients ``dL/dparam`` of every trainable parameter (weights,
        biases and, with BN, scales), float64.

    Notes
    -----
    A cache from an inference call (``train=False``) is accepted too: the
    result is the gradient of that computation, with BN's rolling statistics
    held constant.  The engine only backpropagates training calls.
    """
    p = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    x, hprev = cache["x"], cache["hprev"]
    z_all, r_all, c_all = cache["z"], cache["r"], cache["c"]
    variant, activation = cache["variant"], cache["activation"]
    bn = cache["bn"]
    dy = np.asarray(dy, dtype=np.float64)
    T = x.shape[0]
    grads = {k: np.zeros_like(p[k]) for k in trainable_names(cache["batch_normalize"])}
    dx = np.zeros_like(x)
    dh = np.zeros_like(hprev[0]) if dstate is None else np.array(dstate, dtype=np.float64)

    def sub_back(sub, g, v, t):
        return _sublayer_backward(p, sub, g, v, None if bn is None else bn[sub][t], grads)

    for t in reversed(range(T)):
        h, z, r, c = hprev[t], z_all[t], r_all[t], c_all[t]
        g = dy[t] + dh
        # h_t = z * h_{t-1} + (1 - z) * c;  z = sig(uz(x) + wz(h));  c = act(ah)
        daz = g * (h - c) * z * (1.0 - z)
        dah = g * (1.0 - z) * _activation_gradient(c, activation)
        dh = g * z
        if variant == "darknet":
            # ah = uh(x) + wh(s);  s = r * h;  r = sig(ur(x) + wr(h))
            s = cache["s"][t]
            ds = sub_back("wh", dah, s, t)
            dar = ds * h * r * (1.0 - r)
            dh += ds * r
        else:
            # ah = uh(x) + r * q;  q = wh(h);  r = sig(ur(x) + wr(h))
            q = cache["q"][t]
            dh += sub_back("wh", dah * r, h, t)
            dar = dah * q * r * (1.0 - r)
        dh += sub_back("wz", daz, h, t) + sub_back("wr", dar, h, t)
        dx[t] = (sub_back("uz", daz, x[t], t) + sub_back("ur", dar, x[t], t)
                 + sub_back("uh", dah, x[t], t))
    return dx, dh, grads


def sgd_update(w, u, g, *, lr, momentum, decay, batch, is_weight, clip=None):
    """One SGD step with momentum and decay, Darknet's rule (SPEC section 1).

    Parameters
    ----------
    w, u, g : array_like, any shape (all the same)
        Parameter, momentum buffer (Darknet's ``weight_updates``) and the
        accumulated true gradient.
    lr, momentum, decay : float
        Learning rate, momentum and weight decay.
    batch : int or float
        Rows the gradient was summed over; the step is divided by it.
    is_weight : bool
        Weights get decay; biases and scales do not.
    clip : float, optional
        Clamp each gradient element to ``[-clip, clip]`` first.

    Returns
    -------
    w, u : ndarray, float64
        The new parameter and momentum buffer (inputs are not modified; the
        caller zeroes ``g``).
    """
    w, u, g = (np.asarray(a, dtype=np.float64) for a in (w, u, g))
    if clip is not None:
        g = np.clip(g, -clip, clip)
    u = u - g
    if is_weight:
        u = u - decay * batch * w
    w = w + (lr / batch) * u
    u = momentum * u
    return w, u


def adam_update(w, m, v, g, *, lr, b1, b2, eps, decay, batch, t, clip=None):
    """One Adam step, Darknet's GPU rule (SPEC section 1).

    Parameters
    ----------
    w, m, v, g : array_like, any shape (all the same)
        Parameter, first and second moments, accumulated true gradient.
    lr, b1, b2, eps, decay : float
        Hyper-parameters; decay applies to every parameter.
    batch : int or float
        Rows the gradient was summed over (scales the decay only).
    t : int
        Update count, starting at 1.
    clip : float, optional
        Clamp each gradient element to ``[-clip, clip]`` first.

    Returns
    -------
    w, m, v : ndarray, float64
        The new parameter and moments (inputs are not modified).
    """
    w, m, v, g = (np.asarray(a, dtype=np.float64) for a in (w, m, v, g))
    if clip is not None:
        g = np.clip(g, -clip, clip)
    g = g + decay * batch * w
    m = b1 * m + (1.0 - b1) * g
    v = b2 * v + (1.0 - b2) * g * g
    w = w - lr * (m / (1.0 - b1 ** t)) / (np.sqrt(v / (1.0 - b2 ** t)) + eps)
    return w, m, v
