"""Darknet networks in and out: ``.cfg`` text and ``.weights`` files (SPEC section 3).

Supported sections: ``[net]`` (or ``[network]``), ``[gru]``, ``[connected]``,
``[dropout]``, ``[softmax]`` and ``[cost]`` (``type=sse``).  Anything else is a
``ValueError`` naming the section and its line, and so is any option a section
does not implement (``OPTIONS`` lists them): gru_cy refuses what it would
otherwise read and ignore.

``[net]``'s learning-rate ``policy`` (constant, step, steps, exp, poly,
sigmoid) and its options ``burn_in``, ``power``, ``step``, ``scale``,
``steps``, ``scales``, ``gamma``, ``max_batches`` become the ``Network``'s
policy (``gru_cy.nn.schedule``: Darknet's ``get_current_rate``), applied by
every update without an explicit rate; ``[dropout]``'s ``probability`` makes
a :class:`~gru_cy.nn.Dropout` (seeded with the layer's seed).

Darknet's conventions, as in pjreddie's ``parser.c`` (commit f6afaab):

* ``[net]``: ``batch / subdivisions`` sequences per call (the GRU's ``B``),
  ``time_steps`` steps (``T``); the layers after a GRU see ``B*T`` rows.
* ``.weights``: int32 ``major, minor, revision``; then ``seen`` as uint64 when
  ``major*10 + minor >= 2`` and both are below 1000, else as int32.  Files
  with ``major`` or ``minor`` above 1000 store connected weights transposed
  (Darknet's test is ``> 1000``; at exactly 1000 ``seen`` is int32 and the
  weights are not transposed).  Then every layer's block, float32:
  ``[gru]`` holds its sublayers in the order wz, wr, wh, uz, ur, uh, each
  ``biases[H]``, ``weights[H*in]``, then with BN ``scales``, ``rolling_mean``,
  ``rolling_variance``; ``[connected]`` likewise for itself.
* AlexeyAB's fork writes header 0.2.5 and GRU sublayers in the order
  uz, ur, uh, wz, wr, wh (its ``input_*`` then ``state_*`` layers; the
  arithmetic is the same).  Such a file with ``[gru]`` layers is refused by
  default with a ``ValueError`` that says so; ``gru_order="alexeyab"``
  loads it explicitly (and a later save writes that order back).  Note that
  AlexeyAB's candidate activation is fixed at compile time (``USET``), not by
  ``tanh=`` in the cfg: set ``tanh=1`` if that build used tanh.

Every problem with a weights file (truncated, oversized, a negative rolling
variance, a non-finite value) is a ``ValueError`` naming the layer index and
type, the array, and the byte offset; nothing is assigned until the whole file
has been read and checked.  A save writes a temporary file in the target's
directory and renames it over the target, so a failed save leaves the old
file intact; :func:`save` writes a pair (cfg and weights) wholly or not at
all.  A saved file keeps an existing file's permissions (else the umask's)
and a symlink is written through to its target (``gru_cy._files``).
"""

import math
import os
import stat
import struct

import numpy as np

from . import _files
from .backends import to_host
from .layer import GRU
from .nn import ACTIVATIONS, Connected, Cost, Dropout, Network, Softmax
from .nn import schedule

__all__ = ["parse_cfg", "load_network", "network_from_cfg", "load_weights",
           "save_weights", "save_cfg", "save", "cfg_text"]

GRU_ORDERS = {
    "darknet": ("wz", "wr", "wh", "uz", "ur", "uh"),
    "alexeyab": ("uz", "ur", "uh", "wz", "wr", "wh"),
}
ALEXEYAB_HEADER = (0, 2, 5)
SUPPORTED = ("net", "network", "gru", "connected", "dropout", "softmax", "cost")


# --- cfg ---------------------------------------------------------------------

