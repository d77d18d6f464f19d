"""Gradient check of the GRU layer against SciPy finite differences.

The check compares the layer's analytic backward with numeric derivatives of
the scalar loss

    L = sum(w * y) + sum(v * h_T)

where ``y = layer.forward(x, train=True, h0=h0)`` is ``(T, B, H)``, ``h_T`` is
the final state ``(B, H)`` and ``w``, ``v`` are fixed random arrays, so that
every output and the final state carry gradient.  The analytic side is one
training forward and ``layer.backward(dy=w, dstate=v)``; it yields ``dL/dx``
(the returned ``dx``), ``dL/dh0`` (``layer.dh0``) and every trainable
parameter's gradient (``layer.grads``).  The numeric side differentiates ``L``
one coordinate at a time with :func:`scipy.differentiate.derivative`.

Everything runs in float64 and uses only the public ``gru_cy.GRU`` API
(SPEC section 2).  Following SPEC section 6, every loss evaluation passes
``h0`` explicitly and the rolling statistics of batch normalisation are
restored after it, so no evaluation sees another's state; ``h0`` is random
with distinct rows (with equal rows the ``w*`` sublayers' batch variance at
step 0 is 0 and BN scales the gradient by 1/1e-6).

Choice of the numeric method and of the default tolerances
----------------------------------------------------------
A plain central difference with step ``h`` in float64 has truncation error
``h**2 |L'''| / 6`` and rounding error about ``u |L| / h`` (``u`` = 2.2e-16);
the best it can do, at ``h ~ u**(1/3) ~ 6e-6``, is an error of about
``u**(2/3) ~ 4e-11`` times the scale of ``L``.
:func:`scipy.differentiate.derivative` instead uses an eighth-order central
stencil (abscissae ``x +- h/2**k``, k = 0..3) and halves ``h`` per iteration
until two successive estimates agree (Richardson-style refinement).  Its
truncation error is ``O(h**8)``, negligible once ``h`` is small next to the
scale on which the gates and the candidate curve (O(1) here: the inputs,
``h0`` and the weights are O(1)), so the step can stay large, and its rounding
error is ``u |L| C / h`` with ``C = 13.5`` (the sum of the stencil's absolute
weights in units of ``1/h``).  With the default initial step ``eps = 1e-3``
and ``|L| ~ 10`` that is about 3e-11, which is what the check measures on the
default configurations (largest error over the variant x activation x BN
matrix: 2.3e-11 at B = 2, 4.5e-11 at B = 3); the error grows with ``|L|``,
i.e. with ``T * B * H`` (about 2e-10 at T = 10, B = 4, H = 16).

The step is not taken larger because with batch normalisation and ``B = 2``
the normalised output is ``+-1/sqrt(2)`` up to an O(1e-6) correction, a
function with a kink where the two rows' pre-activations cross: a stencil
reaching across it ruins the estimate, so the step must stay small next to
the rows' spread (measured on the default matrix at B = 2: eps = 1e-2 fails
there, error 6e-8).  It is not taken smaller because rounding grows as
``1/h`` (measured: largest error 7e-10 at eps = 1e-4, 1.5e-8 at 1e-5).

A coordinate passes when ``|analytic - numeric| <= atol + rtol * |numeric|``
(NumPy's ``allclose`` rule).  The defaults ``atol = 1e-8`` and
``rtol = 1e-6`` sit more than two orders of magnitude above that numeric
error (the float64 engine's own error, ~1e-15 relative, is smaller still),
while a wrong gradient formula gives errors of the order of the gradient
itself (1e-3 to 1), which they catch; for much larger layers raise ``atol``
with ``|L|``.  The relative error is reported for information only: for
gradients near zero (BN at ``B = 2`` makes many of them ~1e-9) it is large
while ``atol`` governs.

Large tensors are sampled: at most ``max_coords`` coordinates per tensor,
chosen without replacement by a generator seeded with ``seed``; tensors with
at most ``max_coords`` elements are checked in full.
"""

