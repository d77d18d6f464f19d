"""``gru-cy bench``: gru_cy side by side with NumPy, PyTorch and ONNX Runtime.

Every engine runs the same math on the same weights: the layer's seeded
parameters (with small random biases) are copied into

- ``numpy``: a NumPy forward in the requested dtype written the way a careful
  NumPy user would (input projections hoisted into one matmul, the three
  recurrent products fused into one, or two for ``darknet``); inference and
  streaming;
- ``torch``: ``torch.nn.GRU`` through the SPEC section 4 mapping (gate blocks
  r, z, n); variant ``reset_after`` only; inference, training and streaming;
- ``ort``: ONNX Runtime's GRU operator, the graph built with ``onnx.helper``
  (gate blocks z, r, h; ``W`` (1, 3H, I), ``R`` (1, 3H, H), ``B`` (1, 6H) =
  input biases then recurrent biases; ``linear_before_reset`` 1 for
  ``reset_after``, 0 for ``darknet``); float32 inference and streaming.

PyTorch and ONNX Runtime are optional: an engine that cannot be imported is
left out and said so.  Before anything is timed, every engine's output (and
torch's ``dx``) is compared with gru_cy's; the largest absolute difference is
shown in the table and a mismatch makes the command exit with status 1.

Training step: gru_cy's ``forward(train=True)``, ``backward``, ``update``
(SGD, momentum 0.9, decay 1e-4); torch's forward, ``backward`` with ``x``
requiring its gradient (gru_cy's backward always returns ``dx``), and
``torch.optim.SGD`` with the same momentum and weight decay.  Streaming:
gru_cy's ``forward`` on one (1, 1, I) step with the carried state; torch with
its state tensor passed back; ORT through I/O binding to buffers bound once
(its fastest path); NumPy one step of the loop above.

Timing: each repeat runs every engine once, in an order rotated per repeat
(interleaved, so that a change in machine load hits all engines alike), with
a wait before each sample until the process's threads are idle (CPU time
below 10% of wall time over 20 ms), so that the previous engine's spinning
worker threads have gone to sleep; the table shows medians.  A call shorter than
``--min-time`` is repeated within a sample and the mean taken.

Work counted for GFLOP/s: a forward is ``6 T B H (I + H)`` flops (the six
products), a training step three times that (forward, the data gradients and
the weight gradients); elementwise work is not counted.
"""
import argparse
import gc
import importlib.util
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

from gru_cy._validate import cli_number

CONFIGS = {
    "A": (1, 128, 64, 128),
    "B": (32, 64, 256, 256),
    "C": (64, 100, 512, 1024),
    "D": (128, 32, 32, 64),
}
"""name -> (B, T, I, H), the sizes of issue 6."""

STREAM_SIZES = CONFIGS["A"]
"""Batch-1 streaming uses config A's I and H, T single-step calls, B = 1."""

ENGINES = ("gru_cy", "numpy", "torch", "ort")
TASKS = ("inference", "train", "stream")

TARGETS = {
    ("inference", "A"): 0.8, ("inference", "B"): 0.8,
    ("inference", "C"): 1.0, ("inference", "D"): 0.8,
    ("stream", "stream"): 0.5,
    ("train", "A"): 0.25, ("train", "B"): 0.8, ("train", "C"): 1.0, ("train", "D"): 0.5,
}
"""(task, config) -> the largest gru_cy / fastest-peer time ratio issue 6 accepts."""
TARGET_PEERS = ("torch", "ort")
"""The peers issue 6's targets name; NumPy is shown but judged against no target."""

SEED = 20240601
SETTLE_WINDOW_S = 0.02
SETTLE_MAX_S = 1.0
SETTLE_BUSY = 0.1
"""Before each sample the process waits until its threads are idle: its CPU
time grows by less than SETTLE_BUSY of the wall time over a SETTLE_WINDOW_S
window (at most SETTLE_MAX_S).  Idle worker threads spin before they block:
libgomp's (gru_cy's, torch's) for a few milliseconds, ONNX Runtime's for about
2^20 pause instructions (~20 ms here), OpenBLAS's (NumPy) for up to ~0.1 s.  A
spinning thread of the previous engine takes a core from the next one, and a
team that meets at barriers (every engine here) then waits for a descheduled
thread."""


