"""ONNX export of ``GRU``, ``StackedGRU`` and ``Network`` (see ``gru_cy.onnx``)."""
import os

import numpy as np

from gru_cy import _files

DEFAULT_OPSET = 17
"""Opset written when ``export`` is given none (GRU ``layout`` needs 14)."""
MIN_OPSET = 14

_SIGMOID_CANDIDATE = {"tanh": None, "logistic": "Sigmoid"}
_DARKNET_SELU = (1.6732, 1.0507)          # alpha, gamma of Darknet's selu


def require_onnx():
    """The ``onnx`` module, or an ImportError saying how to get it."""
    try:
        import onnx
    except ImportError as e:
        raise ImportError("gru_cy.onnx needs the onnx package: "
                          "pip install 'gru_cy[onnx]' (or pip install onnx)") from e
    return onnx


def _host(a):
    from gru_cy.backends.base import to_host
    return np.asarray(to_host(a), dtype=np.float64)


def folded_blocks(g):
    """ONNX's ``W (3H, I)``, ``R (3H, H)``, ``B (6H,)`` of one GRU direction,
    gates z, r, h, batch normalisation folded in (float64)."""
    p = {k: _host(v) for k, v in g.params.items()}
    mats, biases = {}, {}
    for side in "uw":
        for gate in "zrh":
            sub = side + gate
            w, b = p[sub + ".weights"], p[sub + ".biases"]
            if g.batch_normalize:
                k = p[sub + ".scales"] / (np.sqrt(p[sub + ".rolling_variance"]) + 1e-6)
                w = k[:, None] * w
                b = b - k * p[sub + ".rolling_mean"]
            mats[sub], biases[sub] = w, b
    W = np.concatenate([mats["u" + g_] for g_ in "zrh"])
    R = np.concatenate([mats["w" + g_] for g_ in "zrh"])
    B = np.concatenate([biases["u" + g_] for g_ in "zrh"] + [biases["w" + g_] for g_ in "zrh"])
    return W, R, B


class _Graph:
    """Nodes, initializers and unique names of the graph being written."""

    def __init__(self, onnx):
        self.onnx = onnx
        self.h = onnx.helper
        self.nodes, self.inits, self.inputs, self.outputs = [], [], [], []
        self._n = 0

    def name(self, stem):
        self._n += 1
        return f"{stem}_{self._n}"

    def const(self, stem, array, dtype=np.float32):
        name = self.name(stem)
        self.inits.append(self.onnx.numpy_helper.from_array(
            np.ascontiguousarray(array, dtype=dtype), name))
        return name

    def node(self, op, inputs, stem=None, n_out=1, **attrs):
        stem = stem or op.lower()
        outs = [self.name(stem) for _ in range(n_out)]
        self.nodes.append(self.h.make_node(op, list(inputs), outs, name=self.name(op),
                                           **attrs))
        return outs if n_out > 1 else outs[0]

    def value_info(self, name, elem, shape):
        return self.h.make_tensor_value_info(name, elem, shape)


def _activation(G, x, act):
    """Darknet's activation ``act`` applied to tensor ``x`` as ONNX nodes."""
    if act == "linear":
        return x
    simple = {"logistic": ("Sigmoid", {}), "tanh": ("Tanh", {}), "relu": ("Relu", {}),
              "leaky": ("LeakyRelu", {"alpha": 0.1}), "relie": ("LeakyRelu", {"alpha": 0.01}),
              "elu": ("Elu", {"alpha": 1.0}),
              "selu": ("Selu", {"alpha": _DARKNET_SELU[0], "gamma": _DARKNET_SELU[1]})}
    if act in simple:
        op, attrs = simple[act]
        return G.node(op, [x], **attrs)
    if act == "loggy":                      # 2 sigma(x) - 1 = tanh(x / 2)
        return G.node("Tanh", [G.node("Mul", [x, G.const("half", 0.5)])])
    if act == "ramp":                       # relu(x) + 0.1 x
        return G.node("Add", [G.node("Relu", [x]), G.node("Mul", [x, G.const("c", 0.1)])])
    if act == "hardtan":
        return G.node("Clip", [x, G.const("lo", -1.0), G.const("hi", 1.0)])
    # lhtan and plse: inner slope on [lo, hi] plus a shallow slope outside:
    # a * clip(x, lo, hi) + c + s * (x - clip(x, lo, hi))
    lo, hi, a, c, s = {"lhtan": (0.0, 1.0, 1.0, 0.0, 0.001),
                       "plse": (-4.0, 4.0, 0.125, 0.5, 0.01)}[act]
    clipped = G.node("Clip", [x, G.const("lo", lo), G.const("hi", hi)])
    inner = G.node("Add", [G.node("Mul", [clipped, G.const("a", a)]), G.const("c", c)])
    outer = G.node("Mul", [G.node("Sub", [x, clipped]), G.const("s", s)])
    return G.node("Add", [inner, outer])