import argparse
import json
import sys
import time

import numpy as np
from scipy.differentiate import derivative
from gru_cy import _files
from gru_cy import _validate as V
from gru_cy.backends import to_host

VARIANTS = ("darknet", "reset_after")
ACTIVATIONS = ("tanh", "logistic")

DEFAULT_EPS = 1e-3
"""Initial (largest) step of the finite-difference stencil; see module doc."""
DEFAULT_RTOL = 1e-6
"""Relative tolerance of the comparison; see module doc."""
DEFAULT_ATOL = 1e-8
"""Absolute tolerance of the comparison; see module doc."""
DEFAULT_MAX_COORDS = 100
"""Coordinates checked per tensor; smaller tensors are checked in full."""
ORDER = 8
"""Order of scipy's central-difference stencil (scipy's own default)."""
MAXITER = 4
"""Iterations scipy may take (the step halves each time, so the smallest step
is ``eps / 2**(MAXITER - 1) / 8``).  Two suffice almost always; the cap keeps
the rounding error, which grows as the step shrinks, within 8x of its value at
the initial step where estimates keep disagreeing (e.g. at a gradient that is
zero up to rounding)."""
FD_TOL_FRACTION = 0.01
"""scipy stops refining a derivative once two successive estimates agree within
this fraction of the check's own tolerance (``FD_TOL_FRACTION * (atol + rtol
|df|)``).  Without it, tiny derivatives never meet scipy's default relative
tolerance and the step keeps halving until rounding (``~ u |L| / h``) grows."""


def _to_numpy(a):
    """Copy an array of any device (NumPy or CuPy) into a float64 NumPy array."""
    return np.array(to_host(a), dtype=np.float64)


class GradcheckResult:
    """Outcome of one gradient check.

    Attributes
    ----------
    config : dict
        The configuration checked: inputs, outputs, batch, steps, variant,
        activation, batch_normalize, device, seed, eps, rtol, atol,
        max_coords.
    rows : list of dict
        One dict per tensor, in the order x, h0, then ``layer.grads``.  Keys:
        ``name`` (str), ``shape`` (list of int), ``size`` (int), ``checked``
        (number of coordinates compared), ``max_abs_grad`` (largest
        ``|numeric|``), ``max_abs_err`` (largest ``|analytic - numeric|``),
        ``max_rel_err`` (largest ``|analytic - numeric| / max(|analytic|,
        |numeric|)``, 0 where both are 0), ``fd_error`` (largest error
        estimate scipy reports for the numeric derivatives) and ``ok`` (every
        checked coordinate within ``atol + rtol * |numeric|``).
    elapsed_s : float
        Wall time of the check in seconds.
    """

    def __init__(self, config, rows, elapsed_s):
        self.config = dict(config)
        self.rows = list(rows)
        self.elapsed_s = float(elapsed_s)

    @property
    def ok(self):
        """bool: True when every tensor passed."""
        return all(row["ok"] for row in self.rows)

    @property
    def failed(self):
        """list of str: names of the tensors that failed."""
        return [row["name"] for row in self.rows if not row["ok"]]

    def to_dict(self):
        """Return a JSON-serialisable dict: ``config``, ``ok``, ``elapsed_s``, ``rows``."""
        return {"config": dict(self.config), "ok": self.ok,
                "elapsed_s": self.elapsed_s, "rows": [dict(r) for r in self.rows]}

    def format_table(self):
        """Return the result as a plain-text table (str), one line per tensor."""
        c = self.config
        head = (f"variant={c['variant']} activation={c['activation']} "
                f"batch_normalize={c['batch_normalize']} I={c['inputs']} H={c['outputs']} "
                f"B={c['batch']} T={c['steps']} device={c['device']} seed={c['seed']} "
                f"eps={c['eps']:g} rtol={c['rtol']:g} atol={c['atol']:g}")
        lines = [head,
                 f"  {'tensor':<20} {'shape':<12} {'checked':>7} {'max|grad|':>10} "
                 f"{'max abs err':>11} {'max rel err':>11}  status"]
        for r in self.rows:
            shape = "x".join(str(n) for n in r["shape"])
            lines.append(
                f"  {r['name']:<20} {shape:<12} {r['checked']:>7} {r['max_abs_grad']:>10.3e} "
                f"{r['max_abs_err']:>11.3e} {r['max_rel_err']:>11.3e}  "
                f"{'ok' if r['ok'] else 'FAIL'}")
        lines.append(f"  {'PASS' if self.ok else 'FAIL'} "
                     f"({len(self.rows) - len(self.failed)}/{len(self.rows)} tensors, "
                     f"{self.elapsed_s:.2f} s)")
        return "\n".join(lines)

    def __repr__(self):
        return (f"GradcheckResult(ok={self.ok}, tensors={len(self.rows)}, "
                f"failed={self.failed})")


