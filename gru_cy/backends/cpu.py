"""The CPU backend: NumPy arrays and the Cython engine (``gru_cy._cpu``)."""
import numpy as np

from gru_cy.backends.base import Backend, to_host


class CpuBackend(Backend):
    """NumPy and the Cython kernels; see ``gru_cy.backends`` for the protocol."""

    name = "cpu"
    xp = np

    def __init__(self):
        from gru_cy._cpu import cpu_kernel, engine, team
        from gru_cy._cpu.gemm import aligned_empty
        self.Engine = engine.Engine
        self.forward_pair = engine.forward_pair
        self.backward_pair = engine.backward_pair
        self.forward_limited_pair = engine.forward_limited_pair
        self.backward_limited_pair = engine.backward_limited_pair
        self.lean_input = engine.lean_input
        self.max_threads = team.max_threads
        self._kernel = cpu_kernel
        self._aligned_empty = aligned_empty

    def _run(self, name, args, nthreads):
        # The test-tier wrappers take flat arrays: a C-contiguous array's
        # reshape(-1) is a view of the same memory (another array's would be
        # a copy, and the kernel's writes would be lost).
        flat = []
        for a in args:
            if isinstance(a, np.ndarray):
                if not a.flags.c_contiguous:
                    raise ValueError(f"{name}: expected C-contiguous arrays, got strides "
                                     f"{a.strides} for shape {a.shape}")
                a = a.reshape(-1)
            flat.append(a)
        self._kernel(name)(*flat, nthreads)

    def seq_gather(self, Y, X, rows, C, ldy, ldx, nthreads):
        """As ``Backend.seq_gather``, straight to the kernel's wrapper (flat
        arrays: no per-argument checks on this per-call path)."""
        self._kernel("seq_gather")(Y, X, rows, rows.size, C, ldy, ldx, nthreads)

    def asarray(self, a):
        """``a`` as a NumPy array (CuPy and torch arrays are copied to the host)."""
        return to_host(a)

    def storage(self, n, dtype):
        """Zeros, n elements, 64-byte aligned: a layer's flat parameter vector
        (whole-line vector loads of the weights in the engine's products)."""
        a = self._aligned_empty(n, dtype)
        a[...] = 0
        return a


_BACKEND = None


def backend():
    """The CPU backend (one per process)."""
    global _BACKEND
    if _BACKEND is None:
        _BACKEND = CpuBackend()
    return _BACKEND
