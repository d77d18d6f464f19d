"""PyTorch ``nn.GRU`` state dicts in and out (SPEC section 4).

``nn.GRU`` is the "reset_after" variant with a tanh candidate and no batch
normalisation.  Its gate blocks are ordered r, z, n::

    weight_ih_l0 (3H, I) = [ur.weights; uz.weights; uh.weights]
    weight_hh_l0 (3H, H) = [wr.weights; wz.weights; wh.weights]
    bias_ih_l0   (3H,)   = [ur.biases;  uz.biases;  uh.biases]
    bias_hh_l0   (3H,)   = [wr.biases;  wz.biases;  wh.biases]

PyTorch's ``h' = (1 - z) * n + z * h`` is this package's update, and its
``h0`` of shape ``(1, B, H)`` is our ``(B, H)``.  Tensors are accepted without
importing torch: anything with ``detach()`` is read through
``t.detach().cpu().numpy()``; NumPy arrays (and array-likes) are used as they
are.
"""

import numpy as np

__all__ = ["load_torch_state_dict", "torch_state_dict", "TORCH_KEYS"]

TORCH_KEYS = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
_GATES = ("r", "z", "h")          # PyTorch's block order r, z, n


def _check_layer(layer):
    if layer.variant != "reset_after":
        raise ValueError(f"layer.variant: expected 'reset_after' (PyTorch's nn.GRU "
                         f"applies the reset gate after the recurrent product), got "
                         f"{layer.variant!r}; the 'darknet' variant has no nn.GRU "
                         f"equivalent")
    if layer.activation != "tanh":
        raise ValueError(f"layer.activation: expected 'tanh' (nn.GRU's candidate), "
                         f"got {layer.activation!r}")
    if layer.batch_normalize:
        raise ValueError("layer.batch_normalize: expected False (nn.GRU has no batch "
                         "normalisation), got True")


def _to_numpy(value, key):
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    arr = np.asarray(value)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"state_dict[{key!r}]: expected a real array or tensor, "
                        f"got dtype {arr.dtype}")
    return arr


def _strip_prefix(keys):
    """The common ``module.`` prefix of nn.GRU keys (e.g. ``rnn.``), or ''."""
    for key in keys:
        for name in TORCH_KEYS:
            if key.endswith(name):
                return key[: len(key) - len(name)]
    return ""


def load_torch_state_dict(layer, state_dict):
    """Load ``torch.nn.GRU`` weights into a ``gru_cy.GRU`` (all or nothing).

    Parameters
    ----------
    layer : gru_cy.GRU
        ``variant="reset_after"``, ``activation="tanh"``, no BN, with
        ``inputs == I`` and ``outputs == H`` of the torch module.
    state_dict : mapping
        ``weight_ih_l0`` (3H, I), ``weight_hh_l0`` (3H, H) and, unless the
        module had ``bias=False``, ``bias_ih_l0``, ``bias_hh_l0`` (3H,);
        torch tensors or NumPy arrays.  A common key prefix such as ``"gru."``
        is accepted.  Missing biases load as zeros.

    Raises
    ------
    ValueError
        A layer that is not representable, keys of a multi-layer (``_l1``...),
        bidirectional (``_reverse``) or projected (``weight_hr``) module, any
        other unknown key, a missing weight, or a wrong shape.
    """
    _check_layer(layer)
    if not hasattr(state_dict, "keys"):
        raise TypeError(f"state_dict: expected a mapping, got {type(state_dict).__name__}")
    keys = list(state_dict.keys())
    for key in keys:
        if not isinstance(key, str):
            raise TypeError(f"state_dict: expected string keys, got {key!r} "
                            f"of type {type(key).__name__}")
    prefixes = {k[: len(k) - len(n)] for k in keys for n in TORCH_KEYS if k.endswith(n)}
    if len(prefixes) > 1:
        raise ValueError(f"state_dict: expected one nn.GRU's keys, got keys under several "
                         f"prefixes {sorted(prefixes)}; pass the sub-dict of one module")
    prefix = _strip_prefix(keys)
    H, I = layer.outputs, layer.inputs
    found = {}
    for key in keys:
        name = key[len(prefix):] if key.startswith(prefix) else key
        if "_reverse" in name:
            raise ValueError(f"state_dict: key {key!r} belongs to a bidirectional "
                             f"nn.GRU; gru_cy.GRU is one direction (load each "
                             f"direction into its own layer)")
        if name.startswith(("weight_hr", "weight_hr_l")):
            raise ValueError(f"state_dict: key {key!r} belongs to an nn.GRU with "
                             f"proj_size, which gru_cy does not support")
        if name not in TORCH_KEYS:
            if name.rsplit("_l", 1)[-1].isdigit():
                raise ValueError(f"state_dict: key {key!r} belongs to layer "
                                 f"{name.rsplit('_l', 1)[-1]} of a multi-layer "
                                 f"nn.GRU; gru_cy.GRU is one layer (load each layer "
                                 f"of the stack into its own GRU)")
            raise ValueError(f"state_dict: unknown key {key!r}; expected "
                             f"{', '.join(TORCH_KEYS)}")
        found[name] = _to_numpy(state_dict[key], key)
    for name in ("weight_ih_l0", "weight_hh_l0"):
        if name not in found:
            raise ValueError(f"state_dict: missing {name!r}; got keys {keys}")
    shapes = {"weight_ih_l0": (3 * H, I), "weight_hh_l0": (3 * H, H),
              "bias_ih_l0": (3 * H,), "bias_hh_l0": (3 * H,)}
    for name, arr in found.items():
        if arr.shape != shapes[name]:
            raise ValueError(f"state_dict[{name!r}]: expected shape {shapes[name]} "
                             f"for a layer with inputs={I}, outputs={H}, got {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"state_dict[{name!r}]: expected finite values, got NaN or "
                             f"inf at index {int(np.flatnonzero(~np.isfinite(arr))[0])}")
    new = {}
    for side, wkey, bkey in (("u", "weight_ih_l0", "bias_ih_l0"),
                             ("w", "weight_hh_l0", "bias_hh_l0")):
        W = found[wkey]
        b = found.get(bkey)
        for k, gate in enumerate(_GATES):
            new[f"{side}{gate}.weights"] = W[k * H:(k + 1) * H]
            new[f"{side}{gate}.biases"] = (np.zeros(H, W.dtype) if b is None
                                           else b[k * H:(k + 1) * H])
    for key, arr in new.items():
        layer.params[key] = np.ascontiguousarray(arr, dtype=layer.dtype)


