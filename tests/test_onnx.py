"""ONNX export and import (issue 14, items 1, 2 and the export command).

Exported models are run by ONNX Runtime (and OpenVINO when installed): both
are test references only; their tests skip, saying why, where they are absent.
"""
import io
import os
import subprocess
import sys

import numpy as np
import pytest
from numpy.testing import assert_allclose

import gru_cy
from gru_cy import GRU, StackedGRU
from gru_cy.nn import Connected, Network, Softmax
from gru_cy.kernels import ACTIVATIONS
from tolerances import tol

onnx = pytest.importorskip("onnx", reason="onnx is an optional extra (pip install onnx)")
import gru_cy.onnx as gonnx  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _ort():
    return pytest.importorskip("onnxruntime", reason="ONNX Runtime is a test reference only")


def model_bf(model):
    return getattr(model, "batch_first", False)


def _randomize(model, rng):
    """Non-trivial biases and BN statistics (fresh layers have zeros and ones)."""
    for key in list(model.params):
        v = np.asarray(model.params[key])
        if key.endswith((".biases", "biases")):
            model.params[key] = rng.uniform(-0.5, 0.5, v.shape)
        elif key.endswith("scales"):
            model.params[key] = rng.uniform(0.5, 1.5, v.shape)
        elif key.endswith("rolling_mean"):
            model.params[key] = rng.uniform(-0.3, 0.3, v.shape)
        elif key.endswith("rolling_variance"):
            model.params[key] = rng.uniform(0.2, 2.0, v.shape)


def _net_randomize(net, rng):
    for layer in net.layers:
        if hasattr(layer, "params"):
            _randomize(layer, rng)


def _lengths(rng, T, B):
    L = rng.integers(1, T + 1, size=B).astype(np.int32)
    L[rng.integers(B)] = T
    L[rng.integers(B)] = 1
    return L


def _run_ort(proto, feeds):
    ort = _ort()
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, feeds)))


def _ours(model, x, lengths, h0):
    """(y, final states as ONNX writes them: (L*D, B, H))."""
    model.reset_state()                # ONNX starts from zeros without initial_h
    if isinstance(model, GRU):
        y = model.forward(x, h0=None if h0 is None else h0[0], lengths=lengths)
        return y, model.state[None]
    y = model.forward(x, h0=h0, lengths=lengths)
    return y, model.state


MODELS = {
    "gru": lambda I, H, kw: GRU(I, H, **kw),
    "gru_reverse": lambda I, H, kw: GRU(I, H, reverse=True, **kw),
    "stack2": lambda I, H, kw: StackedGRU(I, H, num_layers=2, **kw),
    "bidir": lambda I, H, kw: StackedGRU(I, H, bidirectional=True, **kw),
    "bidir3_bf": lambda I, H, kw: StackedGRU(I, H, num_layers=3, bidirectional=True,
                                             batch_first=True, **kw),
}


@pytest.mark.parametrize("bn", (False, True), ids=("plain", "bn"))
@pytest.mark.parametrize("activation", ("tanh", "logistic"))
@pytest.mark.parametrize("variant", ("darknet", "reset_after"))
@pytest.mark.parametrize("kind", sorted(MODELS))
def test_export_matches_onnx_runtime(kind, variant, activation, bn):
    seed = sorted(MODELS).index(kind) * 8 + (variant == "darknet") * 4 \
        + (activation == "tanh") * 2 + bn
    rng = np.random.default_rng(seed)
    T, B, I, H = (int(v) for v in rng.integers(2, 9, size=4))
    B = max(B, 2)
    model = MODELS[kind](I, H, dict(variant=variant, activation=activation,
                                    batch_normalize=bn, seed=seed))
    _randomize(model, rng)
    bf = getattr(model, "batch_first", False)
    n_states = getattr(model, "num_layers", 1) * getattr(model, "directions", 1)
    for lens, with_h0 in ((False, False), (True, True), (True, False)):
        proto = gonnx._export.build(model, sequence_lens=lens, initial_h=with_h0)
        x = rng.normal(size=(B, T, I) if bf else (T, B, I)).astype(np.float32)
        feeds = {"x": x}
        L = _lengths(rng, T, B) if lens else None
        h0 = rng.normal(size=(n_states, B, H)).astype(np.float32) if with_h0 else None
        if lens:
            feeds["sequence_lens"] = L
        if with_h0:
            feeds["initial_h"] = h0
        got = _run_ort(proto, feeds)
        y, h_n = _ours(model, x, L, h0)
        assert_allclose(got["y"], y, **tol(np.float32, "onnx_export"))
        assert_allclose(got["h_n"], h_n, **tol(np.float32, "onnx_export"))
        if lens:                              # zeros past the lengths, as gru_cy
            t = np.arange(T)[:, None] >= L[None, :]
            pad = got["y"][t.T] if bf else got["y"][t]
            assert not np.any(pad)


