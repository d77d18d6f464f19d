"""The whole operator: sequence lengths, the reverse direction, StackedGRU
(layers, bidirectional, batch_first, dropout), against per-sequence runs,
torch.nn.GRU on packed sequences, ONNX Runtime's GRU node and finite
differences."""
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import gru_cy
from gru_cy import GRU, StackedGRU, gradcheck, sequences
from gru_cy._cpu import team

from tolerances import tol

VARIANTS = ("darknet", "reset_after")


def _lengths(rng, B, T):
    # unsorted, with 1 and T present
    L = rng.integers(1, T + 1, B)
    L[0], L[-1] = 1, T
    return rng.permutation(L)


def _copy_params(dst, src):
    for k in src.params:
        dst.params[k] = src.params[k]


# --------------------------------------------------------------- one layer ---

@pytest.mark.parametrize("reverse", (False, True), ids=("forward", "reverse"))
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", (np.float32, np.float64), ids=("f32", "f64"))
def test_lengths_equal_each_sequence_alone(variant, reverse, dtype):
    # Sequence b of a padded batch gives what it gives alone, truncated to its
    # length (reversed for a reverse layer); zeros in the padding; final
    # states, dx, dh0 and the parameter gradients (summed over sequences) too.
    rng = np.random.default_rng(3)
    T, B, I, H = 9, 6, 5, 7
    g = GRU(I, H, variant=variant, dtype=dtype, seed=1, reverse=reverse)
    one = GRU(I, H, variant=variant, dtype=dtype, seed=1)
    _copy_params(one, g)
    x = rng.normal(size=(T, B, I)).astype(dtype)
    h0 = rng.normal(size=(B, H)).astype(dtype)
    L = _lengths(rng, B, T)
    dy = rng.normal(size=(T, B, H)).astype(dtype)
    ds = rng.normal(size=(B, H)).astype(dtype)
    y = g.forward(x, train=True, h0=h0, lengths=L)
    state = g.state
    dx = g.backward(dy, ds)
    grads = {k: v.copy() for k, v in g.grads.items()}
    close = tol(dtype, "engine")
    for b in range(B):
        n = L[b]
        sl = slice(n - 1, None, -1) if reverse else slice(0, n)
        xb = np.ascontiguousarray(x[sl, b:b + 1])
        yb = one.forward(xb, train=True, h0=h0[b:b + 1])
        dxb = one.backward(np.ascontiguousarray(dy[sl, b:b + 1]), ds[b:b + 1])
        assert_allclose(y[sl, b:b + 1], yb, **close)
        assert_allclose(dx[sl, b:b + 1], dxb, **close)
        assert_allclose(state[b], one.state[0], **close)
        assert_allclose(g.dh0[b], one.dh0[0], **close)
        assert not y[n:, b].any() and not dx[n:, b].any()
    for k in grads:
        assert_allclose(grads[k], one.grads[k], **tol(dtype, "engine", scale=B), err_msg=k)


def test_padding_of_dy_is_not_read():
    rng = np.random.default_rng(0)
    T, B, I, H = 6, 4, 3, 5
    g = GRU(I, H, dtype=np.float64, seed=0)
    x = rng.normal(size=(T, B, I))
    L = np.array([2, 6, 3, 1])
    dy = rng.normal(size=(T, B, H))
    h0 = np.zeros((B, H))
    g.forward(x, train=True, h0=h0, lengths=L)
    dx1 = g.backward(dy)
    g1 = {k: v.copy() for k, v in g.grads.items()}
    g.zero_grad()
    for b in range(B):
        dy[L[b]:, b] = np.nan
    g.forward(x, train=True, h0=h0, lengths=L)
    dx2 = g.backward(dy)
    assert_array_equal(dx1, dx2)
    for k in g1:
        assert_array_equal(g1[k], g.grads[k])


def test_full_lengths_and_reverse_without_lengths():
    # lengths all T: the same as no lengths; reverse without lengths: the
    # whole sequence read backwards.
    rng = np.random.default_rng(1)
    T, B, I, H = 5, 3, 4, 6
    g = GRU(I, H, dtype=np.float64, seed=2)
    r = GRU(I, H, dtype=np.float64, seed=2, reverse=True)
    x = rng.normal(size=(T, B, I))
    y = g.forward(x, h0=np.zeros((B, H)))
    assert_allclose(g.forward(x, h0=np.zeros((B, H)), lengths=[T] * B), y,
                    **tol(np.float64, "engine"))
    assert_allclose(r.forward(x, h0=np.zeros((B, H))), g.forward(
        np.ascontiguousarray(x[::-1]), h0=np.zeros((B, H)))[::-1], **tol(np.float64, "engine"))
    # and from the carried state (no h0: the calls layer.forward serves fastest)
    for layer in (g, r):
        layer.reset_state()
    x2 = rng.normal(size=(T, B, I))
    want = [g.forward(np.ascontiguousarray(a[::-1]))[::-1] for a in (x, x2)]
    for a, w in zip((x, x2), want):
        assert_allclose(r.forward(a), w, **tol(np.float64, "engine"))


@pytest.mark.parametrize("threads", (1, 2))
def test_lengths_bit_identical_across_thread_counts(threads):
    rng = np.random.default_rng(5)
    T, B, I, H = 12, 40, 16, 24
    x = rng.normal(size=(T, B, I)).astype(np.float32)
    L = _lengths(rng, B, T)
    out = []
    for n in (threads, 2 if threads == 1 else 1):
        g = GRU(I, H, variant="reset_after", seed=4, num_threads=n, reverse=True)
        y = g.forward(x, train=True, lengths=L)
        dx = g.backward(np.ones_like(y))
        out.append((y, dx, g.grads["wh.weights"].copy()))
    for a, b in zip(*out):
        assert_array_equal(a, b)


def test_carried_state_with_lengths():
    # Documented: the carried state is each sequence's state after its last
    # valid step, and the next call (h0=None) starts from it.
    rng = np.random.default_rng(2)
    T, B, I, H = 4, 3, 2, 5
    g = GRU(I, H, dtype=np.float64, seed=3)
    x = rng.normal(size=(T, B, I))
    L = np.array([4, 1, 2])
    y = g.forward(x, lengths=L)
    assert_allclose(g.state, y[L - 1, np.arange(B)], rtol=0, atol=0)
    x2 = rng.normal(size=(2, B, I))
    y2 = g.forward(x2)
    assert_allclose(y2, g.forward(x2, h0=y[L - 1, np.arange(B)]), rtol=0, atol=0)


