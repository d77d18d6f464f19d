"""The engine's gemm (``gru_cy._cpu.gemm.gemm_py``) on the shapes a GRU layer uses.

Operations, for a config (B, T, I, H) and ``N = T*B`` rows (beta = 0 throughout):

========  =====================================  ========================
``op``    product                                 where the layer uses it
========  =====================================  ========================
xproj     ``(N, 3H) = X (N, I) @ U (3H, I).T``    hoisted input projections
recur     ``(B, 3H) = h (B, H) @ W (3H, H).T``    the per-step recurrent gemm
wgrad     ``(3H, I) = dA (N, 3H).T @ X (N, I)``   weight gradients over all steps
dgrad     ``(N, I) = dA (N, 3H) @ U (3H, I)``     ``dx`` over all steps
========  =====================================  ========================

``impl`` is the engine's own gemm ("native"), SciPy's BLAS through the same
wrapper ("blas"), or NumPy's matmul ("numpy", OpenBLAS) as the yardstick.
"""
import numpy as np

from . import CONFIGS, DTYPES, FAST_CONFIGS, SEED

OPS = ["xproj", "recur", "wgrad", "dgrad"]
IMPLS = ["native", "blas", "numpy"]


def gemm_operands(config, op, dtype):
    """(C, A, B, transA, transB) of one operation, from a fixed seed."""
    Bn, T, I, H = CONFIGS[config]
    N = T * Bn
    rng = np.random.default_rng(SEED)

    def mat(rows, cols):
        return rng.standard_normal((rows, cols)).astype(dtype)

    if op == "xproj":
        return np.zeros((N, 3 * H), dtype), mat(N, I), mat(3 * H, I), False, True
    if op == "recur":
        return np.zeros((Bn, 3 * H), dtype), mat(Bn, H), mat(3 * H, H), False, True
    if op == "wgrad":
        return np.zeros((3 * H, I), dtype), mat(N, 3 * H), mat(N, I), True, False
    return np.zeros((N, I), dtype), mat(N, 3 * H), mat(3 * H, I), False, False


class _GemmBench:
    def _setup(self, config, op, dtype, impl):
        from gru_cy._cpu import gemm
        try:
            from gru_cy._cpu.team import max_threads
        except ImportError:  # commits before the engine was split by concern
            from gru_cy._cpu.gru import max_threads

        self.C, self.A, self.B, self.ta, self.tb = gemm_operands(config, op, dtype)
        self.impl = impl
        self.gemm = gemm.gemm_py
        self.nthreads = max_threads()
        self.opA = self.A.T if self.ta else self.A
        self.opB = self.B.T if self.tb else self.B

    def _run(self):
        if self.impl == "numpy":
            np.matmul(self.opA, self.opB, out=self.C)
        else:
            self.gemm(self.C, self.A, self.B, self.ta, self.tb, 1.0, 0.0,
                      self.nthreads, self.impl == "blas")


class Gemm(_GemmBench):
    """Time of one product, configs A, B, D."""

    params = [FAST_CONFIGS, OPS, DTYPES, IMPLS]
    param_names = ["config", "op", "dtype", "impl"]

    def setup(self, config, op, dtype, impl):
        self._setup(config, op, dtype, impl)

    def time_gemm(self, config, op, dtype, impl):
        self._run()


class GemmMemory(_GemmBench):
    """Peak memory of the native gemm (packing buffers show here), float32."""

    params = [FAST_CONFIGS, OPS]
    param_names = ["config", "op"]

    def setup(self, config, op):
        self._setup(config, op, "float32", "native")

    def peakmem_gemm(self, config, op):
        self._run()


class GemmSlowTierC(_GemmBench):
    """Config C's products, float32 only."""

    params = [OPS, IMPLS]
    param_names = ["op", "impl"]
    repeat = (1, 3, 60.0)
    warmup_time = 0
    timeout = 600

    def setup(self, op, impl):
        self._setup("C", op, "float32", impl)

    def time_gemm(self, op, impl):
        self._run()

    def peakmem_gemm(self, op, impl):
        self._run()