def _network(seed, dtype=np.float32, bn=False):
    I, H = 4, 6
    layers = [StackedGRU(I, H, num_layers=2, bidirectional=True, variant="reset_after",
                         batch_normalize=bn, dtype=dtype, seed=seed),
              GRU(2 * H, 5, reverse=True, activation="logistic", dtype=dtype, seed=seed + 1),
              Connected(5, 8, activation="leaky", batch_normalize=bn, dtype=dtype,
                        seed=seed + 2),
              Connected(8, 6, activation="linear", dtype=dtype, seed=seed + 3),
              Softmax(6, groups=2, temperature=0.6)]
    return Network(layers, I, batch=3, time_steps=5)


@pytest.mark.parametrize("bn", (False, True), ids=("plain", "bn"))
def test_network_export_and_round_trip(bn, tmp_path):
    rng = np.random.default_rng(3 + bn)
    net = _network(10, bn=bn)
    _net_randomize(net, rng)
    T, B = 7, 5
    x = rng.normal(size=(T, B, 4)).astype(np.float32)
    L = _lengths(rng, T, B)
    path = tmp_path / "net.onnx"
    proto = gonnx.export(net, path, sequence_lens=True, initial_h=True)
    feeds = {"x": x, "sequence_lens": L}
    for v in proto.graph.input:
        if v.name.startswith("initial_h"):
            feeds[v.name] = np.zeros([d.dim_value or B for d in v.type.tensor_type.shape.dim],
                                     np.float32)
    assert sorted(feeds) == ["initial_h.0", "initial_h.1", "sequence_lens", "x"]
    net.reset_state()
    y = net.forward(x, lengths=L)
    got = _run_ort(proto, feeds)
    assert_allclose(got["y"], y, **tol(np.float32, "onnx_export"))
    assert_allclose(got["h_n.0"], net.layers[0].state, **tol(np.float32, "onnx_export"))
    assert_allclose(got["h_n.1"][0], net.layers[1].state, **tol(np.float32, "onnx_export"))
    back = gonnx.load(path)
    assert isinstance(back, Network)
    assert [type(layer).__name__ for layer in back.layers] == \
        ["StackedGRU", "GRU", "Connected", "Connected", "Softmax"]
    assert back.layers[1].reverse and back.layers[1].activation == "logistic"
    back.reset_state()
    net.reset_state()
    assert_allclose(back.forward(x, lengths=L), net.forward(x, lengths=L),
                    **tol(np.float32, "onnx_roundtrip"))


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_round_trip_exact(kind):
    rng = np.random.default_rng(len(kind))
    model = MODELS[kind](3, 5, dict(variant="reset_after", seed=2))
    _randomize(model, rng)
    back = gonnx.load(gonnx._export.build(model, sequence_lens=True, initial_h=True))
    assert type(back) is type(model)
    for a in ("inputs", "outputs", "num_layers", "bidirectional", "batch_first", "reverse",
              "variant", "activation"):
        assert getattr(back, a, None) == getattr(model, a, None), a
    for k, v in model.params.items():
        assert_allclose(back.params[k], v, rtol=0, atol=0)
    x = rng.normal(size=(4, 6, 3) if model_bf(model) else (6, 4, 3)).astype(np.float32)
    L = np.array([6, 1, 3, 5])
    assert_allclose(back.forward(x, lengths=L), model.forward(x, lengths=L),
                    **tol(np.float32, "onnx_roundtrip"))


