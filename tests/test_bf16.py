"""bfloat16 inference (``inference_precision="bfloat16"``, issue 17 item 3).

Oracles: a NumPy emulation of the same math (weights and every product's
inputs rounded to bf16, round to nearest even; products summed in float64;
biases, gates and state in float32) fed the engine's own previous state, so
that one step is checked tightly; the float32 engine within the looser bound
of bf16's rounding; and the bf16 path against itself (thread counts, chunks of
a sequence, reverse).  Tolerances: tests/tolerances.py ("bf16_step",
"bf16_float32").
"""
import pickle

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import gru_cy
from gru_cy._cpu import bf16
from tolerances import tol

F32 = np.float32
needs_bf16 = pytest.mark.skipif(not bf16.supported(),
                                reason="the CPU lacks AVX512_BF16 (vdpbf16ps)")


def bf16_round(a):
    """float32 values rounded to bf16 (nearest, ties to even), as float32."""
    b = np.ascontiguousarray(a, F32).view(np.uint32).astype(np.uint64)
    b = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) << 16
    return b.astype(np.uint32).view(F32)


def bf16_product(a, w):
    """a (M, K) @ w (N, K).T with both rounded to bf16, summed in float64,
    rounded to float32 (vdpbf16ps's products are exact in float32)."""
    return (bf16_round(a).astype(np.float64) @ bf16_round(w).astype(np.float64).T).astype(F32)


def emulated_step(layer, x_t, hprev):
    """One step (B, H) of the bf16 forward from x_t (B, I) and h_{t-1} (B, H)."""
    p, H = layer.params, layer.outputs
    U = np.concatenate([p[f"u{g}.weights"] for g in "zrh"])
    W = np.concatenate([p[f"w{g}.weights"] for g in "zrh"])
    bu = np.concatenate([p[f"u{g}.biases"] for g in "zrh"])
    bw = np.concatenate([p[f"w{g}.biases"] for g in "zrh"])

    def sig(v):
        return 1 / (1 + np.exp(-v))

    act = np.tanh if layer.activation == "tanh" else sig
    xp = bf16_product(x_t, U) + bu
    if layer.variant == "reset_after":
        hp = bf16_product(hprev, W) + bw
        z, r = sig(xp[:, :H] + hp[:, :H]), sig(xp[:, H:2 * H] + hp[:, H:2 * H])
        c = act(xp[:, 2 * H:] + r * hp[:, 2 * H:])
    else:
        hp = bf16_product(hprev, W[:2 * H]) + bw[:2 * H]
        z, r = sig(xp[:, :H] + hp[:, :H]), sig(xp[:, H:2 * H] + hp[:, H:2 * H])
        s = (r * hprev).astype(F32)
        c = act(xp[:, 2 * H:] + bf16_product(s, W[2 * H:]) + bw[2 * H:])
    return (z * hprev + (1 - z) * c).astype(F32)


def pair(I, H, seed=0, **kw):
    """A bfloat16 layer and its float32 twin (same weights), biases non-zero."""
    rng = np.random.default_rng(seed + 100)
    layers = [gru_cy.GRU(I, H, seed=seed, inference_precision=prec, **kw)
              for prec in ("bfloat16", "float32")]
    for name in layers[0].params:
        if name.endswith(".biases"):
            b = rng.uniform(-0.5, 0.5, H)
            for g in layers:
                g.params[name] = b
    return layers


def data(T, B, I, seed=1):
    return np.random.default_rng(seed).standard_normal((T, B, I)).astype(F32)


SIZES = [(1, 1, 1, 1), (5, 3, 7, 21), (4, 1, 64, 128), (3, 9, 40, 50), (6, 17, 33, 96),
         (2, 70, 300, 17)]


