"""The single list of kernels both engines implement, with their contracts.

Every name below exists once in the Cython engine (``gru_cy._cpu``, as a
``cdef ... noexcept nogil`` function taking raw pointers) and once in the CUDA
sources (``src_kernels/*.cu``, as ``extern "C" __global__`` entry points named
``<name>_f32`` and ``<name>_f64``).  Arguments come in one order on both
engines: outputs, caches, inputs, parameters, sizes, scalars.  The CPU twin
takes one extra trailing argument, ``nthreads`` (the OpenMP team size); the
CUDA twin's launch geometry is chosen by its launcher in ``gru_cy.cuda``.

Write rule (identical on both engines): activations and caches are
overwritten; arguments marked ``+=`` accumulate; ``sgd_update`` and
``adam_update`` modify parameters in place and zero the gradient.

Layout conventions (row-major throughout, sizes T, B, I, H):

* ``ld`` is the row stride (in elements) of a matrix argument.
* Gate blocks are ordered ``[z | r | h]``: a "3H row" holds the z, r and h
  columns side by side.  ``xp`` is the (T*B, 3H) input projection
  ``x @ [Uz; Ur; Uh].T``; ``hp`` the (B, 3H) recurrent projection of one step.
* Activation codes: see ``ACTIVATIONS`` (index = code).
"""

ACTIVATIONS = ("logistic", "tanh", "linear", "relu", "leaky", "elu", "selu",
               "relie", "ramp", "hardtan", "lhtan", "plse", "loggy")
"""Activation codes; the GRU candidate uses only 0 (logistic) and 1 (tanh)."""

ACT_LOGISTIC = 0
ACT_TANH = 1

BN_EPS = 1e-6
"""Batch normalisation's epsilon: vhat = (v - mu) / (sqrt(var) + BN_EPS)."""
BN_MOMENTUM = 0.99
BN_NEW = 0.01
"""Rolling statistics: rolling = BN_MOMENTUM * rolling + BN_NEW * batch statistic, as SPEC
writes it (0.01, not 1 - 0.99, which rounds to another double)."""