def settle():
    """Wait until this process's threads stop using CPU (see SETTLE_BUSY)."""
    deadline = time.perf_counter() + SETTLE_MAX_S
    while True:
        c0, w0 = time.process_time(), time.perf_counter()
        time.sleep(SETTLE_WINDOW_S)
        busy = (time.process_time() - c0) / max(time.perf_counter() - w0, 1e-9)
        if busy < SETTLE_BUSY or time.perf_counter() > deadline:
            return

STREAM_CHECK_STEPS = 16
"""Steps of carried state the streaming guard compares (enough to catch a lost state)."""
LEARNING_RATE = 1e-3
MOMENTUM = 0.9
DECAY = 1e-4
TOLERANCE = {"float32": 1e-3, "float64": 1e-9}
"""Largest accepted |difference| relative to max(1, max|gru_cy value|): float32
results of T-step recurrences summed in other orders differ by ~1e-6 to 1e-5."""

EPILOG = """\
Configs (B, T, I, H): A (1, 128, 64, 128), B (32, 64, 256, 256),
C (64, 100, 512, 1024), D (128, 32, 32, 64); "stream" is batch-1 streaming
(one call per step, T = 1, B = 1, state carried, config A's I and H).

Engines: gru_cy; numpy (a NumPy forward in the requested dtype, inference
and streaming); torch (torch.nn.GRU, variant reset_after only) and ort (ONNX
Runtime's GRU operator, float32), each when installed. Ratios are gru_cy's
time over another engine's; the summary gives gru_cy over the faster of
torch and ort (NumPy when neither is installed) and issue 6's target, judged
on medians; the ratio of the fastest samples beside it is less sensitive to
other processes on a shared machine.

NumPy's OpenBLAS reads OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE; if your shell
sets them (e.g. to pin a slow kernel), unset them for a fair comparison in
that command only:
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE gru-cy bench --threads 2

Exit status: 0, 1 if an engine's output differs from gru_cy's beyond the
tolerance (the ratios would not compare the same math), 2 for bad arguments.
"""


def flops(task, B, T, I, H):
    """Floating-point operations counted for one call of ``task``."""
    fwd = 6.0 * T * B * H * (I + H)
    if task == "train":
        return 3.0 * fwd
    if task == "stream":
        return 6.0 * H * (I + H)
    return fwd


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