def parse_cfg(text):
    """Split Darknet cfg text into sections.

    Lines are read as Darknet's ``read_cfg`` does: every space, tab and
    carriage return is removed; empty lines and lines starting with ``#`` or
    ``;`` are skipped; ``[name]`` opens a section; other lines are
    ``key=value``.

    Parameters
    ----------
    text : str

    Returns
    -------
    list of dict
        One per section: ``{"type": str, "options": dict[str, str],
        "line": int}`` (1-based line of the section header).

    Raises
    ------
    ValueError
        An option outside any section, a line without ``=``, a malformed
        section header, or text without sections.
    """
    if not isinstance(text, str):
        raise TypeError(f"text: expected str, got {type(text).__name__}")
    sections = []
    for nu, raw in enumerate(text.splitlines(), start=1):
        line = "".join(ch for ch in raw if ch not in " \t\r\n\v\f")
        if not line or line[0] in "#;":
            continue
        if line[0] == "[":
            if not line.endswith("]") or len(line) < 3:
                raise ValueError(f"cfg line {nu}: expected a section header like "
                                 f"'[gru]', got {raw.strip()!r}")
            sections.append({"type": line[1:-1], "options": {}, "line": nu})
            continue
        if not sections:
            raise ValueError(f"cfg line {nu}: expected a section header before "
                             f"options, got {raw.strip()!r}")
        if "=" not in line:
            raise ValueError(f"cfg line {nu}: expected 'key=value', got {raw.strip()!r}")
        key, val = line.split("=", 1)
        sections[-1]["options"][key] = val
    if not sections:
        raise ValueError("cfg: expected a [net] section and layers, got no sections")
    return sections


MAX_CFG_TEXT = 1 << 20
"""The largest cfg file read (bytes): Darknet's are a few KiB."""


def _read_cfg(path):
    # The cfg's text, UTF-8; a ValueError naming the file and the line of
    # undecodable bytes, or a file too large to be a cfg.
    with open(path, "rb") as f:
        data = f.read(MAX_CFG_TEXT + 1)
    if len(data) > MAX_CFG_TEXT:
        raise ValueError(f"{path}: expected a cfg of at most {MAX_CFG_TEXT} bytes, "
                         f"got more")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise ValueError(f"{path}: cfg line {line}: expected UTF-8 text, got bytes "
                         f"{data[e.start:e.end]!r}") from None


# Checked ranges of cfg options: (low, high, low open, high open).
_RANGES = {
    "learning_rate": (0.0, math.inf, False, False), "momentum": (0.0, 1.0, False, False),
    "decay": (0.0, math.inf, False, False), "B1": (0.0, 1.0, False, True),
    "B2": (0.0, 1.0, False, True), "eps": (0.0, math.inf, True, False),
    "scale": (-math.inf, math.inf, False, False),
    "temperature": (0.0, math.inf, True, False), "probability": (0.0, 1.0, False, True),
}
_INT_MIN, _INT_MAX = -2 ** 31, 2 ** 31 - 1      # Darknet reads ints as C ints


def _opt(sec, key, default, kind, where):
    """Option ``key`` of a section converted with ``kind`` (int or float):
    ints within C's int, floats finite and within ``_RANGES``."""
    if key not in sec["options"]:
        return default
    return _convert(sec["options"][key], key, kind, f"{where}: option {key}")


def _convert(raw, key, kind, where):
    # one cfg value as _opt describes it; errors start with `where`
    try:
        if kind is int:
            try:
                value = int(raw)
            except ValueError:
                value = int(float(raw))
            if not _INT_MIN <= value <= _INT_MAX:
                raise ValueError(f"{where}: expected an integer in [{_INT_MIN}, "
                                 f"{_INT_MAX}], got {raw[:40]!r}")
            return value
        value = float(raw)
    except (ValueError, OverflowError) as e:
        if str(e).startswith(where):
            raise
        raise ValueError(f"{where}: expected {kind.__name__}, got {raw[:40]!r}") from None
    low, high, low_open, high_open = _RANGES.get(key, (-math.inf, math.inf, False, False))
    if (not math.isfinite(value) or value < low or value > high
            or (low_open and value == low) or (high_open and value == high)):
        raise ValueError(f"{where}: expected a finite number in "
                         f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}, "
                         f"got {raw[:40]!r}")
    return value