@needs_bf16
def test_conversion_rounds_to_nearest_even():
    # the instruction's rounding is the emulation's: random values, exact
    # halfway cases (both parities) and values just off them
    rng = np.random.default_rng(0)
    bits = np.concatenate([rng.integers(0, 2**31 - 2**23, 4000, dtype=np.int64),
                           np.arange(0x3F800000, 0x3F800000 + 2**17, 4096 + 2**14),
                           [0x3F808000, 0x3F818000, 0x3F808001, 0x3F817FFF]])
    v = (bits.astype(np.uint32).view(F32) * rng.choice([-1, 1], bits.size)).astype(F32)
    v = v[np.abs(v) >= np.finfo(F32).tiny]          # normal numbers (no DAZ question)
    got = bf16.to_bf16(v.reshape(1, -1))
    want = (bf16_round(v).view(np.uint32) >> 16).astype(np.uint16)
    assert_array_equal(got.reshape(-1), want)
    assert_array_equal(bf16.to_bf16(v[:33].reshape(3, 11)).reshape(-1), want[:33])


@needs_bf16
@pytest.mark.parametrize("variant", ["darknet", "reset_after"])
@pytest.mark.parametrize("activation", ["tanh", "logistic"])
@pytest.mark.parametrize("T,B,I,H", SIZES)
def test_each_step_matches_emulation(variant, activation, T, B, I, H):
    g, _ = pair(I, H, variant=variant, activation=activation)
    y = check_steps(g, T, B)
    assert_array_equal(g.state, y[-1])


def check_steps(g, T, B):
    """g's forward of random x (T, B, I) from a random h0, each step against
    emulated_step from the previous step's output; returns y."""
    x = data(T, B, g.inputs)
    h0 = np.random.default_rng(2).uniform(-1, 1, (B, g.outputs)).astype(F32)
    y = g.forward(x, h0=h0)
    for t in range(T):
        want = emulated_step(g, x[t], h0 if t == 0 else y[t - 1])
        assert_allclose(y[t], want, **tol(F32, "bf16_step"))
    return y


@needs_bf16
@pytest.mark.parametrize("activation", ["tanh", "logistic"])
@pytest.mark.parametrize("num_threads", [1, 2])
def test_reset_after_rows_longer_than_a_block(activation, num_threads):
    # rows.h computes reset_after's h-only rows in blocks of GRU_ROW_BLOCK
    # (256) units: 600 units a thread or 300, each row in two or three blocks
    g, _ = pair(24, 600, variant="reset_after", activation=activation,
                num_threads=num_threads)
    check_steps(g, 2, 5)


@needs_bf16
@pytest.mark.parametrize("variant", ["darknet", "reset_after"])
@pytest.mark.parametrize("T,B,I,H", SIZES[1:])
def test_close_to_float32(variant, T, B, I, H):
    g, f = pair(I, H, variant=variant)
    x = data(T, B, I)
    y, yf = g.forward(x), f.forward(x)
    assert_allclose(y, yf, **tol(F32, "bf16_float32"))
    assert not np.array_equal(y, yf)       # the products really ran in bf16
    assert_allclose(g.state, f.state, **tol(F32, "bf16_float32"))


@needs_bf16
@pytest.mark.parametrize("variant", ["darknet", "reset_after"])
@pytest.mark.parametrize("T,B,I,H", [(3, 9, 40, 50), (4, 20, 64, 200), (2, 3, 17, 1000),
                                     (5, 33, 20, 40)])
def test_bit_identical_across_threads(variant, T, B, I, H):
    outs = []
    for n in (1, 2, 3):
        g, _ = pair(I, H, variant=variant, num_threads=n)
        outs.append(g.forward(data(T, B, I)))
    for y in outs[1:]:
        assert_array_equal(y, outs[0])


@needs_bf16
@pytest.mark.parametrize("variant", ["darknet", "reset_after"])
def test_chunks_reverse_and_carried_state(variant):
    # every element's arithmetic is independent of the chunk it falls in:
    # two calls carrying the state give the bits of one; a reverse layer is
    # the forward one on the flipped sequence
    T, B, I, H = 40, 30, 24, 48       # 17 steps a chunk of 512 rows: 3 chunks
    g, _ = pair(I, H, variant=variant)
    x = data(T, B, I)
    y = g.forward(x)
    g.reset_state()
    y1 = g.forward(x[:13])
    y2 = g.forward(x[13:])
    assert_array_equal(np.concatenate([y1, y2]), y)
    r, _ = pair(I, H, variant=variant, reverse=True)
    g.reset_state()
    assert_array_equal(r.forward(x), g.forward(x[::-1])[::-1])
    assert_array_equal(r.state, g.state)


