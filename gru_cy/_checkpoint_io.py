"""Writing checkpoints (the format: ``gru_cy.checkpoint``).  Low in the
layering: the model classes call :func:`save` and describe themselves with a
``_checkpoint_node(prefix, arrays, with_state)`` method; reading, which builds
models, lives in ``gru_cy.checkpoint``."""
import io
import json

import numpy as np

from gru_cy import _files

FORMAT = "gru_cy-checkpoint"
VERSION = 1


def _host(a):
    from gru_cy.backends.base import to_host
    return np.ascontiguousarray(to_host(a))


def trainable(layer, prefix, arrays, with_state):
    """The arrays and counters every layer with parameters saves."""
    node = {"prefix": prefix, "rows": int(layer._rows), "optim_t": int(layer._optim.t)}
    arrays[prefix + "theta"] = _host(layer._theta)
    arrays[prefix + "grad"] = _host(layer._grad)
    if layer._rolling is not None:
        arrays[prefix + "rolling"] = _host(layer._rolling)
    for k, v in layer._optim.state.items():
        arrays[f"{prefix}optim.{k}"] = _host(v)
    st = getattr(layer, "_state", None)
    if with_state and st is not None:
        arrays[prefix + "state"] = _host(st)
    return node


def gru_args(g):
    """A GRU's constructor arguments (``inference_precision`` only where it is
    not the default, so that float32 layers write what they always wrote)."""
    args = dict(inputs=g.inputs, outputs=g.outputs, variant=g.variant,
                activation=g.activation, batch_normalize=g.batch_normalize,
                optimizer=g.optimizer, dtype=g.dtype.name, num_threads=g.num_threads,
                gemm=g.gemm, reverse=g.reverse)
    if g.inference_precision != "float32":
        args["inference_precision"] = g.inference_precision
    return args


def node(obj, prefix, arrays, with_state):
    """The header node of ``obj`` (its ``_checkpoint_node``), its arrays added."""
    make = getattr(obj, "_checkpoint_node", None)
    if make is None:
        raise TypeError(f"model: expected a gru_cy GRU, StackedGRU, Connected, Dropout, "
                        f"Softmax, Cost or Network, got {type(obj).__name__}")
    return make(prefix, arrays, with_state)


class Saveable:
    """``save`` for the model classes (each describes itself with
    ``_checkpoint_node`` and holds ``self._lock``)."""

    def save(self, path, state=True):
        """Write a checkpoint (``gru_cy.checkpoint``: the architecture, parameters,
        gradients, rolling statistics, optimiser state, row counts and, with
        ``state``, the carried state), atomically; ``gru_cy.load`` reads it."""
        with self._lock:
            save(self, path, state)


def save(model, path, state=True):
    """Write ``model`` (and, with ``state``, its carried states) to ``path``."""
    from gru_cy._version import __version__
    arrays = {}
    header = {"format": FORMAT, "version": VERSION, "gru_cy": __version__,
              "model": node(model, "", arrays, bool(state))}
    buf = io.BytesIO()
    np.savez(buf, __header__=np.frombuffer(json.dumps(header).encode(), np.uint8),
             **arrays)
    _files.write_atomic(path, buf.getvalue())
