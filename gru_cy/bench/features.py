"""The operator features' rows of ``gru-cy bench`` (``--rows``): gru_cy timed
against a baseline of the same sizes, the two interleaved as the engines are.

- ``lengths``: ``gru_cy.GRU.forward(x, h0=h0, lengths=L)`` (inference) and a
  training step ``forward(train=True, lengths=L)``, ``backward(dy)``,
  ``zero_grad()`` against the same calls at full length; ``L`` uniform in
  1..T from a fixed seed (``draw_lengths``).  Checked first: the padded run's
  outputs are the full run's on each sequence's valid steps and 0 after.
- ``bidirectional``: ``gru_cy.StackedGRU(I, H, num_layers=1,
  bidirectional=True)`` against ``bidirectional=False`` on config A's sizes
  (inference, and the training step forward, backward, zero_grad); the
  one-direction model holds the bidirectional one's forward weights and its
  output is checked against the forward half.
- ``packed``: ``gru_cy.StackedGRU(I, H, num_layers=2, bidirectional=True,
  variant="reset_after")`` built by ``StackedGRU.from_torch`` from a seeded
  ``torch.nn.GRU(I, H, num_layers=2, bidirectional=True)``, ``forward(x,
  h0=0, lengths=L)`` against torch under ``torch.no_grad`` on
  ``pack_padded_sequence(x, L, enforce_sorted=False)``, its output unpacked
  by ``pad_packed_sequence(..., total_length=T)`` (padded batch in, padded
  batch out, as gru_cy); inference only, outputs checked within
  ``PACKED_TOLERANCE`` relative.  Left out, with the reason, without torch.

Every gru_cy call passes its initial state (the layers otherwise carry their
state from call to call).
"""
import numpy as np

from .configs import (BIDIRECTIONAL_CONFIG, CONFIGS, FEATURE_TARGETS, PACKED_LAYERS,
                      PACKED_TOLERANCE, SEED)
from .engines import GruCyEngine, _max_diff, _within, make_problem

FEATURE_ROWS = ("lengths", "bidirectional", "packed")
LABELS = {"lengths": ("lengths", "full"), "bidirectional": ("both", "one"),
          "packed": ("gru_cy", "torch")}
"""row -> (label of the timed subject, label of its baseline); the ratio is
subject time / baseline time."""


def draw_lengths(B, T, seed=SEED):
    """The feature rows' sequence lengths: (B,) int64, uniform in 1..T, seeded."""
    return np.random.default_rng(seed + 2).integers(1, T + 1, B, dtype=np.int64)


def _spec(row, config, variant, task, sizes, fns, diff, match, check, note=""):
    return {"row": row, "config": config, "variant": variant, "task": task,
            "sizes": sizes, "fns": fns, "max_abs_diff": diff, "match": match,
            "check": check, "note": note, "target": FEATURE_TARGETS.get((row, task))}


def _train_step(model, x, dy, h0, lengths=None):
    def step():
        model.forward(x, train=True, h0=h0, lengths=lengths)
        model.backward(dy)
        model.zero_grad()
    return step


# ---------------------------------------------------------------- lengths --
def lengths_specs(config, variant, dtype, threads, tasks):
    """The lengths row of one config: one spec per task."""
    params, x, dy, h0 = make_problem(config, dtype, variant)
    B, T, I, H = CONFIGS[config]
    layer = GruCyEngine(params, variant, dtype, threads).layer
    L = draw_lengths(B, T)
    full = layer.forward(x, h0=h0)
    got = layer.forward(x, h0=h0, lengths=L)
    valid = (np.arange(T)[:, None] < L[None, :])[:, :, None]
    want = np.where(valid, full, 0)
    diff = _max_diff(got, want)
    match = _within(diff, want, dtype)
    note = f"L in 1..{T}, mean {L.mean() / T:.2f} T"
    for task in tasks:
        if task == "inference":
            fns = {"lengths": lambda: layer.forward(x, h0=h0, lengths=L),
                   "full": lambda: layer.forward(x, h0=h0)}
        else:
            fns = {"lengths": _train_step(layer, x, dy, h0, L),
                   "full": _train_step(layer, x, dy, h0)}
        yield _spec("lengths", config, variant, task, (B, T, I, H), fns, diff, match,
                    "padded run = full run on valid steps, 0 after", note)