@needs_bf16
def test_weights_changed_after_first_call_are_used():
    T, B, I, H = 3, 4, 10, 20
    g, f = pair(I, H)
    x = data(T, B, I)
    h0 = np.zeros((B, H), F32)
    g.forward(x, h0=h0)
    # assignment
    w = np.random.default_rng(5).uniform(-0.3, 0.3, (H, H))
    g.params["wh.weights"] = w
    f.params["wh.weights"] = w
    assert_allclose(g.forward(x, h0=h0), f.forward(x, h0=h0), **tol(F32, "bf16_float32"))
    assert_allclose(g.forward(x, h0=h0)[0], emulated_step(g, x[0], h0),
                    **tol(F32, "bf16_step"))
    # update() after a (float32) training step
    for layer in (g, f):
        layer.forward(x, train=True, h0=h0)
        layer.backward(np.ones((T, B, H), F32))
        layer.update(learning_rate=0.5)
    assert_array_equal(g.params["uz.weights"], f.params["uz.weights"])
    y = g.forward(x, h0=h0)
    assert_allclose(y[0], emulated_step(g, x[0], h0), **tol(F32, "bf16_step"))
    # an in-place edit is seen after an assignment (documented)
    g.params["uz.weights"][...] *= 2
    g.params["uz.weights"] = g.params["uz.weights"]
    assert_allclose(g.forward(x, h0=h0)[0], emulated_step(g, x[0], h0),
                    **tol(F32, "bf16_step"))


@needs_bf16
@pytest.mark.parametrize("variant", ["darknet", "reset_after"])
def test_training_stays_float32(variant):
    # forward(train=True) and backward run the float32 engine: the float32
    # twin's bits; inference then is bf16 again
    T, B, I, H = 5, 3, 8, 12
    g, f = pair(I, H, variant=variant)
    x = data(T, B, I)
    h0 = np.zeros((B, H), F32)
    assert_array_equal(g.forward(x, train=True, h0=h0), f.forward(x, train=True, h0=h0))
    dy = data(T, B, H, seed=4)
    assert_array_equal(g.backward(dy), f.backward(dy))
    for name in g.grads:
        assert_array_equal(g.grads[name], f.grads[name])
    y = g.forward(x, h0=h0)
    assert not np.array_equal(y, f.forward(x, h0=h0))
    with pytest.raises(ValueError, match="backward"):
        g.backward(dy)      # the inference forward dropped the training cache


@needs_bf16
def test_refused_combinations():
    with pytest.raises(ValueError, match="inference_precision.*float32 layer.*float64"):
        gru_cy.GRU(3, 4, dtype=np.float64, inference_precision="bfloat16")
    with pytest.raises(ValueError, match="inference_precision.*batch_normalize"):
        gru_cy.GRU(3, 4, batch_normalize=True, inference_precision="bfloat16")
    with pytest.raises(ValueError, match="inference_precision: expected one of"):
        gru_cy.GRU(3, 4, inference_precision="float16")
    g = gru_cy.GRU(3, 4, dtype=np.float64)
    with pytest.raises(ValueError, match="inference_precision.*float64"):
        g.inference_precision = "bfloat16"
    assert g.inference_precision == "float32"
    g = gru_cy.GRU(3, 4, inference_precision="bfloat16")
    with pytest.raises(ValueError, match="lengths.*bfloat16"):
        g.forward(data(2, 2, 3), lengths=[1, 2])
    with pytest.raises(ValueError, match="inference_precision.*float64"):
        gru_cy.StackedGRU(3, 4, dtype=np.float64, inference_precision="bfloat16")


def test_cpu_without_avx512_bf16_is_a_clear_error():
    bf16._force_unsupported(True)
    try:
        with pytest.raises(RuntimeError, match="inference_precision.*AVX512_BF16"):
            gru_cy.GRU(3, 4, inference_precision="bfloat16")
        g = gru_cy.GRU(3, 4)
        with pytest.raises(RuntimeError, match="AVX512_BF16"):
            g.inference_precision = "bfloat16"
        g.forward(data(2, 2, 3))      # float32 is untouched
    finally:
        bf16._force_unsupported(False)


