"""One backend protocol, two implementations: the CPU (``cpu.py``: NumPy and the
Cython engine) and CUDA (``cuda.py``: CuPy and the kernels of ``src_kernels``).

Everything above this package (the GRU layer, the network pieces, the
optimisers) talks to a :class:`Backend` and never asks which one it has.  A
backend offers:

* ``name`` ("cpu" or "cuda") and ``xp``, its array module (numpy or cupy);
* ``Engine``, the GRU engine class (``gru_cy._cpu.engine.Engine`` or
  ``gru_cy.backends.cuda.Engine``; the contract is the CPU engine's docstring);
* ``max_threads()`` and ``lean_input(x, dtype, inputs)``;
* ``forward_pair`` / ``backward_pair``: two engines' calls at once, one thread
  each (the two directions of a layer; ``gru_cy._cpu.engine``), or None; and
  ``forward_limited_pair`` / ``backward_limited_pair``, the same for two
  limited training calls (a padded batch), or None;
* host copies: ``asarray(a)`` (any array-like, NumPy, CuPy or torch, as this
  backend's array, without a copy where none is needed), ``storage(n, dtype)``
  (zeros for a layer's flat parameter vector) and the module-level
  :func:`to_host`;
* the kernels of ``gru_cy.kernels`` on whole arrays, each in one place below
  (:class:`Backend`): gemm, bias, column sums, batch normalisation over rows,
  activations and their gradients, softmax and the losses, SGD and Adam.  A
  backend supplies only ``_run(name, args, nthreads)``, which launches kernel
  ``name`` with the contract's arguments (arrays, sizes, scalars).

Arrays given to the kernel methods are C-contiguous arrays of this backend, of
one float type; the callers have validated them (``gru_cy._validate``).
"""
from gru_cy.backends.base import Backend, is_cupy, to_host  # noqa: F401

DEVICES = ("cpu", "cuda")


def get(device):
    """The backend of ``device``: "cpu", or "cuda" (``RuntimeError`` saying why
    when CUDA cannot be used)."""
    if device == "cpu":
        from gru_cy.backends import cpu
        return cpu.backend()
    from gru_cy.backends import cuda
    return cuda.backend()


def of(a):
    """The backend that holds array ``a`` (CuPy: "cuda"; anything else: "cpu")."""
    return get("cuda" if is_cupy(a) else "cpu")