def torch_state_dict(layer):
    """The layer's weights as an ``nn.GRU`` state dict of NumPy arrays.

    Parameters
    ----------
    layer : gru_cy.GRU
        ``variant="reset_after"``, ``activation="tanh"``, no BN.

    Returns
    -------
    dict
        ``weight_ih_l0`` (3H, I), ``weight_hh_l0`` (3H, H), ``bias_ih_l0``,
        ``bias_hh_l0`` (3H,), fresh host arrays of ``layer.dtype``; pass them
        through ``torch.from_numpy`` for ``module.load_state_dict``.
    """
    _check_layer(layer)

    def host(key):
        a = layer.params[key]
        return a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else np.asarray(a)

    out = {}
    for side, wkey, bkey in (("u", "weight_ih_l0", "bias_ih_l0"),
                             ("w", "weight_hh_l0", "bias_hh_l0")):
        out[wkey] = np.concatenate([host(f"{side}{g}.weights") for g in _GATES])
    for side, bkey in (("u", "bias_ih_l0"), ("w", "bias_hh_l0")):
        out[bkey] = np.concatenate([host(f"{side}{g}.biases") for g in _GATES])
    return {k: out[k] for k in TORCH_KEYS}


# ------------------------------------------------------- stacks (StackedGRU) --

def _host(a):
    return a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else np.asarray(a)


def _stacked_keys(model):
    """{torch key: (sublayer, side, kind)} of every layer and direction."""
    keys = {}
    for k, dirs in enumerate(model.layers):
        for d, layer in enumerate(dirs):
            sfx = f"_l{k}" + ("_reverse" if d else "")
            keys[f"weight_ih{sfx}"] = (layer, "u", "weights")
            keys[f"weight_hh{sfx}"] = (layer, "w", "weights")
            if model.bias:
                keys[f"bias_ih{sfx}"] = (layer, "u", "biases")
                keys[f"bias_hh{sfx}"] = (layer, "w", "biases")
    return keys


def _check_stacked(model):
    _check_layer(model.layers[0][0])


