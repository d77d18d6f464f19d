"""``gru-cy bench``: gru_cy side by side with NumPy, PyTorch, ONNX Runtime,
OpenVINO and JAX.

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
  ``reset_after``, 0 for ``darknet``); float32 inference and streaming;
- ``openvino``: OpenVINO's CPU plugin on the same ONNX model, compiled per
  problem for its fixed shapes with ``INFERENCE_NUM_THREADS`` and float32
  precision; inference and streaming.  ``openvino_default``: the same at
  OpenVINO's default precision (bfloat16 on a CPU with AVX512_BF16), checked
  with a bfloat16 tolerance (5e-2) and judged against no float32 target;
- ``jax``: a ``lax.scan`` GRU under ``jit`` (inference) and one ``jit`` of
  ``value_and_grad`` plus SGD with momentum and weight decay (training).

PyTorch, ONNX Runtime, OpenVINO and JAX are optional: an engine that cannot be imported is
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

Operator features (``--rows lengths,bidirectional,packed``, opt-in): gru_cy
timed against a baseline of the same sizes, interleaved, after a check that
the two agree (see ``gru_cy.bench.features``): padded batches (``lengths``)
against full length, both directions against one, and a 2-layer
bidirectional ``StackedGRU`` on padded batches against ``torch.nn.GRU`` on a
packed sequence.

Work counted for GFLOP/s: a forward is ``6 T B H (I + H)`` flops (the six
products), a training step three times that (forward, the data gradients and
the weight gradients); elementwise work is not counted.
"""
from . import cli, configs, engines, features, report, timing
from .cli import EPILOG, main, parser
from .configs import (BIDIRECTIONAL_CONFIG, CONFIGS, DEFAULT_ROWS, ENGINES, FEATURE_TARGETS,
                      PACKED_LAYERS, PACKED_TOLERANCE, ROWS, SEED, STREAM_SIZES, TARGET_PEERS,
                      TARGETS, TASKS, flops)
from .engines import (DECAY, ENGINE_CLASSES, LEARNING_RATE, MOMENTUM, STREAM_CHECK_STEPS,
                      TOLERANCE, GruCyEngine, NumpyEngine, OrtEngine, TorchEngine,
                      build_engines, check_outputs, make_problem)
from .features import FEATURE_ROWS, draw_lengths
from .report import render, run
from .timing import (CALIBRATE_MAX_CALLS, CALIBRATE_SHARE, SETTLE_BUSY, SETTLE_MAX_S,
                     SETTLE_WINDOW_S, interleaved_medians, peak_memory, settle)

__all__ = [
    "BIDIRECTIONAL_CONFIG", "CALIBRATE_MAX_CALLS", "CALIBRATE_SHARE", "CONFIGS", "DECAY",
    "DEFAULT_ROWS", "ENGINES", "ENGINE_CLASSES", "EPILOG", "FEATURE_ROWS", "FEATURE_TARGETS",
    "GruCyEngine", "LEARNING_RATE", "MOMENTUM", "NumpyEngine", "OrtEngine", "PACKED_LAYERS",
    "PACKED_TOLERANCE", "ROWS", "SEED", "SETTLE_BUSY", "SETTLE_MAX_S", "SETTLE_WINDOW_S",
    "STREAM_CHECK_STEPS", "STREAM_SIZES", "TARGETS", "TARGET_PEERS", "TASKS", "TOLERANCE",
    "TorchEngine", "build_engines", "check_outputs", "cli", "configs", "draw_lengths",
    "engines", "features", "flops", "interleaved_medians", "main", "make_problem", "parser",
    "peak_memory", "render", "report", "run", "settle", "timing",
]
