"""gru_cy next to its peers, as ``gru-cy bench`` runs them (issue 17).

The engines of ``gru_cy.bench``: gru_cy (float32 and its bfloat16 inference),
PyTorch, ONNX Runtime, OpenVINO (float32, and its default precision) and JAX,
on the same seeded weights and data, two threads each.  Each peer's outputs are
checked against gru_cy's (``check_outputs``, the bench's tolerances) before it
is timed.  A peer whose package is missing, or that cannot run a case (torch
has no darknet variant; only gru_cy, torch and JAX have a training step here),
is skipped: its ``setup`` raises ``NotImplementedError``, which asv reports as
skipped.

asv times one engine at a time, so these numbers track each engine's history;
for ratios measured interleaved on the same machine state, use ``gru-cy bench``.
Configs A and D only (a few milliseconds a call): the suite stays quick.
"""
import numpy as np

PEER_CONFIGS = ["A", "D"]
PEER_VARIANTS = ["reset_after", "darknet"]
PEER_THREADS = 2


def _engine(task, config, variant, name):
    """The checked callable of engine ``name`` for ``task``, or NotImplementedError."""
    from gru_cy.bench.engines import build_engines, check_outputs, make_problem

    params, x, dy, h0 = make_problem(config, np.float32, variant)
    names = ["gru_cy"] if name == "gru_cy" else ["gru_cy", name]
    engines, skipped = build_engines(names, params, variant, np.float32, PEER_THREADS)
    if name in skipped:
        raise NotImplementedError(f"{name}: {skipped[name]}")
    engine = engines[-1]
    if task not in engine.tasks:
        raise NotImplementedError(f"{name} has no {task} task")
    if name != "gru_cy":
        diff, ok = check_outputs(task, engines, x, dy, h0)[name]
        if not ok:
            raise RuntimeError(f"{name} disagrees with gru_cy: max |diff| {diff:.3g}")
    fn = engine.infer(x, h0) if task == "inference" else engine.train(x, dy, h0)
    fn()                                   # warm-up: thread pools, first-touch pages
    return fn


class PeerInference:
    """A whole-sequence inference forward of each engine."""

    params = [PEER_CONFIGS, PEER_VARIANTS,
              ["gru_cy", "gru_cy_bf16", "torch", "ort", "openvino", "openvino_default", "jax"]]
    param_names = ["config", "variant", "engine"]

    def setup(self, config, variant, engine):
        self.fn = _engine("inference", config, variant, engine)

    def time_inference(self, config, variant, engine):
        self.fn()


class PeerTrainingStep:
    """A training step (forward, backward with dx, SGD update) of each engine."""

    params = [PEER_CONFIGS, PEER_VARIANTS, ["gru_cy", "torch", "jax"]]
    param_names = ["config", "variant", "engine"]

    def setup(self, config, variant, engine):
        self.fn = _engine("train", config, variant, engine)

    def time_train_step(self, config, variant, engine):
        self.fn()