def test_float64_model_exports_float32():
    rng = np.random.default_rng(5)
    model = StackedGRU(3, 4, num_layers=2, dtype=np.float64, seed=1)
    proto = gonnx._export.build(model)
    assert all(t.data_type == onnx.TensorProto.FLOAT for t in proto.graph.initializer
               if t.name.startswith(("W", "R", "B_")))
    x = rng.normal(size=(5, 3, 3))
    got = _run_ort(proto, {"x": x.astype(np.float32)})
    assert_allclose(got["y"], model.forward(x), **tol(np.float32, "onnx_export"))
    back = gonnx.load(proto, dtype=np.float64)
    assert back.dtype == np.float64


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_every_connected_activation(activation):
    rng = np.random.default_rng(ACTIVATIONS.index(activation))
    net = Network([GRU(3, 4, seed=1), Connected(4, 5, activation=activation, seed=2)], 3)
    _net_randomize(net, rng)
    x = (3 * rng.normal(size=(6, 3, 3))).astype(np.float32)
    # the layer's input spans every piece of the piecewise activations
    net.layers[1].params["weights"] = 4 * rng.normal(size=(5, 4))
    got = _run_ort(gonnx._export.build(net), {"x": x})
    assert_allclose(got["y"], net.forward(x), **tol(np.float32, "onnx_export"))
    if activation in ("logistic", "tanh", "relu", "leaky", "relie", "elu", "selu", "linear"):
        back = gonnx.load(gonnx._export.build(net))
        assert back.layers[1].activation == activation
        back.reset_state()
        net.reset_state()
        assert_allclose(back.forward(x), net.forward(x), **tol(np.float32, "onnx_roundtrip"))