def _opt_list(sec, key, kind, where):
    """Option ``key`` as Darknet's comma-separated list (``steps``, ``scales``)."""
    if key not in sec["options"]:
        return ()
    raw = sec["options"][key]
    return tuple(_convert(piece, key, kind, f"{where}: option {key}, item {i}")
                 for i, piece in enumerate(raw.split(",")))


# The options each section implements (Darknet's names); any other is refused
# by name rather than read and ignored.
OPTIONS = {
    "net": ("batch", "subdivisions", "time_steps", "inputs", "height", "width", "channels",
            "h", "w", "c", "learning_rate", "momentum", "decay", "adam", "B1", "B2", "eps",
            "policy", "burn_in", "power", "step", "scale", "steps", "scales", "gamma",
            "max_batches"),
    "gru": ("output", "batch_normalize", "tanh"),
    "connected": ("output", "activation", "batch_normalize"),
    "dropout": ("probability",),
    "softmax": ("groups", "temperature", "spatial"),
    "cost": ("type", "scale"),
}
OPTIONS["network"] = OPTIONS["net"]
OPTIONS["soft"] = OPTIONS["softmax"]


def _only_known(sec, where):
    """ValueError naming the first option of ``sec`` that gru_cy does not implement."""
    known = OPTIONS.get(sec["type"])
    if known is None:
        return
    for key in sec["options"]:
        if key not in known:
            raise ValueError(f"{where}: option {key}: not supported by gru_cy (it would be "
                             f"ignored); expected one of {', '.join(known)}")


def _layer_from_section(kind, sec, n, where, optimizer, dtype, device, lseed,
                        num_threads):
    # The layer of one cfg section taking n inputs.
    _only_known(sec, where)
    if kind in ("gru",):
        H = _opt(sec, "output", 1, int, where)
        if H <= 0:
            raise ValueError(f"{where}: output: expected > 0, got {H}")
        bn = bool(_opt(sec, "batch_normalize", 0, int, where))
        tanh = bool(_opt(sec, "tanh", 0, int, where))
        return GRU(n, H, variant="darknet", activation="tanh" if tanh else "logistic",
                   batch_normalize=bn, optimizer=optimizer, dtype=dtype,
                   device=device, seed=lseed, num_threads=num_threads)
    elif kind == "connected":
        O = _opt(sec, "output", 1, int, where)
        if O <= 0:
            raise ValueError(f"{where}: output: expected > 0, got {O}")
        act = sec["options"].get("activation", "logistic")
        if act not in ACTIVATIONS:
            raise ValueError(f"{where}: activation: expected one of {ACTIVATIONS}, "
                             f"got {act!r}")
        bn = bool(_opt(sec, "batch_normalize", 0, int, where))
        return Connected(n, O, activation=act, batch_normalize=bn, optimizer=optimizer,
                         dtype=dtype, device=device, seed=lseed, num_threads=num_threads)
    elif kind == "dropout":
        return Dropout(n, probability=_opt(sec, "probability", 0.5, float, where),
                       seed=lseed)
    elif kind in ("softmax", "soft"):
        if _opt(sec, "spatial", 0, float, where):
            raise ValueError(f"{where}: option spatial: expected 0 (spatial softmax is not "
                             f"supported), got {sec['options']['spatial']!r}")
        groups = _opt(sec, "groups", 1, int, where)
        if groups <= 0 or n % groups:
            raise ValueError(f"{where}: groups: expected a positive divisor of "
                             f"{n}, got {groups}")
        return Softmax(n, groups=groups,
                       temperature=_opt(sec, "temperature", 1.0, float, where))
    elif kind == "cost":
        ctype = sec["options"].get("type", "sse")
        if ctype != "sse":
            raise ValueError(f"{where}: type: expected 'sse' (the only cost "
                             f"supported), got {ctype!r}")
        return Cost(n, scale=_opt(sec, "scale", 1.0, float, where))
    else:
        raise ValueError(f"{where}: unknown or unsupported section [{kind}]; "
                         f"supported: {', '.join(SUPPORTED)}")