def _check_positive_int(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value}")


def _check_positive_float(name, value, allow_zero=False):
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a float, got {type(value).__name__} {value!r}")
    if not np.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name}: expected a finite float {bound}, got {value!r}")
    return value


class _Loss:
    """L(x, h0, params) = sum(w * y) + sum(v * h_T), evaluated without side effects.

    Every evaluation runs with the same ``lengths`` and, for a stack with
    dropout, the same dropout masks (the generator is set back before each).
    """

    def __init__(self, layer, x, h0, w, v, lengths=None):
        self.layer = layer
        self.x, self.h0, self.w, self.v = x, h0, w, v
        self.lengths = lengths
        self.rolling = {k: _to_numpy(a) for k, a in layer.params.items() if "rolling" in k}
        self.dropout_state = getattr(layer, "dropout_state", None)

    def restore_rolling(self):
        for k, a in self.rolling.items():
            self.layer.params[k] = a

    def forward(self, x, h0):
        if self.dropout_state is not None:
            self.layer.dropout_state = self.dropout_state
        return self.layer.forward(x, train=True, h0=h0, lengths=self.lengths)

    def __call__(self, x, h0):
        try:
            y = _to_numpy(self.forward(x, h0))
            hT = _to_numpy(self.layer.state)
        finally:
            self.restore_rolling()
        return float(np.sum(self.w * y) + np.sum(self.v * hT))


def _numeric(loss, name, base, idx, eps, rtol, atol):
    """Numeric dL/d(name) at the flat indices ``idx`` of ``base``; returns (df, err)."""
    work = base.copy()
    flat = work.reshape(-1)
    layer = loss.layer

    if name == "x":
        def evaluate():
            return loss(work, loss.h0)
    elif name == "h0":
        def evaluate():
            return loss(loss.x, work)
    else:
        def evaluate():
            layer.params[name] = work
            return loss(loss.x, loss.h0)

    def f(values, index):
        values, index = np.broadcast_arrays(values, index)
        out = np.empty(values.shape)
        for j in np.ndindex(values.shape):
            i = int(index[j])
            flat[i] = values[j]
            try:
                out[j] = evaluate()
            finally:
                flat[i] = base.flat[i]
        return out

    try:
        res = derivative(f, base.reshape(-1)[idx], args=(idx,), initial_step=eps,
                         order=ORDER, maxiter=MAXITER,
                         tolerances={"atol": FD_TOL_FRACTION * atol,
                                     "rtol": FD_TOL_FRACTION * rtol})
    finally:
        if name not in ("x", "h0"):
            layer.params[name] = base
    return np.asarray(res.df, dtype=np.float64), np.asarray(res.error, dtype=np.float64)


