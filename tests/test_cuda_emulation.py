"""The CUDA kernels, run without a GPU: src_kernels/*.cu compiled by g++ through
tests/cuda_emulation/cuda_shim.h (real threads per block, a barrier for
__syncthreads, shared memory per block), launched with gru_cy.cuda's geometry.

Every kernel of gru_cy.kernels runs on small odd shapes (B=3, H=5, T=4, 13
columns in rows of stride 16, gemm 13x17x19 and 70x67x35 in every transpose)
and is compared with two oracles: a NumPy float64 rendering of the contract
(tests/kernel_oracles.py) and the Cython engine's test wrapper ``py_<name>``
(when built).  All
buffers are compared after the call, including padding and the parts a kernel
must not touch.
"""
import os
import tempfile

import numpy as np
import pytest
from numpy.testing import assert_allclose

from gru_cy.kernels import KERNEL_NAMES

from cuda_emulation import emu
from kernel_oracles import CASES, ORACLES, case_gemm, make
from tolerances import tol

try:
    from gru_cy._cpu import CPU_KERNELS, cpu_kernel
except ImportError:  # the Cython engine is not built
    CPU_KERNELS, cpu_kernel = (), None

DTYPES = (np.float32, np.float64)


@pytest.fixture(scope="session")
def emulator():
    reason = emu.compiler_missing()
    if reason:
        pytest.skip(reason)
    path = emu.build(os.path.join(tempfile.gettempdir(), "gru_cy_cuda_emulation"))
    return emu.Emulator(path)


def _run_cpu(name, args):
    from gru_cy.cuda import contract_args
    cpu_kernel(name)(*[args[k] for k in contract_args(name)], 1)


# ------------------------------------------------------------------ tests ---

def test_every_kernel_has_a_case():
    assert {name for name, _, _ in CASES} == set(KERNEL_NAMES)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name, label, builder", CASES,
                         ids=[f"{n}-{lbl}" if lbl else n for n, lbl, _ in CASES])
def test_kernel_matches_oracles(emulator, name, label, builder, dtype):
    close = tol(dtype, "kernel")
    args, bufs = make(builder, dtype)
    emulator.run(name, args)

    ref_args, ref_bufs = make(builder, dtype)
    ORACLES[name](ref_args)
    for key in bufs:
        assert_allclose(bufs[key], ref_bufs[key], **close, err_msg=f"{name}: {key} vs NumPy")

    if name in CPU_KERNELS:
        cpu_args, cpu_bufs = make(builder, dtype)
        _run_cpu(name, cpu_args)
        for key in bufs:
            assert_allclose(bufs[key], cpu_bufs[key], **close,
                            err_msg=f"{name}: {key} vs the Cython engine")


@pytest.mark.slow
@pytest.mark.parametrize("name, label, builder",
                         [c for c in CASES if c[0] != "gemm"],
                         ids=[f"{n}-{lbl}" if lbl else n for n, lbl, _ in CASES if n != "gemm"])
def test_results_do_not_depend_on_the_grid(emulator, name, label, builder):
    # The launchers' geometry versus 2 blocks of 3 threads (every grid-stride
    # loop wraps): each element and each sum is computed by one thread in one
    # order, so the results are bit-identical.
    args, bufs = make(builder, np.float64)
    emulator.run(name, args)
    odd, odd_bufs = make(builder, np.float64)
    emulator.run(name, odd, geometry=((2, 1, 1), (3, 1, 1)))
    for key in bufs:
        assert_allclose(bufs[key], odd_bufs[key], rtol=0, atol=0, err_msg=f"{name}: {key}")


@pytest.mark.slow
def test_gemm_shared_memory_tiles_are_per_block(emulator):
    # A product spanning 3 x 2 tiles and 5 K slabs: a block that read another
    # block's staged tile (or a stale slab) would give wrong sums.
    args, bufs = make(lambda b: case_gemm(b, 1, 0, 150, 100, 70, 1.0, 0.0), np.float64)
    emulator.run("gemm", args)
    ref, ref_bufs = make(lambda b: case_gemm(b, 1, 0, 150, 100, 70, 1.0, 0.0), np.float64)
    ORACLES["gemm"](ref)
    assert_allclose(bufs["C"], ref_bufs["C"], **tol(np.float64, "kernel"))


# ----------------------------------------------------------------- engine ---