def _policy(net_sec, where):
    """The learning-rate policy's arguments of ``Network`` from ``[net]`` (Darknet's
    ``parse_net_options`` defaults), checked by ``gru_cy.nn.schedule.check``."""
    d = schedule.DEFAULTS
    opts = net_sec["options"]
    args = dict(policy=opts.get("policy", d["policy"]),
                burn_in=_opt(net_sec, "burn_in", d["burn_in"], int, where),
                power=_opt(net_sec, "power", d["power"], float, where),
                step=_opt(net_sec, "step", d["step"], int, where),
                scale=_opt(net_sec, "scale", d["scale"], float, where),
                steps=_opt_list(net_sec, "steps", int, where),
                scales=_opt_list(net_sec, "scales", float, where),
                gamma=_opt(net_sec, "gamma", d["gamma"], float, where),
                max_batches=_opt(net_sec, "max_batches", d["max_batches"], int, where))
    try:
        return schedule.check(**args)
    except ValueError as e:
        raise ValueError(f"{where}: option {e}") from None


def network_from_cfg(sections, dtype=np.float32, device="cpu", seed=None,
                     num_threads=None):
    """Build a :class:`~gru_cy.nn.Network` from parsed cfg sections.

    Parameters
    ----------
    sections : list of dict
        The result of :func:`parse_cfg`.
    dtype : float32 or float64
    device : {"cpu", "cuda"}
    seed : int or None
        Initialisation seed (layer ``i`` uses ``seed + i``); weights files
        overwrite it.
    num_threads : int or None

    Returns
    -------
    Network
    """
    net_sec = sections[0]
    if net_sec["type"] not in ("net", "network"):
        raise ValueError(f"cfg line {net_sec['line']}: expected the first section to "
                         f"be [net] or [network], got [{net_sec['type']}]")
    where = f"[{net_sec['type']}] (line {net_sec['line']})"
    _only_known(net_sec, where)
    batch = _opt(net_sec, "batch", 1, int, where)
    subdivisions = _opt(net_sec, "subdivisions", 1, int, where)
    time_steps = _opt(net_sec, "time_steps", 1, int, where)
    if subdivisions <= 0 or time_steps <= 0 or batch <= 0:
        raise ValueError(f"{where}: expected positive batch, subdivisions and "
                         f"time_steps, got {batch}, {subdivisions}, {time_steps}")
    B = batch // subdivisions
    if B <= 0:
        raise ValueError(f"{where}: batch / subdivisions must be at least 1, got "
                         f"batch={batch}, subdivisions={subdivisions}")
    inputs = _opt(net_sec, "inputs", 0, int, where)
    if inputs <= 0:
        hwc = 1
        for name, key in (("height", "h"), ("width", "w"), ("channels", "c")):
            # Darknet's names; h, w, c are gru_cy's older short spellings
            key = name if name in net_sec["options"] else key
            v = _opt(net_sec, key, 0, int, where)
            if v < 0:
                raise ValueError(f"{where}: option {key}: expected >= 0, got {v}")
            hwc *= v
        inputs = hwc
    if inputs <= 0:
        raise ValueError(f"{where}: expected inputs= (or h, w, c) > 0, got none")
    adam = _opt(net_sec, "adam", 0, int, where)
    optimizer = "adam" if adam else "sgd"
    policy = _policy(net_sec, where)
    layers, options = [], []
    n = inputs
    for i, sec in enumerate(sections[1:]):
        kind = sec["type"]
        where = f"layer {i} [{kind}] (cfg line {sec['line']})"
        lseed = None if seed is None else seed + i
        try:
            layer = _layer_from_section(kind, sec, n, where, optimizer, dtype, device,
                                        lseed, num_threads)
        except ValueError as e:
            if str(e).startswith(where):
                raise
            raise ValueError(f"{where}: option output: {e}") from None
        layers.append(layer)
        options.append(dict(sec["options"]))
        n = layer.outputs
    if not layers:
        raise ValueError("cfg: expected at least one layer after [net], got none")
    net = Network(layers, inputs, batch=B, subdivisions=subdivisions,
                  time_steps=time_steps,
                  learning_rate=_opt(net_sec, "learning_rate", 0.001, float, where),
                  momentum=_opt(net_sec, "momentum", 0.9, float, where),
                  decay=_opt(net_sec, "decay", 0.0001, float, where),
                  optimizer=optimizer,
                  b1=_opt(net_sec, "B1", 0.9, float, where),
                  b2=_opt(net_sec, "B2", 0.999, float, where),
                  eps=_opt(net_sec, "eps", 1e-7, float, where), **policy)
    net.options = dict(net_sec["options"])
    net.section_name = net_sec["type"]
    net.layer_options = options
    return net