def _compare(name, analytic, numeric, fd_error, size, shape, rtol, atol):
    diff = np.abs(analytic - numeric)
    scale = np.maximum(np.abs(analytic), np.abs(numeric))
    rel = np.divide(diff, scale, out=np.zeros_like(diff), where=scale > 0)
    finite = np.isfinite(numeric) & np.isfinite(analytic)
    ok = bool(np.all(finite & (diff <= atol + rtol * np.abs(numeric))))
    fd_err = fd_error[np.isfinite(fd_error)]
    return {"name": name, "shape": [int(n) for n in shape], "size": int(size),
            "checked": int(analytic.size),
            "max_abs_grad": float(np.max(np.abs(numeric), initial=0.0)),
            "max_abs_err": float(np.max(diff, initial=0.0)),
            "max_rel_err": float(np.max(rel, initial=0.0)),
            "fd_error": float(np.max(fd_err, initial=0.0)),
            "ok": ok}


def _layer_float64(layer):
    for k, a in layer.params.items():
        dtype = getattr(a, "dtype", None)
        if dtype != np.float64:
            raise ValueError(f"layer: expected a float64 layer (dtype=np.float64), got "
                             f"params[{k!r}] of dtype {dtype}")


def check(inputs=3, outputs=4, batch=2, steps=3, variant="darknet", activation="tanh",
          batch_normalize=False, device="cpu", seed=0, eps=DEFAULT_EPS, rtol=DEFAULT_RTOL,
          atol=DEFAULT_ATOL, max_coords=DEFAULT_MAX_COORDS, layer=None, lengths=None,
          reverse=False, num_layers=1, bidirectional=False, dropout=0.0):
    """Check a GRU layer's (or a ``StackedGRU``'s) backward against SciPy finite differences.

    Parameters
    ----------
    inputs, outputs : int
        ``I`` and ``H`` of the layer built here (ignored when ``layer`` is given).
    batch, steps : int
        ``B`` and ``T`` of the random input ``x`` of shape ``(T, B, I)``.
    variant : {"darknet", "reset_after"}
    activation : {"tanh", "logistic"}
    batch_normalize : bool
        Needs ``batch >= 2`` (BN training).
    device : str
        ``"cpu"`` or ``"cuda"``; the check itself runs on the host.
    seed : int
        Seeds the layer's initialisation, the random biases and scales, ``x``,
        ``h0``, ``w``, ``v`` and the coordinate sampling.
    eps : float
        Initial (largest) step of scipy's finite-difference stencil.
    rtol, atol : float
        A coordinate passes when ``|analytic - numeric| <= atol + rtol * |numeric|``.
    max_coords : int or None
        Coordinates checked per tensor (a seeded random subset when the tensor
        is larger); None checks every coordinate.
    lengths : integer array (batch,) or None
        Sequence lengths of a padded batch (``forward(..., lengths=)``).
    reverse : bool
        A reverse GRU (one layer).
    num_layers, bidirectional, dropout : int, bool, float
        Check a ``gru_cy.StackedGRU`` of these (built when ``num_layers > 1``,
        ``bidirectional`` or ``dropout > 0``); dropout masks are fixed: every
        evaluation draws the same ones.
    layer : gru_cy.GRU or gru_cy.StackedGRU, optional
        A float64 layer to check instead of building one.  Its parameters are
        used as they are and restored afterwards (its state too); its
        gradients are zeroed and hold this check's gradients on return.
        ``inputs``, ``outputs``, ``variant``, ``activation``,
        ``batch_normalize`` and ``device`` are then taken from the layer.

    Returns
    -------
    GradcheckResult
        ``.ok``, ``.rows`` (one per tensor: x, h0, then every key of
        ``layer.grads``), ``.to_dict()``, ``.format_table()``.

    Raises
    ------
    ValueError, TypeError
        Invalid arguments, a layer that is not float64, or BN with ``batch < 2``.
    RuntimeError
        ``device="cuda"`` when CUDA cannot be had (raised by the layer).
    """
    _check_positive_int("batch", batch)
    _check_positive_int("steps", steps)
    _check_positive_int("seed", seed, minimum=0)
    eps = _check_positive_float("eps", eps)
    rtol = _check_positive_float("rtol", rtol, allow_zero=True)
    atol = _check_positive_float("atol", atol, allow_zero=True)
    if max_coords is not None:
        _check_positive_int("max_coords", max_coords)
    start = time.perf_counter()
    rng = np.random.default_rng(seed)

    if layer is None:
        _check_positive_int("inputs", inputs)
        _check_positive_int("outputs", outputs)
        if variant not in VARIANTS:
            raise ValueError(f"variant: expected one of {VARIANTS}, got {variant!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation: expected one of {ACTIVATIONS}, got {activation!r}")
        _check_positive_int("num_layers", num_layers)
        dropout = _check_positive_float("dropout", dropout, allow_zero=True)
        if num_layers > 1 or bidirectional or dropout > 0:
            if reverse:
                raise ValueError("reverse: expected False for a stack (use bidirectional), "
                                 "got True")
            from gru_cy import StackedGRU
            layer = StackedGRU(inputs, outputs, num_layers=num_layers,
                               bidirectional=bool(bidirectional), dropout=dropout,
                               variant=variant, activation=activation,
                               batch_normalize=bool(batch_normalize), dtype=np.float64,
                               device=device, seed=seed)
        else:
            from gru_cy import GRU
            layer = GRU(inputs, outputs, variant=variant, activation=activation,
                        batch_normalize=bool(batch_normalize), dtype=np.float64,
                        device=device, seed=seed, reverse=bool(reverse))
        # A generic point: Darknet's initial biases (0) and scales (1) are special values.
        for k, a in list(layer.params.items()):
            if k.endswith(".biases"):
                layer.params[k] = rng.uniform(-0.5, 0.5, a.shape)
            elif k.endswith(".scales"):
                layer.params[k] = rng.uniform(0.5, 1.5, a.shape)
        saved_params = None
        saved_state = None
    else:
        _layer_float64(layer)
        outputs, inputs = layer.outputs, layer.inputs
        batch_normalize = layer.batch_normalize
        variant = getattr(layer, "variant", variant)
        activation = getattr(layer, "activation", activation)
        device = getattr(layer, "device", device)
        saved_params = {k: _to_numpy(a) for k, a in layer.params.items()}
        saved_state = None if layer.state is None else _to_numpy(layer.state)
    if batch_normalize and batch < 2:
        raise ValueError(f"batch: expected >= 2 with batch_normalize (BN training divides "
                         f"by B - 1), got {batch}")

    T, B, I, H = steps, batch, inputs, outputs
    if lengths is not None:
        lengths = V.lengths(lengths, B, T)
    nstates = getattr(layer, "num_layers", 0) * getattr(layer, "directions", 0)
    state_shape = (nstates, B, H) if nstates else (B, H)
    out = H * getattr(layer, "directions", 1)
    batch_first = getattr(layer, "batch_first", False)
    x = rng.uniform(-1.0, 1.0, (B, T, I) if batch_first else (T, B, I))
    h0 = rng.uniform(-1.0, 1.0, state_shape)
    w = rng.uniform(-1.0, 1.0, (B, T, out) if batch_first else (T, B, out))
    v = rng.uniform(-1.0, 1.0, state_shape)
    config = {"inputs": int(I), "outputs": int(H), "batch": int(B), "steps": int(T),
              "variant": str(variant), "activation": str(activation),
              "batch_normalize": bool(batch_normalize), "device": str(device),
              "seed": int(seed), "eps": eps, "rtol": rtol, "atol": atol,
              "max_coords": max_coords,
              "lengths": None if lengths is None else [int(n) for n in lengths],
              "reverse": bool(getattr(layer, "reverse", False)),
              "num_layers": int(getattr(layer, "num_layers", 1)),
              "bidirectional": bool(getattr(layer, "bidirectional", False)),
              "dropout": float(getattr(layer, "dropout", 0.0))}

    loss = _Loss(layer, x, h0, w, v, lengths)
    try:
        layer.zero_grad()
        try:
            loss.forward(x, h0)
            analytic = {"x": _to_numpy(layer.backward(w, v)), "h0": _to_numpy(layer.dh0)}
        finally:
            # After the backward: replacing a parameter invalidates the cache.
            loss.restore_rolling()
        for k, g in layer.grads.items():
            analytic[k] = _to_numpy(g)

        bases = {"x": x, "h0": h0}
        params = layer.params
        rows = []
        for name, a in analytic.items():
            base = bases[name] if name in bases else _to_numpy(params[name])
            if a.shape != base.shape:
                raise ValueError(f"gradient of {name}: expected shape {base.shape}, "
                                 f"got {a.shape}")
            size = base.size
            if max_coords is None or size <= max_coords:
                idx = np.arange(size)
            else:
                idx = np.sort(rng.choice(size, size=max_coords, replace=False))
            df, err = _numeric(loss, name, base, idx, eps, rtol, atol)
            rows.append(_compare(name, a.reshape(-1)[idx], df, err, size, base.shape,
                                 rtol, atol))
    finally:
        if saved_params is not None:
            for k, a in saved_params.items():
                layer.params[k] = a
            if saved_state is None:
                layer.reset_state()
            else:
                layer.state = saved_state
    return GradcheckResult(config, rows, time.perf_counter() - start)