def _gru_layer(G, x, dirs, lens, h0):
    """One layer (a list of one or two GRU directions) as one GRU node;
    returns (y (T, B, D*H), h_n (D, B, H))."""
    first = dirs[0]
    H = first.outputs
    blocks = [folded_blocks(g) for g in dirs]
    D = len(dirs)
    direction = ("bidirectional" if D == 2 else
                 "reverse" if first.reverse else "forward")
    W, R, B = (np.stack([b[i] for b in blocks]) for i in range(3))
    attrs = dict(hidden_size=H, direction=direction,
                 linear_before_reset=int(first.variant == "reset_after"))
    cand = _SIGMOID_CANDIDATE[first.activation]
    if cand:
        attrs["activations"] = ["Sigmoid", cand] * D
    ins = [x, G.const("W", W), G.const("R", R), G.const("B", B), lens or "", h0 or ""]
    while ins[-1] == "":
        ins.pop()
    Y, Y_h = G.node("GRU", ins, stem="gru", n_out=2, **attrs)
    if D == 1:
        return G.node("Squeeze", [Y, G.const("ax", [1], np.int64)]), Y_h
    y = G.node("Transpose", [Y], perm=[0, 2, 1, 3])
    y = G.node("Reshape", [y, G.const("shape", [0, 0, -1], np.int64)])
    return y, Y_h


def _recurrent(G, x, model, lens, h0):
    """A GRU or StackedGRU (time-major x); returns (y, h_n (L*D, B, H))."""
    from gru_cy.layer import GRU
    stack = [[model]] if isinstance(model, GRU) else model.layers
    D = len(stack[0])
    states = []
    for k, dirs in enumerate(stack):
        hk = None
        if h0:
            hk = G.node("Slice", [h0, G.const("s", [k * D], np.int64),
                                  G.const("e", [(k + 1) * D], np.int64),
                                  G.const("a", [0], np.int64)])
        x, hn = _gru_layer(G, x, dirs, lens, hk)
        states.append(hn)
    h_n = states[0] if len(states) == 1 else G.node("Concat", states, axis=0)
    return x, h_n


def _connected(G, x, layer):
    p = {k: _host(v) for k, v in layer.params.items()}
    w, b = p["weights"], p["biases"]
    if layer.batch_normalize:
        k = p["scales"] / (np.sqrt(p["rolling_variance"]) + 1e-6)
        w = k[:, None] * w
        b = b - k * p["rolling_mean"]
    y = G.node("MatMul", [x, G.const("weights", w.T)])
    y = G.node("Add", [y, G.const("biases", b)])
    return _activation(G, y, layer.activation)


def _softmax(G, x, layer):
    if layer.temperature != 1:
        x = G.node("Div", [x, G.const("temperature", layer.temperature)])
    if layer.groups == 1:
        return G.node("Softmax", [x], axis=-1)
    x = G.node("Reshape", [x, G.const("shape", [0, 0, layer.groups, -1], np.int64)])
    x = G.node("Softmax", [x], axis=-1)
    return G.node("Reshape", [x, G.const("shape", [0, 0, -1], np.int64)])