def load_network(cfg_path, weights_path=None, dtype=np.float32, device="cpu",
                 gru_order=None, seed=None, num_threads=None):
    """Load a Darknet network: cfg, then optionally its weights.

    Parameters
    ----------
    cfg_path : str or os.PathLike
    weights_path : str or os.PathLike or None
        Without weights the layers keep Darknet's random initialisation.
    dtype : float32 or float64
        Precision of the engine (files are float32).
    device : {"cpu", "cuda"}
    gru_order : {None, "darknet", "alexeyab"}
        Order of the GRU sublayers in the file.  None: pjreddie's order, and a
        ``ValueError`` for an AlexeyAB file (header 0.2.5) with GRU layers.
    seed : int or None
        Initialisation seed when no weights are given.
    num_threads : int or None

    Returns
    -------
    Network
    """
    text = _read_cfg(cfg_path)
    try:
        net = network_from_cfg(parse_cfg(text), dtype=dtype, device=device, seed=seed,
                               num_threads=num_threads)
    except ValueError as e:
        raise ValueError(f"{cfg_path}: {e}") from None
    if weights_path is not None:
        load_weights(net, weights_path, gru_order=gru_order)
    return net


# --- weights -----------------------------------------------------------------

def _header_rules(major, minor):
    seen64 = (major * 10 + minor) >= 2 and major < 1000 and minor < 1000
    transpose = major > 1000 or minor > 1000
    return seen64, transpose


def _layer_blocks(net, order):
    """For each layer with weights: (index, type, [(prefix, O, I, bn)])."""
    out = []
    for i, layer in enumerate(net.layers):
        if isinstance(layer, GRU):
            H, I = layer.outputs, layer.inputs
            subs = [(f"{s}.", H, I if s[0] == "u" else H, layer.batch_normalize)
                    for s in order]
            out.append((i, "gru", layer, subs))
        elif isinstance(layer, Connected):
            out.append((i, "connected", layer,
                        [("", layer.outputs, layer.inputs, layer.batch_normalize)]))
    return out


def _arrays(prefix, O, I, bn):
    """(param key, count) in file order for one connected (sub)layer."""
    names = [(prefix + "biases", O), (prefix + "weights", O * I)]
    if bn:
        names += [(prefix + "scales", O), (prefix + "rolling_mean", O),
                  (prefix + "rolling_variance", O)]
    return names


def _resolve_order(header, has_gru, gru_order, path):
    if gru_order is not None:
        if gru_order not in GRU_ORDERS:
            raise ValueError(f"gru_order: expected None, 'darknet' or 'alexeyab', "
                             f"got {gru_order!r}")
        return gru_order
    if has_gru and tuple(header) == ALEXEYAB_HEADER:
        raise ValueError(
            f"{path}: header {header[0]}.{header[1]}.{header[2]} is AlexeyAB's "
            f"Darknet fork, which stores GRU sublayers as uz, ur, uh, wz, wr, wh "
            f"(pjreddie's Darknet: wz, wr, wh, uz, ur, uh); loading it in the wrong "
            f"order would silently scramble the weights.  Pass gru_order='alexeyab' "
            f"to load it in AlexeyAB's order (its candidate activation is a compile-"
            f"time choice: check tanh= in the cfg), or gru_order='darknet' if the "
            f"file is known to use pjreddie's order")
    return "darknet"