@pytest.mark.parametrize("bad, exc, words", [
    ([0, 3, 2], ValueError, "lengths[0] = 0"),
    ([1, 5, 2], ValueError, "lengths[1] = 5"),
    ([-1, 2, 2], ValueError, "lengths[0] = -1"),
    ([1, 2], ValueError, "expected shape (3,)"),
    ([[1, 2, 3]], ValueError, "expected shape (3,)"),
    ([1.0, 2.0, 3.0], TypeError, "integer"),
    ([True, True, True], TypeError, "integer"),
    ("abc", TypeError, "integer"),
])
def test_bad_lengths(bad, exc, words):
    g = GRU(2, 3)
    x = np.zeros((4, 3, 2), np.float32)
    with pytest.raises(exc, match="lengths") as info:
        g.forward(x, lengths=bad)
    assert words in str(info.value)
    with pytest.raises(exc, match="lengths"):
        StackedGRU(2, 3, bidirectional=True).forward(x, lengths=bad)


def test_bn_training_needs_two_running_sequences():
    g = GRU(2, 3, batch_normalize=True)
    x = np.zeros((4, 3, 2), np.float32)
    with pytest.raises(ValueError, match="at least 2 running"):
        g.forward(x, train=True, lengths=[4, 2, 2])
    g.forward(x, train=True, lengths=[4, 4, 2])           # two run every step
    g.forward(x, train=False, lengths=[4, 1, 1])          # inference: rolling statistics


def test_bn_rolling_statistics_over_running_sequences():
    # A step's rolling statistics see the sequences running at it: lengths
    # (T, T, 2) give the statistics of the 3-row batch for 2 steps, then of the
    # first two rows; steps advance max(lengths) times.
    rng = np.random.default_rng(0)
    T, B, I, H = 4, 3, 2, 3
    x = rng.normal(size=(T, B, I))
    a = GRU(I, H, dtype=np.float64, batch_normalize=True, seed=1)
    b = GRU(I, H, dtype=np.float64, batch_normalize=True, seed=1)
    a.forward(x, train=True, lengths=[T, T, 2])
    b.forward(x[:2], train=True, h0=np.zeros((B, H)))
    b.forward(x[2:, :2].copy(), train=True, h0=b.state[:2])
    for k in a.params:
        if "rolling" in k:
            assert_allclose(a.params[k], b.params[k], **tol(np.float64, "engine"), err_msg=k)


# ------------------------------------------------------------ finite diff ---

@pytest.mark.parametrize("kw", [
    dict(lengths=[3, 1, 2], batch=3),
    dict(lengths=[2, 3], reverse=True, variant="reset_after"),
    dict(lengths=[3, 3, 2], batch=3, batch_normalize=True, reverse=True),
    dict(num_layers=2, bidirectional=True, lengths=[1, 3], variant="reset_after"),
    dict(num_layers=3, dropout=0.4, lengths=[3, 2]),
    dict(num_layers=2, bidirectional=True, batch_normalize=True, dropout=0.3,
         lengths=[3, 2, 3], batch=3, activation="logistic"),
], ids=("lengths", "reverse", "bn-reverse", "bidir-stack", "dropout-stack", "bn-bidir-dropout"))
def test_finite_differences(kw):
    res = gradcheck.check(steps=3, **kw)
    assert res.ok, res.format_table()
    assert {r["name"] for r in res.rows} >= {"x", "h0"}


def test_gradcheck_cli_covers_the_operator(capsys):
    code = gradcheck.main(["--layers", "2", "--bidirectional", "--lengths", "2,3",
                           "--dropout", "0.5", "--max-coords", "10"])
    assert code == 0, capsys.readouterr().out
    assert gradcheck.main(["--lengths", "0,1"]) == 2
    assert "lengths" in capsys.readouterr().err


# ------------------------------------------------------------ StackedGRU ---

def test_stacked_shapes_names_and_state():
    rng = np.random.default_rng(0)
    m = StackedGRU(3, 4, num_layers=2, bidirectional=True, batch_first=True, seed=0)
    x = rng.normal(size=(5, 7, 3)).astype(np.float32)          # (B, T, I)
    y = m.forward(x, train=True, lengths=[7, 1, 3, 7, 2])
    assert y.shape == (5, 7, 8) and m.state.shape == (4, 5, 4)
    assert not y[1, 1:].any()
    dx = m.backward(np.ones_like(y))
    assert dx.shape == x.shape and m.dh0.shape == (4, 5, 4)
    assert "l0.uz.weights" in m.params and "l1.reverse.wh.biases" in m.params
    assert m.params["l1.uz.weights"].shape == (4, 8)
    assert set(m.grads) == set(m.params)
    m.update()
    m.zero_grad()
    m.reset_state()
    assert m.state is None
    with pytest.raises(ValueError, match="backward"):
        m.backward(np.ones_like(y))
    with pytest.raises(ValueError, match="h0"):
        m.forward(x, h0=np.zeros((2, 5, 4), np.float32))


def test_stacked_seed_and_dropout_only_in_training():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 3, 2)).astype(np.float32)
    a = StackedGRU(2, 3, num_layers=2, dropout=0.5, seed=7)
    b = StackedGRU(2, 3, num_layers=2, dropout=0.5, seed=7)
    for k in a.params:
        assert_array_equal(a.params[k], b.params[k])
    assert_array_equal(a.forward(x, h0=np.zeros((2, 3, 3))), b.forward(x, h0=np.zeros((2, 3, 3))))
    plain = StackedGRU(2, 3, num_layers=2, seed=7)
    assert_array_equal(a.forward(x, h0=np.zeros((2, 3, 3))),
                       plain.forward(x, h0=np.zeros((2, 3, 3))))
    ya = a.forward(x, train=True, h0=np.zeros((2, 3, 3)))
    yp = plain.forward(x, train=True, h0=np.zeros((2, 3, 3)))
    assert not np.array_equal(ya, yp)                         # masks applied
    with pytest.raises(ValueError, match="dropout"):
        StackedGRU(2, 3, dropout=1.0)


