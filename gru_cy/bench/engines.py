"""The engines ``gru-cy bench`` times (gru_cy, NumPy, PyTorch, ONNX Runtime;
OpenVINO and JAX in ``peers``),
the shared problem they run, and the check that their outputs agree."""
import numpy as np

from .common import DECAY, LEARNING_RATE, MOMENTUM, _stack, gru_onnx_model  # noqa: F401
from .configs import CONFIGS, SEED, STREAM_SIZES, TASKS

STREAM_CHECK_STEPS = 16
"""Steps of carried state the streaming guard compares (enough to catch a lost state)."""
TOLERANCE = {"float32": 1e-3, "float64": 1e-9}
"""Largest accepted |difference| relative to max(1, max|gru_cy value|): float32
results of T-step recurrences summed in other orders differ by ~1e-6 to 1e-5."""


# ---------------------------------------------------------------- weights --
def make_problem(config, dtype, variant, seed=SEED):
    """The weights (SPEC names) and data every engine shares.

    Returns
    -------
    params : dict of str to ndarray
        ``<sub>.weights`` (H, I) or (H, H) and ``<sub>.biases`` (H,), of ``dtype``.
    x : ndarray (T, B, I);  dy : ndarray (T, B, H);  h0 : ndarray (B, H)
    """
    import gru_cy

    B, T, I, H = CONFIGS[config] if config != "stream" else (1,) + STREAM_SIZES[1:]
    layer = gru_cy.GRU(I, H, variant=variant, dtype=dtype, seed=seed)
    rng = np.random.default_rng(seed + 1)
    params = {}
    for key, value in layer.params.items():
        if key.endswith(".biases"):
            value = rng.uniform(-0.1, 0.1, value.shape)
        params[key] = np.array(value, dtype=dtype)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    dy = rng.standard_normal((T, B, H)).astype(dtype)
    h0 = (0.1 * rng.standard_normal((B, H))).astype(dtype)
    return params, x, dy, h0


# ---------------------------------------------------------------- engines --
class GruCyEngine:
    """gru_cy.GRU with its default settings (``num_threads`` from ``--threads``)."""

    name = "gru_cy"
    tasks = TASKS

    def __init__(self, params, variant, dtype, threads):
        import gru_cy

        H, I = params["uz.weights"].shape
        self.layer = gru_cy.GRU(I, H, variant=variant, dtype=dtype, num_threads=threads)
        for key, value in params.items():
            self.layer.params[key] = value

    def infer(self, x, h0):
        layer = self.layer
        return lambda: layer.forward(x, h0=h0)

    def train(self, x, dy, h0):
        layer = self.layer

        def step():
            layer.forward(x, train=True, h0=h0)
            layer.backward(dy)
            layer.update(learning_rate=LEARNING_RATE, momentum=MOMENTUM, decay=DECAY)
        return step

    def grad(self, x, dy, h0):
        self.layer.forward(x, train=True, h0=h0)
        dx = self.layer.backward(dy)
        self.layer.zero_grad()
        return dx

    def stream(self, xs):
        layer = self.layer
        steps = [xs[t:t + 1] for t in range(xs.shape[0])]
        layer.reset_state()
        state = {"t": 0}

        def step():
            t = state["t"]
            layer.forward(steps[t])
            state["t"] = (t + 1) % len(steps)
        return step

    def stream_outputs(self, xs):
        self.layer.reset_state()
        return np.concatenate([self.layer.forward(xs[t:t + 1]) for t in range(xs.shape[0])])


class GruCyBf16Engine(GruCyEngine):
    """gru_cy.GRU with ``inference_precision="bfloat16"`` (issue 17): bf16
    products with float32 accumulation; inference only, checked against the
    float32 layer with a bfloat16 tolerance; judged against no float32 target."""

    name = "gru_cy_bf16"
    tasks = ("inference",)
    tolerance = 5e-2
    """As ``openvino_default``'s: bf16 products over the steps, ~1e-2."""

    def __init__(self, params, variant, dtype, threads):
        if dtype != np.float32:
            raise NotImplementedError("bfloat16 inference runs float32 layers only")
        super().__init__(params, variant, dtype, threads)
        try:
            self.layer.inference_precision = "bfloat16"
        except RuntimeError as e:             # no AVX512_BF16 on this CPU
            raise NotImplementedError(str(e)) from None