def _read_weights(f, net, path, gru_order):
    # The file's bytes, never more than the cfg implies plus one: a file
    # larger than that (or endless, as /dev/zero) is refused before it is
    # read.  The header says how wide `seen` is; the sizes then come from
    # the network.
    head = f.read(20)
    if len(head) < 16:
        return head
    major, minor, revision = struct.unpack_from("<3i", head, 0)
    seen64, _ = _header_rules(major, minor)
    blocks = _layer_blocks(net, GRU_ORDERS["darknet"])
    total = (20 if seen64 else 16) + 4 * sum(count for _, _, _, subs in blocks
                                            for sub in subs for _, count in _arrays(*sub))
    try:
        st = os.fstat(f.fileno())
        regular = stat.S_ISREG(st.st_mode)
    except (OSError, AttributeError, ValueError):
        regular = False
    last = f"layer {blocks[-1][0]} [{blocks[-1][1]}]" if blocks else "the header"
    if regular and st.st_size > total:
        raise ValueError(f"{path}: oversized: {st.st_size - total} bytes left after {last} "
                         f"at byte offset {total}; the cfg implies {total} bytes, the "
                         f"file has {st.st_size}: the cfg does not match these weights")
    data = head + f.read(max(0, total + 1 - len(head)))
    if len(data) > total:
        raise ValueError(f"{path}: oversized: bytes left after {last} at byte offset "
                         f"{total} (a file that does not end there, read no further); the "
                         f"cfg does not match these weights")
    return data


def load_weights(net, path, gru_order=None):
    """Read a Darknet ``.weights`` file into ``net`` (all or nothing).

    Parameters
    ----------
    net : Network
        Built from the matching cfg.
    path : str or os.PathLike
    gru_order : {None, "darknet", "alexeyab"}
        See :func:`load_network`.

    Raises
    ------
    ValueError
        Truncated or oversized file, AlexeyAB GRU order without
        ``gru_order``, negative rolling variance or non-finite values: the
        message names the layer, the array and the byte offset.
    """
    with open(path, "rb") as f:
        data = _read_weights(f, net, path, gru_order)
    size = len(data)
    if size < 16:
        raise ValueError(f"{path}: truncated header: expected at least 16 bytes "
                         f"(major, minor, revision, seen), got {size}")
    major, minor, revision = struct.unpack_from("<3i", data, 0)
    seen64, transpose = _header_rules(major, minor)
    if seen64:
        if size < 20:
            raise ValueError(f"{path}: truncated header: version {major}.{minor} "
                             f"stores seen as uint64 (20 bytes of header), got {size} bytes")
        (seen,) = struct.unpack_from("<Q", data, 12)
        off = 20
    else:
        (seen,) = struct.unpack_from("<i", data, 12)
        off = 16
    blocks = _layer_blocks(net, GRU_ORDERS["darknet"])
    order = _resolve_order((major, minor, revision), any(b[1] == "gru" for b in blocks),
                           gru_order, path)
    blocks = _layer_blocks(net, GRU_ORDERS[order])
    total = off + 4 * sum(count for _, _, _, subs in blocks for sub in subs
                          for _, count in _arrays(*sub))
    mismatch = (f"the cfg implies {total} bytes, the file has {size}: the cfg does "
                f"not match these weights")
    staged = []
    for i, kind, layer, subs in blocks:
        for prefix, O, I, bn in subs:
            for key, count in _arrays(prefix, O, I, bn):
                nbytes = 4 * count
                if off + nbytes > size:
                    raise ValueError(
                        f"{path}: truncated at layer {i} [{kind}] {key}: needs {nbytes} "
                        f"bytes at byte offset {off}, only {size - off} remain; "
                        f"{mismatch}")
                a = np.frombuffer(data, dtype="<f4", count=count, offset=off)
                if not np.all(np.isfinite(a)):
                    bad = int(np.flatnonzero(~np.isfinite(a))[0])
                    raise ValueError(f"{path}: layer {i} [{kind}] {key}: non-finite "
                                     f"value at byte offset {off + 4 * bad}")
                if key.endswith("rolling_variance") and np.any(a < 0):
                    bad = int(np.flatnonzero(a < 0)[0])
                    raise ValueError(f"{path}: layer {i} [{kind}] {key}: negative "
                                     f"variance {a[bad]} at byte offset {off + 4 * bad}; "
                                     f"the file is inconsistent with the cfg")
                if key.endswith("weights"):
                    a = a.reshape(I, O).T if transpose else a.reshape(O, I)
                staged.append((layer, key, a))
                off += nbytes
    if off != size:
        last = f"layer {blocks[-1][0]} [{blocks[-1][1]}]" if blocks else "the header"
        raise ValueError(f"{path}: oversized: {size - off} bytes left after {last} "
                         f"at byte offset {off}; {mismatch}")
    for layer, key, a in staged:
        layer.params[key] = np.array(a, dtype=np.float32)
    net.seen = int(seen)
    net.header = (major, minor, revision)
    net.gru_order = order