def load_stacked(model, state_dict):
    """Load a ``torch.nn.GRU`` state dict into a ``gru_cy.StackedGRU`` (all or nothing).

    Keys ``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``,
    ``bias_hh_l{k}`` and their ``_reverse`` twins, with an optional common
    prefix (``"gru."``); torch tensors or NumPy arrays.  A model with
    ``bias=False`` takes no bias keys.  Every weight must be present, of its
    shape, and finite.
    """
    _check_stacked(model)
    if not hasattr(state_dict, "keys"):
        raise TypeError(f"state_dict: expected a mapping, got {type(state_dict).__name__}")
    want = _stacked_keys(model)
    keys = list(state_dict.keys())
    for key in keys:
        if not isinstance(key, str):
            raise TypeError(f"state_dict: expected string keys, got {key!r}")
    prefixes = {k[: len(k) - len(n)] for k in keys for n in want if k.endswith(n)}
    if len(prefixes) > 1:
        raise ValueError(f"state_dict: expected one nn.GRU's keys, got keys under several "
                         f"prefixes {sorted(prefixes)}; pass the sub-dict of one module")
    prefix = prefixes.pop() if prefixes else ""
    H = model.outputs
    found = {}
    for key in keys:
        name = key[len(prefix):] if key.startswith(prefix) else key
        if name not in want:
            hint = (" (the model has bias=False)" if name.startswith("bias_")
                    and not model.bias else "")
            raise ValueError(f"state_dict: unexpected key {key!r}{hint}; expected "
                             f"{prefix}{{{', '.join(want)}}}")
        found[name] = _to_numpy(state_dict[key], key)
    missing = [k for k in want if k not in found]
    if missing:
        raise ValueError(f"state_dict: missing {', '.join(map(repr, missing))} for a "
                         f"StackedGRU of {model.num_layers} layer(s), "
                         f"bidirectional={model.bidirectional}, bias={model.bias}")
    new = []
    for name, (layer, side, kind) in want.items():
        arr = found[name]
        shape = ((3 * H, layer.inputs if side == "u" else H) if kind == "weights"
                 else (3 * H,))
        if arr.shape != shape:
            raise ValueError(f"state_dict[{name!r}]: expected shape {shape}, got {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"state_dict[{name!r}]: expected finite values, got NaN or inf")
        for g, gate in enumerate(_GATES):
            new.append((layer, f"{side}{gate}.{kind}", arr[g * H:(g + 1) * H]))
    for layer, key, arr in new:
        layer.params[key] = np.ascontiguousarray(arr, dtype=layer.dtype)


def stacked_state_dict(model):
    """A ``gru_cy.StackedGRU``'s weights as an ``nn.GRU`` state dict of NumPy arrays."""
    _check_stacked(model)
    out = {}
    for name, (layer, side, kind) in _stacked_keys(model).items():
        out[name] = np.concatenate([_host(layer.params[f"{side}{g}.{kind}"])
                                    for g in _GATES])
    return out


def stacked_from_torch(cls, module, kwargs):
    """``cls`` (StackedGRU) built from a ``torch.nn.GRU`` module's attributes and weights."""
    for attr in ("input_size", "hidden_size", "num_layers", "bidirectional", "batch_first",
                 "bias", "state_dict"):
        if not hasattr(module, attr):
            raise TypeError(f"module: expected a torch.nn.GRU (with {attr!r}), got "
                            f"{type(module).__name__}")
    if getattr(module, "mode", "GRU") != "GRU":
        raise ValueError(f"module: expected a GRU, got mode {module.mode!r}")
    if getattr(module, "proj_size", 0):
        raise ValueError("module.proj_size: gru_cy has no projections, got "
                         f"{module.proj_size}")
    sd = module.state_dict()
    first = next(iter(sd.values()))
    dtype = np.float64 if "float64" in str(getattr(first, "dtype", "")) else np.float32
    args = dict(num_layers=int(module.num_layers), bidirectional=bool(module.bidirectional),
                batch_first=bool(module.batch_first), bias=bool(module.bias),
                dropout=float(getattr(module, "dropout", 0.0)), variant="reset_after",
                activation="tanh", dtype=dtype)
    args.update(kwargs)
    device = args.pop("device", "cpu")
    model = cls(int(module.input_size), int(module.hidden_size), **args)
    model.load_torch_state_dict(sd)
    return model.to(device)


def as_tensors(state_dict, tensors):
    """``state_dict`` as it is, or (``tensors``) with every array a torch tensor:
    torch is imported here only, and a clear error says where it is missing."""
    if not tensors:
        return state_dict
    try:
        import torch
    except ImportError:
        raise ImportError("torch_state_dict(tensors=True): torch is not installed "
                          "(gru_cy never needs it; use tensors=False for NumPy arrays)") from None
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state_dict.items()}
