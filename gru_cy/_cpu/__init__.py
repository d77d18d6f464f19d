"""The Cython CPU engine.  ``CPU_KERNELS`` lists the kernels it implements."""
import importlib

_MODULES = ("gemm", "cell", "update", "net")


def _collect():
    names = {}
    for mod in _MODULES:
        try:
            m = importlib.import_module(f"gru_cy._cpu.{mod}")
        except ImportError:
            continue
        for attr in dir(m):
            if attr.startswith("py_"):
                names[attr[3:]] = getattr(m, attr)
    return names


_WRAPPERS = _collect()
CPU_KERNELS = tuple(sorted(_WRAPPERS))


def cpu_kernel(name):
    """The test-tier wrapper ``py_<name>`` of a CPU kernel (see gru_cy.kernels)."""
    try:
        return _WRAPPERS[name]
    except KeyError:
        raise ValueError(f"name: expected one of {CPU_KERNELS}, got {name!r}") from None