def _darknet_variant_only(net, what):
    """ValueError naming the first GRU layer whose variant Darknet has not."""
    for i, layer in enumerate(net.layers):
        if isinstance(layer, GRU) and layer.variant != "darknet":
            raise ValueError(f"layer {i} [gru]: variant {layer.variant!r} cannot be "
                             f"{what} (Darknet has the 'darknet' variant only)")
        if isinstance(layer, GRU) and layer.reverse:
            raise ValueError(f"layer {i} [gru]: a reverse GRU cannot be {what} (Darknet's "
                             f"[gru] reads forward only)")
        if not isinstance(layer, GRU) and hasattr(layer, "layers"):
            raise ValueError(f"layer {i} ({type(layer).__name__}): cannot be {what} "
                             f"(Darknet has no stacked or bidirectional GRU layer)")


def weights_bytes(net):
    """The Darknet ``.weights`` content of ``net`` as bytes (see :func:`save_weights`)."""
    _darknet_variant_only(net, "saved in Darknet format")
    major, minor, revision = (int(v) for v in net.header)
    seen64, transpose = _header_rules(major, minor)
    seen = int(net.seen)
    parts = [struct.pack("<3i", major, minor, revision)]
    if seen64:
        if not 0 <= seen < 2 ** 64:
            raise ValueError(f"seen: expected 0 <= seen < 2**64, got {seen}")
        parts.append(struct.pack("<Q", seen))
    else:
        if not -2 ** 31 <= seen < 2 ** 31:
            raise ValueError(f"seen: header {major}.{minor} stores seen as int32, "
                             f"got {seen}")
        parts.append(struct.pack("<i", seen))
    for i, kind, layer, subs in _layer_blocks(net, GRU_ORDERS[net.gru_order]):
        for prefix, O, I, bn in subs:
            for key, _ in _arrays(prefix, O, I, bn):
                a = to_host(layer.params[key]).astype("<f4")
                if key.endswith("weights") and transpose:
                    a = a.T
                parts.append(np.ascontiguousarray(a).tobytes())
    return b"".join(parts)


def save_weights(net, path):
    """Write ``net`` as a Darknet ``.weights`` file, atomically.

    The header is the one the network was loaded with (pjreddie's 0.2.0 for
    a new network), ``seen`` in the width it implies, then each layer's block
    in SPEC section 3's order.  Loading a file and saving it gives identical
    bytes.

    Parameters
    ----------
    net : Network
    path : str or os.PathLike

    Raises
    ------
    ValueError
        A ``reset_after`` GRU (not representable in Darknet), or ``seen`` out
        of the header's range.  The target file is untouched then, and on any
        I/O error.
    """
    _files.write_atomic(path, weights_bytes(net))


# --- cfg out -----------------------------------------------------------------