def test_bias_false_stays_zero():
    m = StackedGRU(2, 3, num_layers=2, bidirectional=True, bias=False, seed=0,
                   optimizer="adam", variant="reset_after")
    x = np.random.default_rng(0).normal(size=(4, 3, 2)).astype(np.float32)
    for _ in range(3):
        y = m.forward(x, train=True)
        m.backward(np.ones_like(y))
        m.update(learning_rate=0.1)
    for k, v in m.params.items():
        if k.endswith(".biases"):
            assert not v.any(), k
    assert not any(k.startswith("bias") for k in m.torch_state_dict())


@pytest.mark.parametrize("threads", (1, 2, 3))
def test_bidirectional_bit_identical_across_thread_counts(threads):
    # The directions run concurrently on shares of the team: same bits.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(9, 5, 6)).astype(np.float32)
    L = _lengths(rng, 5, 9)
    out = []
    for n in (1, threads):
        m = StackedGRU(6, 8, num_layers=2, bidirectional=True, seed=3, num_threads=n,
                       variant="reset_after")
        y = m.forward(x, train=True, lengths=L)
        dx = m.backward(np.ones_like(y))
        out.append([y, dx] + [g.copy() for g in m.grads.values()])
    for a, b in zip(*out):
        assert_array_equal(a, b)


# ----------------------------------------------------------------- torch ---

@pytest.mark.parametrize("bias", (False, True), ids=("nobias", "bias"))
@pytest.mark.parametrize("batch_first", (False, True), ids=("tmajor", "bfirst"))
@pytest.mark.parametrize("bidirectional", (False, True), ids=("uni", "bi"))
@pytest.mark.parametrize("num_layers", (1, 2, 3))
@pytest.mark.parametrize("dtype", (np.float64, np.float32), ids=("f64", "f32"))
def test_torch_packed_sequences(num_layers, bidirectional, batch_first, bias, dtype):
    torch = pytest.importorskip("torch", reason="torch is a test reference only")
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
    rng = np.random.default_rng(num_layers * 8 + bidirectional * 4 + batch_first * 2 + bias)
    T, B, I, H = 7, 5, 3, 4
    torch.manual_seed(0)
    m = torch.nn.GRU(I, H, num_layers=num_layers, bidirectional=bidirectional,
                     batch_first=batch_first, bias=bias)
    m = m.double() if dtype == np.float64 else m.float()
    g = StackedGRU.from_torch(m, num_threads=2)
    assert (g.dtype, g.num_layers, g.bidirectional, g.batch_first, g.bias) == (
        np.dtype(dtype), num_layers, bidirectional, batch_first, bias)
    D = 2 if bidirectional else 1
    L = _lengths(rng, B, T)
    x = rng.normal(size=(B, T, I) if batch_first else (T, B, I)).astype(dtype)
    h0 = rng.normal(size=(num_layers * D, B, H)).astype(dtype)
    xt = torch.tensor(x, requires_grad=True)
    h0t = torch.tensor(h0, requires_grad=True)
    packed = pack_padded_sequence(xt, torch.tensor(L), batch_first=batch_first,
                                  enforce_sorted=False)
    yp, hn = m(packed, h0t)
    yt, _ = pad_packed_sequence(yp, batch_first=batch_first, total_length=T)
    dy = rng.normal(size=tuple(yt.shape)).astype(dtype)
    dhn = rng.normal(size=tuple(hn.shape)).astype(dtype)
    ((yt * torch.tensor(dy)).sum() + (hn * torch.tensor(dhn)).sum()).backward()
    y = g.forward(x, train=True, h0=h0, lengths=L)
    dx = g.backward(dy, dhn)
    close = tol(dtype, "torch_packed")

    def same(ours, ref, what):
        ref = ref.detach().numpy() if hasattr(ref, "detach") else ref
        scale = np.max(np.abs(ref))
        assert_allclose(ours / scale, ref / scale, **close, err_msg=what)

    same(y, yt, "y")
    same(g.state, hn, "h_n")
    same(dx, xt.grad, "dx")
    same(g.dh0, h0t.grad, "dh0")
    grads = dict(m.named_parameters())
    from gru_cy import torch_compat
    for name, (layer, side, kind) in torch_compat._stacked_keys(g).items():
        ours = np.concatenate([layer.grads[f"{side}{gt}.{kind}"] for gt in "rzh"])
        same(ours, grads[name].grad, name)
    back = g.torch_state_dict()
    m2 = torch.nn.GRU(I, H, num_layers=num_layers, bidirectional=bidirectional,
                      batch_first=batch_first, bias=bias)
    m2.load_state_dict({k: torch.from_numpy(v) for k, v in back.items()})


def test_torch_state_dict_errors():
    m = StackedGRU(3, 4, num_layers=2, variant="reset_after")
    sd = m.torch_state_dict()
    assert set(sd) == {f"{w}_l{k}" for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
                       for k in (0, 1)}
    bad = dict(sd)
    del bad["weight_hh_l1"]
    with pytest.raises(ValueError, match="missing 'weight_hh_l1'"):
        m.load_torch_state_dict(bad)
    bad = dict(sd, weight_ih_l1=np.zeros((12, 3)))
    with pytest.raises(ValueError, match="weight_ih_l1"):
        m.load_torch_state_dict(bad)
    bad = dict(sd, weight_ih_l0_reverse=sd["weight_ih_l0"])
    with pytest.raises(ValueError, match="unexpected key"):
        m.load_torch_state_dict(bad)
    bad = dict(sd)
    bad["weight_ih_l0"] = sd["weight_ih_l0"] * np.nan
    with pytest.raises(ValueError, match="finite"):
        m.load_torch_state_dict(bad)
    with pytest.raises(ValueError, match="reset_after"):
        StackedGRU(3, 4).torch_state_dict()
    pref = {"rnn." + k: v for k, v in sd.items()}
    m.load_torch_state_dict(pref)
    with pytest.raises(TypeError, match="torch.nn.GRU"):
        StackedGRU.from_torch(object())


# ------------------------------------------------------------ ONNX Runtime ---

