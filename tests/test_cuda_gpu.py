"""The CUDA engine on a real GPU against the Cython engine (marker ``cuda``).

Skipped, with gru_cy.cuda.available()'s reason, where CuPy or a GPU is
missing; tools/gpu_check.sh runs this file with ``pytest -m cuda``.  Checks:
every kernel (the cases of test_cuda_emulation) on the GPU against the CPU
twin; the public API's forward / backward / update / inference over the
configuration matrix (variant x activation x BN x dtype, SGD and Adam);
``to()`` round trips; ``gru-cy gradcheck --device cuda`` exits 0.
Without a GPU only the error path of ``to("cuda")`` runs.
"""
import subprocess
import sys

import numpy as np
import pytest
from numpy.testing import assert_allclose

from gru_cy import cuda

from tolerances import tol

OK, REASON = cuda.available()
needs_gpu = pytest.mark.skipif(not OK, reason=REASON)

DTYPES = (np.float32, np.float64)


@pytest.mark.skipif(OK, reason="a CUDA device is available")
def test_to_cuda_without_a_gpu_says_why():
    from gru_cy import GRU
    layer = GRU(3, 4)
    with pytest.raises(RuntimeError, match="CuPy"):
        layer.to("cuda")
    assert layer.device == "cpu"


def _host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


# ------------------------------------------------------------------ kernels --

def _kernel_cases():
    from kernel_oracles import CASES, make
    return CASES, make


@pytest.mark.cuda
@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_every_kernel_on_the_gpu_matches_the_cython_engine(dtype):
    import cupy
    from gru_cy._cpu import cpu_kernel
    cases, make = _kernel_cases()
    close = tol(dtype, "kernel")
    for name, label, builder in cases:
        args, bufs = make(builder, dtype)
        cpu_args, cpu_bufs = make(builder, dtype)
        cpu_kernel(name)(*[cpu_args[k] for k in cuda.contract_args(name)], 1)
        # Upload each buffer; an argument that views a buffer at an offset
        # becomes the same offset view of the device copy.
        dev = {key: cupy.asarray(buf) for key, buf in bufs.items()}
        gpu_args = []
        for k in cuda.contract_args(name):
            v = args[k]
            if isinstance(v, np.ndarray):
                key = next(key for key, buf in bufs.items() if np.shares_memory(v, buf))
                off = (v.ctypes.data - bufs[key].ctypes.data) // v.itemsize
                v = dev[key][off:]
            gpu_args.append(v)
        getattr(cuda, name)(*gpu_args)
        for key in bufs:
            assert_allclose(dev[key].get(), cpu_bufs[key], **close,
                            err_msg=f"{name} {label}: {key}")


# -------------------------------------------------------------------- layer --

@pytest.mark.cuda
@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("optimizer", ("sgd", "adam"))
@pytest.mark.parametrize("bn", (False, True), ids=("nobn", "bn"))
@pytest.mark.parametrize("activation", ("tanh", "logistic"))
@pytest.mark.parametrize("variant", ("darknet", "reset_after"))
def test_layer_parity(variant, activation, bn, optimizer, dtype):
    import cupy
    from gru_cy import GRU
    T, B, I, H = 5, 3, 7, 9
    close = tol(dtype, "gpu_layer")
    kw = dict(variant=variant, activation=activation, batch_normalize=bn,
              optimizer=optimizer, dtype=dtype, seed=11)
    cpu = GRU(I, H, **kw)
    gpu = GRU(I, H, device="cuda", **kw)
    assert gpu.device == "cuda"
    rng = np.random.default_rng(5)
    x = rng.uniform(-1, 1, (T, B, I)).astype(dtype)
    h0 = rng.uniform(-1, 1, (B, H)).astype(dtype)
    for it in range(2):                     # two steps: momentum / Adam moments
        dy = rng.uniform(-1, 1, (T, B, H)).astype(dtype)
        dstate = rng.uniform(-1, 1, (B, H)).astype(dtype)
        y_c = cpu.forward(x, train=True, h0=h0)
        y_g = gpu.forward(cupy.asarray(x), train=True, h0=cupy.asarray(h0))
        assert_allclose(_host(y_g), y_c, **close, err_msg=f"y (iteration {it})")
        assert_allclose(_host(gpu.state), cpu.state, **close)
        dx_c = cpu.backward(dy, dstate)
        dx_g = gpu.backward(cupy.asarray(dy), cupy.asarray(dstate))
        assert_allclose(_host(dx_g), dx_c, **close, err_msg="dx")
        assert_allclose(_host(gpu.dh0), cpu.dh0, **close, err_msg="dh0")
        for key, g in cpu.grads.items():
            assert_allclose(_host(gpu.grads[key]), g, **close, err_msg=f"grads[{key}]")
        cpu.update(learning_rate=0.05, clip=0.5 if it else None)
        gpu.update(learning_rate=0.05, clip=0.5 if it else None)
        for key, p in cpu.params.items():
            assert_allclose(_host(gpu.params[key]), p, **close, err_msg=f"params[{key}]")
    cpu.reset_state()
    gpu.reset_state()
    assert_allclose(_host(gpu.forward(cupy.asarray(x))), cpu.forward(x), **close,
                    err_msg="inference forward")