def _fmt(v):
    if isinstance(v, bool):
        return str(int(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return repr(float(v))


def _same_value(raw, value):
    try:
        return float(raw) == float(value)
    except ValueError:
        return raw == str(value)


def _section(name, original, values):
    """Lines of one section: original options in order, known ones updated."""
    opts = dict(original)
    for key, val in values.items():
        if val is None:
            opts.pop(key, None)
        elif key not in opts or not _same_value(opts[key], val):
            opts[key] = val if isinstance(val, str) else _fmt(val)
    return [f"[{name}]"] + [f"{k}={v}" for k, v in opts.items()] + [""]


def _policy_values(net):
    # [net]'s policy options: those the cfg had, and those that differ from
    # Darknet's defaults (lists as Darknet's comma lists, the cfg's spelling
    # kept where the values are the same)
    options = getattr(net, "options", {})
    d = schedule.DEFAULTS
    out = {}
    for key in ("policy", "burn_in", "power", "step", "scale", "gamma", "max_batches"):
        val = getattr(net, key)
        if val != d[key] or key in options:
            out[key] = val
    for key, kind in (("steps", int), ("scales", float)):
        val = tuple(getattr(net, key))
        if not val and key not in options:
            continue
        try:
            same = _opt_list({"options": options}, key, kind, "") == val
        except ValueError:
            same = False
        out[key] = options[key] if same else ",".join(_fmt(kind(v)) for v in val)
    return out


def cfg_text(net):
    """Darknet cfg text describing ``net`` (see :func:`save_cfg`)."""
    _darknet_variant_only(net, "written to a Darknet cfg")
    adam = any(getattr(layer, "optimizer", "sgd") == "adam" for layer in net.layers)
    net_values = {
        "batch": net.batch * net.subdivisions,
        "subdivisions": net.subdivisions,
        "time_steps": net.time_steps,
        "inputs": net.inputs,
        "learning_rate": net.learning_rate,
        "momentum": net.momentum,
        "decay": net.decay,
        "adam": 1 if adam else None,
    }
    if adam:
        for key, val, default in (("B1", net.b1, 0.9), ("B2", net.b2, 0.999),
                                  ("eps", net.eps, 1e-7)):
            if val != default or key in getattr(net, "options", {}):
                net_values[key] = val
    net_values.update(_policy_values(net))
    lines = _section(getattr(net, "section_name", "net"), getattr(net, "options", {}),
                     net_values)
    originals = getattr(net, "layer_options", None) or [{} for _ in net.layers]
    for layer, orig in zip(net.layers, originals):
        if isinstance(layer, GRU):
            lines += _section("gru", orig, {
                "output": layer.outputs,
                "batch_normalize": 1 if layer.batch_normalize else None,
                "tanh": 1 if layer.activation == "tanh" else None})
        elif isinstance(layer, Connected):
            lines += _section("connected", orig, {
                "output": layer.outputs, "activation": layer.activation,
                "batch_normalize": 1 if layer.batch_normalize else None})
        elif isinstance(layer, Dropout):
            lines += _section("dropout", orig, {
                "probability": layer.probability
                if layer.probability != 0.5 or "probability" in orig else None})
        elif isinstance(layer, Softmax):
            lines += _section("softmax", orig, {
                "groups": layer.groups if layer.groups != 1 else None,
                "temperature": layer.temperature if layer.temperature != 1 else None})
        elif isinstance(layer, Cost):
            lines += _section("cost", orig, {
                "type": layer.cost_type,
                "scale": layer.scale if layer.scale != 1 else None})
        else:
            raise ValueError(f"net.layers: {type(layer).__name__} has no Darknet section")
    return "\n".join(lines)


def save_cfg(net, path):
    """Write ``net`` as a Darknet ``.cfg``, atomically.

    Options read from a cfg are kept in their order; the values this package
    knows (sizes, activation, BN, ``tanh``, hyper-parameters, the learning-rate
    policy, dropout probabilities) are written from the network.  ``tanh=1``
    marks a tanh candidate.

    Parameters
    ----------
    net : Network
    path : str or os.PathLike
    """
    _files.write_atomic(path, cfg_text(net))


def save(net, cfg_path, weights_path):
    """Write ``net`` as a Darknet pair, both files or neither: the old pair
    stays whole when anything fails (``gru_cy._files.write_group``)."""
    _files.write_group([(cfg_path, cfg_text(net)), (weights_path, weights_bytes(net))])