@pytest.fixture
def emulated_cuda(monkeypatch, emulated_launchers):
    """gru_cy's CUDA backend with NumPy as its array module and the emulator as
    its GPU: the engine's and the network pieces' calls go through
    gru_cy.cuda._call and its argument conversion, as on a GPU.  Returns the
    backend module (gru_cy.backends.cuda)."""
    from gru_cy.backends import cuda as cuda_backend
    cuda = emulated_launchers
    monkeypatch.setattr(cuda, "_cupy", lambda: np)
    monkeypatch.setattr(cuda, "_address", lambda a: a.ctypes.data)
    monkeypatch.setattr(cuda, "require", lambda: None)
    monkeypatch.setattr(cuda_backend, "_BACKEND", None)
    return cuda_backend


@pytest.mark.slow
@pytest.mark.skipif(cpu_kernel is None, reason="the Cython engine is not built")
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("bn", (False, True), ids=("nobn", "bn"))
@pytest.mark.parametrize("act", (0, 1), ids=("logistic", "tanh"))
@pytest.mark.parametrize("variant", ("darknet", "reset_after"))
def test_engine_mirrors_the_cython_drivers(emulated_cuda, variant, act, bn, dtype):
    _compare_engines(emulated_cuda, variant, act, bn, dtype)


@pytest.mark.slow
@pytest.mark.skipif(cpu_kernel is None, reason="the Cython engine is not built")
@pytest.mark.parametrize("bn", (False, True), ids=("nobn", "bn"))
@pytest.mark.parametrize("variant", ("darknet", "reset_after"))
def test_engine_chunks_of_steps(monkeypatch, emulated_cuda, variant, bn):
    # 6 rows = 2 steps of B = 3 per chunk: T = 3 runs a chunk of 2 steps and
    # one of 1 (the CPU engine, with 512 rows, one chunk; same sums otherwise).
    from gru_cy import kernels
    import gru_cy._cpu.engine  # noqa: F401  (imported first: it checks CHUNK_ROWS at import)
    monkeypatch.setattr(kernels, "CHUNK_ROWS", 6)
    assert kernels.chunk_steps(3, 3) == 2
    _compare_engines(emulated_cuda, variant, 1, bn, np.float64)


def _compare_engines(emulated_cuda, variant, act, bn, dtype):
    from gru_cy._cpu.engine import Engine as CpuEngine
    Te, Be, Ie, He = 3, 3, 4, 5
    dt = np.dtype(dtype)
    rng = np.random.default_rng(7)
    n = 3 * He * Ie + 3 * He * He + 6 * He + (6 * He if bn else 0)
    theta = rng.uniform(-0.8, 0.8, n).astype(dt)
    grad = rng.uniform(-1, 1, n).astype(dt)            # gradients accumulate
    rolling = np.stack([rng.uniform(-0.5, 0.5, 6 * He), rng.uniform(0.5, 2, 6 * He)]).astype(dt)
    x = rng.uniform(-1, 1, (Te, Be, Ie)).astype(dt)
    h0 = rng.uniform(-1, 1, (Be, He)).astype(dt)
    dy = rng.uniform(-1, 1, (Te, Be, He)).astype(dt)
    dstate = rng.uniform(-1, 1, (Be, He)).astype(dt)
    reset_after = variant == "reset_after"

    results = []
    for engine_class in (CpuEngine, emulated_cuda.Engine):
        th, gr, ro = theta.copy(), grad.copy(), rolling.copy()
        eng = engine_class(th, gr, ro, Ie, He, reset_after, act, bn, False)
        y_train = np.empty((Te, Be, He), dt)
        eng.forward(x.copy(), h0, y_train, True, 1)
        dx = np.empty((Te, Be, Ie), dt)
        dh0 = np.empty((Be, He), dt)
        eng.backward(dy, dstate, dx, dh0, 1)
        y_infer = np.empty((Te, Be, He), dt)
        eng.forward(x.copy(), h0, y_infer, False, 1)
        y_zero = np.empty((Te, Be, He), dt)
        eng.forward(x.copy(), None, y_zero, False, 1)
        results.append(dict(y_train=y_train, dx=dx, dh0=dh0, grad=gr, rolling=ro,
                            y_infer=y_infer, y_zero=y_zero, theta=th))
    cpu, gpu = results
    for key in cpu:
        assert_allclose(gpu[key], cpu[key], **tol(dt, "engine"), err_msg=key)