def check_all(inputs=3, outputs=4, batch=2, steps=3, device="cpu", seed=0,
              eps=DEFAULT_EPS, rtol=DEFAULT_RTOL, atol=DEFAULT_ATOL,
              max_coords=DEFAULT_MAX_COORDS, **shape):
    """Run :func:`check` on every variant x activation x batch normalisation.

    Parameters are those of :func:`check` (``shape``: its ``lengths``,
    ``reverse``, ``num_layers``, ``bidirectional``, ``dropout``); ``batch``
    must be >= 2 because half of the matrix uses batch normalisation.

    Returns
    -------
    list of GradcheckResult
        Eight results, variant-major: (darknet, tanh, no BN), (darknet, tanh,
        BN), (darknet, logistic, no BN), ...
    """
    return [check(inputs=inputs, outputs=outputs, batch=batch, steps=steps, variant=variant,
                  activation=activation, batch_normalize=bn, device=device, seed=seed,
                  eps=eps, rtol=rtol, atol=atol, max_coords=max_coords, **shape)
            for variant in VARIANTS for activation in ACTIVATIONS for bn in (False, True)]


def _lengths_arg(text):
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers (e.g. 3,1), got {text!r}") from None
    return np.array(values, np.int64)


def _parser():
    p = argparse.ArgumentParser(
        prog="gru-cy gradcheck",
        description="Check the GRU layer's analytic gradients (dL/dx, dL/dh0 and every "
                    "trainable parameter) against SciPy finite differences in float64, for "
                    "L = sum(w*y) + sum(v*h_T) with fixed random w, v.  Exit status: 0 when "
                    "every tensor passes, 1 when any fails, 2 on bad usage.")
    p.add_argument("--inputs", type=V.POSITIVE_INT, default=3, help="I (default 3)")
    p.add_argument("--outputs", type=V.POSITIVE_INT, default=4, help="H (default 4)")
    p.add_argument("--batch", type=V.POSITIVE_INT, default=2, help="B (default 2)")
    p.add_argument("--steps", type=V.POSITIVE_INT, default=3,
                   help="sequence length T (default 3)")
    p.add_argument("--variant", choices=VARIANTS, default="darknet")
    p.add_argument("--activation", choices=ACTIVATIONS, default="tanh")
    p.add_argument("--batch-normalize", action="store_true",
                   help="enable batch normalisation (needs --batch >= 2)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--seed", type=V.NONNEGATIVE_INT, default=0, help="random seed (default 0)")
    p.add_argument("--eps", type=V.POSITIVE_FLOAT, default=DEFAULT_EPS,
                   help=f"initial finite-difference step (default {DEFAULT_EPS:g})")
    p.add_argument("--rtol", type=V.NONNEGATIVE_FLOAT, default=DEFAULT_RTOL,
                   help=f"relative tolerance (default {DEFAULT_RTOL:g})")
    p.add_argument("--atol", type=V.NONNEGATIVE_FLOAT, default=DEFAULT_ATOL,
                   help=f"absolute tolerance (default {DEFAULT_ATOL:g})")
    p.add_argument("--max-coords", type=V.NONNEGATIVE_INT, default=DEFAULT_MAX_COORDS,
                   help="coordinates checked per tensor, a seeded random subset of larger "
                        f"tensors; 0 checks all (default {DEFAULT_MAX_COORDS})")
    p.add_argument("--lengths", type=_lengths_arg, default=None, metavar="N,N,...",
                   help="sequence lengths of a padded batch, one per sequence "
                        "(e.g. 3,1 with --batch 2)")
    p.add_argument("--reverse", action="store_true", help="a reverse-direction layer")
    p.add_argument("--layers", type=V.POSITIVE_INT, default=1,
                   help="check a StackedGRU of this many layers (default 1)")
    p.add_argument("--bidirectional", action="store_true",
                   help="check a bidirectional StackedGRU")
    p.add_argument("--dropout", type=V.NONNEGATIVE_FLOAT, default=0.0,
                   help="dropout between the stack's layers, masks fixed (default 0)")
    p.add_argument("--json", metavar="FILE",
                   help="also write the results as JSON to FILE")
    p.add_argument("--all", action="store_true",
                   help="run every variant x activation x batch normalisation "
                        "(ignores --variant, --activation, --batch-normalize)")
    return p


