"""The stronger peers of ``gru-cy bench`` (issue 17): OpenVINO (float32, and
at its default precision: bfloat16 on a CPU with AVX512_BF16) running the
same one-node ONNX GRU model as ONNX Runtime, and JAX (``lax.scan`` forward,
``jit(value_and_grad)`` training step).  Each is imported when its engine is
built; where it is missing the engine is skipped with the reason."""
import os

import numpy as np

from .common import DECAY, LEARNING_RATE, MOMENTUM, _stack, gru_onnx_model


class OpenVinoEngine:
    """OpenVINO's CPU plugin on the one-node ONNX GRU model, compiled for the
    problem's fixed shapes (its GRU is wrong with symbolic shapes and
    sequence_lens; fixed shapes are also its fast path) with
    ``INFERENCE_NUM_THREADS`` and float32 precision."""

    name = "openvino"
    tasks = ("inference", "stream")
    precision = "f32"

    def __init__(self, params, variant, dtype, threads):
        import openvino as ov

        if dtype != np.float32:
            raise NotImplementedError("OpenVINO's CPU GRU runs float32 (or bfloat16) only")
        self.ov = ov
        self.core = ov.Core()
        self.H, self.I = params["uz.weights"].shape
        self.lbr = 1 if variant == "reset_after" else 0
        self.params = params
        self.config = {"PERFORMANCE_HINT": "LATENCY"}
        if threads is not None:
            self.config["INFERENCE_NUM_THREADS"] = int(threads)
        if self.precision:
            self.config["INFERENCE_PRECISION_HINT"] = self.precision
        self._compiled = {}

    def _request(self, stream, T, B):
        key = (stream, T, B)
        if key not in self._compiled:
            proto = gru_onnx_model(self.params, self.lbr, stream=stream, T=T, B=B)
            model = self.core.read_model(proto.SerializeToString(), b"")
            compiled = self.core.compile_model(model, "CPU", self.config)
            self._compiled[key] = compiled.create_infer_request()
        return self._compiled[key]

    def infer(self, x, h0):
        req = self._request(False, x.shape[0], x.shape[1])
        feed = {"X": x, "initial_h": h0[None]}
        return lambda: req.infer(feed)

    def infer_outputs(self, x, h0):
        req = self._request(False, x.shape[0], x.shape[1])
        res = req.infer({"X": x, "initial_h": h0[None]})
        return np.array(res["Y"])[:, 0]

    def stream(self, xs):
        req = self._request(True, 1, 1)
        steps = [np.ascontiguousarray(xs[t:t + 1]) for t in range(xs.shape[0])]
        state = {"t": 0, "h": np.zeros((1, 1, self.H), np.float32)}

        def step():
            t = state["t"]
            res = req.infer({"X": steps[t], "initial_h": state["h"]})
            state["h"] = np.array(res["Y_h"])
            state["t"] = (t + 1) % len(steps)
        return step

    def stream_outputs(self, xs):
        req = self._request(True, 1, 1)
        h = np.zeros((1, 1, self.H), np.float32)
        out = []
        for t in range(xs.shape[0]):
            h = np.array(req.infer({"X": xs[t:t + 1], "initial_h": h})["Y_h"])
            out.append(h[0])
        return np.stack(out)


class OpenVinoDefaultEngine(OpenVinoEngine):
    """OpenVINO at its default precision (bfloat16 where the CPU has
    AVX512_BF16): its out-of-the-box speed; checked with a bfloat16 tolerance."""

    name = "openvino_default"
    tasks = ("inference",)
    precision = None
    tolerance = 5e-2
    """bfloat16 keeps 8 bits of mantissa: products of O(1) values over the
    steps differ from float32 by ~1e-2."""