def test_openvino_runs_exported_models():
    ov = pytest.importorskip("openvino", reason="OpenVINO is a test reference only")
    core = ov.Core()
    rng = np.random.default_rng(8)
    T, B = 7, 4
    L = _lengths(rng, T, B)
    models = [GRU(3, 5, seed=1), GRU(3, 5, reverse=True, batch_normalize=True, seed=2),
              StackedGRU(3, 5, num_layers=2, bidirectional=True, variant="reset_after",
                         seed=3),
              StackedGRU(3, 5, num_layers=2, activation="logistic", seed=4), _network(20)]
    for model in models:
        _randomize(model, rng) if hasattr(model, "params") else _net_randomize(model, rng)
        x = rng.normal(size=(T, B, 3 if not isinstance(model, Network) else 4))
        x = x.astype(np.float32)
        for lens in (False, True):
            # OpenVINO needs fixed sizes with sequence_lens (gru_cy.onnx's docs)
            proto = gonnx._export.build(model, sequence_lens=lens,
                                        static_shape=(T, B) if lens else None)
            compiled = core.compile_model(core.read_model(proto.SerializeToString(), b""),
                                          "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
            feeds = {"x": x, "sequence_lens": L} if lens else {"x": x}
            res = compiled(feeds)
            if hasattr(model, "reset_state"):
                model.reset_state()
            y = model.forward(x, lengths=L if lens else None)
            assert_allclose(res[compiled.output("y")], y, **tol(np.float32, "onnx_export"))


# ------------------------------------------------------------------ import ---

def _torch_export(module, x):
    torch = pytest.importorskip("torch", reason="PyTorch is a test reference only")
    f = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(module, (x,), f, dynamo=False, input_names=["x"],
                          dynamic_axes={"x": {0: "a", 1: "b"}})
    return onnx.load_from_string(f.getvalue())


@pytest.mark.parametrize("cfg", [dict(num_layers=1), dict(num_layers=2, bidirectional=True),
                                 dict(num_layers=3, batch_first=True, bias=False),
                                 dict(num_layers=2, bidirectional=True, batch_first=True)],
                         ids=("one", "bidir2", "bf3_nobias", "bidir2_bf"))
def test_import_torch_exported_gru(cfg):
    torch = pytest.importorskip("torch", reason="PyTorch is a test reference only")
    torch.manual_seed(sum(cfg.values()))
    m = torch.nn.GRU(3, 5, **cfg).eval()
    bf = cfg.get("batch_first", False)
    x = torch.randn((4, 7, 3) if bf else (7, 4, 3))
    model = gonnx.load(_torch_export(m, x))
    with torch.no_grad():
        y, h = m(x)
    assert_allclose(model.forward(x.numpy()), y.numpy(), **tol(np.float32, "torch"))
    state = model.state if model.state.ndim == 3 else model.state[None]
    assert_allclose(state, h.numpy(), **tol(np.float32, "torch"))


def test_import_torch_gru_with_linear_head():
    torch = pytest.importorskip("torch", reason="PyTorch is a test reference only")

    class Tagger(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.gru = torch.nn.GRU(3, 6)
            self.head = torch.nn.Linear(6, 4)

        def forward(self, x):
            return torch.sigmoid(self.head(self.gru(x)[0]))

    torch.manual_seed(0)
    m = Tagger().eval()
    x = torch.randn(5, 2, 3)
    model = gonnx.load(_torch_export(m, x))
    assert isinstance(model, Network)
    with torch.no_grad():
        assert_allclose(model.forward(x.numpy()), m(x).numpy(), **tol(np.float32, "torch"))


def _gru_graph(attrs=None, extra_nodes=(), h0=None, acts=None):
    from onnx import TensorProto, helper, numpy_helper
    H, I = 3, 2
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(1, 3 * H, I)).astype(np.float32), "W"),
             numpy_helper.from_array(rng.normal(size=(1, 3 * H, H)).astype(np.float32), "R")]
    ins = ["x", "W", "R"]
    if h0 is not None:
        inits.append(numpy_helper.from_array(h0.astype(np.float32), "h0"))
        ins += ["", "", "h0"]
    attrs = dict(hidden_size=H, **(attrs or {}))
    if acts:
        attrs["activations"] = acts
    nodes = [helper.make_node("GRU", ins, ["Y", "Y_h"], name="the_gru", **attrs),
             helper.make_node("Squeeze", ["Y", "ax"], ["y0"], name="sq")]
    inits.append(numpy_helper.from_array(np.array([1], np.int64), "ax"))
    out = "y0"
    for op, kw in extra_nodes:
        nodes.append(helper.make_node(op, [out], [out + "_"], name="bad_" + op.lower(), **kw))
        out += "_"
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", "B", I])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["T", "B", H])], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("graph, match", [
    (lambda: _gru_graph({"clip": 2.0}), r"the_gru.*'clip'"),
    (lambda: _gru_graph(acts=["Sigmoid", "Relu"]), r"the_gru.*activations"),
    (lambda: _gru_graph(acts=["HardSigmoid", "Tanh"]), r"the_gru.*Sigmoid gates"),
    (lambda: _gru_graph({"activation_alpha": [1.0]}), r"the_gru.*activation_alpha"),
    (lambda: _gru_graph(h0=np.ones((1, 1, 3))), r"the_gru.*initial_h.*non-zero"),
    (lambda: _gru_graph(extra_nodes=[("Abs", {})]), r"bad_abs.*Abs is not supported"),
    (lambda: _gru_graph(extra_nodes=[("Relu", {})]), r"bad_relu.*connected layer"),
    (lambda: _gru_graph(extra_nodes=[("Softmax", {"axis": 0})]), r"bad_softmax.*axis"),
])
def test_import_refuses_what_it_cannot_represent(graph, match):
    with pytest.raises(ValueError, match=match):
        gonnx.load(graph())


def test_import_zero_constant_initial_state_and_bad_files(tmp_path):
    model = gonnx.load(_gru_graph(h0=np.zeros((1, 1, 3))))
    assert isinstance(model, GRU)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model at all")
    with pytest.raises(ValueError, match="not an ONNX model"):
        gonnx.load(bad)
    with pytest.raises(ValueError, match="cannot read"):
        gonnx.load(tmp_path / "missing.onnx")


def test_export_argument_checks_and_atomic_write(tmp_path):
    model = GRU(3, 4, seed=0)
    with pytest.raises(TypeError, match="model: expected a gru_cy"):
        gonnx.export(object(), tmp_path / "a.onnx")
    with pytest.raises(ValueError, match=r"opset: expected an int in \[14"):
        gonnx.export(model, tmp_path / "a.onnx", opset=11)
    with pytest.raises(ValueError, match="static_shape"):
        gonnx.export(model, tmp_path / "a.onnx", static_shape=(0, 3))
    with pytest.raises(TypeError, match="sequence_lens: expected a bool"):
        gonnx.export(model, tmp_path / "a.onnx", sequence_lens="yes")
    with pytest.raises(ValueError, match="directory"):
        gonnx.export(model, tmp_path / "no" / "a.onnx")
    path = tmp_path / "m.onnx"
    path.write_bytes(b"old")
    with pytest.raises(ValueError):
        gonnx.export(model, path, opset=3)
    assert path.read_bytes() == b"old"          # a failed export leaves the old file
    gonnx.export(model, path, opset=14)
    assert onnx.load(str(path)).opset_import[0].version == 14


