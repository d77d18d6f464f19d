#!/usr/bin/env bash
# The one script to run on a machine with an NVIDIA GPU (never in CI):
#   bash tools/gpu_check.sh [WHEEL_DIR]
# 1. installs CuPy (cupy-cuda12x or -13x, matching the driver) and torch, from
#    WHEEL_DIR (default .whl/) when wheels are there, else from the registry;
# 2. builds the Cython engine in place;
# 3. runs the CUDA tests (pytest -m cuda: every kernel and the layer, CPU vs GPU);
# 4. runs `gru-cy gradcheck --device cuda`;
# 5. prints a torch (cuDNN) vs gru_cy timing table for configs A-D and batch-1
#    streaming.
# Exit status: non-zero if the tests or the gradient check failed.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=${1:-.whl}
status=0

pip_get() {  # pip_get PACKAGE: local wheels first, then the registry
    if [ -d "$WHEELS" ] && $PY -m pip install -q --no-index --find-links "$WHEELS" "$1"; then
        return 0
    fi
    $PY -m pip install -q "$1"
}

echo "== device"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
cuda_major=$(nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: \([0-9]*\).*/\1/p' | head -1)
if ! $PY -c "import cupy" 2>/dev/null; then
    if [ "${cuda_major:-12}" -ge 13 ]; then pip_get cupy-cuda13x; else pip_get cupy-cuda12x; fi
fi
$PY -c "import torch" 2>/dev/null || pip_get torch || echo "torch unavailable: no benchmark peer"
$PY -c "from gru_cy import cuda; print(cuda.available())" 2>/dev/null || true

echo "== build"
$PY setup.py build_ext --inplace -j 4 2>&1 | tail -2

echo "== tests (pytest -m cuda)"
$PY -m pytest -m cuda tests/test_cuda_gpu.py -q -rs || status=1

echo "== gradcheck on cuda"
$PY -m gru_cy gradcheck --device cuda || status=1

echo "== benchmark (float32, variant reset_after, median of 10; ms per call)"
$PY - <<'EOF' || true
import time
import numpy as np
import cupy
import gru_cy

try:
    import torch
    have_torch = torch.cuda.is_available()
except ImportError:
    have_torch = False

from gru_cy.bench.configs import CONFIGS


def median_ms(fn, sync, repeat=10):
    fn()
    sync()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


gsync = cupy.cuda.Device().synchronize
print(f"{'config':8} {'B,T,I,H':18} {'gru_cy fwd':>11} {'gru_cy f+b':>11} "
      f"{'torch fwd':>10} {'torch f+b':>10}")
for name, (B, T, I, H) in CONFIGS.items():
    layer = gru_cy.GRU(I, H, variant="reset_after", device="cuda", seed=0)
    x = cupy.asarray(np.random.default_rng(0).standard_normal((T, B, I), np.float32))
    dy = cupy.ones((T, B, H), np.float32)

    def g_fwd():
        layer.forward(x, h0=cupy.zeros((B, H), np.float32))

    def g_fb():
        layer.forward(x, train=True, h0=cupy.zeros((B, H), np.float32))
        layer.backward(dy)

    row = [median_ms(g_fwd, gsync), median_ms(g_fb, gsync)]
    if have_torch:
        tsync = torch.cuda.synchronize
        net = torch.nn.GRU(I, H).cuda()
        tx = torch.as_tensor(cupy.asnumpy(x)).cuda().requires_grad_(True)

        def t_fwd():
            with torch.no_grad():
                net(tx)

        def t_fb():
            out, _ = net(tx)
            out.backward(torch.ones_like(out))

        row += [median_ms(t_fwd, tsync), median_ms(t_fb, tsync)]
    else:
        row += [float("nan")] * 2
    print(f"{name:8} {str((B, T, I, H)):18} " + " ".join(f"{v:10.3f} " for v in row))

print("batch-1 streaming (T = 1, B = 1, state carried; ms per step, 200 steps)")
for I, H in ((64, 128), (512, 1024)):
    layer = gru_cy.GRU(I, H, variant="reset_after", device="cuda", seed=0)
    steps = cupy.asarray(np.random.default_rng(1).standard_normal((200, 1, 1, I), np.float32))

    def g_stream():
        layer.reset_state()
        for s in steps:
            layer.forward(s)

    res = f"  I={I:4} H={H:5}  gru_cy {median_ms(g_stream, gsync, 3) / 200:.4f}"
    if have_torch:
        net = torch.nn.GRU(I, H).cuda()
        tsteps = torch.as_tensor(cupy.asnumpy(steps)).cuda()

        def t_stream():
            h = None
            with torch.no_grad():
                for s in tsteps:
                    _, h = net(s, h)

        res += f"  torch {median_ms(t_stream, torch.cuda.synchronize, 3) / 200:.4f}"
    print(res)
EOF

echo "== gpu_check status: $status"
exit $status