def _stack(params, subs, what):
    return np.concatenate([params[f"{s}.{what}"] for s in subs])


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
        self.I = params["uz.weights"].shape[1]
        self.W = _stack(params, ("uz", "ur", "uh"), "weights")[None]
        self.R = _stack(params, ("wz", "wr", "wh"), "weights")[None]
        self.Bias = np.concatenate([_stack(params, ("uz", "ur", "uh"), "biases"),
                                    _stack(params, ("wz", "wr", "wh"), "biases")])[None]
        self.lbr = 1 if variant == "reset_after" else 0
        opts = ort.SessionOptions()
        if threads is not None:
            opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.opts = opts
        self.full = self._session(stream=False)
        self.single = self._session(stream=True)

    def _session(self, stream):
        from onnx import TensorProto, helper, numpy_helper

        H, I = self.H, self.I
        f = TensorProto.FLOAT
        outputs = ["", "Y_h"] if stream else ["Y", "Y_h"]
        node = helper.make_node("GRU", ["X", "W", "R", "B", "", "initial_h"], outputs,
                                hidden_size=H, linear_before_reset=self.lbr)
        graph_out = [helper.make_tensor_value_info("Y_h", f, [1, "B", H])]
        if not stream:
            graph_out.insert(0, helper.make_tensor_value_info("Y", f, ["T", 1, "B", H]))
        graph = helper.make_graph(
            [node], "gru",
            [helper.make_tensor_value_info("X", f, ["T", "B", I]),
             helper.make_tensor_value_info("initial_h", f, [1, "B", H])],
            graph_out,
            initializer=[numpy_helper.from_array(self.W, "W"),
                         numpy_helper.from_array(self.R, "R"),
                         numpy_helper.from_array(self.Bias, "B")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
        model.ir_version = 8
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


ENGINE_CLASSES = {"gru_cy": GruCyEngine, "numpy": NumpyEngine,
                  "torch": TorchEngine, "ort": OrtEngine}


def build_engines(names, params, variant, dtype, threads):
    """The engines that can run here, and why the others cannot."""
    engines, skipped = [], {}
    for name in names:
        try:
            engines.append(ENGINE_CLASSES[name](params, variant, dtype, threads))
        except (ImportError, NotImplementedError) as e:
            skipped[name] = str(e).splitlines()[0]
    return engines, skipped


# ----------------------------------------------------------------- timing --
def _timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


CALIBRATE_SHARE = 0.2
CALIBRATE_MAX_CALLS = 1000


def _calibrate(fn, min_time):
    """Calls per sample so that a sample lasts at least ``min_time`` seconds.

    The first call warms up (caches, thread pools, first-touch pages).  Then
    calls are timed until they add up to CALIBRATE_SHARE of ``min_time`` (at
    least three, at most CALIBRATE_MAX_CALLS) and the fastest sets the count:
    one call that a stall of the machine made 40 times slower would otherwise
    set it (a 0.25 ms call timed at 11 ms gave samples of five calls, whose
    medians then moved with single stalls).  A call that alone outlasts
    ``min_time`` is not repeated.
    """
    once = _timed(fn)
    if once >= min_time:
        return 1
    times = []
    while len(times) < 3 or (sum(times) < CALIBRATE_SHARE * min_time
                             and len(times) < CALIBRATE_MAX_CALLS):
        times.append(_timed(fn))
        if times[-1] >= min_time:
            return 1
    return max(1, min(100000, int(math.ceil(min_time / max(min(times), 1e-7)))))


def interleaved_medians(fns, repeat, min_time):
    """Median seconds per call of each named callable, sampled round-robin.

    Parameters
    ----------
    fns : dict of str to callable
    repeat : int
        Samples per callable; repeat ``r`` starts the rotation at engine ``r``.
    min_time : float
        Shortest sample; faster callables are called several times per sample.

    Returns
    -------
    dict of str to list of float
        Every sample (seconds per call), in sampling order.
    """
    names = list(fns)
    numbers = {name: _calibrate(fns[name], min_time) for name in names}
    samples = {name: [] for name in names}
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for r in range(repeat):
            for k in range(len(names)):
                name = names[(r + k) % len(names)]
                fn, number = fns[name], numbers[name]
                settle()
                t0 = time.perf_counter()
                for _ in range(number):
                    fn()
                samples[name].append((time.perf_counter() - t0) / number)
    finally:
        if gc_was:
            gc.enable()
    return samples


# ----------------------------------------------------------------- guards --
def _max_diff(a, ref):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(ref, np.float64))))


def _within(diff, ref, dtype):
    scale = max(1.0, float(np.max(np.abs(ref))))
    return diff <= TOLERANCE[np.dtype(dtype).name] * scale


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
            out[e.name] = (d, _within(d, ref, x.dtype))
    elif task == "inference":
        ref = ref_engine.layer.forward(x, h0=h0)
        for e in engines[1:]:
            got = e.infer_outputs(x, h0) if hasattr(e, "infer_outputs") else e.infer(x, h0)()
            d = _max_diff(got, ref)
            out[e.name] = (d, _within(d, ref, x.dtype))
    else:
        ref = ref_engine.grad(x, dy, h0)
        for e in engines[1:]:
            d = _max_diff(e.grad(x, dy, h0), ref)
            out[e.name] = (d, _within(d, ref, x.dtype))
    return out


# ----------------------------------------------------------------- memory --
def _proc_status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"/proc/self/status has no {field}")


def _peakmem_child(argv):
    """In a fresh process: memory of one training step of one engine.

    ``argv``: engine, config, dtype, threads ("none" or an int).  Prints a JSON
    object with ``rss_before_kib`` (resident size after building the model and
    data and after a tiny warm-up step that starts thread pools), and
    ``peak_kib`` (the high-water mark of the first full step, reset before it
    through ``/proc/self/clear_refs`` where allowed, else ``ru_maxrss``).
    """
    import resource

    engine, config, dtype, threads = argv
    threads = None if threads == "none" else int(threads)
    dtype = np.dtype(dtype).type
    warm_params, wx, wdy, wh0 = make_problem("D", dtype, "reset_after")
    warm = ENGINE_CLASSES[engine](warm_params, "reset_after", dtype, threads)
    warm.train(wx[:2, :2], wdy[:2, :2], wh0[:2])()
    params, x, dy, h0 = make_problem(config, dtype, "reset_after")
    eng = ENGINE_CLASSES[engine](params, "reset_after", dtype, threads)
    step = eng.train(x, dy, h0)
    del params, warm, warm_params
    gc.collect()
    method = "clear_refs"
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = _proc_status_kib("VmRSS")
    except OSError:
        method = "ru_maxrss"
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    step()
    if method == "clear_refs":
        peak = _proc_status_kib("VmHWM")
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"rss_before_kib": before, "peak_kib": peak, "method": method}))
    return 0