@needs_bf16
def test_unpickled_on_a_cpu_without_avx512_bf16_is_a_clear_error():
    # a pickle holds no converted weights; converting checks the CPU again
    blob = pickle.dumps(gru_cy.GRU(3, 4, inference_precision="bfloat16"))
    bf16._force_unsupported(True)
    try:
        g = pickle.loads(blob)
        with pytest.raises(RuntimeError, match="inference_precision.*AVX512_BF16"):
            g.forward(data(2, 2, 3))
        g.forward(data(2, 2, 3), train=True)      # training is float32
    finally:
        bf16._force_unsupported(False)
    assert g.forward(data(2, 2, 3)).shape == (2, 2, 4)


@needs_bf16
def test_float32_default_unchanged():
    # the default path is the float32 engine's, bit for bit
    g = gru_cy.GRU(8, 12, seed=3)
    f = gru_cy.GRU(8, 12, seed=3, inference_precision="float32")
    x = data(4, 3, 8)
    assert_array_equal(g.forward(x), f.forward(x))
    assert g.inference_precision == "float32"
    f.inference_precision = "bfloat16"
    f.inference_precision = "float32"
    g.reset_state()
    f.reset_state()
    assert_array_equal(g.forward(x), f.forward(x))


@needs_bf16
@pytest.mark.parametrize("bidirectional", [False, True])
def test_stacked(bidirectional, tmp_path):
    I, H = 12, 20
    kw = dict(num_layers=2, bidirectional=bidirectional, seed=7, num_threads=2)
    s = gru_cy.StackedGRU(I, H, inference_precision="bfloat16", **kw)
    sf = gru_cy.StackedGRU(I, H, **kw)
    assert all(g.inference_precision == "bfloat16" for dirs in s.layers for g in dirs)
    x = data(6, 5, I)
    y = s.forward(x)
    assert_allclose(y, sf.forward(x), **tol(F32, "bf16_float32"))
    # the stack is its sublayers' bf16 forwards, chained
    h = x
    for dirs in s.layers:
        for g in dirs:
            g.reset_state()
        h = np.concatenate([g.forward(h) for g in dirs], axis=2)
    assert_array_equal(y, h)
    # training stays float32 (from the same initial states)
    h0 = np.zeros((2 * len(s.layers[0]), 5, H), F32)
    assert_array_equal(s.forward(x, train=True, h0=h0), sf.forward(x, train=True, h0=h0))
    # checkpoints and pickles keep the precision
    s.save(tmp_path / "m.ckpt")
    back = gru_cy.load(tmp_path / "m.ckpt")
    assert back.inference_precision == "bfloat16"
    assert pickle.loads(pickle.dumps(s)).inference_precision == "bfloat16"
    s.inference_precision = "float32"
    assert all(g.inference_precision == "float32" for dirs in s.layers for g in dirs)


def test_private_kernel_entry_points_check_sizes():
    # the layer always passes consistent sizes; a direct call with wrong ones
    # is a ValueError, not a crash (review finding)
    from gru_cy._cpu import bf16
    f32 = np.float32
    with pytest.raises(ValueError, match="theta"):
        bf16.pack(np.zeros(4, f32), 4000, 4000)
    args = dict(x=np.zeros((2, 1, 3), f32), y=np.zeros((2, 1, 4), f32))
    good_pk = np.zeros(bf16.pack(np.zeros(3 * 4 * 7, f32), 3, 4).size, np.uint32) \
        if bf16.supported() else None
    for pk, bu, h0, match in ((np.zeros(16, np.uint32), 12, None, "pk"),
                              (good_pk, 11, None, "bu"),
                              (good_pk, 12, np.zeros((1, 5), f32), "h0")):
        if pk is None:
            continue
        with pytest.raises(ValueError, match=match):
            bf16.forward(pk, args["x"], h0, args["y"], np.zeros(bu, f32), np.zeros(12, f32),
                         False, 1, 1)