KERNELS = {
    # --- gemm -------------------------------------------------------------
    "gemm": (
        "C, A, B, M, N, K, lda, ldb, ldc, transA, transB, alpha, beta",
        "C (M, N) = alpha * op(A) @ op(B) + beta * C.  op(A) is (M, K): A is "
        "(M, K) if not transA else (K, M).  op(B) is (K, N): B is (K, N) if not "
        "transB else (N, K).  beta == 0 overwrites C without reading it.  Each "
        "C element's k-sum runs in one fixed order on one thread."),
    # --- forward ----------------------------------------------------------
    "bias_forward": (
        "Y, bias, R, C, ldy",
        "Y[r, c] += bias[c] for r < R, c < C."),
    "bn_forward_train": (
        "Y, vhat, sd, rolling_mean, rolling_variance, scales, biases, G, B, C, ld",
        "G groups (time steps) of B rows; element (g, b, c) of Y and vhat is at "
        "[(g*B + b)*ld + c], of sd at [g*ld + c].  Per group and column: "
        "mu = mean_b Y, var = sum_b (Y - mu)^2 / (B - 1), d = sqrt(var) + 1e-6, "
        "vhat = (Y - mu) / d (cache), sd = sqrt(var) (cache), "
        "Y = scales*vhat + biases; rolling_mean = 0.99*rolling_mean + 0.01*mu "
        "and rolling_variance likewise with var, once per group, g ascending."),
    "bn_forward_infer": (
        "Y, rolling_mean, rolling_variance, scales, biases, R, C, ldy",
        "Y = scales*(Y - rolling_mean)/(sqrt(rolling_variance) + 1e-6) + biases."),
    "gru_darknet_gates_forward": (
        "z, r, s, xp, hp, hprev, B, H, ldx, ldh",
        "z, r, s, hprev: (B, H) contiguous; xp, hp: rows of stride ldx / ldh, "
        "columns [0:H] = z part, [H:2H] = r part.  z = sig(xp_z + hp_z), "
        "r = sig(xp_r + hp_r), s = r * hprev."),
    "gru_darknet_state_forward": (
        "c, h, xp, hp, z, hprev, B, H, ldx, ldh, act",
        "c, h, z, hprev: (B, H); xp, hp: column block [2H:3H] of rows of "
        "stride ldx / ldh (the pointers passed point at column 2H).  "
        "c = act(xp_h + hp_h); h = z*hprev + (1 - z)*c.  h may alias nothing."),
    "gru_reset_after_forward": (
        "z, r, q, c, h, xp, hp, hprev, B, H, ldx, ldh, act",
        "z, r, q, c, h, hprev: (B, H); xp, hp: (B, 3H) rows of stride ldx / ldh.  "
        "z = sig(xp_z + hp_z), r = sig(xp_r + hp_r), q = hp_h, "
        "c = act(xp_h + r*q), h = z*hprev + (1 - z)*c.  q may be NULL (inference)."),
    # --- backward ---------------------------------------------------------
    "gru_darknet_gates_backward": (
        "dau, daw, dh, dy, z, c, hprev, B, H, ldd, act",
        "dau, daw: (B, 3H) rows of stride ldd, columns [0:H] and [2H:3H] written; "
        "dh (B, H) in/out; dy, z, c, hprev: (B, H).  g = dy + dh; "
        "daz = g*(hprev - c)*z*(1 - z); dah = g*(1 - z)*act'(c); "
        "dau_z = daw_z = daz; dau_h = daw_h = dah; dh = g*z.  daw may be dau "
        "(one shared buffer: written once)."),
    "gru_darknet_reset_backward": (
        "dau, daw, dh, ds, r, hprev, B, H, ldd",
        "dau, daw: column block [H:2H] (pointers at column H), rows of stride ldd; "
        "dh (B, H) +=; ds, r, hprev: (B, H).  dar = ds*hprev*r*(1 - r); "
        "dau_r = daw_r = dar; dh += ds*r."),
    "gru_reset_after_backward": (
        "dau, daw, dh, dy, z, r, q, c, hprev, B, H, ldd, act",
        "dau, daw: (B, 3H) rows of stride ldd; dh (B, H) in/out; others (B, H).  "
        "g = dy + dh; daz = g*(hprev - c)*z*(1 - z); dah = g*(1 - z)*act'(c); "
        "dq = dah*r; dar = dah*q*r*(1 - r); dau = [daz|dar|dah]; "
        "daw = [daz|dar|dq]; dh = g*z."),
    "bn_backward": (
        "dY, dscales, dbiases, vhat, sd, scales, G, B, C, ld",
        "Layout as bn_forward_train.  dY holds dL/d(out) on entry and dL/dv on "
        "exit.  Per group and column: dscales += sum_b g*vhat; dbiases += sum_b g; "
        "gv = g*scales; d = sd + 1e-6; dv = (gv - mean_b gv)/d - "
        "vhat*sum_b(gv*vhat)/((B - 1)*sd) (second term 0 where sd == 0).  "
        "Groups accumulate in ascending g."),
    "col_sum": (
        "out, A, R, C, lda",
        "out[c] += sum_{r < R} A[r, c], r ascending."),
    # --- sequences --------------------------------------------------------
    "seq_gather": (
        "Y, X, rows, R, C, ldy, ldx",
        "rows: (R,) int64.  For i < R, c < C: Y[i*ldy + c] = X[rows[i]*ldx + c] "
        "where rows[i] >= 0, else 0.  Packs the running sequences of a padded "
        "batch (gru_cy.sequences) and unpacks them, zeros in the padding."),
    # --- update -----------------------------------------------------------
    "sgd_update": (
        "w, u, g, n, n_decay, lr, momentum, decay, batch, clip",
        "For i < n (elements i < n_decay are weights and get decay): "
        "g_i clipped to [-clip, clip] when clip > 0; u = u - g; "
        "u = u - decay*batch*w (i < n_decay); w = w + (lr/batch)*u; "
        "u = momentum*u; g = 0."),
    "adam_update": (
        "w, m, v, g, n, lr, b1, b2, eps, decay, batch, t, clip",
        "For i < n: g clipped when clip > 0; g' = g + decay*batch*w; "
        "m = b1*m + (1 - b1)*g'; v = b2*v + (1 - b2)*g'^2; "
        "w = w - lr*(m/(1 - b1^t))/(sqrt(v/(1 - b2^t)) + eps); g = 0."),
    "sgd_check": (
        "out, w, u, g, n, n_decay, lr, momentum, decay, batch, clip",
        "out[0] = 1 where some i < n would get a non-finite new w_i or u_i "
        "under sgd_update's rule (same arguments, same arithmetic), else out[0] "
        "is left as it is; nothing else is written.  The update checks its step "
        "first (a step that would leave a non-finite parameter changes nothing)."),
    "adam_check": (
        "out, w, m, v, g, n, lr, b1, b2, eps, decay, batch, t, clip",
        "out[0] = 1 where some i < n would get a non-finite new w_i, m_i or v_i "
        "under adam_update's rule, else out[0] is left as it is; nothing else "
        "is written."),
    # --- network building blocks ------------------------------------------
    "activation_forward": (
        "Y, n, act",
        "Y = act(Y) in place (Darknet's formulas, numerically stable)."),
    "activation_backward": (
        "dY, Y, n, act",
        "dY *= act'(x) expressed through the output Y = act(x), as Darknet's "
        "gradient()."),
    "softmax_forward": (
        "P, X, R, C, ldx",
        "P (R, C) = softmax of each row of X (max-subtracted)."),
    "softmax_cross_entropy_backward": (
        "dX, loss, P, target, R, C, scale",
        "dX = scale*(P - target); loss[r] = -sum_c target*log(max(P, tiny)). "
        "All (R, C) contiguous; loss (R,)."),
    "mse_backward": (
        "dX, loss, Y, target, R, C, scale",
        "dX = scale*(Y - target); loss[r] = sum_c (Y - target)^2 / 2.  "
        "All (R, C) contiguous; loss (R,)."),
}