def _onnx_gru_model(onnx, W, R, Bias, direction, lbr, T, B, I, H, with_lens, with_h0):
    from onnx import TensorProto, helper, numpy_helper
    D = W.shape[0]
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, [T, B, I])]
    names = ["X", "W", "R", "B", "sequence_lens" if with_lens else "",
             "initial_h" if with_h0 else ""]
    if with_lens:
        inputs.append(helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, [B]))
    if with_h0:
        inputs.append(helper.make_tensor_value_info("initial_h", TensorProto.FLOAT,
                                                    [D, B, H]))
    while names[-1] == "":
        names.pop()
    node = helper.make_node("GRU", names, ["Y", "Y_h"], hidden_size=H, direction=direction,
                            linear_before_reset=lbr)
    graph = helper.make_graph(
        [node], "gru", inputs,
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [T, D, B, H]),
         helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, [D, B, H])],
        initializer=[numpy_helper.from_array(W, "W"), numpy_helper.from_array(R, "R"),
                     numpy_helper.from_array(Bias, "B")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])


def _onnx_blocks(layer):
    # ONNX's z, r, h blocks of W, R and B (Wb then Rb) of one direction.
    p = {k: np.asarray(v) for k, v in layer.params.items()}
    W = np.concatenate([p[f"u{g}.weights"] for g in "zrh"])
    R = np.concatenate([p[f"w{g}.weights"] for g in "zrh"])
    b = np.concatenate([p[f"u{g}.biases"] for g in "zrh"] + [p[f"w{g}.biases"] for g in "zrh"])
    return W, R, b


@pytest.mark.parametrize("with_h0", (False, True), ids=("zeros", "h0"))
@pytest.mark.parametrize("with_lens", (False, True), ids=("full", "lens"))
@pytest.mark.parametrize("lbr", (0, 1))
@pytest.mark.parametrize("direction", ("forward", "reverse", "bidirectional"))
def test_onnx_runtime_gru_node(direction, lbr, with_lens, with_h0):
    onnx = pytest.importorskip("onnx", reason="onnx is an optional extra")
    ort = pytest.importorskip("onnxruntime", reason="ONNX Runtime is a test reference only")
    rng = np.random.default_rng(lbr * 8 + with_lens * 2 + with_h0)
    T, B, I, H = 6, 4, 3, 5
    variant = "reset_after" if lbr else "darknet"
    D = 2 if direction == "bidirectional" else 1
    # ONNX Runtime's GRU runs float only
    if D == 2:
        model = StackedGRU(I, H, bidirectional=True, variant=variant, seed=1)
        dirs = model.layers[0]
    else:
        model = GRU(I, H, variant=variant, seed=1,
                    reverse=direction == "reverse")
        dirs = [model]
    for layer in dirs:
        for k, v in layer.params.items():
            if k.endswith(".biases"):
                layer.params[k] = rng.uniform(-0.5, 0.5, v.shape)
    blocks = [_onnx_blocks(layer) for layer in dirs]
    W, R, Bias = (np.stack([b[i] for b in blocks]).astype(np.float32) for i in range(3))
    x = rng.normal(size=(T, B, I)).astype(np.float32)
    L = np.array([6, 2, 1, 4], np.int32) if with_lens else None
    h0 = rng.normal(size=(D, B, H)).astype(np.float32) if with_h0 else None
    onx = _onnx_gru_model(onnx, W, R, Bias, direction, lbr, T, B, I, H, with_lens, with_h0)
    sess = ort.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {"X": x}
    if with_lens:
        feeds["sequence_lens"] = L
    if with_h0:
        feeds["initial_h"] = h0
    Y, Y_h = sess.run(None, feeds)
    hh = None if h0 is None else (h0 if D == 2 else h0[0])
    y = model.forward(x, h0=hh if hh is not None else np.zeros((D, B, H) if D == 2 else (B, H),
                                                                np.float32), lengths=L)
    ours_Y = y.reshape(T, B, D, H).transpose(0, 2, 1, 3)
    ours_h = model.state if D == 2 else model.state[None]
    assert_allclose(ours_Y, Y, **tol(np.float32, "ort"))
    assert_allclose(ours_h, Y_h, **tol(np.float32, "ort"))


# --------------------------------------------------------- internals ---

def test_packing_rows_and_merging():
    L = np.array([3, 1, 5, 5, 2])
    exact = sequences.Packing(L, 6, False)
    assert exact.rows == L.sum()
    assert [n for _, n, _ in exact.segments] == [5, 4, 3, 2]
    assert list(exact.counts) == [5, 4, 3, 2, 2]
    merged = sequences.Packing(L, 6, True, costs=(1.0, 0.0, 0.0))   # calls dominate
    assert merged.segments == [(5, 5, 0)]
    assert merged.rows == 25 and np.count_nonzero(merged.gather >= 0) == L.sum()
    for pk in (exact, merged):
        rev = pk.reverse
        for b, n in enumerate(L):
            t_last = 0 if rev else n - 1
            assert pk.gather[pk.last[b]] == t_last * 5 + b


# --------------------------------------------------------------- Network ---

def _net(seed=0, dtype=np.float64):
    from gru_cy.nn import Connected, Network, Softmax
    layers = [StackedGRU(3, 4, num_layers=2, bidirectional=True, variant="reset_after",
                         dtype=dtype, seed=seed),
              Connected(8, 5, activation="linear", dtype=dtype, seed=seed + 1),
              Softmax(5)]
    return Network(layers, 3, batch=3, time_steps=4)


def test_network_with_stacked_gru_and_lengths():
    # The loss counts valid rows only; its gradient w.r.t. x (finite
    # differences) is zero in the padding; the update's batch is sum(lengths).
    rng = np.random.default_rng(0)
    T, B = 4, 3
    net = _net()
    L = np.array([4, 1, 3])
    x = rng.normal(size=(T, B, 3))
    targets = rng.integers(0, 5, (T, B))
    targets_pad = targets.copy()
    targets_pad[1:, 1] = (targets[1:, 1] + 1) % 5           # padding targets: ignored

    def loss_of(xv, tg=targets):
        net.reset_state()
        y = net.forward(xv, train=True, lengths=L)
        return net.loss(y, tg)

    base, d = loss_of(x)
    assert loss_of(x, targets_pad)[0] == base
    net.reset_state()
    y = net.forward(x, train=True, lengths=L)
    loss, d = net.loss(y, targets)
    dx = net.backward(d, start=1)
    assert net._rows == L.sum()
    eps = 1e-6
    for (t, b, i) in [(0, 0, 0), (2, 2, 1), (0, 1, 2), (3, 0, 1), (3, 2, 0), (2, 1, 0)]:
        xp_, xm = x.copy(), x.copy()
        xp_[t, b, i] += eps
        xm[t, b, i] -= eps
        fp = loss_of(xp_)[0]
        fm = loss_of(xm)[0]
        assert abs((fp - fm) / (2 * eps) - dx[t, b, i]) < 1e-7, (t, b, i)
        if t >= L[b]:
            assert dx[t, b, i] == 0
    net.update()