def peak_memory(engine, config, dtype, threads, timeout=1800):
    """Run ``_peakmem_child`` in a fresh interpreter; its dict, or {"error": ...}."""
    code = ("import sys; from gru_cy.bench import _peakmem_child; "
            "sys.exit(_peakmem_child(sys.argv[1:]))")
    cmd = [sys.executable, "-c", code, engine, config, np.dtype(dtype).name,
           "none" if threads is None else str(threads)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    if res.returncode != 0:
        lines = (res.stderr.strip() or "no output").splitlines()
        return {"error": lines[-1]}
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["delta_kib"] = out["peak_kib"] - out["rss_before_kib"]
    return out


# -------------------------------------------------------------------- cli --
def _parse_list(value, allowed):
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if not items or bad:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated list of {', '.join(allowed)}; got {value!r}")
    return list(dict.fromkeys(items))


def parser():
    """The argument parser of ``gru-cy bench``."""
    p = argparse.ArgumentParser(
        prog="gru-cy bench",
        description="Side-by-side timings of gru_cy, NumPy, PyTorch and ONNX Runtime:\n"
                    "inference, training step and batch-1 streaming; GFLOP/s and\n"
                    "ratios; medians of interleaved runs; outputs checked first.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="A,B,C,D,stream",
                   type=lambda v: _parse_list(v, list(CONFIGS) + ["stream"]),
                   help="comma-separated subset of A,B,C,D,stream (default: all)")
    p.add_argument("--repeat", type=cli_number(int), default=5,
                   help="samples per engine and measurement (default 5)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--threads", type=cli_number(int), default=None,
                   help="threads for every engine (default: gru_cy's default, "
                        "OpenMP's count, given to the others too)")
    p.add_argument("--variant", choices=("reset_after", "darknet", "both"),
                   default="reset_after",
                   help="gru_cy's variant (torch runs reset_after only; ORT's "
                        "linear_before_reset follows it)")
    p.add_argument("--engines", default=",".join(ENGINES),
                   type=lambda v: _parse_list(v, ENGINES),
                   help="comma-separated subset of gru_cy,numpy,torch,ort (gru_cy always runs)")
    p.add_argument("--tasks", default="inference,train",
                   type=lambda v: _parse_list(v, ("inference", "train")),
                   help="for configs A-D: inference,train (default both)")
    p.add_argument("--min-time", type=cli_number(float), default=0.05,
                   help="shortest sample in seconds; faster calls are repeated (default 0.05)")
    p.add_argument("--peakmem", default=None,
                   help="config whose training step's peak memory is measured for "
                        "gru_cy and torch, each in a fresh process, or 'none' "
                        "(default: C when C is among --configs, else none)")
    p.add_argument("--json", metavar="FILE", default=None,
                   help="also write every sample and the summary as JSON")
    return p


def _versions():
    import gru_cy

    v = {"gru_cy": gru_cy.__version__, "numpy": np.__version__,
         "python": platform.python_version()}
    for mod in ("torch", "onnxruntime"):
        try:
            v[mod] = __import__(mod).__version__
        except ImportError:
            v[mod] = None
    return v


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _installed(module):
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError, AttributeError):
        return False


def _loadavg():
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def _fmt_time(s):
    if s >= 1:
        return f"{s:.3f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.1f} us"


def _table(rows, headers):
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip(),
           "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(out)