def main(argv=None):
    """Command line entry point of ``gru-cy gradcheck``.

    Parameters
    ----------
    argv : list of str, optional
        The arguments after ``gradcheck``; defaults to ``sys.argv[1:]``.

    Returns
    -------
    int
        0 when every tensor passes, 1 when any fails, 2 on bad usage
        (invalid options, a configuration the layer rejects, CUDA unavailable).
    """
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    bad = _files.unwritable([(args.json, "--json")])
    if bad:
        print(f"{parser.prog}: error: {bad}", file=sys.stderr)
        return 2
    common = dict(inputs=args.inputs, outputs=args.outputs, batch=args.batch,
                  steps=args.steps, device=args.device, seed=args.seed, eps=args.eps,
                  rtol=args.rtol, atol=args.atol, max_coords=args.max_coords or None)
    shape = dict(lengths=args.lengths, reverse=args.reverse, num_layers=args.layers,
                 bidirectional=args.bidirectional, dropout=args.dropout)
    try:
        if args.all:
            results = check_all(**common, **shape)
        else:
            results = [check(variant=args.variant, activation=args.activation,
                             batch_normalize=args.batch_normalize, **common, **shape)]
    except (ValueError, TypeError) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        if args.device == "cpu":
            raise
        print(f"{parser.prog}: error: --device {args.device}: {exc}", file=sys.stderr)
        return 2
    ok = all(r.ok for r in results)
    for r in results:
        print(r.format_table())
        print()
    failed = sum(not r.ok for r in results)
    print(f"gradcheck: {'PASS' if ok else 'FAIL'} ({len(results) - failed}/{len(results)} "
          f"configurations passed)")
    if args.json:
        payload = {"ok": ok, "results": [r.to_dict() for r in results]}
        _files.write_atomic(args.json, json.dumps(payload, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