def test_network_lengths_refuses_connected_bn_and_darknet_save(tmp_path):
    from gru_cy import darknet
    from gru_cy.nn import Connected, Network
    net = Network([GRU(3, 4, seed=0), Connected(4, 2, batch_normalize=True, seed=1)], 3)
    with pytest.raises(ValueError, match="batch normalisation"):
        net.forward(np.zeros((2, 3, 3), np.float32), train=True, lengths=[2, 1, 2])
    with pytest.raises(ValueError, match="StackedGRU"):
        darknet.save_cfg(_net(), str(tmp_path / "m.cfg"))
    rev = Network([GRU(3, 4, seed=0, reverse=True)], 3)
    with pytest.raises(ValueError, match="reverse"):
        darknet.save_weights(rev, str(tmp_path / "m.weights"))


def test_training_cache_does_not_alias_the_callers_x():
    # The paired bidirectional path reads a full-length forward direction
    # without gathering: the training cache must still own its x.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 3, 4)).astype(np.float32)
    m = StackedGRU(4, 3, bidirectional=True, seed=0, num_threads=2)
    ref = StackedGRU(4, 3, bidirectional=True, seed=0, num_threads=2)
    h0 = np.zeros((2, 3, 3), np.float32)
    y = m.forward(x, train=True, h0=h0)
    ref.forward(x.copy(), train=True, h0=h0)
    x[...] = 7                                   # the caller reuses its buffer
    assert_array_equal(m.backward(np.ones_like(y)), ref.backward(np.ones_like(y)))
    for k in m.grads:
        assert_array_equal(m.grads[k], ref.grads[k])


@pytest.mark.parametrize("reverse", (False, True), ids=("forward", "reverse"))
@pytest.mark.parametrize("variant", VARIANTS)
def test_batch_mode_inference_stops_chunks_with_their_sequences(variant, reverse):
    # Inference the engine runs in its batch mode goes as one call whose
    # chunks of rows stop after their longest sequence (Engine.forward_limited):
    # the same as each sequence alone, zeros in the padding.
    rng = np.random.default_rng(1)
    T, B, I, H = 12, 40, 32, 64
    g = GRU(I, H, variant=variant, seed=2, num_threads=2, reverse=reverse)
    if not g._engine.plans_batch(T, B, 2):
        pytest.skip("this build's batch mode does not take (T, B) = (12, 40) on 2 threads")
    one = GRU(I, H, variant=variant, seed=2, num_threads=1)
    _copy_params(one, g)
    x = rng.normal(size=(T, B, I)).astype(np.float32)
    L = _lengths(rng, B, T)
    h0 = rng.normal(size=(B, H)).astype(np.float32)
    y = g.forward(x, h0=h0, lengths=L)
    assert g._packing.limited
    for b in range(B):
        n = L[b]
        sl = slice(n - 1, None, -1) if reverse else slice(0, n)
        yb = one.forward(np.ascontiguousarray(x[sl, b:b + 1]), h0=h0[b:b + 1])
        assert_allclose(y[sl, b:b + 1], yb, **tol(np.float32, "engine"))
        assert_allclose(g.state[b], one.state[0], **tol(np.float32, "engine"))
        assert not y[n:, b].any()


def _two_threads():
    # The fused forward's teams need OpenMP and two processors.
    if not (team.have_openmp() and team.num_procs() >= 2):
        pytest.skip("needs OpenMP and two processors")


def _limited_matches_full_length(g, full, x, h0, L):
    """g's limited forward over the padded batch: each sequence's outputs and
    final state are the bits of ``full`` (same weights) at full length, zeros
    after; returns g's y."""
    y = g.forward(x, h0=h0, lengths=L)
    assert g._packing.limited
    yf = full.forward(x, h0=h0)
    for b in range(x.shape[1]):
        assert_array_equal(y[:L[b], b], yf[:L[b], b])
        assert_array_equal(g.state[b], yf[L[b] - 1, b])
        assert not y[L[b]:, b].any()
    return y


@pytest.mark.parametrize("B", (32, 40, 64))
@pytest.mark.parametrize("variant", VARIANTS)
def test_batch_mode_inference_runs_only_running_rows_same_bits(variant, B):
    # The chunk-limited forward runs, at each step, only a chunk's rows still
    # running (at least 4): each sequence's outputs and final state are the
    # bits of the same batch run at full length (every product on the blocked
    # gemm path, whose arithmetic per element does not depend on the rows).
    rng = np.random.default_rng(B)
    T, I, H = 20, 24, 64
    g = GRU(I, H, variant=variant, seed=3, num_threads=2)
    if not g._engine.plans_batch(T, B, 2):
        pytest.skip(f"this build's batch mode does not take (T, B) = ({T}, {B}) on 2 threads")
    full = GRU(I, H, variant=variant, seed=3, num_threads=2)
    x = rng.normal(size=(T, B, I)).astype(np.float32)
    h0 = rng.normal(size=(B, H)).astype(np.float32)
    # mostly short sequences, a few long: chunks shrink to their first rows
    L = np.where(rng.random(B) < 0.7, rng.integers(1, 4, B), rng.integers(4, T + 1, B))
    L[rng.integers(B)] = T
    y = _limited_matches_full_length(g, full, x, h0, L)


@pytest.mark.parametrize("stacked", (False, True), ids=("gru", "stacked"))
def test_torch_state_dict_tensors_load_as_written(stacked):
    torch = pytest.importorskip("torch", reason="torch is a test reference only")
    if stacked:
        m = torch.nn.GRU(3, 4, num_layers=2, bidirectional=True)
        g = StackedGRU(3, 4, num_layers=2, bidirectional=True, variant="reset_after", seed=1)
    else:
        m = torch.nn.GRU(3, 4)
        g = GRU(3, 4, variant="reset_after", seed=1)
    m.load_state_dict(g.torch_state_dict(tensors=True))     # as written in the issue
    for k, v in g.torch_state_dict().items():
        assert_array_equal(m.state_dict()[k].numpy(), v)


