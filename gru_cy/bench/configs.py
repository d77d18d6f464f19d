"""The benchmark configurations and the project's performance targets.

The one place for the sizes that ``gru-cy bench``, the asv benchmarks
(``asv_bench/``), ``tools/bench_gemm.py`` and ``tools/gpu_check.sh`` run.  The
module itself imports nothing; its package imports NumPy, never PyTorch or
ONNX Runtime (the benchmark's engines import those when they run).
"""

CONFIGS = {
    "A": (1, 128, 64, 128),
    "B": (32, 64, 256, 256),
    "C": (64, 100, 512, 1024),
    "D": (128, 32, 32, 64),
}
"""name -> (B, T, I, H): batch, steps, inputs, outputs."""

STREAM_SIZES = CONFIGS["A"]
"""Batch-1 streaming uses config A's I and H, T single-step calls, B = 1."""

ENGINES = ("gru_cy", "gru_cy_bf16", "numpy", "torch", "ort", "openvino", "openvino_default",
           "jax")
TASKS = ("inference", "train", "stream")

TARGETS = {
    ("inference", "A"): 0.8, ("inference", "B"): 0.8,
    ("inference", "C"): 0.94, ("inference", "D"): 0.8,
    ("stream", "stream"): 0.4,
    ("train", "A"): 0.5, ("train", "B"): 0.5, ("train", "C"): 0.7, ("train", "D"): 0.5,
}
"""(task, config) -> the project's performance target: the largest gru_cy /
fastest-peer time ratio accepted (issue 17's, C as NOTES.md sets it: 0.94 of
OpenVINO float32 is 88% of the FMA peak, 0.7 of JAX's training step 85%).
Issue 6's stricter A training target, 0.25, was against torch alone (torch's
row of the table gives that ratio); judged against the faster of torch and
JAX, the target is issue 17's 0.5."""
TARGET_PEERS = ("torch", "ort", "openvino", "jax")
"""The float32 peers the performance targets compare with; NumPy is shown but
judged against no target, OpenVINO at its default precision (bfloat16 on
this CPU) is shown beside them (``openvino_default``), judged against none."""

SEED = 20240601

ROWS = ("peers", "lengths", "bidirectional", "packed")
"""What ``gru-cy bench --rows`` accepts: ``peers`` the engine comparison
(gru_cy, NumPy, torch, ORT, OpenVINO, JAX on configs A-D and streaming), then the operator
features' rows, each gru_cy against a baseline: ``lengths`` (padded batches
against full length, configs A-D), ``bidirectional`` (both directions against
one, config A's sizes), ``packed`` (a 2-layer bidirectional StackedGRU on padded batches against
torch.nn.GRU on a packed sequence, configs A-D)."""
DEFAULT_ROWS = ("peers",)

BIDIRECTIONAL_CONFIG = "A"
"""The sizes of the bidirectional row (B = 1: one direction alone leaves a
second thread little to do, two directions run side by side)."""
PACKED_LAYERS = 2
PACKED_TOLERANCE = 1e-4
"""Largest accepted max|y_gru_cy - y_torch| / max|y_torch| of the packed row."""

FEATURE_TARGETS = {
    ("lengths", "inference"): 0.65, ("lengths", "train"): 0.65,
    ("bidirectional", "inference"): 1.3,
}
"""(row, task) -> the largest accepted ratio of the row's two times (lengths /
full length; both directions / one); rows and tasks absent have no target."""


def flops(task, B, T, I, H):
    """Floating-point operations counted for one call of ``task``."""
    fwd = 6.0 * T * B * H * (I + H)
    if task == "train":
        return 3.0 * fwd
    if task == "stream":
        return 6.0 * H * (I + H)
    return fwd