KERNEL_NAMES = tuple(KERNELS)
"""Names every engine implements: the Cython twin under this name, the CUDA
twin as ``<name>_f32`` / ``<name>_f64``."""


# ------------------------------------------------------------------ layout ---
# Both engines lay a layer out the same way; this module is the one place that
# says how.  gru_cy._cpu.engine checks at import that its compiled layout
# (gru_cy/_cpu/layout.pxd) agrees.

CHUNK_ROWS = 512
"""Rows (steps x batch) per chunk of the input projection and of the backward's
gradient buffers: big enough for efficient gemms, small enough that no
(T, B, 3H) buffer is ever held.  Chunks depend on B only, never on threads."""


def chunk_steps(T, B):
    """Steps per chunk: ``CHUNK_ROWS // B``, at least 1, at most ``T``."""
    return min(max(CHUNK_ROWS // B, 1), T)


def param_layout(inputs, outputs, batch_normalize):
    """Where each block of a layer's flat parameter vector ``theta`` lies.

    ``theta`` holds U (3H, I), rows [uz; ur; uh]; W (3H, H), rows [wz; wr; wh];
    the biases (6, H), rows uz, ur, uh, wz, wr, wh; with BN the scales (6, H) in
    the same order.  The gradient vector has the same layout.  The weights come
    first: SGD's weight decay applies to the elements before the biases.

    Returns
    -------
    dict
        ``"U"``, ``"W"``, ``"biases"``, ``"scales"`` (BN only) -> (offset in
        elements, shape), in storage order.
    """
    I, H = int(inputs), int(outputs)
    oW = 3 * H * I
    ob = oW + 3 * H * H
    out = {"U": (0, (3 * H, I)), "W": (oW, (3 * H, H)), "biases": (ob, (6, H))}
    if batch_normalize:
        out["scales"] = (ob + 6 * H, (6, H))
    return out


def param_size(inputs, outputs, batch_normalize):
    """The length of a layer's flat parameter vector (:func:`param_layout`)."""
    off, (rows, cols) = list(param_layout(inputs, outputs, batch_normalize).values())[-1]
    return off + rows * cols


def rolling_shape(outputs):
    """The BN rolling statistics: (2, 6H), the means then the variances, each in
    sublayer order uz, ur, uh, wz, wr, wh."""
    return (2, 6 * int(outputs))


def scratch_shapes(rows, B, H):
    """Per-shape scratch of a forward, as name -> shape (both engines).

    ``xp``: one chunk of input projections (rows = chunk_steps * B, 3H);
    ``hp``: one step's recurrent projections; ``z r c sq``: one step's gates
    (inference; training writes them into the cache); ``zeros``: h0 = 0.
    """
    return {"xp": (rows, 3 * H), "hp": (B, 3 * H), "z": (B, H), "r": (B, H),
            "c": (B, H), "sq": (B, H), "zeros": (B, H)}


def cache_shapes(T, B, H, batch_normalize):
    """The training cache, as name -> shape (both engines; ``x`` is kept too).

    ``hs``: h_{-1} .. h_{T-1}; ``z r c``: gates and candidate; ``sq``: s
    (darknet) or q (reset_after); with BN the normalised values ``vu``/``vw``
    and standard deviations ``su``/``sw`` of the u and w sublayers.
    """
    shapes = {"hs": (T + 1, B, H), "z": (T, B, H), "r": (T, B, H), "c": (T, B, H),
              "sq": (T, B, H)}
    if batch_normalize:
        shapes.update({"vu": (T, B, 3 * H), "su": (T, 3 * H), "vw": (T, B, 3 * H),
                       "sw": (T, 3 * H)})
    return shapes


def cache_size_per_step(batch_normalize, candidates=True):
    """Training-cache elements per (step, sequence), in units of H.

    h_{t-1}, z, r, c and s (darknet) or q (reset_after): 5 H; with BN the
    normalised values of the six sublayers add 6 H (and their standard
    deviations 6 H per step, shared by the batch).  ``candidates`` False: no
    c (the CPU engine's reset_after without BN and with its own gemm, whose
    backward recomputes c per chunk).  The gradient buffers of the backward
    hold one chunk of about 512 rows (steps x batch), not T steps.
    """
    return (5 if candidates else 4) + (6 if batch_normalize else 0)


# ------------------------------------------------ buffers both engines allocate ---
# xp: the engine's array module (numpy or cupy); rows: the engine's own rows
# per chunk (each engine sizes its buffers by the chunking it runs).

def scratch(xp, rows, B, H, dtype):
    """A forward's per-shape scratch (:func:`scratch_shapes`), zeroed; ``rows``:
    the engine's rows per chunk, ``chunk_steps(T, B) * B``."""
    return {k: xp.zeros(shape, dtype) for k, shape in scratch_shapes(rows, B, H).items()}


def training_cache(xp, x, h0, H, batch_normalize, dtype, candidates=True, spare=None):
    """A training forward's cache: the arrays of :func:`cache_shapes` (without
    ``c`` where ``candidates`` is False), ``x`` (kept, not copied) and
    ``hs[0]`` = ``h0`` (None: zeros).  ``spare``: an earlier cache whose arrays
    are reused where all their shapes match (no fresh pages per training step).
    """
    T, B = x.shape[:2]
    shapes = cache_shapes(T, B, H, batch_normalize)
    if not candidates:
        del shapes["c"]
    cache = spare
    if cache is None or set(cache) - {"x"} != set(shapes) or any(
            cache[k].shape != shape for k, shape in shapes.items()):
        cache = {k: xp.empty(shape, dtype) for k, shape in shapes.items()}
    cache["x"] = x
    cache["hs"][0] = 0 if h0 is None else h0
    return cache


def backward_buffers(xp, rows, B, H, dtype, shared):
    """The backward's chunk buffers: ``dau`` and ``daw`` (``rows`` of a chunk,
    3H), one array where ``shared`` (the u and w sublayers' gradients are
    equal: darknet without BN), and ``ds`` (B, H)."""
    dau = xp.empty((rows, 3 * H), dtype)
    return {"dau": dau, "daw": dau if shared else xp.empty((rows, 3 * H), dtype),
            "ds": xp.empty((B, H), dtype)}