class NumpyEngine:
    """A NumPy forward in the requested dtype (inference and streaming)."""

    name = "numpy"
    tasks = ("inference", "stream")

    def __init__(self, params, variant, dtype, threads):
        self.variant = variant
        self.H = H = params["uz.weights"].shape[0]
        self.Wx = np.ascontiguousarray(_stack(params, ("uz", "ur", "uh"), "weights").T)
        self.bx = _stack(params, ("uz", "ur", "uh"), "biases")
        Wh = _stack(params, ("wz", "wr", "wh"), "weights").T
        self.bh = _stack(params, ("wz", "wr", "wh"), "biases")
        self.Wh = np.ascontiguousarray(Wh)
        self.Wzr = np.ascontiguousarray(Wh[:, :2 * H])
        self.Whh = np.ascontiguousarray(Wh[:, 2 * H:])
        self.h = None

    @staticmethod
    def _sigmoid(a):
        return 0.5 * np.tanh(0.5 * a) + 0.5

    def _step(self, xp, h):
        """One step from the projected input ``xp`` (B, 3H) and state ``h`` (B, H)."""
        H = self.H
        if self.variant == "reset_after":
            hp = h @ self.Wh + self.bh
            zr = self._sigmoid(xp[:, :2 * H] + hp[:, :2 * H])
            z, r = zr[:, :H], zr[:, H:]
            c = np.tanh(xp[:, 2 * H:] + r * hp[:, 2 * H:])
        else:
            zr = self._sigmoid(xp[:, :2 * H] + h @ self.Wzr + self.bh[:2 * H])
            z, r = zr[:, :H], zr[:, H:]
            c = np.tanh(xp[:, 2 * H:] + (r * h) @ self.Whh + self.bh[2 * H:])
        return z * h + (1 - z) * c

    def forward(self, x, h0):
        T, B, I = x.shape
        xp = (x.reshape(T * B, I) @ self.Wx + self.bx).reshape(T, B, 3 * self.H)
        y = np.empty((T, B, self.H), x.dtype)
        h = h0
        for t in range(T):
            h = y[t] = self._step(xp[t], h)
        return y

    def infer(self, x, h0):
        return lambda: self.forward(x, h0)

    def stream(self, xs):
        steps = [xs[t] for t in range(xs.shape[0])]
        state = {"t": 0, "h": np.zeros((1, self.H), xs.dtype)}

        def step():
            t = state["t"]
            state["h"] = self._step(steps[t] @ self.Wx + self.bx, state["h"])
            state["t"] = (t + 1) % len(steps)
        return step

    def stream_outputs(self, xs):
        h = np.zeros((1, self.H), xs.dtype)
        out = []
        for t in range(xs.shape[0]):
            h = self._step(xs[t] @ self.Wx + self.bx, h)
            out.append(h)
        return np.stack(out)


class TorchEngine:
    """torch.nn.GRU (reset_after only), weights by the SPEC section 4 mapping."""

    name = "torch"
    tasks = TASKS

    def __init__(self, params, variant, dtype, threads):
        import torch

        if variant != "reset_after":
            raise NotImplementedError("nn.GRU is the reset_after variant only")
        self.torch = torch
        if threads is not None:
            torch.set_num_threads(threads)
        H, I = params["uz.weights"].shape
        tdtype = torch.float32 if dtype == np.float32 else torch.float64
        self.dtype = tdtype
        self.gru = torch.nn.GRU(I, H).to(tdtype)
        rzn = ("r", "z", "h")
        with torch.no_grad():
            for key, prefix, what in (("weight_ih_l0", "u", "weights"),
                                      ("weight_hh_l0", "w", "weights"),
                                      ("bias_ih_l0", "u", "biases"),
                                      ("bias_hh_l0", "w", "biases")):
                value = _stack(params, [prefix + g for g in rzn], what)
                getattr(self.gru, key).copy_(torch.from_numpy(value))
        self.opt = torch.optim.SGD(self.gru.parameters(), lr=LEARNING_RATE,
                                   momentum=MOMENTUM, weight_decay=DECAY)

    def _t(self, a):
        return self.torch.from_numpy(np.ascontiguousarray(a))

    def infer(self, x, h0):
        torch, gru = self.torch, self.gru
        xt, ht = self._t(x), self._t(h0)[None]

        def run():
            with torch.inference_mode():
                return gru(xt, ht)[0]
        return run

    def train(self, x, dy, h0):
        gru, opt = self.gru, self.opt
        xt, dyt, ht = self._t(x).requires_grad_(True), self._t(dy), self._t(h0)[None]

        def step():
            opt.zero_grad()
            xt.grad = None
            gru(xt, ht)[0].backward(dyt)   # dx too, as gru_cy's backward returns it
            opt.step()
        return step

    def grad(self, x, dy, h0):
        xt = self._t(x).requires_grad_(True)
        self.gru.zero_grad()
        self.gru(xt, self._t(h0)[None])[0].backward(self._t(dy))
        self.gru.zero_grad()
        return xt.grad.numpy()

    def stream(self, xs):
        torch, gru = self.torch, self.gru
        steps = [self._t(xs[t:t + 1]) for t in range(xs.shape[0])]
        state = {"t": 0, "h": torch.zeros((1, 1, gru.hidden_size), dtype=self.dtype)}

        def step():
            t = state["t"]
            with torch.inference_mode():
                _, state["h"] = gru(steps[t], state["h"])
            state["t"] = (t + 1) % len(steps)
        return step

    def stream_outputs(self, xs):
        with self.torch.inference_mode():
            h = None
            out = []
            for t in range(xs.shape[0]):
                y, h = self.gru(self._t(xs[t:t + 1]), h)
                out.append(y.numpy())
        return np.concatenate(out)

    def infer_outputs(self, x, h0):
        return self.infer(x, h0)().numpy()


