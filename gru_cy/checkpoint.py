"""Whole-model checkpoints: ``model.save(path)`` and ``gru_cy.load(path)``.

Format (readable without gru_cy): a NumPy ``.npz`` archive (``numpy.load``,
``allow_pickle=False``) whose entry ``__header__`` is UTF-8 JSON (a uint8
array) and whose other entries are the arrays the header names.  The header::

    {"format": "gru_cy-checkpoint", "version": 1, "gru_cy": "<package version>",
     "model": <node>}

A node is ``{"kind": "GRU" | "Connected" | "Dropout" | "Softmax" | "Cost" |
"StackedGRU" | "Network", "args": {constructor arguments}, ...}``; a layer with parameters
adds ``"prefix"`` (its arrays are ``<prefix>theta``, ``grad``, ``rolling``,
``optim.<u|m|v>``, ``state``), ``"rows"`` (rows since the last update) and
``"optim_t"`` (Adam's step); a ``StackedGRU`` adds ``"layers"`` (its GRUs,
layer-major, forward direction first) and ``"rng"`` (its dropout generator's
state); a ``Dropout`` adds ``"rng"`` (its mask generator's state); a
``Network``'s args hold its learning-rate policy (``policy``, ``burn_in``,
``power``, ``step``, ``scale``, ``steps``, ``scales``, ``gamma``,
``max_batches``) and it adds ``"layers"``, ``"seen"``, ``"rows"``, ``"calls"``.
``theta`` is the flat parameter vector of ``gru_cy.kernels.param_layout``
(GRU) or weights|biases|scales (Connected).

The file is written atomically (``gru_cy._files``).  Loading checks the format
and version, every array's presence, dtype and size before it builds the
model: a file from another version or a damaged one is a ``ValueError``,
never a partial load.  Resuming from a checkpoint trains bit for bit as the
uninterrupted run would (optimiser state, row counts, rolling statistics,
carried states, dropout generators and accumulated gradients travel).
"""
import json
import zipfile

import numpy as np

from gru_cy._checkpoint_io import FORMAT, VERSION, save

__all__ = ["save", "load", "FORMAT", "VERSION"]


# -------------------------------------------------------------------- load ---

class _Arrays:
    """The archive's arrays, each checked when taken (dtype, size)."""

    def __init__(self, npz, path):
        self.npz, self.path = npz, path
        self.used = {"__header__"}

    def take(self, name, dtype, size, optional=False):
        if name not in self.npz.files:
            if optional:
                return None
            raise ValueError(f"{self.path}: damaged checkpoint: array {name!r} missing")
        a = self.npz[name]
        if a.dtype != dtype or a.size != size:
            raise ValueError(f"{self.path}: damaged checkpoint: array {name!r} is "
                             f"{a.dtype} x {a.size}, expected {np.dtype(dtype)} x {size}")
        self.used.add(name)
        return a


def _count(node, key, path):
    # a non-negative integer counter of the header
    v = node[key]
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"{path}: damaged checkpoint: {key} = {v!r}, expected an integer "
                         f">= 0")
    return v


def _restore_trainable(layer, node, arrays):
    p = node["prefix"]
    node = dict(node, optim_t=_count(node, "optim_t", arrays.path),
                rows=_count(node, "rows", arrays.path))
    n, dt = layer._theta.size, layer.dtype
    plan = [("_theta", arrays.take(p + "theta", dt, n)),
            ("_grad", arrays.take(p + "grad", dt, n))]
    rolling = None
    if layer._rolling is not None:
        rolling = arrays.take(p + "rolling", dt, layer._rolling.size)
    names = ("u",) if layer._optim.kind == "sgd" else ("m", "v")
    optim = {k: arrays.take(f"{p}optim.{k}", dt, n, optional=True) for k in names}
    if any(v is None for v in optim.values()) and any(v is not None for v in optim.values()):
        raise ValueError(f"{arrays.path}: damaged checkpoint: optimiser state of "
                         f"{p or 'the model'} incomplete")
    state = None
    if hasattr(layer, "_state"):
        st = arrays.npz.files
        if p + "state" in st:
            a = arrays.npz[p + "state"]
            state = arrays.take(p + "state", dt, a.size)
            if a.ndim != 2 or a.shape[1] != layer.outputs:
                raise ValueError(f"{arrays.path}: damaged checkpoint: state of {p} has "
                                 f"shape {a.shape}")
    return plan, rolling, optim, state, node


def _apply_trainable(layer, restored):
    plan, rolling, optim, state, node = restored
    be = layer._backend
    for name, a in plan:
        getattr(layer, name)[...] = be.asarray(a)
    if rolling is not None:
        layer._rolling[...] = be.asarray(rolling.reshape(layer._rolling.shape))
    if all(v is not None for v in optim.values()):
        layer._optim.state = {k: be.asarray(v.copy()) for k, v in optim.items()}
    layer._optim.t = int(node["optim_t"])
    layer._rows = int(node["rows"])
    if state is not None:
        layer._state = be.asarray(state.copy())
    layer._invalidate()


