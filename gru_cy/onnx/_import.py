"""ONNX import: a gru_cy model from an ONNX graph (see ``gru_cy.onnx``).

The graph is read in its (topological) node order as one chain from its
sequence input: every node either continues the chain (a GRU node, a
connected layer's MatMul/Gemm, Add and activation, a Softmax, or the glue that
reshapes a GRU node's output back to ``(T, B, features)``), or works on
states only (``Y_h``, ``initial_h``: Concat, Slice, Gather, ...), which a
gru_cy model takes and returns at call time.
"""
import os

import numpy as np

from gru_cy.onnx._export import require_onnx

_ACTIVATIONS = {"Sigmoid": "logistic", "Tanh": "tanh", "Relu": "relu"}
# Operators allowed on the side values (states, shapes, constants); those of
# _KEEPS_ZERO give zeros from zeros (their data input 0).
_SIDE_OPS = {"Concat", "Slice", "Gather", "Squeeze", "Unsqueeze", "Identity", "Cast",
             "Reshape", "Transpose", "Shape", "Mul", "Expand", "ConstantOfShape"}
_KEEPS_ZERO = {"Slice", "Gather", "Squeeze", "Unsqueeze", "Identity", "Cast", "Reshape",
               "Transpose", "Expand"}


class _Seq:
    """A value of the chain.  ``kind``: "seq" (3-D sequence, ``bf`` when
    batch-major), "rows" (2-D rows of a flattened sequence), "gruY" (a GRU
    node's ``Y``: ``D``, ``layout``), "gruY4" (``(T, B, D, H)`` or batch-major),
    "grouped" (``(T, B, groups, C / groups)``), "affine" (a connected layer's
    product, ``w`` (O, I) and ``b`` (O,), waiting for its activation)."""

    def __init__(self, kind, width, bf=False, **extra):
        self.kind, self.width, self.bf = kind, width, bf
        self.__dict__.update(extra)