def test_editing_lengths_in_place_between_calls():
    # (review finding) the layer keeps its packing while lengths repeat: it
    # must compare against a copy, not the caller's array
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 3, 3)).astype(np.float32)
    L = np.array([5, 2, 3], np.int64)
    for make in (lambda: GRU(3, 4, seed=0),
                 lambda: StackedGRU(3, 4, num_layers=2, bidirectional=True, seed=0)):
        g, fresh = make(), make()
        g.forward(x, lengths=L)
        g.reset_state()
        L[:] = [2, 5, 5]
        assert_array_equal(g.forward(x, lengths=L), fresh.forward(x, lengths=L))
        L[:] = [5, 2, 3]


@pytest.mark.parametrize("variant", VARIANTS)
def test_equal_lengths_inference_runs_the_shortened_batch(variant):
    # Inference whose sequences all have one length L (a single sequence, say)
    # runs the plain forward over x[:L]: zeros after L, the state after step
    # L - 1, h0 and the carried state as with any lengths; the same as the
    # packed batch (checked where one longer sequence makes the lengths differ).
    rng = np.random.default_rng(3)
    T, I, H = 9, 5, 7
    for B in (1, 4):
        g = GRU(I, H, variant=variant, seed=4, num_threads=2)
        x = rng.normal(size=(T, B, I)).astype(np.float32)
        h0 = rng.normal(size=(B, H)).astype(np.float32)
        for L in (1, 5, T):
            y = g.forward(x, h0=h0, lengths=np.full(B, L))
            assert g._packing is None             # no packed batch was built
            ref = GRU(I, H, variant=variant, seed=4, num_threads=2)
            assert_array_equal(y[:L], ref.forward(x[:L], h0=h0))
            assert not y[L:].any()
            assert_array_equal(g.state, y[L - 1])
            # the carried state: a second call starts where the first ended
            y2 = g.forward(x, lengths=[L] * B)
            assert_array_equal(y2[:L], ref.forward(x[:L]))
            g.reset_state()
            # one sequence longer: the packed batch, the same rows
            xx = np.concatenate([x, rng.normal(size=(T, 1, I)).astype(np.float32)], axis=1)
            hh = np.concatenate([h0, np.zeros((1, H), np.float32)])
            yp = GRU(I, H, variant=variant, seed=4, num_threads=2).forward(
                xx, h0=hh, lengths=[L] * B + [T])
            assert_allclose(y, yp[:, :B], **tol(np.float32, "engine"))
    with pytest.raises(ValueError, match="lengths"):
        g.forward(x, lengths=np.full(B, T + 1))


@pytest.mark.parametrize("B", (5, 8, 12))
@pytest.mark.parametrize("variant", VARIANTS)
def test_unit_slices_inference_runs_only_running_rows_same_bits(variant, B):
    # Inference in the fused forward's unit slices (weights too large for the
    # batch mode, or fewer rows) goes as one call over the sorted rows; each
    # step runs the rows still running (at least 4) and the call stops after
    # the longest: each sequence's outputs and final state are the bits of
    # the same batch at full length.
    rng = np.random.default_rng(B + 1)
    T, I, H = 15, 24, 96
    g = GRU(I, H, variant=variant, seed=3, num_threads=2)
    if not g._engine.plans_limited(T, B, 2):
        pytest.skip(f"({T}, {B}) does not run limited here (2 threads needed, B > 3)")
    assert not g._engine.plans_batch(T, B, 2)
    full = GRU(I, H, variant=variant, seed=3, num_threads=2)
    x = rng.normal(size=(T, B, I)).astype(np.float32)
    h0 = rng.normal(size=(B, H)).astype(np.float32)
    L = rng.integers(1, T, B)
    L[0] = 1
    _limited_matches_full_length(g, full, x, h0, L)