def run(args, log=print):
    """Measure everything ``args`` asks for; the JSON-ready report."""
    from gru_cy import backends

    threads = args.threads
    eff_threads = threads if threads is not None else backends.get("cpu").max_threads()
    peer_threads = eff_threads
    dtype = np.dtype(args.dtype).type
    variants = ["reset_after", "darknet"] if args.variant == "both" else [args.variant]
    names = ["gru_cy"] + [e for e in args.engines if e != "gru_cy"]
    blas_limit = None
    if "numpy" in names:
        try:
            from threadpoolctl import threadpool_limits
            blas_limit = threadpool_limits(limits=peer_threads, user_api="blas")
        except ImportError:
            pass
    report = {"machine": {"cpu": _cpu_name(), "cores": os.cpu_count(),
                          "platform": platform.platform(), "loadavg_start": _loadavg()},
              "settings": {"configs": args.configs, "repeat": args.repeat,
                           "dtype": args.dtype, "threads": eff_threads,
                           "variant": args.variant, "min_time": args.min_time,
                           "openblas_env": {k: os.environ.get(k) for k in
                                            ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}},
              "versions": _versions(), "skipped": {}, "results": [], "summary": [],
              "peakmem": []}
    mismatch = False
    for variant in variants:
        for config in args.configs:
            tasks = ["stream"] if config == "stream" else args.tasks
            params, x, dy, h0 = make_problem(config, dtype, variant)
            B, T, I, H = CONFIGS.get(config, (1,) + STREAM_SIZES[1:])
            engines, skipped = build_engines(names, params, variant, dtype, peer_threads)
            for name, why in skipped.items():
                report["skipped"].setdefault(f"{name}/{variant}", why)
            for task in tasks:
                active = [e for e in engines if task in e.tasks]
                guard = check_outputs(task, active, x, dy, h0)
                if task == "stream":
                    fns = {e.name: e.stream(x) for e in active}
                elif task == "inference":
                    fns = {e.name: e.infer(x, h0) for e in active}
                else:
                    fns = {e.name: e.train(x, dy, h0) for e in active}
                samples = interleaved_medians(fns, args.repeat, args.min_time)
                med = {n: statistics.median(s) for n, s in samples.items()}
                work = flops(task, B, T, I, H)
                for name in fns:
                    diff, ok = guard[name]
                    mismatch |= not ok
                    report["results"].append({
                        "config": config, "variant": variant, "task": task, "engine": name,
                        "B": B, "T": T, "I": I, "H": H, "dtype": args.dtype,
                        "median_s": med[name], "samples_s": samples[name],
                        "gflops": work / med[name] / 1e9,
                        "gru_cy_over_this": med["gru_cy"] / med[name],
                        "max_abs_diff": diff, "match": ok})
                peers = {n: t for n, t in med.items() if n in TARGET_PEERS}
                target = TARGETS.get((task, config))
                if not peers:       # no torch or ORT: compare with NumPy, no verdict
                    peers = {n: t for n, t in med.items() if n != "gru_cy"}
                    target = None
                best = min(peers, key=peers.get) if peers else None
                ratio = med["gru_cy"] / peers[best] if best else None
                fastest = {n: min(s) for n, s in samples.items()}
                ratio_min = (fastest["gru_cy"] / min(fastest[n] for n in peers)
                             if peers else None)
                report["summary"].append({
                    "config": config, "variant": variant, "task": task,
                    "gru_cy_s": med["gru_cy"], "best_peer": best,
                    "best_peer_s": peers.get(best), "ratio": ratio, "target": target,
                    "ratio_of_minima": ratio_min,
                    "met": None if ratio is None or target is None else ratio <= target})
                log(f"  measured {config} {variant} {task}", file=sys.stderr)
            del engines
    mem_cfg = args.peakmem
    if mem_cfg is None:
        mem_cfg = "C" if "C" in args.configs else "none"
    if mem_cfg != "none":
        for name in ("gru_cy", "torch"):
            if name in names and (name == "gru_cy" or _installed(name)):
                res = peak_memory(name, mem_cfg, args.dtype,
                                  threads if name == "gru_cy" else eff_threads)
                res.update({"engine": name, "config": mem_cfg})
                report["peakmem"].append(res)
    if blas_limit is not None:
        blas_limit.restore_original_limits()
    report["machine"]["loadavg_end"] = _loadavg()
    report["mismatch"] = mismatch
    return report