@pytest.mark.cuda
@needs_gpu
def test_to_round_trip_keeps_everything():
    from gru_cy import GRU
    layer = GRU(4, 6, batch_normalize=True, optimizer="adam", seed=2)
    x = np.random.default_rng(0).uniform(-1, 1, (3, 2, 4)).astype(np.float32)
    layer.forward(x, train=True)
    layer.backward(np.ones((3, 2, 6), np.float32))
    layer.update()
    before = {k: np.array(v) for k, v in layer.params.items()}
    state = layer.state
    layer.to("cuda").to("cpu")
    assert layer.device == "cpu"
    for k, v in before.items():
        assert_allclose(layer.params[k], v, rtol=0, atol=0, err_msg=k)
    assert_allclose(layer.state, state, rtol=0, atol=0)


@pytest.mark.cuda
@needs_gpu
@pytest.mark.parametrize("head, optimizer", (("softmax", "sgd"), ("cost", "adam")))
def test_network_parity(head, optimizer):
    # GRU, connected (BN, leaky), softmax or cost on the GPU against the CPU:
    # the connected layer and the losses run the CUDA kernels (net.cu).
    import cupy
    from gru_cy import GRU
    from gru_cy.nn import Connected, Cost, Network, Softmax
    T, B, C = 4, 3, 5
    nets = []
    for device in ("cpu", "cuda"):
        kw = dict(optimizer=optimizer, dtype=np.float64, device=device)
        layers = [GRU(C, 6, batch_normalize=True, seed=1, **kw),
                  Connected(6, C, activation="leaky", batch_normalize=True, seed=2, **kw),
                  Softmax(C) if head == "softmax" else Cost(C, scale=0.5)]
        nets.append(Network(layers, C, batch=B, time_steps=T, learning_rate=0.1))
    close = tol(np.float64, "gpu_layer")
    rng = np.random.default_rng(4)
    for it in range(3):
        x = rng.standard_normal((T, B, C))
        t = rng.integers(0, C, (T, B)) if head == "softmax" else rng.random((T, B, C))
        loss_c = nets[0].train_step(x, t)
        loss_g = nets[1].train_step(cupy.asarray(x), cupy.asarray(t))
        assert_allclose(loss_g, loss_c, **close, err_msg=f"loss (iteration {it})")
    for lc, lg in zip(*(n.layers for n in nets)):
        for key, p in getattr(lc, "params", {}).items():
            assert_allclose(_host(lg.params[key]), p, **close, err_msg=key)
    assert_allclose(_host(nets[1].predict(cupy.asarray(x))), nets[0].predict(x), **close)


@pytest.mark.cuda
@needs_gpu
@pytest.mark.parametrize("bn", (False, True), ids=("nobn", "bn"))
@pytest.mark.parametrize("variant", ("darknet", "reset_after"))
def test_lengths_and_stacks_parity(variant, bn):
    # A bidirectional 2-layer stack on a padded batch (seq_gather, segments,
    # take_cache / put_cache on the CUDA engine) against the CPU.
    import cupy
    from gru_cy import StackedGRU
    T, B, I, H = 6, 5, 3, 4
    models = [StackedGRU(I, H, num_layers=2, bidirectional=True, variant=variant,
                         batch_normalize=bn, dtype=np.float64, seed=3, device=dev)
              for dev in ("cpu", "cuda")]
    rng = np.random.default_rng(2)
    L = np.array([6, 2, 5, 6, 3]) if bn else np.array([3, 1, 6, 2, 6])
    x = rng.uniform(-1, 1, (T, B, I))
    dy = rng.uniform(-1, 1, (T, B, 2 * H))
    close = tol(np.float64, "gpu_layer")
    yc = models[0].forward(x, train=True, lengths=L)
    yg = models[1].forward(cupy.asarray(x), train=True, lengths=L)
    assert_allclose(_host(yg), yc, **close)
    assert_allclose(_host(models[1].backward(cupy.asarray(dy))), models[0].backward(dy), **close)
    assert_allclose(_host(models[1].dh0), models[0].dh0, **close)
    for k, g in models[0].grads.items():
        assert_allclose(_host(models[1].grads[k]), g, **close, err_msg=k)


@pytest.mark.slow
@pytest.mark.cuda
@needs_gpu
def test_gradcheck_cli_on_cuda():
    proc = subprocess.run([sys.executable, "-m", "gru_cy", "gradcheck", "--device", "cuda"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