@pytest.mark.parametrize("reverse", (False, True), ids=("forward", "reverse"))
@pytest.mark.parametrize("variant", VARIANTS)
def test_unit_slices_read_the_callers_x_and_write_its_y(variant, reverse):
    # Where the batch mode would run the full batch but H >= 128, a padded
    # batch's limited call runs in unit slices (Engine.limited_mode 2): it reads
    # the caller's padded x through the packing's rows and writes the caller's
    # y itself (no gathered x, no scattered y).  The bits of one thread's
    # segments; whatever the padding of x holds (NaN here) stays out.
    rng = np.random.default_rng(21)
    T, B, I, H = 14, 24, 16, 128
    g = GRU(I, H, variant=variant, seed=5, num_threads=2, reverse=reverse)
    _two_threads()
    assert g._engine.limited_mode(T, B, 2) == 2
    assert g._engine.plans_batch(T, B, 2)      # (the full batch: batch mode)
    one = GRU(I, H, variant=variant, seed=5, num_threads=1, reverse=reverse)
    x = rng.normal(size=(T, B, I)).astype(np.float32)
    h0 = rng.normal(size=(B, H)).astype(np.float32)
    for L in (rng.integers(1, T + 1, B), rng.integers(1, T // 2, B)):
        L[0] = 1                                # (the second: no step reaches T)
        xn = x.copy()
        for b in range(B):
            xn[L[b]:, b] = np.nan
        y = g.forward(xn, h0=h0, lengths=L)
        assert g._packing.limited
        assert_array_equal(y, one.forward(x, h0=h0, lengths=L))
        assert_array_equal(g.state, one.state)
        assert np.isfinite(y).all()


@pytest.mark.parametrize("dtype", (np.float32, np.float64))
@pytest.mark.parametrize("reverse", (False, True), ids=("forward", "reverse"))
@pytest.mark.parametrize("variant", VARIANTS)
def test_limited_training_same_bits_on_any_team(variant, reverse, dtype):
    # Training on a padded batch (no BN) is one limited forward call and one
    # limited backward (Engine.limited_train): each step its running rows, the
    # weight gradients over those rows only, x and dy read and dx written in
    # the caller's padded layout.  The same bits on one thread and on two;
    # equal to the segments' (the way before) within float rounding; NaN in
    # the padding of x and dy stays out; dx is zero there.
    rng = np.random.default_rng(31)
    I, H = 12, 128
    assert not GRU(I, 64)._engine.limited_train(13, 9)   # fewer units: segments
    # (40, 33): 1320 rows, chunks of 15 steps (the backward's chunk bounds)
    for T, B in ((13, 4), (13, 9), (40, 33)):
        x = rng.normal(size=(T, B, I)).astype(dtype)
        dy = rng.normal(size=(T, B, H)).astype(dtype)
        h0 = rng.normal(size=(B, H)).astype(dtype)
        ds = rng.normal(size=(B, H)).astype(dtype)
        L = rng.integers(1, T, B)
        L[:2] = [T - 1, 1]
        xn, dyn = x.copy(), dy.copy()
        for b in range(B):
            xn[L[b]:, b] = np.nan
            dyn[L[b]:, b] = np.nan
        dyn.setflags(write=False)              # (only read)
        outs = []
        for nt, limited in ((1, True), (2, True), (2, False)):
            g = GRU(I, H, variant=variant, seed=4, num_threads=nt, reverse=reverse, dtype=dtype)
            if not limited:        # the segments, as before limited training
                g._runs_limited = lambda train, *a, g=g, f=g._runs_limited: (
                    False if train else f(train, *a))
            y = g.forward(xn if limited else x, train=True, h0=h0, lengths=L)
            assert g._packing.limited == limited
            st = g.state.copy()
            dx = g.backward(dyn if limited else dy, ds)
            outs.append([y, st, dx, g.dh0] + [g.grads[k].copy() for k in sorted(g.grads)])
        for a, b in zip(outs[0], outs[1]):
            assert_array_equal(a, b, err_msg=f"B {B}")
        for a, b in zip(outs[1], outs[2]):
            assert_allclose(a, b, **tol(dtype, "engine"), err_msg=f"B {B}")
        dx = outs[1][2]
        for b in range(B):
            assert not dx[L[b]:, b].any()
        assert all(np.isfinite(a).all() for a in outs[1])


@pytest.mark.parametrize("variant", VARIANTS)
def test_bidirectional_limited_training_pair_same_bits(variant):
    # A bidirectional stack's training on a padded batch (H >= 128, no BN):
    # each direction one limited forward and one limited backward, the two
    # side by side on one thread each (engine.forward_limited_pair /
    # backward_limited_pair), or in turn on one thread: the same bits; equal
    # to the directions' segments within rounding.  Dropout and batch_first.
    rng = np.random.default_rng(41)
    T, B, I, H = 11, 7, 10, 128
    x = rng.normal(size=(B, T, I))
    dy = rng.normal(size=(B, T, 2 * H))
    ds = rng.normal(size=(4, B, H))
    L = rng.integers(1, T + 1, B)
    L[:2] = [T, 1]
    outs = []
    for nt, limited in ((2, True), (1, True), (2, False)):
        m = StackedGRU(I, H, num_layers=2, bidirectional=True, batch_first=True,
                       dropout=0.3, variant=variant, seed=9, num_threads=nt, dtype=np.float64)
        if not limited:
            for layer in m._sublayers():
                layer._runs_limited = lambda train, *a, f=layer._runs_limited: (
                    False if train else f(train, *a))
        y = m.forward(x, train=True, lengths=L)
        assert all(layer._packing.limited == limited for layer in m._sublayers())
        dx = m.backward(dy, ds)
        outs.append([y, m.state.copy(), dx, m.dh0] + [m.grads[k].copy() for k in sorted(m.grads)])
    for a, b in zip(outs[0], outs[1]):
        assert_array_equal(a, b)
    for a, b in zip(outs[0], outs[2]):
        assert_allclose(a, b, **tol(np.float64, "engine"))


def test_backward_limited_checks_its_arrays():
    # Engine.backward_limited (internal) refuses arrays it could overrun, and
    # a cache that is not a limited forward's.
    T, B, I, H = 6, 8, 4, 128
    g = GRU(I, H, seed=1)
    L = np.array([6, 5, 5, 3, 2, 2, 1, 1])
    x = np.ones((T, B, I), np.float32)
    g.forward(x, train=True, lengths=L)
    eng = g._engine
    eng.put_cache(g._seq[1][0])
    good = (np.zeros((T, B, H), np.float32), np.zeros((B, H), np.float32),
            np.zeros((T, B, I), np.float32))
    for k, bad in ((0, np.zeros((T, B, H - 1), np.float32)), (0, np.zeros((T, B, H))),
                   (1, np.zeros((B - 1, H), np.float32)), (2, np.zeros((T - 1, B, I), np.float32)),
                   (2, np.zeros((T, B, I), np.float32)[:, ::-1])):
        args = list(good)
        args[k] = bad
        with pytest.raises(ValueError, match=("dy", "dh", "dx")[k]):
            eng.backward_limited(*args, 1)
    with pytest.raises(ValueError, match="backward_limited"):
        eng.backward(good[0], None, good[2], good[1], 1)   # the plain backward
    eng.take_cache()
    with pytest.raises(ValueError, match="limited training forward"):
        eng.backward_limited(*good, 1)


def test_forward_limited_checks_its_rows():
    # Engine.forward_limited's unit-slice arguments (internal, from
    # gru_cy.sequences) are checked before anything runs; every position of
    # the caller's y up to the longest sequence is written (NaN in before).
    T, B, I, H = 6, 8, 4, 128
    g = GRU(I, H, seed=1, num_threads=2)
    eng = g._engine
    _two_threads()
    assert eng.limited_mode(T, B, 2) == 2
    L = np.array([6, 5, 5, 3, 2, 2, 1, 1], np.int64)         # sorted
    pk = sequences.Packing(L, T, False, limited=True)
    rows = pk.gather
    order = pk.order.astype(np.int64)
    x = np.ones((T, B, I), np.float32)
    h0 = np.zeros((B, H), np.float32)
    ys = np.empty((T, B, H), np.float32)
    yout = np.full((T, B, H), np.nan, np.float32)
    lim = L[pk.order]
    assert eng.forward_limited(x, h0, ys, lim, 2, rows, yout, order)
    assert np.isfinite(yout).all()
    for b in range(B):
        assert yout[:L[b], b].all() and not yout[L[b]:, b].any()
    bad = rows.copy()
    bad[3] = T * B
    ended = rows.copy()
    ended[0] = -1                             # sorted row 0 runs at step 0
    with pytest.raises(ValueError, match="limits"):
        eng.forward_limited(x, h0, ys, lim[::-1].copy(), 2, rows, yout, order)
    for args, name in (((bad, yout, order), "rows"), ((rows[:-1], yout, order), "rows"),
                       ((ended, yout, order), "rows"),
                       ((rows.astype(np.int32), yout, order), "rows"),
                       ((rows, yout, order[:-1]), "order"),
                       ((rows, yout, order + 1), "order"),
                       ((rows, yout[:, :, 1:], order), "yout"),
                       ((rows, yout.astype(np.float64), order), "yout")):
        with pytest.raises(ValueError, match=name):
            eng.forward_limited(x, h0, ys, lim, 2, *args)


@pytest.mark.parametrize("reverse", (False, True), ids=("forward", "reverse"))
@pytest.mark.parametrize("variant", VARIANTS)
def test_padded_inference_bit_identical_across_thread_counts(variant, reverse):
    # Two threads run a padded batch as one limited call (unit slices or the
    # batch mode), one thread as segments: every call of at least 4 rows (or
    # B), so that every product takes the blocked gemm path and the bits agree.
    # Sizes whose segments the cost model does not merge into one call.
    rng = np.random.default_rng(11)
    T, I, H = 40, 64, 256
    for B in (2, 3, 4, 5, 7, 33):
        x = rng.normal(size=(T, B, I)).astype(np.float32)
        h0 = rng.normal(size=(B, H)).astype(np.float32)
        L = rng.integers(1, T + 1, B)
        L[:2] = [T, 1]
        out = []
        for nt in (1, 2):
            g = GRU(I, H, variant=variant, seed=6, num_threads=nt, reverse=reverse)
            out.append((g.forward(x, h0=h0, lengths=L), g.state, g._packing))
        assert_array_equal(out[0][0], out[1][0], err_msg=f"B {B}")
        assert_array_equal(out[0][1], out[1][1], err_msg=f"B {B}")
        segs = out[0][2].segments
        assert min(n for _, n, _ in segs) >= min(B, 4), segs
        assert B < 5 or len(segs) > 1, segs


def test_padded_calls_run_at_least_four_rows():
    # Inference's packings (min_rows 4) run no call of fewer than min(B, 4)
    # rows where padded rows are allowed; training's (min_rows 1) and those
    # without padding (costs None) follow the running counts exactly.
    L = np.array([9, 7, 5, 3, 2, 1, 1])
    rows_only = (0.0, 0.0, 1.0)          # a cost per row-step only: no merging
    assert min(n for _, n, _ in sequences.Packing(L, 9, False, rows_only).segments) == 1
    pk = sequences.Packing(L, 9, False, rows_only, min_rows=sequences.MIN_CALL_ROWS)
    ns = [n for _, n, _ in pk.segments]      # (steps, rows, first row) each
    assert min(ns) == 4 and ns == sorted(ns, reverse=True) and len(ns) > 1
    assert sum(steps for steps, _, _ in pk.segments) == 9
    exact = sequences.Packing(L, 9, False, None)
    assert min(n for _, n, _ in exact.segments) == 1
    assert sequences.MIN_CALL_ROWS == 4


def test_limited_forward_never_runs_past_T():
    # (review finding) Engine.forward_limited with a limit above T (a caller's
    # mistake; the layer passes max(lengths) <= T): the unit slices stop at T.
    T, B, I, H, extra = 4, 6, 24, 96, 10
    g = GRU(I, H, seed=3, num_threads=2)
    bigx = np.random.default_rng(0).normal(size=(T + extra, B, I)).astype(np.float32)
    bigy = np.zeros((T + extra, B, H), np.float32)
    lim = np.array([T + extra] + [1] * (B - 1), np.int64)
    g._engine.hold(True)
    try:
        g._engine.forward_limited(bigx[:T], np.zeros((B, H), np.float32), bigy[:T], lim, 2)
    finally:
        g._engine.hold(False)
    assert not bigy[T:].any()


def test_equal_lengths_check_all_of_x_for_bn():
    # (review finding) equal lengths run as a shorter batch, but BN's input
    # range is checked over all of x, as for unequal lengths
    g = GRU(3, 4, batch_normalize=True, seed=0)
    x = np.ones((6, 3, 3), np.float32)
    x[3:] = 1e38
    for L in ([3, 3, 3], [3, 3, 2]):
        with pytest.raises(ValueError, match="overflow"):
            g.forward(x, lengths=L)


@pytest.mark.parametrize("variant", VARIANTS)
def test_bidirectional_limited_in_turn_same_bits(variant):
    # Inference of a bidirectional stack on a padded batch that one direction
    # on both threads runs limited: the directions in turn, each on the team,
    # rather than side by side on one thread each: the bits of the one-thread
    # stack (segments), whose products also all take the blocked gemm path.
    rng = np.random.default_rng(8)
    T, B, I, H = 12, 8, 24, 96
    two = StackedGRU(I, H, num_layers=2, bidirectional=True, variant=variant, seed=5,
                     num_threads=2)
    if not two.layers[0][0]._engine.plans_limited(T, B, 2):
        pytest.skip(f"({T}, {B}) does not run limited here (2 threads needed)")
    one = StackedGRU(I, H, num_layers=2, bidirectional=True, variant=variant, seed=5,
                     num_threads=1)
    x = rng.normal(size=(T, B, I)).astype(np.float32)
    L = rng.integers(1, T + 1, B)
    L[0] = T
    y = two.forward(x, lengths=L)
    assert two.layers[0][1]._packing.limited         # the reverse direction too
    assert_array_equal(y, one.forward(x, lengths=L))
    assert_array_equal(two.state, one.state)
    # training keeps the pair of one-thread segment runs (faster there than
    # the directions in turn), the same bits as the one-thread stack's
    dy = rng.normal(size=(T, B, 2 * H)).astype(np.float32)
    outs = []
    for m in (two, one):
        y = m.forward(x, train=True, lengths=L)
        assert not any(layer._packing.limited for layer in m._sublayers())
        outs.append([y, m.backward(dy), m.dh0] + [m.grads[k].copy() for k in sorted(m.grads)])
    for a, b in zip(*outs):
        assert_array_equal(a, b)