# ---------------------------------------------------------- bidirectional --
def bidirectional_specs(variant, dtype, threads, tasks):
    """The bidirectional row (config A's sizes): one spec per task."""
    import gru_cy

    config = BIDIRECTIONAL_CONFIG
    B, T, I, H = CONFIGS[config]
    _, x, _, _ = make_problem(config, dtype, variant)
    kw = dict(num_layers=1, variant=variant, dtype=dtype, num_threads=threads, seed=SEED)
    both = gru_cy.StackedGRU(I, H, bidirectional=True, **kw)
    one = gru_cy.StackedGRU(I, H, bidirectional=False, **kw)
    for key in one.params:
        one.params[key] = np.array(both.params[key])
    dy = np.random.default_rng(SEED + 3).standard_normal((T, B, 2 * H)).astype(dtype)
    dy1 = np.ascontiguousarray(dy[:, :, :H])
    h2 = np.zeros((2, B, H), dtype)
    h1 = np.zeros((1, B, H), dtype)
    ref = one.forward(x, h0=h1)
    diff = _max_diff(both.forward(x, h0=h2)[:, :, :H], ref)
    match = _within(diff, ref, dtype)
    note = f"num_threads {both._threads()}"
    for task in tasks:
        if task == "inference":
            fns = {"both": lambda: both.forward(x, h0=h2),
                   "one": lambda: one.forward(x, h0=h1)}
        else:
            fns = {"both": _train_step(both, x, dy, h2), "one": _train_step(one, x, dy1, h1)}
        yield _spec("bidirectional", config, variant, task, (B, T, I, H), fns, diff, match,
                    "forward half = one direction", note)


# ----------------------------------------------------------------- packed --
def packed_specs(config, dtype, threads, peer_threads):
    """The packed row of one config (inference); ImportError without torch."""
    import torch

    import gru_cy

    B, T, I, H = CONFIGS[config]
    torch.set_num_threads(peer_threads)
    torch.manual_seed(SEED)
    module = torch.nn.GRU(I, H, num_layers=PACKED_LAYERS, bidirectional=True)
    if dtype == np.float64:
        module = module.double()
    module.eval()
    model = gru_cy.StackedGRU.from_torch(module, num_threads=threads)
    _, x, _, _ = make_problem(config, dtype, "reset_after")
    L = draw_lengths(B, T)
    h0 = np.zeros((PACKED_LAYERS * 2, B, H), dtype)
    xt, Lt = torch.from_numpy(x), torch.from_numpy(L)
    pack, pad = torch.nn.utils.rnn.pack_padded_sequence, torch.nn.utils.rnn.pad_packed_sequence

    def run_torch():
        with torch.no_grad():
            out, _ = module(pack(xt, Lt, enforce_sorted=False))
            return pad(out, total_length=T)[0]

    def run_gru_cy():
        return model.forward(x, h0=h0, lengths=L)

    ref = run_torch().numpy()
    diff = _max_diff(run_gru_cy(), ref)
    scale = float(np.max(np.abs(ref)))
    match = diff <= PACKED_TOLERANCE * scale
    yield _spec("packed", config, model.variant, "inference", (B, T, I, H),
                {"gru_cy": run_gru_cy, "torch": run_torch}, diff, match,
                f"|diff| <= {PACKED_TOLERANCE:g} max|y_torch|",
                f"{PACKED_LAYERS} layers x 2 directions, L mean {L.mean() / T:.2f} T")


def specs(rows, configs, tasks, variants, dtype, threads, peer_threads, skipped):
    """The feature rows ``rows`` asks for, built one at a time (a spec's models
    live until the next is built).  Rows that cannot run are added to
    ``skipped`` with their reason."""
    configs = [c for c in configs if c in CONFIGS]
    for variant in variants:
        if "lengths" in rows:
            for config in configs:
                yield from lengths_specs(config, variant, dtype, threads, tasks)
        if "bidirectional" in rows:
            yield from bidirectional_specs(variant, dtype, threads, tasks)
    if "packed" in rows:
        for config in configs:
            try:
                yield from packed_specs(config, dtype, threads, peer_threads)
            except ImportError as e:
                skipped.setdefault("packed/torch", str(e).splitlines()[0])
                break