# --------------------------------------------------------------------- CLI ---

def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "gru_cy", *args], capture_output=True,
                          text=True, cwd=cwd or ROOT, timeout=300)


def test_cli_export_checkpoint_darknet_pair_and_text_model(tmp_path):
    _ort()
    text = tmp_path / "t.txt"
    text.write_text("a quick brown fox. " * 100)
    stem = tmp_path / "char"
    r = _cli("train", "--text", str(text), "--iterations", "30", "--hidden", "12",
             "--steps", "6", "--batch", "4", "--threads", "1", "--quiet",
             "--save", str(stem))
    assert r.returncode == 0, r.stderr
    net = gru_cy.load(str(stem) + ".ckpt")
    for src, extra in ((str(stem), []), (str(stem) + ".cfg", ["--sequence-lens"])):
        out = tmp_path / "m.onnx"
        r = _cli("export", src, "--onnx", str(out), *extra)
        assert r.returncode == 0, r.stderr
        assert "checked with ONNX Runtime" in r.stdout
        proto = onnx.load(str(out))
        # the trained text network: next-character distributions equal
        rng = np.random.default_rng(1)
        idx = rng.integers(0, 256, size=(9, 3))
        x = np.zeros((9, 3, 256), np.float32)
        np.put_along_axis(x, idx[..., None], 1.0, axis=2)
        feeds = {"x": x}
        if extra:
            feeds["sequence_lens"] = np.array([9, 4, 1], np.int32)
        net.reset_state()
        y = net.forward(x, lengths=feeds.get("sequence_lens"))
        assert_allclose(_run_ort(proto, feeds)["y"], y, **tol(np.float32, "onnx_export"))


@pytest.mark.parametrize("args, match", [
    (["/nonexistent/model", "--onnx", "{tmp}/a.onnx"], "PATH: no such file"),
    (["{ckpt}", "--onnx", "/nonexistent/dir/a.onnx"], "--onnx: the directory"),
    (["{ckpt}", "--onnx", "{tmp}/a.onnx", "--opset", "7"], "--opset: expected"),
    (["{ckpt}", "--onnx", "{tmp}/a.onnx", "--static-shape", "5"], "--static-shape"),
    (["{ckpt}", "--onnx", "{tmp}/a.onnx", "--weights", "{ckpt}"], "--weights: only"),
    (["{tmp}/junk.ckpt", "--onnx", "{tmp}/a.onnx"], "not a gru_cy checkpoint"),
])
def test_cli_export_errors(tmp_path, args, match):
    ckpt = tmp_path / "m.ckpt"
    StackedGRU(3, 4, seed=0).save(ckpt)
    (tmp_path / "junk.ckpt").write_text("junk")
    args = [a.format(tmp=tmp_path, ckpt=ckpt) for a in args]
    r = _cli("export", *args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert match in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "a.onnx").exists()


def test_dropout_layer_exports_as_identity():
    from gru_cy.nn import Dropout
    rng = np.random.default_rng(4)
    net = Network([GRU(3, 5, seed=1), Dropout(5, probability=0.4, seed=2),
                   Connected(5, 4, activation="tanh", seed=3)], 3)
    x = rng.normal(size=(6, 2, 3)).astype(np.float32)
    proto = gonnx._export.build(net)
    assert not any(n.op_type == "Dropout" for n in proto.graph.node)
    assert_allclose(_run_ort(proto, {"x": x})["y"], net.forward(x),
                    **tol(np.float32, "onnx_export"))
    back = gonnx.load(proto)
    assert [type(layer).__name__ for layer in back.layers] == ["GRU", "Connected"]


# ------------------------------------------- review findings: no silent misreads ---