def render(report):
    """The report as text tables."""
    s = report["settings"]
    v = report["versions"]
    plural = "s" if s["threads"] != 1 else ""
    head = (f"gru-cy bench: {s['dtype']}, {s['threads']} thread{plural}, {s['repeat']} "
            f"interleaved samples per engine (median); {report['machine']['cpu']}, "
            f"{report['machine']['cores']} cores\n"
            + ", ".join(f"{k} {val}" for k, val in v.items() if val) + "\n")
    m = report["machine"]
    loads = [x for x in (m.get("loadavg_start"), m.get("loadavg_end")) if x is not None]
    if loads:
        head += (f"1-minute load average {loads[0]:.1f} at the start, {loads[-1]:.1f} at "
                 f"the end")
        if max(loads) > 0.5 * (m["cores"] or 1):
            head += ("\nnote: other processes compete for the cores; OpenMP engines that "
                     "spin at barriers\n(gru_cy, torch) suffer most: rerun on a quiet machine")
        head += "\n"
    if any(s["openblas_env"].values()):
        head += ("note: OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE are set; NumPy's timings may not "
                 "be representative (see --help)\n")
    for k, why in report["skipped"].items():
        head += f"skipped {k}: {why}\n"
    rows = []
    for r in report["results"]:
        ratio = "-" if r["engine"] == "gru_cy" else f"{r['gru_cy_over_this']:.2f}"
        unit = " /step" if r["task"] == "stream" else ""
        rows.append([r["config"], r["variant"], r["task"], r["engine"],
                     _fmt_time(r["median_s"]) + unit, _fmt_time(min(r["samples_s"])),
                     f"{r['gflops']:.1f}", ratio,
                     "-" if r["engine"] == "gru_cy" else
                     f"{r['max_abs_diff']:.1e}" + ("" if r["match"] else " MISMATCH")])
    body = _table(rows, ["config", "variant", "task", "engine", "median", "min", "GFLOP/s",
                         "gru_cy/this", "max|diff| vs gru_cy"])
    srows = []
    for r in report["summary"]:
        srows.append([r["config"], r["variant"], r["task"], _fmt_time(r["gru_cy_s"]),
                      r["best_peer"] or "-",
                      _fmt_time(r["best_peer_s"]) if r["best_peer"] else "-",
                      f"{r['ratio']:.2f}" if r["ratio"] is not None else "-",
                      f"<= {r['target']}" if r["target"] is not None else "-",
                      {True: "yes", False: "NO", None: "-"}[r["met"]],
                      f"{r['ratio_of_minima']:.2f}" if r.get("ratio_of_minima") else "-"])
    summary = _table(srows, ["config", "variant", "task", "gru_cy", "fastest peer",
                             "peer time", "ratio", "target", "met", "ratio of minima"])
    text = (head + "\n" + body + "\n\nSummary (gru_cy time / the fastest of torch and ORT):\n"
            + summary)
    by_variant = {(r["config"], r["task"], r["variant"]): r["gru_cy_s"]
                  for r in report["summary"]}
    vrows = [[c, t, f"{by_variant[c, t, 'darknet'] / s:.2f}"]
             for (c, t, v), s in by_variant.items()
             if v == "reset_after" and (c, t, "darknet") in by_variant]
    if vrows:
        text += ("\n\ngru_cy darknet / reset_after time (target <= 1.10):\n"
                 + _table(vrows, ["config", "task", "ratio"]))
    if report["peakmem"]:
        mrows = []
        for r in report["peakmem"]:
            if "error" in r:
                mrows.append([r["config"], r["engine"], "-", "-", "-", r["error"]])
            else:
                mrows.append([r["config"], r["engine"], f"{r['rss_before_kib'] / 1024:.1f}",
                              f"{r['peak_kib'] / 1024:.1f}", f"{r['delta_kib'] / 1024:.1f}",
                              r["method"]])
        text += ("\n\nPeak memory of one training step (fresh process per engine; MiB):\n"
                 + _table(mrows, ["config", "engine", "RSS before", "peak", "step delta",
                                  "method"]))
        d = {r["engine"]: r.get("delta_kib") for r in report["peakmem"]}
        if d.get("gru_cy") is not None and d.get("torch"):
            text += f"\ngru_cy / torch step delta: {d['gru_cy'] / d['torch']:.2f} (target <= 0.6)"
    return text


def main(argv=None):
    """Entry point of ``gru-cy bench``; returns the exit code."""
    p = parser()
    try:
        args = p.parse_args(sys.argv[1:] if argv is None else list(argv))
    except SystemExit as e:
        return int(e.code or 0)
    if args.peakmem is not None and args.peakmem not in list(CONFIGS) + ["none"]:
        p.print_usage(sys.stderr)
        print(f"gru-cy bench: error: --peakmem: expected one of A, B, C, D, none; "
              f"got {args.peakmem!r}", file=sys.stderr)
        return 2
    report = run(args, log=lambda *a, **k: print(*a, **k))
    print(render(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    if report["mismatch"]:
        print("gru-cy bench: an engine's output differs from gru_cy's beyond the tolerance; "
              "the ratios do not compare the same math", file=sys.stderr)
        return 1
    return 0