def _set_rng(model, state, path):
    # a dropout generator's state (a fresh model's: nothing else changes)
    try:
        model._rng.bit_generator.state = state
    except (ValueError, TypeError, KeyError) as e:
        raise ValueError(f"{path}: damaged checkpoint: dropout generator state "
                         f"({type(e).__name__}: {e})") from None


def _set_precision(layers, precision):
    # bfloat16 inference restored without the CPU check, which the forward
    # makes again: a checkpoint loads (and trains, exports) on any CPU
    from gru_cy.layer import _check_precision
    _check_precision(precision, layers[0].dtype, layers[0].batch_normalize, "cpu", cpu=False)
    for g in layers:
        g._precision = precision
        g._bf16 = None


def _build(node, arrays, device, pending):
    from gru_cy.layer import GRU
    from gru_cy.nn import Connected, Cost, Dropout, Network, Softmax
    from gru_cy.stacked import StackedGRU
    kind, args = node.get("kind"), dict(node.get("args", {}))
    if kind in ("GRU", "Connected", "StackedGRU"):
        args["dtype"] = np.dtype(args["dtype"])
    precision = args.pop("inference_precision", "float32")
    if kind == "GRU":
        layer = GRU(**args)
        _set_precision([layer], precision)
        pending.append((layer, _restore_trainable(layer, node, arrays)))
        return layer
    if kind == "Connected":
        layer = Connected(**args)
        pending.append((layer, _restore_trainable(layer, node, arrays)))
        return layer
    if kind == "Softmax":
        return Softmax(**args)
    if kind == "Cost":
        return Cost(**args)
    if kind == "Dropout":
        layer = Dropout(**args)
        _set_rng(layer, node["rng"], arrays.path)
        return layer
    if kind == "StackedGRU":
        model = StackedGRU(**args)
        subs = [g for dirs in model.layers for g in dirs]
        _set_precision(subs, precision)
        if len(node["layers"]) != len(subs):
            raise ValueError(f"{arrays.path}: damaged checkpoint: {len(node['layers'])} "
                             f"sublayers for a stack of {len(subs)}")
        for g, sub in zip(subs, node["layers"]):
            pending.append((g, _restore_trainable(g, sub, arrays)))
        _set_rng(model, node["rng"], arrays.path)
        return model
    if kind == "Network":
        layers = [_build(sub, arrays, device, pending) for sub in node["layers"]]
        net = Network(layers, **args)
        net._rows = _count(node, "rows", arrays.path)
        net._calls = _count(node, "calls", arrays.path)
        return net
    raise ValueError(f"{arrays.path}: damaged checkpoint: unknown model kind {kind!r}")


def load(path, device="cpu"):
    """The model of a checkpoint written by :func:`save` (on ``device``)."""
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise ValueError(f"{path}: not a gru_cy checkpoint ({type(e).__name__}: {e})") from None
    with npz:
        if "__header__" not in npz.files:
            raise ValueError(f"{path}: not a gru_cy checkpoint (no __header__ entry)")
        try:
            header = json.loads(npz["__header__"].tobytes().decode())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: damaged checkpoint header ({e})") from None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise ValueError(f"{path}: not a gru_cy checkpoint (format "
                             f"{header.get('format') if isinstance(header, dict) else None!r})")
        if header.get("version") != VERSION:
            raise ValueError(f"{path}: checkpoint version {header.get('version')!r} "
                             f"(written by gru_cy {header.get('gru_cy')}); this gru_cy "
                             f"reads version {VERSION}")
        arrays = _Arrays(npz, path)
        pending = []
        try:
            model = _build(header["model"], arrays, device, pending)
        except (KeyError, TypeError, AttributeError, IndexError) as e:
            raise ValueError(f"{path}: damaged checkpoint header ({type(e).__name__}: "
                             f"{e})") from None
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            # np.load reads members when they are taken: a bad CRC shows here
            raise ValueError(f"{path}: damaged checkpoint ({type(e).__name__}: {e})") from None
        except ValueError as e:
            # a constructor refusing the header's arguments
            if str(e).startswith(str(path)):
                raise
            raise ValueError(f"{path}: damaged checkpoint: {e}") from None
        extra = set(npz.files) - arrays.used
        if extra:
            raise ValueError(f"{path}: damaged checkpoint: arrays {sorted(extra)} belong "
                             f"to no layer")
        # everything read and checked: now assign
        for layer, restored in pending:
            _apply_trainable(layer, restored)
    if device != "cpu":
        model.to(device)
    return model