def _graph(nodes, inputs, outputs, inits, opset=17):
    from onnx import TensorProto, helper, numpy_helper
    vi = [helper.make_tensor_value_info(n, TensorProto.FLOAT if n != "lens" else
                                        TensorProto.INT32, shape) for n, shape in inputs]
    vo = [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n, shape in outputs]
    init = [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()]
    g = helper.make_graph([helper.make_node(*n[:3], name=f"n{i}", **(n[3] if len(n) > 3
                                                                    else {}))
                           for i, n in enumerate(nodes)], "g", vi, vo, initializer=init)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _two_gru(h0_of_second, extra_nodes=(), extra_inits=None):
    rng = np.random.default_rng(0)
    H, I = 3, 2
    f = np.float32
    inits = {"W0": rng.normal(size=(1, 3 * H, I)).astype(f),
             "R0": rng.normal(size=(1, 3 * H, H)).astype(f),
             "W1": rng.normal(size=(1, 3 * H, H)).astype(f),
             "R1": rng.normal(size=(1, 3 * H, H)).astype(f),
             "ax": np.array([1], np.int64), **(extra_inits or {})}
    nodes = [("GRU", ["x", "W0", "R0"], ["Y0", "Yh0"], {"hidden_size": H}),
             ("Squeeze", ["Y0", "ax"], ["y0"]), *extra_nodes,
             ("GRU", ["y0", "W1", "R1", "", "", h0_of_second], ["Y1", "Yh1"],
              {"hidden_size": H}),
             ("Squeeze", ["Y1", "ax"], ["y"])]
    return _graph(nodes, [("x", ["T", "B", I]), ("h", [2, "B", H])],
                  [("y", ["T", "B", H])], inits)


@pytest.mark.parametrize("case", ["encoder_decoder", "scaled", "swapped"])
def test_import_refuses_initial_states_the_graph_computes(case):
    if case == "encoder_decoder":        # the second GRU starts from the first's Y_h
        model = _two_gru("Yh0")
    elif case == "scaled":               # Mul(h, 2): arithmetic on the state
        model = _two_gru("h2", [("Slice", ["h", "s1", "e1", "a0"], ["h1"]),
                                ("Mul", ["h1", "two"], ["h2"])],
                         {"two": np.float32(2), "s1": np.array([1]), "e1": np.array([2]),
                          "a0": np.array([0])})
    else:                                # layer 1 reads rows 0:1 (torch's order: 1:2)
        model = _two_gru("h1", [("Slice", ["h", "s0", "e0", "a0"], ["h1"])],
                         {"s0": np.array([0]), "e0": np.array([1]), "a0": np.array([0])})
    with pytest.raises(ValueError, match="initial_h"):
        gonnx.load(model)


def test_import_accepts_torch_order_state_slices():
    ort = _ort()
    model = _two_gru("h1", [("Slice", ["h", "s1", "e1", "a0"], ["h1"])],
                     {"s1": np.array([1]), "e1": np.array([2]), "a0": np.array([0])})
    # and layer 0 reads rows 0:1
    model.graph.node[0].input.extend(["", "", "h0"])
    model.graph.node.insert(0, onnx.helper.make_node("Slice", ["h", "s0", "e0", "a0"], ["h0"],
                                                     name="first"))
    for k, v in {"s0": [0], "e0": [1]}.items():
        model.graph.initializer.append(onnx.numpy_helper.from_array(np.array(v), k))
    m = gonnx.load(model)
    assert isinstance(m, StackedGRU) and m.num_layers == 2
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, 2, 2)).astype(np.float32)
    h = rng.normal(size=(2, 2, 3)).astype(np.float32)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert_allclose(m.forward(x, h0=h), sess.run(None, {"x": x, "h": h})[0],
                    **tol(np.float32, "onnx_export"))


def _head_graph(tail, inits, opset=17):
    """GRU -> Squeeze -> MatMul -> Add(bias of any shape) -> ``tail`` nodes."""
    rng = np.random.default_rng(2)
    H, I, O = 3, 2, 4
    f = np.float32
    base = {"W": rng.normal(size=(1, 3 * H, I)).astype(f),
            "R": rng.normal(size=(1, 3 * H, H)).astype(f), "ax": np.array([1], np.int64),
            "Wc": rng.normal(size=(H, O)).astype(f)}
    nodes = [("GRU", ["x", "W", "R"], ["Y", "Yh"], {"hidden_size": H}),
             ("Squeeze", ["Y", "ax"], ["s"]) if opset >= 13 else
             ("Squeeze", ["Y"], ["s"], {"axes": [1]}),
             ("MatMul", ["s", "Wc"], ["m"]), *tail]
    return _graph(nodes, [("x", ["T", "B", I])], [("y", ["T", "B", O])],
                  {**base, **inits}, opset=opset)


