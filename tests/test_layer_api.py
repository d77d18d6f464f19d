"""The public API of SPEC section 2: state, caches, params, errors."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import gru_cy
from gru_cy import reference

from tolerances import tol

SUBS = ("uz", "ur", "uh", "wz", "wr", "wh")


def make(**kw):
    kw.setdefault("seed", 0)
    kw.setdefault("dtype", np.float64)
    return gru_cy.GRU(kw.pop("inputs", 3), kw.pop("outputs", 4), **kw)


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


# ----------------------------------------------------------------- params --

def test_param_names_and_shapes():
    layer = make(inputs=3, outputs=4, batch_normalize=True)
    want = {}
    for s in SUBS:
        want[f"{s}.weights"] = (4, 3) if s[0] == "u" else (4, 4)
        for k in ("biases", "scales", "rolling_mean", "rolling_variance"):
            want[f"{s}.{k}"] = (4,)
    assert {k: v.shape for k, v in layer.params.items()} == want
    assert set(layer.grads) == {k for k in want if "rolling" not in k}
    assert_array_equal(layer.params["uz.rolling_variance"], 1)
    assert_array_equal(layer.params["wh.scales"], 1)
    assert_array_equal(layer.params["ur.rolling_mean"], 0)


def test_initialisation_is_darknets_and_seeded():
    a, b = make(inputs=50, outputs=40, seed=7), make(inputs=50, outputs=40, seed=7)
    for k in a.params:
        assert_array_equal(a.params[k], b.params[k])
    # uniform(-1, 1) * sqrt(2 / fan_in): bounded, biases zero
    assert np.abs(a.params["uz.weights"]).max() <= np.sqrt(2 / 50)
    assert np.abs(a.params["wz.weights"]).max() <= np.sqrt(2 / 40)
    assert np.abs(a.params["wz.weights"]).max() > 0.9 * np.sqrt(2 / 40)
    assert_array_equal(a.params["uh.biases"], 0)
    c = make(inputs=50, outputs=40, seed=8)
    assert not np.array_equal(a.params["uz.weights"], c.params["uz.weights"])


def test_params_are_views_and_assignment_copies():
    layer = make()
    x = rand(2, 2, 3)
    y0 = layer.forward(x, h0=np.zeros((2, 4)))
    layer.params["uh.biases"][...] += 0.5          # in-place edit takes effect
    y1 = layer.forward(x, h0=np.zeros((2, 4)))
    assert not np.allclose(y0, y1)
    new = np.full((4, 3), 0.1)
    layer.params["uz.weights"] = new
    new[...] = 7                                    # the layer holds a copy
    assert_array_equal(layer.params["uz.weights"], 0.1)
    with pytest.raises(ValueError, match=r"uz\.weights.*\(4, 3\).*\(3, 4\)"):
        layer.params["uz.weights"] = np.zeros((3, 4))
    with pytest.raises(KeyError, match="nope"):
        layer.params["nope"] = np.zeros(3)


def test_grads_are_live_buffers_zeroed_in_place():
    layer = make()
    g = layer.grads["wz.weights"]
    layer.forward(rand(3, 2, 3), train=True)
    layer.backward(rand(3, 2, 4))
    assert np.abs(g).sum() > 0
    layer.zero_grad()
    assert_array_equal(g, 0)


# ------------------------------------------------------------------ state --

def test_state_carried_and_h0_overrides():
    layer = make()
    x = rand(4, 2, 3)
    assert layer.state is None
    full = layer.forward(x)
    layer.reset_state()
    first = layer.forward(x[:2])
    second = layer.forward(x[2:])
    assert_allclose(np.concatenate([first, second]), full, **tol(np.float64, "layer_split"))
    h0 = rand(2, 4, seed=3)
    y = layer.forward(x, h0=h0)
    p = {k: np.array(v) for k, v in layer.params.items()}
    yr, hr, _ = reference.forward(p, x, h0, variant="darknet", activation="tanh")
    assert_allclose(y, yr, **tol(np.float64, "layer_reference"))
    assert_allclose(layer.state, hr, **tol(np.float64, "layer_reference"))


def test_state_getter_copies_setter_validates():
    layer = make()
    layer.forward(rand(2, 2, 3))
    s = layer.state
    s[...] = 99
    assert not np.any(layer.state == 99)
    layer.state = np.ones((2, 4))
    assert_array_equal(layer.state, 1)
    with pytest.raises(ValueError, match="state"):
        layer.state = np.ones((2, 5))
    with pytest.raises(TypeError, match="state"):
        layer.state = np.ones((2, 4), dtype=np.int64)


def test_train_advances_state_too():
    layer = make()
    y = layer.forward(rand(3, 2, 3), train=True)
    assert_array_equal(layer.state, y[-1])


def test_carried_state_batch_mismatch_is_an_error():
    layer = make()
    layer.forward(rand(2, 2, 3))
    with pytest.raises(ValueError, match=r"x: expected batch 2.*got 3"):
        layer.forward(rand(2, 3, 3))
    layer.forward(rand(2, 3, 3), h0=np.zeros((3, 4)))   # an explicit h0 is fine


def test_returned_arrays_are_fresh():
    layer = make()
    x = rand(3, 2, 3)
    y1 = layer.forward(x, train=True)
    dx1 = layer.backward(rand(3, 2, 4))
    dh1 = layer.dh0.copy()
    dh_obj = layer.dh0
    y2 = layer.forward(x, train=True)
    dx2 = layer.backward(rand(3, 2, 4, seed=5))
    assert not np.shares_memory(y1, y2) and not np.shares_memory(dx1, dx2)
    assert_array_equal(dh_obj, dh1)        # the old dh0 was not overwritten in place
    assert layer.dh0 is not dh_obj


def test_cache_rules():
    layer = make()
    x = rand(3, 2, 3)
    with pytest.raises(ValueError, match="backward"):
        layer.backward(rand(3, 2, 4))
    layer.forward(x, train=True)
    layer.backward(rand(3, 2, 4))
    layer.backward(rand(3, 2, 4))          # more than once on one cache
    layer.forward(x, train=False)           # inference invalidates
    with pytest.raises(ValueError, match="backward"):
        layer.backward(rand(3, 2, 4))
    layer.forward(x, train=True)
    layer.params["uz.biases"] = np.ones(4)  # replacing a parameter invalidates
    with pytest.raises(ValueError, match="backward"):
        layer.backward(rand(3, 2, 4))
    layer.forward(x, train=True)
    layer.backward(rand(3, 2, 4))
    layer.update()                          # update invalidates
    with pytest.raises(ValueError, match="backward"):
        layer.backward(rand(3, 2, 4))


def test_backward_does_not_touch_state_or_rolling():
    layer = make(batch_normalize=True)
    x = rand(3, 3, 3)
    layer.forward(x, train=True, h0=rand(3, 4, seed=2))
    state = layer.state
    roll = {k: np.array(v) for k, v in layer.params.items() if "rolling" in k}
    layer.backward(rand(3, 3, 4))
    assert_array_equal(layer.state, state)
    for k, v in roll.items():
        assert_array_equal(layer.params[k], v)


def test_cache_sees_no_later_edit_of_input():
    layer, ref = make(), make()
    x = rand(3, 2, 3)
    dy = rand(3, 2, 4, seed=1)
    layer.forward(x, train=True, h0=np.zeros((2, 4)))
    x_saved = x.copy()
    x[...] = 5                              # the caller reuses its buffer
    layer.backward(dy)
    ref.forward(x_saved, train=True, h0=np.zeros((2, 4)))
    ref.backward(dy)
    assert_array_equal(layer.grads["uz.weights"], ref.grads["uz.weights"])


def test_rolling_statistics_advance_T_times_per_training_call():
    layer = make(batch_normalize=True, inputs=2, outputs=3)
    x = rand(5, 4, 2)
    layer.forward(x, train=True, h0=rand(4, 3, seed=1))
    # uz's statistics: the mean over B of x_t @ Wu.T, blended 5 times
    v = x @ np.array(layer.params["uz.weights"]).T
    rm = np.zeros(3)
    for t in range(5):
        rm = 0.99 * rm + 0.01 * v[t].mean(axis=0)
    assert_allclose(layer.params["uz.rolling_mean"], rm, **tol(np.float64, "rolling_engine"))


def test_input_conversion_and_layouts():
    layer = make(dtype=np.float32)
    x64 = rand(3, 2, 3)
    y = layer.forward(x64, h0=np.zeros((2, 4)))
    assert y.dtype == np.float32
    xf = np.asfortranarray(x64.astype(np.float32))
    xr = x64.astype(np.float32)
    xr.setflags(write=False)
    xs = np.repeat(x64.astype(np.float32), 2, axis=2)[:, :, ::2]
    for xx in (xf, xr, xs, x64.tolist()):
        assert_array_equal(layer.forward(xx, h0=np.zeros((2, 4))), y)


# ----------------------------------------------------------------- errors --

BAD_CALLS = [
    ("gru_cy.GRU(0, 4)", ValueError, "inputs"),
    ("gru_cy.GRU(3, -1)", ValueError, "outputs"),
    ("gru_cy.GRU(3.5, 4)", TypeError, "inputs"),
    ("gru_cy.GRU(3, 4, variant='lstm')", ValueError, "variant"),
    ("gru_cy.GRU(3, 4, activation='relu')", ValueError, "activation"),
    ("gru_cy.GRU(3, 4, optimizer='rmsprop')", ValueError, "optimizer"),
    ("gru_cy.GRU(3, 4, device='tpu')", ValueError, "device"),
    ("gru_cy.GRU(3, 4, gemm='mkl')", ValueError, "gemm"),
    ("gru_cy.GRU(3, 4, dtype=np.int32)", TypeError, "dtype"),
    ("gru_cy.GRU(3, 4, dtype=np.float16)", TypeError, "dtype"),
    ("gru_cy.GRU(3, 4, num_threads=0)", ValueError, "num_threads"),
    ("L.forward(np.zeros((2, 3)))", ValueError, "x"),
    ("L.forward(np.zeros((2, 2, 5)))", ValueError, "x"),
    ("L.forward(np.zeros((0, 2, 3)))", ValueError, "x"),
    ("L.forward(np.zeros((2, 0, 3)))", ValueError, "x"),
    ("L.forward(np.zeros((2, 2, 3), dtype=int))", TypeError, "x"),
    ("L.forward(np.zeros((2, 2, 3), dtype=bool))", TypeError, "x"),
    ("L.forward(np.zeros((2, 2, 3), dtype=complex))", TypeError, "x"),
    ("L.forward(np.zeros((2, 2, 3), dtype=object))", TypeError, "x"),
    ("L.forward(None)", TypeError, "x"),
    ("L.forward(np.zeros((2, 2, 3)), h0=np.zeros((3, 4)))", ValueError, "h0"),
    ("L.forward(np.zeros((2, 2, 3)), h0=np.zeros((2, 4, 1)))", ValueError, "h0"),
    ("BN.forward(np.zeros((2, 1, 3)), train=True)", ValueError, "batch"),
    ("L.backward(np.zeros((2, 2, 4)))", ValueError, "backward"),
    ("T.backward(np.zeros((2, 2, 5)))", ValueError, "dy"),
    ("T.backward(np.zeros((2, 2, 4)), dstate=np.zeros((2, 5)))", ValueError, "dstate"),
    ("T.backward(np.zeros((2, 2, 4), dtype=int))", TypeError, "dy"),
    ("L.update()", ValueError, "batch"),
    ("L.update(learning_rate=-1, batch=1)", ValueError, "learning_rate"),
    ("L.update(learning_rate=float('nan'), batch=1)", ValueError, "learning_rate"),
    ("L.update(momentum=float('inf'), batch=1)", ValueError, "momentum"),
    ("L.update(decay=-0.1, batch=1)", ValueError, "decay"),
    ("L.update(batch=0)", ValueError, "batch"),
    ("L.update(batch=1, clip=-1)", ValueError, "clip"),
    ("L.update(batch=1, b1=1.5)", ValueError, "b1"),
    ("L.update(batch=1, eps=0)", ValueError, "eps"),
    ("L.update(learning_rate='fast', batch=1)", TypeError, "learning_rate"),
]


@pytest.mark.parametrize("call, exc, name", BAD_CALLS, ids=[c for c, _, _ in BAD_CALLS])
def test_bad_input_raises_named_error(call, exc, name):
    L = make()
    BN = make(batch_normalize=True)
    T = make()
    T.forward(np.zeros((2, 2, 3)), train=True)
    env = {"gru_cy": gru_cy, "np": np, "L": L, "BN": BN, "T": T}
    with pytest.raises(exc, match=name):
        exec(call, env)


def test_to_cuda_without_gpu_is_a_runtime_error():
    from gru_cy import cuda
    ok, why = cuda.available()
    if ok:
        pytest.skip("a GPU is available here")
    layer = make()
    with pytest.raises(RuntimeError, match="CuPy|CUDA|GPU"):
        layer.to("cuda")
    assert layer.device == "cpu"
    with pytest.raises(RuntimeError):
        make(device="cuda")


@pytest.mark.slow
def test_bad_inputs_never_crash_the_interpreter():
    """The whole battery in a fresh interpreter: every call raises, none crashes."""
    script = textwrap.dedent("""
        import numpy as np, gru_cy
        calls = %r
        for call, _, name in calls:
            L = gru_cy.GRU(3, 4, seed=0, dtype=np.float64)
            BN = gru_cy.GRU(3, 4, seed=0, batch_normalize=True)
            T = gru_cy.GRU(3, 4, seed=0, dtype=np.float64)
            T.forward(np.zeros((2, 2, 3)), train=True)
            try:
                exec(call)
            except (ValueError, TypeError) as e:
                assert name in str(e), (call, str(e))
            else:
                raise SystemExit("no error: " + call)
        print("all raised")
    """) % ([(c, None, n) for c, _, n in BAD_CALLS],)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "all raised" in out.stdout


@pytest.mark.slow
def test_omp_num_threads_1_and_2_give_identical_bits():
    """The default num_threads=None asks OpenMP, so OMP_NUM_THREADS applies; a
    shape big enough to run every kernel in parallel gives the same bits."""
    script = textwrap.dedent("""
        import hashlib, numpy as np, gru_cy
        from gru_cy._cpu import team
        rng = np.random.default_rng(0)
        h = hashlib.sha256()
        for variant in ("darknet", "reset_after"):
            for bn in (False, True):
                layer = gru_cy.GRU(40, 96, variant=variant, batch_normalize=bn, seed=1)
                x = rng.standard_normal((30, 64, 40)).astype(np.float32)
                y = layer.forward(x, train=True)
                dx = layer.backward(rng.standard_normal(y.shape).astype(np.float32))
                for a in [y, dx, layer.dh0] + [layer.grads[k] for k in sorted(layer.grads)]:
                    h.update(np.ascontiguousarray(a).tobytes())
        print(team.max_threads(), h.hexdigest())
    """)
    out = {}
    for n in ("1", "2"):
        env = dict(os.environ, OMP_NUM_THREADS=n)
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr
        threads, digest = proc.stdout.split()
        assert threads == n
        out[n] = digest
    assert out["1"] == out["2"]


@pytest.mark.parametrize("bn", [False, True])
@pytest.mark.parametrize("variant,gemm", [("darknet", "native"), ("reset_after", "native"),
                                          ("reset_after", "blas")])
@pytest.mark.parametrize("threshold", [0, 10 ** 9])
def test_training_cache_is_the_documented_size(bn, variant, gemm, threshold):
    from gru_cy._cpu.engine import c_recompute_threshold
    from gru_cy.kernels import cache_size_per_step
    T, B, I, H = 6, 3, 2, 5
    layer = gru_cy.GRU(I, H, batch_normalize=bn, seed=0, variant=variant, gemm=gemm)
    old = c_recompute_threshold(threshold)
    try:
        layer.forward(np.zeros((T, B, I), np.float32), train=True, h0=np.ones((B, H)))
    finally:
        c_recompute_threshold(old)
    cache = layer._engine.cache
    per_row = sum(a.size for k, a in cache.items() if k not in ("x", "su", "sw"))
    # reset_after without BN, native gemm, c of at least `threshold` bytes:
    # c is recomputed by the backward
    keeps_c = not (variant == "reset_after" and not bn and gemm == "native"
                   and T * B * H * 4 >= threshold)
    assert ("c" in cache) == keeps_c
    # h is stored for T + 1 steps (h_{-1} too): one extra (B, H) row block
    assert per_row == cache_size_per_step(bn, keeps_c) * T * B * H + B * H


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("activation", ["tanh", "logistic"])
def test_recomputed_candidates_give_the_same_bits(dtype, activation):
    # The backward that recomputes c (large caches; threshold 0 here) against
    # the one that reads the stored c: every output and gradient bit-equal.
    # Shapes: one step per chunk and several chunks (T * B > 512 rows), the
    # batch mode (B >= 32), B <= 3 (the direct gemm path), 1 and 2 threads.
    from gru_cy._cpu.engine import c_recompute_threshold
    rng = np.random.default_rng(4)
    for T, B, I, H in [(7, 1, 6, 40), (600, 1, 5, 16), (20, 40, 12, 20), (3, 2, 5, 33),
                       (9, 32, 40, 96)]:
        x = rng.standard_normal((T, B, I)).astype(dtype)
        h0 = rng.standard_normal((B, H)).astype(dtype)
        dy = rng.standard_normal((T, B, H)).astype(dtype)
        for nt in (1, 2):
            got = {}
            for threshold in (0, 10 ** 12):
                layer = gru_cy.GRU(I, H, variant="reset_after", activation=activation,
                                   dtype=dtype, seed=1, num_threads=nt)
                for k, v in layer.params.items():    # biases too (they start at 0)
                    v[...] = np.random.default_rng(len(k)).uniform(-0.5, 0.5, v.shape)
                old = c_recompute_threshold(threshold)
                try:
                    y = layer.forward(x, train=True, h0=h0)
                finally:
                    c_recompute_threshold(old)
                assert ("c" in layer._engine.cache) == bool(threshold)
                dx = layer.backward(dy)
                dx2 = layer.backward(dy)                  # a second backward too
                got[threshold] = [y, dx, dx2, layer.dh0] + [layer.grads[k]
                                                           for k in sorted(layer.grads)]
            for a, b in zip(*got.values()):
                assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lean_inference_path_matches_the_general_path(dtype):
    # forward(x) from the carried state takes Engine.infer_lean where x needs
    # no conversion; every other input takes the general path.  Both must
    # give the same bits, fresh arrays, and the same carried state.
    layer = gru_cy.GRU(5, 7, variant="reset_after", dtype=dtype, seed=1, num_threads=1)
    x = rand(6, 2, 5).astype(dtype)
    steps = []
    for t in range(6):
        steps.append(layer.forward(x[t:t + 1]))           # lean (contiguous, right dtype)
    lean_state = layer.state
    layer.reset_state()
    general = []
    h = None
    for t in range(6):
        xt = x[t:t + 1].tolist()                           # a list: converted, general path
        general.append(layer.forward(xt) if h is None else layer.forward(xt, h0=h))
        h = layer.state
    for a, b in zip(steps, general):
        assert a.dtype == dtype and a.shape == (1, 2, 7)
        assert_array_equal(a, b)
    assert_array_equal(lean_state, layer.state)
    # the returned output and the carried state do not share memory
    y = layer.forward(x[:1])
    assert not np.shares_memory(y, layer._state)
    # a strided view and the other float type are converted, not misread
    layer.reset_state()
    want = layer.forward(np.ascontiguousarray(x[:, ::-1]))
    layer.reset_state()
    assert_array_equal(layer.forward(x[:, ::-1]), want)
    other = np.float64 if dtype == np.float32 else np.float32
    layer.reset_state()
    want = layer.forward(x.astype(other).astype(dtype))
    layer.reset_state()
    assert_array_equal(layer.forward(x.astype(other)), want)
    # the engine declines what it cannot take as it is
    eng = layer._engine
    assert eng.infer_lean(x.tolist(), None, 1) is None
    assert eng.infer_lean(x[:, ::-1], None, 1) is None
    assert eng.infer_lean(x.astype(other), None, 1) is None
    assert eng.infer_lean(x[..., :4].copy(), None, 1) is None
    assert eng.infer_lean(x, np.zeros((3, 7), dtype), 1) is None    # batch mismatch


def test_engine_refuses_a_missing_dy():
    # The engine does no validation, but what would crash it is refused.
    layer = make()
    layer.forward(rand(3, 2, 3), train=True)
    eng = layer._engine
    with pytest.raises(ValueError, match="dy"):
        eng.backward(None, None, np.empty((3, 2, 3)), np.empty((2, 4)), 1)


@pytest.mark.parametrize("variant", ("darknet", "reset_after"))
@pytest.mark.parametrize("dtype", (np.float32, np.float64))
def test_split_sequences_carry_the_state_exactly(variant, dtype):
    # README: a sequence run one step a call, or in chunks, gives the
    # whole-sequence call's bits from batch 4 on; at batch 1 to 3 (a
    # matrix-vector path for the products) it agrees to rounding: two of the
    # engine's paths, summing in different orders ("engine").
    for B in (1, 2, 3, 4, 9):
        layer = gru_cy.GRU(24, 40, variant=variant, dtype=dtype, seed=B)
        x = np.random.default_rng(B).standard_normal((12, B, 24)).astype(dtype)
        whole = layer.forward(x)
        layer.reset_state()
        steps = np.concatenate([layer.forward(x[t:t + 1]) for t in range(12)])
        layer.reset_state()
        chunks = np.concatenate([layer.forward(x[a:a + 5]) for a in (0, 5, 10)])
        for split in (steps, chunks):
            if B >= 4:
                assert_array_equal(split, whole)
            else:
                assert_allclose(split, whole, **tol(dtype, "engine"))
