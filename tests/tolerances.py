"""Every tolerance of the test suite, with its reason: the one place they are stated.

``TOLERANCES[dtype][what]`` holds the ``rtol`` and ``atol`` of one kind of
comparison (``what``) in the precision it runs in (``dtype``: float32 or
float64); ``tol(dtype, what)`` returns them as keyword arguments for
``numpy.testing.assert_allclose``.  A comparison that runs in one precision
only has an entry under that dtype only.  Exact comparisons (``rtol=0,
atol=0``, ``assert_array_equal``) need no entry and have none.
"""
import numpy as np

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)

TOLERANCES = {
    F64: {
        # --- kernels against their NumPy contract ---------------------------------
        # One CUDA kernel (emulated, or on a GPU) against the NumPy rendering of
        # its contract and the Cython engine's twin: both sides evaluate the
        # same formulas, differing only in summation order (gemm, <= 35 terms
        # of O(1)) and libm vs. CUDA-math rounding: a few ulp, far below 1e-12.
        "kernel": dict(rtol=1e-12, atol=1e-12),
        # A row kernel of the CPU engine (rows.h) against the contract's
        # formulas: libm vs NumPy exp/tanh (<= 1 ulp) times <= 5 factors.
        "row": dict(rtol=1e-14, atol=1e-14),
        # The network's activation and softmax kernels against the NumPy
        # formulas: both evaluate Darknet's formula, the kernel in double then
        # rounded, NumPy in the array's precision: a few ulps.
        "activation": dict(rtol=1e-14, atol=1e-14),
        # A loss (a sum over the outputs) against NumPy: ten times "activation".
        "loss": dict(rtol=10 * 1e-14, atol=0),
        # The engine's gemm against NumPy float64 products.  Every C element is
        # alpha * (a K-term dot product) + beta * C, evaluated in the working
        # precision.  The classical bound for a recursively summed dot product
        # (Higham, Accuracy and Stability, eq. 3.5) is |fl(s) - s| <= gamma_K *
        # sum_k |a_k b_k| with gamma_K = K u / (1 - K u) and u = eps / 2; the
        # alpha and beta operations add two more roundings.  The entry is eps;
        # the test asserts |C - ref| <= (K + 2) * eps * max(|alpha| |op(A)|
        # |op(B)| + |beta| |C0|, 1), the bound with a factor-two margin taken
        # at its largest element (a scalar atol, as assert_allclose takes).
        # This is tight enough to catch any wrong index or missed term (an
        # error of one whole term is O(1) relative), and valid for float32 and
        # float64 alike.
        "gemm": dict(rtol=0, atol=np.finfo(np.float64).eps),

        # --- whole passes ---------------------------------------------------------
        # The engine against the float64 NumPy reference, run on exactly the
        # values the engine holds; atol is scaled by max(1, max|expected|) of
        # each tensor (tol's ``scale``), since a weight gradient is a sum of T*B
        # terms whose rounding grows with the size of the sum, not of each entry
        # (over 200 steps with BN at B = 3 the gradients grow to ~1e3, and
        # rounding of ~1e-16 of the largest values reaches the smallest
        # elements).  The engine and the reference do the same operations in
        # another order (gemm blocking, fused elementwise kernels): differences
        # of a few ulp per operation, amplified by the chain over T steps and
        # BN's 1/sd.  1e-10 relative is ~1e5 ulp: any real bug is orders of
        # magnitude larger (e.g. BN's 1e-6 epsilon misplaced is a 3e-5 relative
        # change).
        "reference": dict(rtol=1e-10, atol=1e-12),
        # The same with BN training: float64 holds the exact BN formulas to the
        # same bound (see float32's entry).
        "reference_bn_train": dict(rtol=1e-10, atol=1e-12),
        # The CUDA engine (emulated) against the CPU engine: whole forward /
        # backward passes chain gemms (different summation orders on the two
        # engines), BN divisions by per-step standard deviations and T steps of
        # accumulation, so looser than one kernel's.
        "engine": dict(rtol=1e-10, atol=1e-10),
        # The CUDA engine on a GPU against the CPU engine through the public
        # API: whole passes as for "engine" (B = 3 rows, T steps), then an update
        # and a second pass.  float64 engines agree to ~3e-13 there.
        "gpu_layer": dict(rtol=1e-10, atol=1e-10),
        # The engine's backward against torch autograd of the SPEC's forward:
        # the two implementations sum in different orders; 1e-9 relative is the
        # bar of issue 3 (observed ~1e-14).
        "autodiff": dict(rtol=1e-9, atol=1e-12),
        # Against torch.nn.GRU: both sides evaluate the same formulas in double;
        # differences are summation-order rounding, far below 1e-10 for these
        # sizes (issue 5's bound).
        "torch": dict(rtol=0, atol=1e-10),
        # StackedGRU on packed input against torch.nn.GRU on a PackedSequence:
        # errors relative to each tensor's largest value (issue 13's bar;
        # observed <= 8e-16 over 48 configurations up to 3 layers).
        "torch_packed": dict(rtol=0, atol=1e-12),
        # Against ONNX Runtime's GRU node in double: issue 13's bar, 1e-5
        # absolute, for Y and Y_h (observed ~1e-15).
        "ort": dict(rtol=0, atol=1e-5),
        # Its weight gradients (sums over T * B): ten times "torch".
        "torch_weight_grad": dict(rtol=0, atol=10 * 1e-10),
        # update() against the same SGD / Adam formulas in NumPy: only the order
        # of a handful of operations differs, so 1e-12 relative is ample (the
        # issue asks 1e-9).
        "update": dict(rtol=1e-12, atol=1e-15),

        # --- smaller float64 comparisons ------------------------------------------
        # Hand-computed numbers (SPEC's update formulas, one forward step) and
        # the reference over two calls against one: only the last-bit rounding
        # of the arithmetic.
        "last_bit": dict(rtol=1e-15, atol=0),
        # A GRU layer over two calls, the state carried, against one call.
        "layer_split": dict(rtol=0, atol=1e-15),
        # Network.predict over three calls, the state carried, against one call.
        "net_split": dict(rtol=1e-12, atol=1e-14),
        # A GRU layer's forward (4 steps) against the reference.
        "layer_reference": dict(rtol=0, atol=1e-13),
        # The connected layer's forward against its formula in NumPy.
        "connected": dict(rtol=1e-13, atol=1e-13),
        # The connected layer's update against Darknet's formulas in NumPy.
        "connected_update": dict(rtol=1e-14, atol=1e-14),
        # The reference's rolling BN statistics, blended over 3 steps, against
        # the blend recomputed in NumPy.
        "rolling_reference": dict(rtol=1e-14, atol=1e-15),
        # The engine's rolling mean, blended over 5 steps, against NumPy's.
        "rolling_engine": dict(rtol=1e-12, atol=1e-15),
        # The reference's BN-normalised product against NumPy's normalisation.
        "bn_normalised": dict(rtol=1e-12, atol=1e-14),
        # A float64 the CLI wrote to JSON against the same number from NumPy.
        "json_float": dict(rtol=1e-12, atol=0),

        # --- finite differences ---------------------------------------------------
        # The reference's backward against central differences with step 1e-6:
        # truncation error O(step^2 * f''') ~ 1e-12 and rounding error
        # O(eps * |L| / step) ~ 1e-10 per evaluation for |L| ~ 10; gradients
        # there are O(0.1..10).  Measured worst |analytic - numeric| over all 12
        # configurations: 1.5e-9, at most 12% of atol + rtol*|numeric|.  A wrong
        # term is O(0.01) or more (test_gradient_check_catches_a_wrong_backward).
        "finite_diff": dict(rtol=1e-6, atol=1e-8),
        # The network's gradients against central differences with h = 1e-6:
        # truncation O(h^2) and rounding O(eps/h) ~ 1e-10 relative to the loss;
        # 1e-7 leaves a margin for sums of ~1e2 terms.
        "finite_diff_net": dict(rtol=0, atol=1e-7),
        # gru_cy.gradcheck's measured error of an error injected into one
        # gradient entry (1e-3 absolute), against 1e-3: the check's own numeric
        # error is ~1e-11 to 1e-10 (gradcheck's module docstring).
        "gradcheck_injected": dict(rtol=1e-4, atol=0),
        # ... and of a gradient scaled by 1.001 (1e-3 relative).
        "gradcheck_scaled": dict(rtol=1e-3, atol=0),
        # Data parallel (gru_cy.distributed): parameters and losses after 5
        # steps on n ranks' shards against one process on the whole batch.
        # The gradients differ by the order of the sums only (per-shard
        # partial sums added in rank order), a few ulp, carried through 5
        # updates: the 1e-12, atol the same times the largest value.
        "distributed": dict(rtol=1e-12, atol=0),
    },
    F32: {
        # --- kernels against their NumPy contract ---------------------------------
        # The CPU twin and NumPy evaluate some formulas in double and round once;
        # the kernels sum up to 35 float32 products: |error| <~ 35 * 6e-8 * O(1)
        # = 2e-6.
        "kernel": dict(rtol=2e-5, atol=2e-5),
        # Inputs O(2), each output a product of <= 5 rounded float32 factors plus
        # the activations' <= 2.1 eps: |error| <~ 8 eps * O(10) = 1e-5 absolute,
        # 1e-6 relative.
        "row": dict(rtol=1e-6, atol=1e-5),
        "activation": dict(rtol=1e-6, atol=1e-6),          # (see float64's)
        "loss": dict(rtol=10 * 1e-6, atol=0),              # (see float64's)
        "gemm": dict(rtol=0, atol=np.finfo(np.float32).eps),      # (see float64's)
        # The CPU engine's float32 logistic and tanh (fastmath.h) against the
        # exact value, for every finite float32 x.  Absolute: 1.2e-7 = 2 ulp of
        # [0.5, 1): the final rounding (half an ulp) plus <= 1 eps (2^-23) of
        # error carried from e^-|x| through 1/(1 + e) or (1 - e)/(1 + e).  An
        # exhaustive C sweep over every third float32 bit pattern measured
        # 8.9e-8 (logistic) and 9.0e-8 (tanh).
        "fastmath_abs": dict(rtol=0, atol=1.2e-7),
        # Relative, where the exact result is a normal number: 2.5e-7 (~2.1 eps);
        # the same sweep measured 2.0e-7 (logistic) and 1.5e-7 (tanh, odd
        # polynomial below |x| = 0.625, so no cancellation near 0).  Below
        # FLT_MIN the logistic is flushed to 0 (absolute error < FLT_MIN).
        "fastmath_rel": dict(rtol=2.5e-7, atol=0),

        # --- whole passes ---------------------------------------------------------
        # Unit roundoff 6e-8; sums of up to ~30 terms and T up to 7 steps.
        # Measured worst scaled error without BN training: 4.6e-7; 1e-4 relative
        # / 1e-5 absolute leaves >20x margin while a wrong formula is off by
        # 1e-2 or more.  atol scales as float64's.
        "reference": dict(rtol=1e-4, atol=1e-5),
        # BN divides by per-step batch standard deviations (B = 3 rows, sd down
        # to 0.009) and its backward by sd^2, amplifying float32 rounding:
        # measured worst scaled error 6.3e-5 (7x3x5x11, min sd 0.0087), 1.9e-5
        # at sd 0.029.  1e-3 / 3e-4 leaves ~5x margin; the exact BN formulas are
        # held to 1e-10 by the float64 cases.
        "reference_bn_train": dict(rtol=1e-3, atol=3e-4),
        "engine": dict(rtol=1e-4, atol=1e-4),              # (see float64's)
        # float32 is ill-conditioned in the BN configurations (the CPU engine's
        # own float32 dh0 departs from its float64 dh0 by 1e-3 after one update,
        # measured), so float32 only guards against gross errors: the exact
        # check is float64's.
        "gpu_layer": dict(rtol=3e-3, atol=3e-3),
        # Single-precision rounding through T steps of O(1) values gives ~1e-6
        # relative; the bar is 1e-4.
        "autodiff": dict(rtol=1e-4, atol=1e-4),
        # As float64's, with single-precision rounding over T steps: 2e-5.
        "torch": dict(rtol=0, atol=2e-5),
        # As float64's, relative to each tensor's largest value (observed <= 8e-7).
        "torch_packed": dict(rtol=0, atol=2e-5),
        # ONNX Runtime's float GRU: 1e-5 absolute (observed ~3e-7).
        "ort": dict(rtol=0, atol=1e-5),
        # An exported model (float32 weights, BN folded into them) run by ONNX
        # Runtime or OpenVINO against gru_cy: issue 14's bar, 1e-5 absolute on
        # outputs and final states (observed <= 3e-7; BN folding rounds the
        # scaled weights once more, one ulp of each).
        "onnx_export": dict(rtol=0, atol=1e-5),
        # Export then import: the same float32 weights come back (BN folded,
        # so a BN layer's outputs differ by the folding's rounding): issue
        # 14's bar, 1e-6 (observed 0 without BN, <= 1.5e-8 with).
        "onnx_roundtrip": dict(rtol=0, atol=1e-6),
        "torch_weight_grad": dict(rtol=0, atol=10 * 2e-5),  # (see float64's)
        # A float32 layer against the same float64 layer after three Adam
        # steps: float32 rounding of the same steps, ~1e-6 relative of O(1)
        # values.
        "float64_twin": dict(rtol=1e-4, atol=2e-5),

        # --- Darknet's numbers ----------------------------------------------------
        # Darknet's vectors (tests/data) are float32 runs of pjreddie's Darknet
        # built with -Ofast, activations in double, so this entry is float32's
        # whatever the engine's dtype (the float64 reference and engine too):
        # rounding only, 1e-5 absolute (SPEC section 5).  Measured with the
        # float64 reference: worst 2.1e-7.
        "darknet": dict(rtol=0, atol=1e-5),
        # With BN: BN divides by per-step standard deviations (sqrt(var) + 1e-6),
        # amplifying Darknet's float32 rounding, hence 1e-4.  Measured with the
        # float64 reference: worst 3.5e-6 (a BN sublayer output of the training
        # file).
        "darknet_bn": dict(rtol=0, atol=1e-4),
        # gru_cy's learning rate (double) against Darknet's get_current_rate
        # emulated in C's types (float parameters, float quotients in burn_in
        # and poly, a float product in sigmoid and steps, pow and exp in
        # double, a float result), with parameters that float32 holds exactly:
        # rates relative to the base rate, so the only differences are those
        # roundings: a few ulp amplified by the power (<= 4 here), <= 4e-7.
        "darknet_rate": dict(rtol=1e-6, atol=1e-6),

        # --- bfloat16 inference (inference_precision="bfloat16") -------------------
        # One step of the bf16 forward against the NumPy emulation of the same
        # math fed the engine's own h_{t-1} (tests/test_bf16.py): the products'
        # inputs are the same bf16 values and the products exact on both sides,
        # so what differs is the sum (float32 in the engine, float64 in NumPy:
        # <= K * 2^-24 * sum |a w|, ~1e-6 for K <= 300 and O(1) terms) and
        # fastmath's logistic / tanh against NumPy's (a few ulp), on outputs in
        # (-1, 1).  Measured: worst 3.7e-7.  (darknet's s = r * h_{t-1} is
        # rounded to bf16 on both sides from float32 values that can differ by
        # an ulp; the seeded cases hit no rounding boundary, where one would
        # cost ~1e-4.)
        "bf16_step": dict(rtol=0, atol=5e-6),
        # The whole bf16 forward against the float32 engine on the same weights:
        # every product input carries bf16's rounding (relative 2^-9), i.e. a
        # product error of ~2^-9 * sqrt(K) * |a||w| per step, carried through
        # the recurrence.  Measured on the tests' sizes (K <= 300, T <= 6,
        # Darknet's initialisation, N(0, 1) inputs): worst 6e-3; configs A-D:
        # docs/performance.md ("bfloat16 inference").  This is a bound on the
        # precision, not a regression check: 3e-2.
        "bf16_float32": dict(rtol=0, atol=3e-2),

        # --- other ----------------------------------------------------------------
        # `gru-cy train`'s adding-problem baseline, the mean of (target - 1)^2
        # over its 200 held-out sequences, against its expectation 1/6 (the sum
        # of two U(0, 1) targets): sampling error, sd ~8% of 1/6 (the seeded
        # set gives 0.161).
        "adding_baseline": dict(rtol=0.15, atol=0),
        # Data parallel against one process (see float64): the 1e-6.
        "distributed": dict(rtol=1e-6, atol=0),
    },
}


def tol(dtype, what, scale=1.0):
    """``dict(rtol=..., atol=...)`` of comparison ``what`` in ``dtype``'s
    precision, ``atol`` times ``scale`` (the comparisons whose atol follows the
    size of what they compare, as "reference")."""
    entries = TOLERANCES[np.dtype(dtype)]
    if what not in entries:
        raise KeyError(f"no {np.dtype(dtype).name} tolerance for {what!r}: "
                       f"expected one of {sorted(entries)}")
    entry = entries[what]
    return dict(rtol=entry["rtol"], atol=entry["atol"] * scale)