@pytest.mark.parametrize("tail, extra", [
    # the temperature kept through a Reshape to rows, and through grouping
    ([("Add", ["m", "b"], ["a"]), ("Div", ["a", "t"], ["d"]),
      ("Reshape", ["d", "g2"], ["r"]), ("Reshape", ["r", "back"], ["r2"]),
      ("Softmax", ["r2"], ["y"], {"axis": -1})],
     {"b": np.ones(4, np.float32), "t": np.float32(0.25),
      "g2": np.array([0, 0, 2, -1]), "back": np.array([0, 0, -1])}),
    # a bias of shape (1, 1, O)
    ([("Add", ["m", "b"], ["y"])], {"b": np.arange(4, dtype=np.float32).reshape(1, 1, 4)}),
], ids=("temperature_through_reshape", "bias_1_1_O"))
def test_import_heads_match_onnx_runtime(tail, extra):
    ort = _ort()
    model = _head_graph(tail, extra)
    m = gonnx.load(model)
    x = np.random.default_rng(3).normal(size=(5, 2, 2)).astype(np.float32)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert_allclose(m.forward(x), sess.run(None, {"x": x})[0], **tol(np.float32, "onnx_export"))


def test_import_softmax_before_opset_13_is_over_axis_1_by_default():
    model = _head_graph([("Softmax", ["m"], ["y"])], {}, opset=11)
    with pytest.raises(ValueError, match=r"axis.*opset 11 default"):
        gonnx.load(model)
    ok = _head_graph([("Softmax", ["m"], ["y"], {"axis": 2})], {}, opset=11)
    assert isinstance(gonnx.load(ok), Network)


def test_import_reads_external_data_beside_the_file(tmp_path, monkeypatch):
    from onnx.external_data_helper import convert_model_to_external_data
    models = []
    for k, name in enumerate(("a", "b")):
        m = StackedGRU(3, 4, num_layers=2, seed=k)
        proto = gonnx._export.build(m)
        convert_model_to_external_data(proto, all_tensors_to_one_file=True,
                                       location="w.data", size_threshold=0)
        folder = tmp_path / name
        folder.mkdir()
        onnx.save_model(proto, str(folder / "m.onnx"))
        models.append(m)
    monkeypatch.chdir(tmp_path / "b")          # another model's w.data here
    back = gonnx.load(tmp_path / "a" / "m.onnx")
    for key, v in models[0].params.items():
        assert_allclose(back.params[key], v, rtol=0, atol=0)
    with pytest.raises(ValueError, match="external file"):
        gonnx.load(onnx.load(str(tmp_path / "a" / "m.onnx"), load_external_data=False))


def test_cli_export_of_a_bfloat16_checkpoint_and_a_huge_static_shape(tmp_path, monkeypatch):
    _ort()
    from gru_cy._cpu import bf16
    if not bf16.supported():
        pytest.skip("bfloat16 inference needs AVX512_BF16")
    ckpt = tmp_path / "m.ckpt"
    StackedGRU(3, 4, num_layers=2, seed=0, inference_precision="bfloat16").save(ckpt)
    r = _cli("export", str(ckpt), "--onnx", str(tmp_path / "a.onnx"))
    assert r.returncode == 0, r.stderr           # checked with the float32 path
    assert "checked with ONNX Runtime" in r.stdout
    r = _cli("export", str(ckpt), "--onnx", str(tmp_path / "b.onnx"),
             "--static-shape", "99999999,99999")
    assert r.returncode == 0 and "not checked" in r.stdout, (r.stdout, r.stderr)
    # a bfloat16 checkpoint loads on a CPU without AVX512_BF16; its forward says why not
    monkeypatch.setattr(bf16, "supported", lambda: False)
    m = gru_cy.load(str(ckpt))
    assert m.inference_precision == "bfloat16"
    with pytest.raises(RuntimeError, match="AVX512_BF16"):
        m.forward(np.zeros((2, 1, 3), np.float32))
    m.inference_precision = "float32"
    assert m.forward(np.zeros((2, 1, 3), np.float32)).shape == (2, 1, 4)