# -------------------------------------------------------------- launchers ---

class DeviceArray(np.ndarray):
    """A NumPy array posing as a CuPy one (what gru_cy.cuda's launchers test for)."""

    @property
    def __cuda_array_interface__(self):
        return self.__array_interface__


_SCALAR_TYPES = {"long long": np.int64, "int": np.int32, "float": np.float32,
                 "double": np.float64}


@pytest.fixture
def emulated_launchers(monkeypatch, emulator):
    """gru_cy.cuda's launchers with the emulator in place of the compiled module.

    The stand-in function checks what CuPy would receive: a (3,) grid and
    block, and per parameter an array or a uint64 address for a pointer and
    the exact NumPy scalar type of the C parameter otherwise.
    """
    import functools
    from gru_cy import cuda

    class Function:
        def __init__(self, entry):
            self.entry = entry

        def __call__(self, grid, block, args):
            assert len(grid) == len(block) == 3
            values = []
            for (ctype, pname), v in zip(emulator.params[self.entry], args, strict=True):
                if ctype.endswith("*"):
                    if isinstance(v, np.ndarray):
                        values.append(v.ctypes.data)
                    else:
                        assert type(v) is np.uint64, (self.entry, pname, type(v))
                        values.append(int(v) or None)
                else:
                    assert type(v) is _SCALAR_TYPES[ctype], (self.entry, pname, type(v))
                    values.append(v.item())
            emulator._fn(self.entry)(*grid, *block, *values)

    class Module:
        def get_function(self, entry):
            assert entry in emulator.params, entry
            return Function(entry)

    monkeypatch.setattr(cuda, "_module", lambda: Module())
    monkeypatch.setattr(cuda, "_kernel", functools.cache(cuda._kernel.__wrapped__))
    return cuda


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_launchers_pass_the_kernel_arguments(emulated_launchers, dtype):
    # Every case through gru_cy.cuda.<name>(...), the code path a GPU runs up
    # to CuPy, against the NumPy oracle.
    cuda = emulated_launchers
    for name, label, builder in CASES:
        args, bufs = make(builder, dtype)
        launcher = getattr(cuda, name)
        launcher(*[v.view(DeviceArray) if isinstance(v, np.ndarray) else v
                   for v in (args[k] for k in cuda.contract_args(name))])
        ref_args, ref_bufs = make(builder, dtype)
        ORACLES[name](ref_args)
        for key in bufs:
            assert_allclose(bufs[key], ref_bufs[key], **tol(dtype, "kernel"),
                            err_msg=f"{name} {label}: {key}")


@pytest.mark.slow
@pytest.mark.skipif(cpu_kernel is None, reason="the Cython engine is not built")
@pytest.mark.parametrize("bn, optimizer", ((False, "sgd"), (True, "adam")), ids=("sgd", "bn-adam"))
@pytest.mark.parametrize("variant", ("darknet", "reset_after"))
def test_layer_api_on_emulated_cuda(monkeypatch, emulated_cuda, variant, bn, optimizer):
    # The public API with device="cuda": gru_cy.layer -> the CUDA backend ->
    # Engine / update kernels -> the emulator (NumPy arrays stand in for
    # CuPy's).  Against the same layer on the CPU.
    from gru_cy import GRU
    Te, Be, Ie, He = 3, 3, 4, 5
    kw = dict(variant=variant, batch_normalize=bn, optimizer=optimizer, dtype=np.float64,
              seed=3)
    cpu, gpu = GRU(Ie, He, **kw), GRU(Ie, He, device="cuda", **kw)
    assert gpu.device == "cuda"
    rng = np.random.default_rng(9)
    close = tol(np.float64, "engine")
    for it in range(2):
        x = rng.uniform(-1, 1, (Te, Be, Ie))
        dy = rng.uniform(-1, 1, (Te, Be, He))
        assert_allclose(gpu.forward(x, train=True), cpu.forward(x, train=True), **close)
        assert_allclose(gpu.backward(dy), cpu.backward(dy), **close)
        assert_allclose(gpu.dh0, cpu.dh0, **close)
        cpu.update(learning_rate=0.1, clip=0.5 if it else None)
        gpu.update(learning_rate=0.1, clip=0.5 if it else None)
        for key, p in cpu.params.items():
            assert_allclose(gpu.params[key], p, **close, err_msg=key)
    assert_allclose(gpu.forward(x), cpu.forward(x), **close)
    assert_allclose(gpu.state, cpu.state, **close)