class OrtEngine:
    """ONNX Runtime's GRU operator (float32); streaming through I/O binding."""

    name = "ort"
    tasks = ("inference", "stream")

    def __init__(self, params, variant, dtype, threads):
        import onnxruntime as ort

        if dtype != np.float32:
            raise NotImplementedError("ONNX Runtime's CPU GRU kernel is float32 only")
        self.ort = ort
        self.H = params["uz.weights"].shape[0]
        self.lbr = 1 if variant == "reset_after" else 0
        self.params = params
        opts = ort.SessionOptions()
        if threads is not None:
            opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.opts = opts
        self.full = self._session(stream=False)
        self.single = self._session(stream=True)

    def _session(self, stream):
        model = gru_onnx_model(self.params, self.lbr, stream)
        return self.ort.InferenceSession(model.SerializeToString(), self.opts,
                                         providers=["CPUExecutionProvider"])

    def infer(self, x, h0):
        sess, feed = self.full, {"X": x, "initial_h": h0[None]}
        return lambda: sess.run(["Y"], feed)[0]

    def infer_outputs(self, x, h0):
        return self.infer(x, h0)()[:, 0]

    def stream(self, xs):
        ort, sess = self.ort, self.single
        steps = [np.ascontiguousarray(xs[t:t + 1]) for t in range(xs.shape[0])]
        xbuf = np.empty_like(steps[0])
        hbuf = [np.zeros((1, 1, self.H), np.float32) for _ in range(2)]
        xval = ort.OrtValue.ortvalue_from_numpy(xbuf)
        hval = [ort.OrtValue.ortvalue_from_numpy(h) for h in hbuf]
        bindings = []
        for k in range(2):
            b = sess.io_binding()
            b.bind_ortvalue_input("X", xval)
            b.bind_ortvalue_input("initial_h", hval[k])
            b.bind_ortvalue_output("Y_h", hval[1 - k])
            bindings.append(b)
        state = {"t": 0, "k": 0, "keep": (xbuf, hbuf, xval, hval)}

        def step():
            t, k = state["t"], state["k"]
            xbuf[...] = steps[t]
            sess.run_with_iobinding(bindings[k])
            state["t"], state["k"] = (t + 1) % len(steps), 1 - k
        return step

    def stream_outputs(self, xs):
        h = np.zeros((1, 1, self.H), np.float32)
        out = []
        for t in range(xs.shape[0]):
            h = self.single.run(["Y_h"], {"X": xs[t:t + 1], "initial_h": h})[0]
            out.append(h[0])
        return np.stack(out)


ENGINE_CLASSES = {"gru_cy": GruCyEngine, "gru_cy_bf16": GruCyBf16Engine,
                  "numpy": NumpyEngine, "torch": TorchEngine, "ort": OrtEngine}


def _engine_class(name):
    if name not in ENGINE_CLASSES:
        from . import peers
        ENGINE_CLASSES.update(openvino=peers.OpenVinoEngine,
                              openvino_default=peers.OpenVinoDefaultEngine,
                              jax=peers.JaxEngine)
    return ENGINE_CLASSES[name]


def build_engines(names, params, variant, dtype, threads):
    """The engines that can run here, and why the others cannot."""
    engines, skipped = [], {}
    for name in names:
        try:
            engines.append(_engine_class(name)(params, variant, dtype, threads))
        except (ImportError, NotImplementedError) as e:
            skipped[name] = str(e).splitlines()[0]
    return engines, skipped



# ----------------------------------------------------------------- guards --
def _max_diff(a, ref):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(ref, np.float64))))


def _within(diff, ref, dtype, engine=None):
    scale = max(1.0, float(np.max(np.abs(ref))))
    limit = getattr(engine, "tolerance", None) or TOLERANCE[np.dtype(dtype).name]
    return diff <= limit * scale


def check_outputs(task, engines, x, dy, h0):
    """Max |difference| from gru_cy of each peer's output (and torch's dx).

    Returns
    -------
    dict of str to (float, bool)
        engine -> (largest absolute difference, within tolerance); gru_cy -> (0, True).
    """
    ref_engine = engines[0]
    out = {ref_engine.name: (0.0, True)}
    if task == "stream":
        xs = x[:STREAM_CHECK_STEPS]
        ref = ref_engine.stream_outputs(xs)
        for e in engines[1:]:
            d = _max_diff(e.stream_outputs(xs), ref)
            out[e.name] = (d, _within(d, ref, x.dtype, e))
    elif task == "inference":
        ref = ref_engine.layer.forward(x, h0=h0)
        for e in engines[1:]:
            got = e.infer_outputs(x, h0) if hasattr(e, "infer_outputs") else e.infer(x, h0)()
            d = _max_diff(got, ref)
            out[e.name] = (d, _within(d, ref, x.dtype, e))
    else:
        ref = ref_engine.grad(x, dy, h0)
        for e in engines[1:]:
            d = _max_diff(e.grad(x, dy, h0), ref)
            out[e.name] = (d, _within(d, ref, x.dtype, e))
    return out