class JaxEngine:
    """JAX (XLA on the CPU): the GRU as a ``lax.scan`` over the steps (inputs
    projected for all steps first, as gru_cy does); the training step is one
    ``jit`` of ``value_and_grad`` of ``sum(y * dy)`` with respect to the
    parameters and ``x``, then SGD with momentum and weight decay (torch's
    rule).  Threads: XLA's CPU client takes its thread count when JAX is
    first imported; with ``--threads N`` the engine sets
    ``intra_op_parallelism_threads=N`` in XLA_FLAGS if JAX is not imported yet
    (else the note says it was not)."""

    name = "jax"
    tasks = ("inference", "train")

    def __init__(self, params, variant, dtype, threads):
        import sys
        if threads is not None and "jax" not in sys.modules:
            flags = os.environ.get("XLA_FLAGS", "")
            os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=true "
                                       f"intra_op_parallelism_threads={int(threads)}").strip()
        import jax
        import jax.numpy as jnp

        if dtype == np.float64:
            jax.config.update("jax_enable_x64", True)
        self.jax, self.jnp = jax, jnp
        H = params["uz.weights"].shape[0]
        self.H = H
        self.p = {"Wx": jnp.asarray(_stack(params, ("uz", "ur", "uh"), "weights").T),
                  "bx": jnp.asarray(_stack(params, ("uz", "ur", "uh"), "biases")),
                  "Wh": jnp.asarray(_stack(params, ("wz", "wr", "wh"), "weights").T),
                  "bh": jnp.asarray(_stack(params, ("wz", "wr", "wh"), "biases"))}
        self.v = {k: jnp.zeros_like(a) for k, a in self.p.items()}
        reset_after = variant == "reset_after"

        def forward(p, x, h0):
            T, B, I = x.shape
            xp = (x.reshape(T * B, I) @ p["Wx"] + p["bx"]).reshape(T, B, 3 * H)

            def cell(h, xt):
                if reset_after:
                    hp = h @ p["Wh"] + p["bh"]
                    z = jax.nn.sigmoid(xt[:, :H] + hp[:, :H])
                    r = jax.nn.sigmoid(xt[:, H:2 * H] + hp[:, H:2 * H])
                    c = jnp.tanh(xt[:, 2 * H:] + r * hp[:, 2 * H:])
                else:
                    zr = jax.nn.sigmoid(xt[:, :2 * H] + h @ p["Wh"][:, :2 * H]
                                        + p["bh"][:2 * H])
                    z, r = zr[:, :H], zr[:, H:]
                    c = jnp.tanh(xt[:, 2 * H:] + (r * h) @ p["Wh"][:, 2 * H:]
                                 + p["bh"][2 * H:])
                h = z * h + (1 - z) * c
                return h, h

            return jax.lax.scan(cell, h0, xp)[1]

        def loss(p, x, h0, dy):
            return jnp.sum(forward(p, x, h0) * dy)

        grad = jax.value_and_grad(loss, argnums=(0, 1))

        def train_step(p, v, x, h0, dy):
            _, (g, dx) = grad(p, x, h0, dy)
            v = {k: MOMENTUM * v[k] + g[k] + DECAY * p[k] for k in p}
            p = {k: p[k] - LEARNING_RATE * v[k] for k in p}
            return p, v, dx

        self._forward = jax.jit(forward)
        self._grad = jax.jit(lambda p, x, h0, dy: grad(p, x, h0, dy)[1][1])
        self._train = jax.jit(train_step)

    def infer(self, x, h0):
        f, p = self._forward, self.p
        xj, hj = self.jnp.asarray(x), self.jnp.asarray(h0)
        f(p, xj, hj).block_until_ready()           # compiled before timing
        return lambda: f(p, xj, hj).block_until_ready()

    def infer_outputs(self, x, h0):
        return np.asarray(self._forward(self.p, self.jnp.asarray(x), self.jnp.asarray(h0)))

    def train(self, x, dy, h0):
        jnp = self.jnp
        xj, hj, dyj = jnp.asarray(x), jnp.asarray(h0), jnp.asarray(dy)
        state = self.trained = {"p": self.p, "v": self.v}
        fn = self._train

        def step():
            state["p"], state["v"], dx = fn(state["p"], state["v"], xj, hj, dyj)
            dx.block_until_ready()
        step()                                    # compiled before timing
        return step

    def grad(self, x, dy, h0):
        jnp = self.jnp
        return np.asarray(self._grad(self.p, jnp.asarray(x), jnp.asarray(h0),
                                     jnp.asarray(dy)))