@pytest.mark.slow
@pytest.mark.skipif(cpu_kernel is None, reason="the Cython engine is not built")
@pytest.mark.parametrize("head, optimizer", (("softmax", "sgd"), ("cost", "adam")))
def test_network_on_emulated_cuda(monkeypatch, emulated_cuda, head, optimizer):
    # A whole network with device="cuda": the connected layer (the gemm, BN
    # and activation kernels), softmax and the losses on the emulated GPU,
    # against the same network on the CPU.  NumPy arrays stand in for CuPy's,
    # so the losses' choice of backend by array type is pointed at the device
    # whose network runs.
    from gru_cy import GRU, backends
    from gru_cy.nn import Connected, Cost, Network, Softmax
    by_device = {"cpu": backends.get("cpu"), "cuda": emulated_cuda.backend()}

    def on(device):
        monkeypatch.setattr(backends, "of", lambda a: by_device[device])

    T, B, C = 4, 3, 5
    nets = {}
    for device in by_device:
        on(device)
        kw = dict(optimizer=optimizer, dtype=np.float64, device=device)
        layers = [GRU(C, 6, batch_normalize=True, seed=1, **kw),
                  Connected(6, C, activation="leaky", batch_normalize=True, seed=2, **kw),
                  Softmax(C) if head == "softmax" else Cost(C, scale=0.5)]
        nets[device] = Network(layers, C, batch=B, time_steps=T, learning_rate=0.1)
    assert nets["cuda"].layers[1].device == "cuda"
    rng = np.random.default_rng(4)
    close = tol(np.float64, "engine")
    for it in range(3):
        x = rng.standard_normal((T, B, C))
        targets = rng.integers(0, C, (T, B)) if head == "softmax" else rng.random((T, B, C))
        losses = {}
        for device, net in nets.items():
            on(device)
            losses[device] = net.train_step(x, targets)
        assert_allclose(losses["cuda"], losses["cpu"], **close)
    for lc, lg in zip(nets["cpu"].layers, nets["cuda"].layers):
        for key, p in getattr(lc, "params", {}).items():
            assert_allclose(lg.params[key], p, **close, err_msg=key)
    on("cuda")
    y = nets["cuda"].predict(x)
    on("cpu")
    assert_allclose(y, nets["cpu"].predict(x), **close)


@pytest.mark.slow
@pytest.mark.skipif(cpu_kernel is None, reason="the Cython engine is not built")
@pytest.mark.parametrize("bn", (False, True), ids=("nobn", "bn"))
@pytest.mark.parametrize("variant", ("darknet", "reset_after"))
def test_lengths_and_reverse_on_emulated_cuda(emulated_cuda, variant, bn):
    # A padded batch of unequal lengths through both directions of a
    # bidirectional stack on the emulated GPU (seq_gather, the segments, the
    # CUDA engine's take_cache / put_cache), against the same stack on the CPU.
    from gru_cy import StackedGRU
    T, B, I, H = 5, 4, 3, 4
    models = {dev: StackedGRU(I, H, num_layers=2, bidirectional=True, variant=variant,
                              batch_normalize=bn, dtype=np.float64, seed=3, device=dev)
              for dev in ("cpu", "cuda")}
    assert models["cuda"].device == "cuda"
    rng = np.random.default_rng(2)
    L = np.array([5, 2, 4, 5] if bn else [3, 1, 5, 2])
    x = rng.uniform(-1, 1, (T, B, I))
    dy = rng.uniform(-1, 1, (T, B, 2 * H))
    ds = rng.uniform(-1, 1, (4, B, H))
    close = tol(np.float64, "engine")
    out = {}
    for dev, m in models.items():
        y = m.forward(x, train=True, lengths=L)
        dx = m.backward(dy, ds)
        out[dev] = [y, dx, m.dh0, m.state] + [m.grads[k] for k in sorted(m.grads)]
        out[dev].append(m.forward(x, lengths=L))
    for a, b in zip(out["cpu"], out["cuda"]):
        assert_allclose(b, a, **close)