def _attrs(onnx, node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _where(node, i):
    return f"node {i} ({node.op_type}{' ' + repr(node.name) if node.name else ''})"


def _text(v):
    return v.decode() if isinstance(v, bytes) else v


class _Reader:
    def __init__(self, onnx, model):
        self.onnx = onnx
        g = model.graph
        self.consts = {t.name: onnx.numpy_helper.to_array(t) for t in g.initializer}
        feeds = [v for v in g.input if v.name not in self.consts]
        self.values = {}          # name -> _Seq on the chain
        # side values: ("h0", input, start, end) (a state input, or a Slice of
        # one along axis 0), "zeros" (provably zero), "const" (from constants
        # and shapes), "lens" (the lengths input), "derived" (computed from
        # states, or a GRU's Y_h): only zeros and ("h0", ...) may be initial_h
        self.side = {}
        self.layers = []          # ("gru", spec) / ("connected", spec) / ("softmax", spec)
        self.lens_input = None
        self.uses_lens = []       # per GRU node: reads sequence_lens
        self.head = None
        self.opset = max([o.version for o in model.opset_import
                          if o.domain in ("", "ai.onnx")] or [1])
        self.input_bm = None      # graph input batch-major (None: no GRU says)
        seqs = []
        for v in feeds:
            t = v.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
            elem = t.elem_type
            if elem in (onnx.TensorProto.INT32, onnx.TensorProto.INT64) and len(dims) == 1:
                self.lens_input = v.name
            elif len(dims) == 3 and elem in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE):
                seqs.append((v.name, dims))
            else:
                raise ValueError(f"graph input {v.name!r}: expected a float (T, B, features) "
                                 f"sequence, an int (B,) sequence_lens or a float initial "
                                 f"state, got element type {elem} and shape {dims}")
        if not seqs:
            raise ValueError("graph: expected a float input of shape (T, B, features), "
                             "got none")
        # The sequence is the input a GRU node or the first node reads as data;
        # other 3-D float inputs are initial states.
        main = [s for s in seqs if self._is_data_input(g, s[0])]
        if len(main) != 1:
            raise ValueError(f"graph: expected one sequence input, got {[s[0] for s in seqs]}")
        name, dims = main[0]
        if dims[2] is None:
            raise ValueError(f"graph input {name!r}: expected a fixed feature size, got "
                             f"shape {dims}")
        self.input_name, self.inputs = name, dims[2]
        self.values[name] = _Seq("seq", dims[2])
        self.head = name
        self.side.update((s[0], ("h0", s[0], 0, None)) for s in seqs if s[0] != name)
        self.state_dims = {s[0]: s[1] for s in seqs if s[0] != name}
        if self.lens_input:
            self.side[self.lens_input] = "lens"

    @staticmethod
    def _is_data_input(graph, name):
        # True when `name` reaches the data input (input 0) of a GRU, MatMul,
        # Gemm or Softmax node; initial states reach GRU nodes' input 5 only.
        reach = {name}
        for n in graph.node:
            if n.op_type in ("GRU", "MatMul", "Gemm", "Softmax") and n.input \
                    and n.input[0] in reach:
                return True
            if n.op_type != "GRU" and any(i in reach for i in n.input):
                reach.update(n.output)
        return False

    def const(self, name, where, what):
        if name not in self.consts:
            raise ValueError(f"{where}: expected {what} to be a constant "
                             f"(initializer or Constant), got the computed value {name!r}")
        return self.consts[name]

    def chain_input(self, node, where):
        data = [n for n in node.input if n in self.values]
        if len(data) != 1 or node.input[0] != data[0] and node.op_type not in ("Add", "MatMul"):
            raise ValueError(f"{where}: expected one input from the model's chain, got "
                             f"inputs {list(node.input)}")
        if getattr(self.values[data[0]], "temperature", 1.0) != 1.0 \
                and node.op_type not in ("Softmax", "Reshape", "Identity", "Dropout"):
            raise ValueError(f"{where}: Div is supported as a softmax temperature only "
                             f"(followed by Softmax), got {node.op_type} after it")
        if data[0] != self.head:
            raise ValueError(f"{where}: reads {data[0]!r}, an earlier value of the chain "
                             f"(the graph is not a single chain of layers)")
        return self.values[data[0]]

    def put(self, node, value, out=0):
        self.values[node.output[out]] = value
        self.head = node.output[out]

    # --------------------------------------------------------------- nodes
    def read(self, model):
        onnx = self.onnx
        for i, node in enumerate(model.graph.node):
            where = _where(node, i)
            op = node.op_type
            if node.domain not in ("", "ai.onnx"):
                raise ValueError(f"{where}: operator domain {node.domain!r} is not supported")
            if op == "Constant":
                a = _attrs(onnx, node)
                if "value" not in a:
                    raise ValueError(f"{where}: expected a 'value' attribute, got "
                                     f"{sorted(a)}")
                self.consts[node.output[0]] = onnx.numpy_helper.to_array(a["value"])
                continue
            if op == "Shape" and node.input[0] in self.values:
                self.side[node.output[0]] = "const"     # the sizes of a chain value
                continue
            on_chain = any(n in self.values for n in node.input)
            if not on_chain:
                self._side_node(node, where, op)
                continue
            handler = getattr(self, "_" + op, None)
            if handler is None:
                raise ValueError(f"{where}: operator {op} is not supported (GRU, MatMul, "
                                 f"Gemm, Add, Sigmoid, Tanh, Relu, LeakyRelu, Elu, Selu, "
                                 f"Softmax and reshaping glue are)")
            handler(node, where, self.chain_input(node, where), _attrs(onnx, node))
        return self

    def _side_node(self, node, where, op):
        tags = [self.side.get(n, "const" if n in self.consts or n == "" else None)
                for n in node.input]
        if op not in _SIDE_OPS or None in tags:
            raise ValueError(f"{where}: operator {op} on {list(node.input)} is not part "
                             f"of a model gru_cy can load")
        zero = (lambda n: self.side.get(n) == "zeros"
                or (n in self.consts and not np.any(self.consts[n])))
        state = [t for t in tags if isinstance(t, tuple) or t in ("derived", "lens")]
        if op == "ConstantOfShape":
            value = _attrs(self.onnx, node).get("value")
            tag = "zeros" if value is None or not np.any(
                self.onnx.numpy_helper.to_array(value)) else "const"
        elif op == "Identity" and isinstance(tags[0], tuple):
            tag = tags[0]
        elif op == "Slice" and isinstance(tags[0], tuple) and tags[0][2:] == (0, None):
            tag = self._state_slice(node, where, tags[0][1])
        elif state:
            tag = "derived"
        elif (op in _KEEPS_ZERO and zero(node.input[0])) \
                or (op == "Concat" and all(zero(n) for n in node.input)) \
                or (op == "Mul" and any(zero(n) for n in node.input)):
            tag = "zeros"
        else:
            tag = "const"
        for out in node.output:
            self.side[out] = tag

    def _state_slice(self, node, where, name):
        """("h0", name, start, end) for a Slice of state input ``name`` along
        axis 0 with constant bounds and step 1, else "derived"."""
        try:
            starts, ends = (np.asarray(self.consts[n]).reshape(-1) for n in node.input[1:3])
            axes = (np.asarray(self.consts[node.input[3]]).reshape(-1)
                    if len(node.input) > 3 and node.input[3] else np.array([0]))
            steps = (np.asarray(self.consts[node.input[4]]).reshape(-1)
                     if len(node.input) > 4 and node.input[4] else np.array([1]))
        except KeyError:
            return "derived"
        if len(starts) == len(ends) == len(axes) == 1 and int(axes[0]) == 0 \
                and int(steps[0]) == 1 and 0 <= int(starts[0]) < int(ends[0]):
            return ("h0", name, int(starts[0]), int(ends[0]))
        return "derived"

    def _GRU(self, node, where, x, a):
        allowed = {"hidden_size", "direction", "linear_before_reset", "activations", "layout"}
        for k in a:
            if k not in allowed:
                raise ValueError(f"{where}: attribute {k!r} is not supported (gru_cy's GRU "
                                 f"has no {k}); supported: {sorted(allowed)}")
        self._finish_affine(where)
        layout = int(a.get("layout", 0))
        if layout not in (0, 1):
            raise ValueError(f"{where}: attribute 'layout': expected 0 or 1, got {layout}")
        if x.kind != "seq":
            raise ValueError(f"{where}: expected a (.., .., features) sequence, got a "
                             f"{x.kind} value")
        # x.bf is relative to the graph input: the input is batch-major when
        # the node's layout and that swap disagree
        input_bm = bool(layout) != x.bf
        if self.input_bm is None:
            self.input_bm = input_bm
        elif self.input_bm != input_bm:
            raise ValueError(f"{where}: GRU nodes read the graph input both time-major "
                             f"and batch-major")
        direction = _text(a.get("direction", "forward"))
        if direction not in ("forward", "reverse", "bidirectional"):
            raise ValueError(f"{where}: attribute 'direction': expected forward, reverse or "
                             f"bidirectional, got {direction!r}")
        D = 2 if direction == "bidirectional" else 1
        acts = [_text(s) for s in a.get("activations", ["Sigmoid", "Tanh"] * D)]
        if len(acts) != 2 * D:
            raise ValueError(f"{where}: attribute 'activations': expected {2 * D} entries "
                             f"(gate and candidate per direction), got {acts}")
        if any(f != "Sigmoid" for f in acts[0::2]):
            raise ValueError(f"{where}: attribute 'activations': expected Sigmoid gates, got "
                             f"{acts[0::2]}")
        cands = set(acts[1::2])
        if len(cands) != 1 or not cands <= {"Tanh", "Sigmoid"}:
            raise ValueError(f"{where}: attribute 'activations': expected one candidate, "
                             f"Tanh or Sigmoid, got {acts[1::2]}")
        lbr = int(a.get("linear_before_reset", 0))
        if lbr not in (0, 1):
            raise ValueError(f"{where}: attribute 'linear_before_reset': expected 0 or 1, "
                             f"got {lbr}")
        W = self.const(node.input[1], where, "W")
        R = self.const(node.input[2], where, "R")
        H = int(a.get("hidden_size", R.shape[-1]))
        I = x.width
        shapes = {"W": (W.shape, (D, 3 * H, I)), "R": (R.shape, (D, 3 * H, H))}
        Bv = None
        if len(node.input) > 3 and node.input[3]:
            Bv = self.const(node.input[3], where, "B")
            shapes["B"] = (Bv.shape, (D, 6 * H))
        for k, (got, want) in shapes.items():
            if tuple(got) != want:
                raise ValueError(f"{where}: input {k}: expected shape {want} (hidden_size "
                                 f"{H}, {I} inputs), got {tuple(got)}")
        if Bv is None:
            Bv = np.zeros((D, 6 * H))
        lens = len(node.input) > 4 and bool(node.input[4])
        h0 = None
        if lens and node.input[4] != self.lens_input:
            raise ValueError(f"{where}: input sequence_lens: expected the graph input "
                             f"{self.lens_input!r}, got {node.input[4]!r}")
        if len(node.input) > 5 and node.input[5]:
            h = node.input[5]
            tag = "zeros" if h in self.consts and not np.any(self.consts[h]) \
                else self.side.get(h)
            if tag != "zeros" and not isinstance(tag, tuple):
                what = ("a non-zero constant" if tag == "const" or h in self.consts else
                        f"{h!r}, computed by the graph (another GRU's Y_h, arithmetic)")
                raise ValueError(f"{where}: input initial_h: expected zeros, a graph input "
                                 f"or a Slice of one along axis 0 (gru_cy models take h0 at "
                                 f"call time), got {what}")
            if isinstance(tag, tuple):
                h0 = tag[1:]
        self.uses_lens.append(lens)
        self.layers.append(("gru", dict(
            inputs=I, outputs=H, directions=D, reverse=direction == "reverse",
            variant="reset_after" if lbr else "darknet",
            activation="tanh" if cands == {"Tanh"} else "logistic",
            batch_first=input_bm, W=W, R=R, B=Bv, where=where, h0=h0)))
        self.put(node, _Seq("gruY", D * H, D=D, H=H, layout=layout))
        if len(node.output) > 1 and node.output[1]:
            self.side[node.output[1]] = "derived"

    def _rel(self, batch_major):
        # a value's swap relative to the graph input, from its absolute layout
        return batch_major != bool(self.input_bm)

    def _Transpose(self, node, where, x, a):
        perm = list(a.get("perm", []))
        if x.kind == "seq" and perm == [1, 0, 2]:
            return self.put(node, _Seq("seq", x.width, bf=not x.bf))
        if x.kind == "gruY":
            # (T, D, B, H) for layout 0, (B, T, D, H) for layout 1
            bm = {(0, (0, 2, 1, 3)): False, (0, (2, 0, 1, 3)): True,
                  (1, (0, 1, 2, 3)): True, (1, (1, 0, 2, 3)): False}.get(
                      (x.layout, tuple(perm)))
            if bm is not None:
                return self.put(node, _Seq("gruY4", x.width, bm=bm))
        raise ValueError(f"{where}: attribute 'perm' {perm} on a {x.kind} value is not "
                         f"supported")

    def _Squeeze(self, node, where, x, a):
        axes = a.get("axes")
        if axes is None and len(node.input) > 1:
            axes = self.const(node.input[1], where, "axes")
        axes = [int(v) for v in np.atleast_1d(axes if axes is not None else [])]
        if x.kind == "gruY" and x.D == 1 and len(axes) == 1:
            if axes[0] in ((2, -2) if x.layout else (1, -3)):
                return self.put(node, _Seq("seq", x.width, bf=self._rel(bool(x.layout))))
        raise ValueError(f"{where}: Squeeze of axes {axes} on a {x.kind} value is not "
                         f"supported")

    def _Reshape(self, node, where, x, a):
        shape = [int(v) for v in self.const(node.input[1], where, "shape")]
        if a.get("allowzero", 0):
            raise ValueError(f"{where}: attribute 'allowzero' is not supported")
        if x.kind == "gruY" and x.layout == 1:
            x = _Seq("gruY4", x.width, bm=True)     # (B, T, D, H)
        temp = getattr(x, "temperature", 1.0)     # a Div waiting for its Softmax
        if x.kind == "gruY4" and len(shape) == 3 and shape[:2] == [0, 0] \
                and shape[2] in (-1, x.width):
            return self.put(node, _Seq("seq", x.width, bf=self._rel(x.bm)))
        if x.kind == "grouped" and len(shape) == 3 and shape[:2] == [0, 0] \
                and shape[2] in (-1, x.width):
            return self.put(node, _Seq("seq", x.width, bf=x.bf, temperature=temp))
        if x.kind == "seq" and len(shape) == 4 and shape[:2] == [0, 0] and shape[2] > 0 \
                and x.width % shape[2] == 0 and shape[3] in (-1, x.width // shape[2]):
            return self.put(node, _Seq("grouped", x.width, bf=x.bf, groups=shape[2],
                                       temperature=temp))
        if x.kind == "seq" and len(shape) == 2 and shape[1] in (-1, x.width) \
                and shape[0] == -1 and not x.bf:
            return self.put(node, _Seq("rows", x.width, temperature=temp))
        raise ValueError(f"{where}: Reshape to {shape} of a {x.kind} value is not "
                         f"supported")

    def _Flatten(self, node, where, x, a):
        if x.kind == "seq" and not x.bf and int(a.get("axis", 1)) in (2, -1):
            return self.put(node, _Seq("rows", x.width))
        raise ValueError(f"{where}: Flatten of a {x.kind} value is not supported")

    def _Identity(self, node, where, x, a):
        self.put(node, x)

    def _Dropout(self, node, where, x, a):
        self.put(node, x)                       # inference: the identity

    def _MatMul(self, node, where, x, a):
        self._finish_affine(where)
        if node.input[0] not in self.values:
            raise ValueError(f"{where}: expected the chain's value as the first input")
        w = self.const(node.input[1], where, "the weights (input 1)")
        self._product(node, where, x, np.asarray(w).T)

    def _Gemm(self, node, where, x, a):
        self._finish_affine(where)
        if x.kind != "rows":
            raise ValueError(f"{where}: Gemm needs 2-D rows (Reshape to (-1, features) "
                             f"first), got a {x.kind} value")
        if a.get("transA", 0):
            raise ValueError(f"{where}: attribute 'transA' = 1 is not supported")
        w = np.asarray(self.const(node.input[1], where, "B (the weights)"), np.float64)
        w = w if a.get("transB", 0) else w.T
        w = w * float(a.get("alpha", 1.0))
        self._product(node, where, x, w)
        if len(node.input) > 2 and node.input[2]:
            b = np.asarray(self.const(node.input[2], where, "C (the biases)"), np.float64)
            self._bias(node, where, b * float(a.get("beta", 1.0)))

    def _product(self, node, where, x, w):
        if x.kind not in ("seq", "rows"):
            raise ValueError(f"{where}: a connected layer reads a (T, B, features) "
                             f"sequence or (rows, features), got a {x.kind} value")
        if w.ndim != 2 or w.shape[1] != x.width:
            raise ValueError(f"{where}: weights: expected shape ({x.width}, outputs), got "
                             f"{w.T.shape}")
        self.put(node, _Seq("affine", w.shape[0], bf=x.bf, rows=x.kind == "rows", w=w,
                            b=np.zeros(w.shape[0])))

    def _bias(self, node, where, b):
        x = self.values[self.head]
        b = np.asarray(b, np.float64)
        # (O,), a scalar, or either with leading axes of size 1 ((1, O), (1, 1, O))
        if b.size == 1:
            b = np.full(x.width, b.reshape(-1)[0])
        elif b.ndim >= 1 and b.shape[-1] == x.width and b.size == x.width:
            b = b.reshape(-1)
        else:
            raise ValueError(f"{where}: bias: expected shape ({x.width},) (or with leading "
                             f"axes of size 1), got {b.shape}")
        self.put(node, _Seq("affine", x.width, bf=x.bf, rows=x.rows, w=x.w, b=x.b + b))

    def _Add(self, node, where, x, a):
        other = [n for n in node.input if n not in self.values]
        if x.kind != "affine" or len(other) != 1 or x.b.any():
            raise ValueError(f"{where}: Add is supported as a connected layer's bias after "
                             f"MatMul/Gemm, got Add on a {x.kind} value")
        self._bias(node, where, self.const(other[0], where, "the bias"))

    def _act(self, node, where, x, name):
        if x.kind != "affine":
            raise ValueError(f"{where}: {node.op_type} is supported as a connected layer's "
                             f"activation (after MatMul/Gemm + Add), got it on a {x.kind} "
                             f"value")
        self.layers.append(("connected", dict(w=x.w, b=x.b, activation=name)))
        self.put(node, _Seq("rows" if x.rows else "seq", x.width, bf=x.bf))

    def _Sigmoid(self, node, where, x, a):
        self._act(node, where, x, "logistic")

    def _Tanh(self, node, where, x, a):
        self._act(node, where, x, "tanh")

    def _Relu(self, node, where, x, a):
        self._act(node, where, x, "relu")

    def _LeakyRelu(self, node, where, x, a):
        alpha = float(a.get("alpha", 0.01))
        name = {0.1: "leaky", 0.01: "relie"}.get(round(alpha, 6))
        if name is None:
            raise ValueError(f"{where}: attribute 'alpha': expected 0.1 (Darknet's leaky) "
                             f"or 0.01 (relie), got {alpha}")
        self._act(node, where, x, name)

    def _Elu(self, node, where, x, a):
        if abs(float(a.get("alpha", 1.0)) - 1.0) > 1e-6:
            raise ValueError(f"{where}: attribute 'alpha': expected 1 (Darknet's elu), got "
                             f"{a.get('alpha')}")
        self._act(node, where, x, "elu")

    def _Selu(self, node, where, x, a):
        alpha, gamma = float(a.get("alpha", 1.67326)), float(a.get("gamma", 1.0507))
        if abs(alpha - 1.6732) > 1e-6 or abs(gamma - 1.0507) > 1e-6:
            raise ValueError(f"{where}: attributes 'alpha', 'gamma': expected Darknet's "
                             f"selu (1.6732, 1.0507), got ({alpha}, {gamma})")
        self._act(node, where, x, "selu")

    def _Div(self, node, where, x, a):
        t = np.asarray(self.const(node.input[1], where, "the temperature"))
        if x.kind not in ("seq", "affine") or t.size != 1 or not float(t.reshape(-1)[0]) > 0:
            raise ValueError(f"{where}: Div is supported as a softmax temperature (a "
                             f"positive scalar) only")
        self._finish_affine(where)
        self.put(node, _Seq("seq", x.width, bf=x.bf, temperature=float(t.reshape(-1)[0])))

    def _Softmax(self, node, where, x, a):
        rank = {"seq": 3, "rows": 2, "affine": 3 - int(getattr(x, "rows", False)),
                "grouped": 4}.get(x.kind)
        # before opset 13 Softmax flattens the input to 2-D at ``axis`` (default
        # 1): the same as a last-axis softmax only when axis is the last one
        axis = int(a.get("axis", -1 if self.opset >= 13 else 1))
        if rank is None or axis not in (-1, rank - 1):
            raise ValueError(f"{where}: attribute 'axis': expected the last axis, got {axis}"
                             f"{'' if 'axis' in a else ' (opset %d default)' % self.opset}")
        temp = getattr(x, "temperature", 1.0)
        self._finish_affine(where)
        groups = getattr(x, "groups", 1)
        self.layers.append(("softmax", dict(width=x.width, groups=groups,
                                            temperature=temp)))
        kind = "grouped" if groups > 1 else "seq" if x.kind == "affine" else x.kind
        self.put(node, _Seq(kind, x.width, bf=x.bf, groups=groups))

    def _finish_affine(self, where):
        x = self.values[self.head]
        if x.kind == "affine":
            self.layers.append(("connected", dict(w=x.w, b=x.b, activation="linear")))
            self.values[self.head] = _Seq("rows" if x.rows else "seq", x.width, bf=x.bf)

    # --------------------------------------------------------------- model
    def check_outputs(self, model):
        names = [o.name for o in model.graph.output]
        head = self.values[self.head]
        if self.head not in names:
            raise ValueError(f"graph: expected the chain's last value {self.head!r} among "
                             f"the graph outputs, got {names}")
        if getattr(head, "bf", False):
            raise ValueError(f"graph output {self.head!r}: expected the input's layout "
                             f"(time- or batch-major), got it transposed")
        if head.kind not in ("seq", "rows", "affine"):
            raise ValueError(f"graph output {self.head!r}: expected a (T, B, features) "
                             f"sequence, got a {head.kind} value (missing reshape)")
        for n in names:
            if n != self.head and n not in self.side:
                raise ValueError(f"graph output {n!r}: expected the model's output or a "
                                 f"state, got a value of the chain")
        self._finish_affine("graph output")
        if not self.layers:
            raise ValueError("graph: expected at least one layer (GRU, MatMul/Gemm, "
                             "Softmax), got none")
        if any(self.uses_lens) and not all(self.uses_lens):
            raise ValueError("graph: some GRU nodes read sequence_lens and others do not; "
                             "gru_cy runs every recurrent layer of a model on the same "
                             "lengths")
        return head


def _set_direction(layer, spec, d):
    H = spec["outputs"]
    W, R, B = (np.asarray(spec[k][d], np.float64) for k in "WRB")
    new = {}
    for k, gate in enumerate("zrh"):
        new[f"u{gate}.weights"] = W[k * H:(k + 1) * H]
        new[f"w{gate}.weights"] = R[k * H:(k + 1) * H]
        new[f"u{gate}.biases"] = B[k * H:(k + 1) * H]
        new[f"w{gate}.biases"] = B[(3 + k) * H:(4 + k) * H]
    for key, v in new.items():
        layer.params[key] = v.astype(layer.dtype)


def _stackable(group):
    first = group[0]
    keys = ("outputs", "directions", "variant", "activation", "batch_first")
    return all(all(s[k] == first[k] for k in keys) and not s["reverse"] for s in group)


def _check_states(group, dims):
    """The GRU nodes of one model must take their initial states as that
    model's h0 does: all from zeros, or layer k from rows k*D:(k+1)*D of one
    graph input (torch's order; a one-layer model may read the whole input)."""
    srcs = [spec["h0"] for spec in group]
    if all(src is None for src in srcs):
        return
    first = group[0]
    D, L = first["directions"], len(group)
    if any(src is None for src in srcs) or len({src[0] for src in srcs}) != 1:
        raise ValueError(f"{first['where']}: initial_h: the {L} GRU node(s) of one model "
                         f"read their initial states from different sources (zeros and "
                         f"inputs, or several inputs); gru_cy takes one h0 per model")
    name = srcs[0][0]
    rows = (dims.get(name) or [None])[0]
    if rows not in (None, L * D):
        raise ValueError(f"graph input {name!r}: expected {L * D} states (layers x "
                         f"directions) in its first axis, got {rows}")
    for k, (_, start, end) in enumerate(srcs):
        if (start, end) == (0, None) and L == 1:
            continue
        to_end = end is not None and k == L - 1 and end > (k + 1) * D and rows == L * D
        if start != k * D or not (end == (k + 1) * D or to_end):
            raise ValueError(f"{group[k]['where']}: initial_h: reads rows {start}:{end} of "
                             f"{name!r}; gru_cy's h0 gives layer {k} rows "
                             f"{k * D}:{(k + 1) * D} (torch's order)")


def _recurrent(group, opts, dims):
    """A GRU (one one-direction node) or a StackedGRU for consecutive GRU
    node specs; a list of models when they cannot share one stack."""
    from gru_cy.layer import GRU
    from gru_cy.stacked import StackedGRU
    first = group[0]
    if len(group) == 1 or _stackable(group):
        _check_states(group, dims)
    if len(group) == 1 and first["directions"] == 1 and not first["batch_first"]:
        g = GRU(first["inputs"], first["outputs"], variant=first["variant"],
                activation=first["activation"], reverse=first["reverse"], **opts)
        _set_direction(g, first, 0)
        return [g]
    if len(group) > 1 and not _stackable(group):
        # the longest runs that share one stack, in order
        runs = [[group[0]]]
        for spec in group[1:]:
            if _stackable(runs[-1] + [spec]):
                runs[-1].append(spec)
            else:
                runs.append([spec])
        return [m for run in runs for m in _recurrent(run, opts, dims)]
    if first["reverse"]:
        raise ValueError(f"{first['where']}: a batch-major (layout=1) reverse GRU node is "
                         f"not supported; use layout=0")
    m = StackedGRU(first["inputs"], first["outputs"], num_layers=len(group),
                   bidirectional=first["directions"] == 2, batch_first=first["batch_first"],
                   variant=first["variant"], activation=first["activation"], **opts)
    for k, spec in enumerate(group):
        for d, layer in enumerate(m.layers[k]):
            _set_direction(layer, spec, d)
    return [m]


def _build(reader, dtype, device, num_threads):
    from gru_cy.nn import Connected, Network, Softmax
    opts = dict(dtype=dtype, num_threads=num_threads)
    models, group = [], []
    for kind, spec in reader.layers + [("end", None)]:
        if kind == "gru":
            group.append(spec)
            continue
        if group:
            models += _recurrent(group, opts, reader.state_dims)
            group = []
        if kind == "connected":
            w = spec["w"]
            c = Connected(w.shape[1], w.shape[0], activation=spec["activation"], **opts)
            c.params["weights"] = w.astype(c.dtype)
            c.params["biases"] = np.asarray(spec["b"]).astype(c.dtype)
            models.append(c)
        elif kind == "softmax":
            models.append(Softmax(spec["width"], groups=spec["groups"],
                                  temperature=spec["temperature"]))
    if len(models) == 1 and reader.layers[0][0] == "gru":
        model = models[0]
    else:
        if reader.input_bm:
            if True:
                raise ValueError("graph: a batch-major (layout=1) GRU node followed by "
                                 "other layers is not supported (a Network is time-major)")
        model = Network(models, reader.inputs)
    if device != "cpu":
        model.to(device)
    return model


def load(path, dtype=np.float32, device="cpu", num_threads=None):
    """A gru_cy model from an ONNX file (see ``gru_cy.onnx`` for what is read).

    Parameters
    ----------
    path : str, os.PathLike, bytes or onnx.ModelProto
        The file, its bytes, or a loaded model.
    dtype : float32 or float64
        The precision of the model built.
    device : {"cpu", "cuda"}
    num_threads : int or None

    Returns
    -------
    gru_cy.GRU, gru_cy.StackedGRU or gru_cy.Network
        ``forward(x, lengths=..., h0=...)`` takes what the graph's
        ``sequence_lens`` and ``initial_h`` inputs took.

    Raises
    ------
    ValueError
        A file that is not ONNX, or an operator or attribute gru_cy cannot
        represent (the message names the node).
    """
    onnx = require_onnx()
    from gru_cy import _validate as V
    V.float_dtype(dtype)
    if isinstance(path, onnx.ModelProto):
        model = path
    else:
        try:
            if isinstance(path, (bytes, bytearray)):
                model = onnx.load_from_string(bytes(path))
            else:
                # onnx.load reads external tensor data beside the file (not
                # beside the working directory)
                model = onnx.load(os.fspath(path))
        except (OSError, TypeError) as e:
            raise ValueError(f"path: cannot read {path!r} ({e})") from None
        except Exception as e:  # noqa: BLE001 - protobuf's DecodeError and kin
            raise ValueError(f"{path!r}: not an ONNX model ({type(e).__name__}: {e})") \
                from None
    if isinstance(path, (bytes, bytearray, onnx.ModelProto)):
        for t in model.graph.initializer:
            if t.data_location == onnx.TensorProto.EXTERNAL:
                raise ValueError(f"initializer {t.name!r} keeps its data in an external "
                                 f"file: pass the model's path, not its bytes")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        raise ValueError(f"not a valid ONNX model: {str(e).splitlines()[0]}") from None
    reader = _Reader(onnx, model).read(model)
    reader.check_outputs(model)
    return _build(reader, dtype, device, num_threads)