def build(model, opset=None, sequence_lens=False, initial_h=False, static_shape=None):
    """The ``onnx.ModelProto`` of ``model`` (see :func:`export`)."""
    onnx = require_onnx()
    from gru_cy.layer import GRU
    from gru_cy.nn.network import Network
    from gru_cy.stacked import StackedGRU

    if not isinstance(model, (GRU, StackedGRU, Network)):
        raise TypeError(f"model: expected a gru_cy GRU, StackedGRU or Network, got "
                        f"{type(model).__name__}")
    top = onnx.defs.onnx_opset_version()
    if opset is None:
        opset = min(DEFAULT_OPSET, top)
    if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)) \
            or not MIN_OPSET <= opset <= top:
        raise ValueError(f"opset: expected an int in [{MIN_OPSET}, {top}] (this onnx's "
                         f"newest), got {opset!r}")
    for name, flag in (("sequence_lens", sequence_lens), ("initial_h", initial_h)):
        if not isinstance(flag, (bool, np.bool_)):
            raise TypeError(f"{name}: expected a bool, got {flag!r}")
    T, B = _static(static_shape)
    F, I32 = onnx.TensorProto.FLOAT, onnx.TensorProto.INT32
    G = _Graph(onnx)
    batch_first = isinstance(model, StackedGRU) and model.batch_first
    G.inputs.append(G.value_info("x", F, [B, T, model.inputs] if batch_first
                                 else [T, B, model.inputs]))
    lens = None
    if sequence_lens:
        lens = "sequence_lens"
        G.inputs.append(G.value_info(lens, I32, [B]))
    x = "x"
    if batch_first:
        x = G.node("Transpose", [x], perm=[1, 0, 2])
    outputs = []
    if isinstance(model, Network):
        layers = model.layers
    else:
        layers = [model]
    for i, layer in enumerate(layers):
        if isinstance(layer, (GRU, StackedGRU)):
            D = getattr(layer, "directions", 1)
            L = getattr(layer, "num_layers", 1)
            suffix = "" if layer is model else f".{i}"
            h0 = None
            if initial_h:
                h0 = "initial_h" + suffix
                G.inputs.append(G.value_info(h0, F, [L * D, B, layer.outputs]))
            x, h_n = _recurrent(G, x, layer, lens, h0)
            outputs.append(("h_n" + suffix, h_n, [L * D, B, layer.outputs]))
        elif getattr(layer, "type", None) == "connected":
            x = _connected(G, x, layer)
        elif getattr(layer, "type", None) == "softmax":
            x = _softmax(G, x, layer)
        elif getattr(layer, "type", None) in ("cost", "dropout"):
            continue                       # identity in inference
        else:
            raise ValueError(f"model.layers[{i}]: no ONNX form for a "
                             f"{type(layer).__name__} layer")
    if batch_first:
        x = G.node("Transpose", [x], perm=[1, 0, 2])
    G.nodes.append(G.h.make_node("Identity", [x], ["y"], name=G.name("Identity")))
    for name, value, _ in outputs:
        G.nodes.append(G.h.make_node("Identity", [value], [name], name=G.name("Identity")))
    width = model.outputs if isinstance(model, Network) else model.outputs * _dirs(model)
    graph_outputs = [G.value_info("y", F, [B, T, width] if batch_first
                                  else [T, B, width])]
    graph_outputs += [G.value_info(name, F, shape) for name, _, shape in outputs]
    from gru_cy import __version__
    graph = G.h.make_graph(G.nodes, type(model).__name__, G.inputs, graph_outputs,
                           initializer=G.inits)
    proto = G.h.make_model(graph, opset_imports=[G.h.make_opsetid("", int(opset))],
                           producer_name="gru_cy", producer_version=__version__)
    proto.ir_version = min(proto.ir_version, _ir_version(onnx, int(opset)))
    onnx.checker.check_model(proto)
    return proto


def _static(shape):
    """The graph's (T, B) dimensions: symbolic names, or the ints of ``shape``."""
    if shape is None:
        return "T", "B"
    ok = (isinstance(shape, (tuple, list)) and len(shape) == 2
          and all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n > 0
                  for n in shape))
    if not ok:
        raise ValueError(f"static_shape: expected None or (T, B), two positive ints, "
                         f"got {shape!r}")
    return int(shape[0]), int(shape[1])


def _dirs(model):
    return getattr(model, "directions", 1)


def _ir_version(onnx, opset):
    # the IR version released with the opset (ONNX Runtime reads IR <= its own)
    try:
        from onnx.helper import find_min_ir_version_for
        return find_min_ir_version_for([onnx.helper.make_opsetid("", opset)])
    except Exception:  # noqa: BLE001 - older onnx: keep make_model's
        return 10 ** 6


def export(model, path, opset=None, sequence_lens=False, initial_h=False, static_shape=None):
    """Write ``model`` (``GRU``, ``StackedGRU``, ``Network``) as an ONNX file.

    Parameters
    ----------
    model : gru_cy.GRU, gru_cy.StackedGRU or gru_cy.Network
    path : str or os.PathLike
        Written atomically (a failed export leaves an old file whole).
    opset : int or None
        ONNX opset, 14 or newer; None: 17 (or the onnx package's newest if older).
    sequence_lens : bool
        Add the graph input ``sequence_lens`` (B,) int32 read by every GRU node.
    initial_h : bool
        Add the initial-state input(s) (``initial_h`` or ``initial_h.{i}``).
    static_shape : (T, B) or None
        Fixed sizes for the graph's time and batch dimensions (None: symbolic
        ``T`` and ``B``).  OpenVINO needs them with ``sequence_lens`` (see the
        module documentation).

    Returns
    -------
    onnx.ModelProto
        The model written.
    """
    path = os.fspath(path)
    _files.check_writable(path, "path")
    proto = build(model, opset=opset, sequence_lens=sequence_lens, initial_h=initial_h,
                  static_shape=static_shape)
    _files.write_atomic(path, proto.SerializeToString())
    return proto
