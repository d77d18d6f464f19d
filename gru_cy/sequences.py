"""Padded batches of unequal lengths and the reverse direction, on any engine.

A padded batch ``x`` (T, B, I) with ``lengths`` (B,) runs as a *packed*
batch, the way cuDNN and ``torch.nn.utils.rnn.pack_padded_sequence`` run it:

* the sequences are ordered by decreasing length (a stable sort, inside
  gru_cy: the caller never sorts), so that at step t the ``n_t`` sequences
  still running are the first ``n_t`` of that order;
* the valid rows are gathered into one contiguous array, step after step,
  ``n_t`` rows per step (``seq_gather``, a kernel of both engines).  A reverse
  layer gathers sequence b's steps in the order ``lengths[b]-1, ..., 0``;
* the steps are cut into *segments* of equal ``n_t``; each segment is one
  call of the layer's engine on a contiguous (steps, n, I) block, starting
  from the first n rows of the carried state.  Every forward path of the
  engine (fused, batch mode, step loops) runs unchanged, and the work follows
  ``sum(lengths)``, not ``B*T``.  Neighbouring segments merge where a cost
  model says a few rows of ended sequences (zeros in, outputs dropped,
  gradients exactly zero) cost less than another call (never in training
  with BN).  The calls of one forward or backward are one *held* run of the
  CPU engine (``Engine.hold``): weights packed once, no adaptive-team record
  per segment size;
* inference that the CPU engine runs in its fused forward (batch mode, or
  unit slices on two or more threads; no BN) is instead one call over all
  rows, sorted by length (``Engine.forward_limited``): each step runs the
  rows still running, and the call (or a chunk of rows) stops after its
  longest sequence; in unit slices the engine reads the caller's x and
  writes its y itself, through the packing's rows (no gather, no scatter);
* so is training without BN on the CPU engine, on any team
  (``Engine.limited_train``: its own gemm, the candidates kept, i.e. under
  64 MiB of them, H >= 128; a bidirectional layer's two directions side by
  side, one thread each): one limited forward in unit slices,
  then one limited backward (``Engine.backward_limited``) that reads dy and
  writes dx in the caller's layout and computes the weight gradients of each
  chunk of steps over its running rows only;
* outputs are scattered back to the padded layout (zeros in the padding), the
  final states back to the caller's order.

The two directions of a bidirectional layer share their segments
(:func:`forward_runs`, :func:`backward_runs`): at two threads the CPU engine
runs each pair of calls in one parallel region, one thread each.

The backward walks the segments in reverse, each with the training cache its
forward kept (``Engine.take_cache`` / ``put_cache``); the gradient of a
sequence's final state enters at its last step, padded ``dy`` is never read
and ``dx`` is zero in the padding.  Batch normalisation of a step runs over
the sequences still running at that step (its batch statistics and the
rolling statistics); the rolling statistics advance once per step actually
run (``max(lengths)`` times).
"""
import numpy as np

__all__ = ["Packing", "segment_costs", "forward", "forward_runs", "backward",
           "backward_runs"]


def segment_costs(I, H, itemsize):
    """(per call, per step, per row-step) seconds of a forward call of the
    engine: a model for merging segments.  Rows follow the flops, steps the
    recurrent weights' bytes; a call within a held run (``Engine.hold``:
    weights packed once, no tuning) costs about 40 us of Python and set-up.
    At config B's sizes (2 threads, lengths uniform in 1..T, six draws,
    interleaved) the merged segments took 0.748 of the full time on average,
    one call per run of equal counts 0.780, a call cost of 20 us 0.763: the
    model matters little next to the engine's cost per step."""
    w_bytes = 3.0 * H * H * itemsize
    row = 6.0 * H * (I + H) / 1e11
    step = max(0.5e-6, w_bytes / 2e11)
    call = 40e-6
    return call, step, row


MIN_CALL_ROWS = 4
"""The fewest rows an engine call of a padded batch runs where padding is
allowed (GEMV_MAX_M + 1 of the CPU engine: its blocked gemm path)."""


def _merge(base, costs):
    # Cover the runs of equal counts `base` [(t0, steps, n)] with calls that
    # each run `n` of their first run for all their steps (fewer calls, some
    # padded rows): the cheapest cover under `costs`, by dynamic programming.
    call, step, row = costs
    S = len(base)
    best = [0.0] * (S + 1)
    cut = [0] * (S + 1)
    for j in range(1, S + 1):
        best[j] = float("inf")
        steps = 0
        for i in range(j, 0, -1):       # calls covering runs i-1 .. j-1
            steps += base[i - 1][1]
            c = best[i - 1] + call + steps * (step + base[i - 1][2] * row)
            if c < best[j]:
                best[j], cut[j] = c, i - 1
    out = []
    j = S
    while j > 0:
        i = cut[j]
        t0, _, n = base[i]
        out.append((t0, sum(b[1] for b in base[i:j]), n))
        j = i
    return out[::-1]


class Packing:
    """Where each row of a packed batch comes from, and its segments.

    Parameters
    ----------
    lengths : ndarray of int64 (B,)
        Checked: 1 <= lengths[b] <= T.
    T : int
    reverse : bool
        Read each sequence from its last valid step to step 0.
    limited : bool
        One engine call over all rows for ``max(lengths)`` steps, in which the
        CPU engine runs each step's running rows (``Engine.forward_limited``,
        and in training ``Engine.backward_limited``).
    costs : (call, step, row) seconds or None
        Merge runs of steps into fewer engine calls where :func:`_merge`'s
        model says it pays: a call then runs rows of sequences that have
        ended (zeros in, outputs dropped; their gradients are exactly 0).
        None: one call per run of equal counts (training with BN, whose
        batch statistics must see the running sequences only).
    min_rows : int
        With ``costs``: no call runs fewer than ``min(B, min_rows)`` rows.
        Inference asks for :data:`MIN_CALL_ROWS`, so that every product takes
        the CPU engine's blocked gemm path, as the limited call and the full
        batch do: a padded batch then gives the same bits whichever runs (the
        engine's choice depends on the thread count).  Training's segments
        (BN, another engine, fewer than 128 units) run on any
        team (the same bits already) and keep 1: padded rows cost them their
        backward too (config B's sizes with 8 sequences: 10%).

    Attributes
    ----------
    order : ndarray (B,)
        Sequence order by decreasing length (stable): rank i runs in row i.
    counts : ndarray (steps,)
        Sequences running at each step (non-increasing), ``steps = max(lengths)``.
    segments : list of (steps, n, row)
        The engine calls: ``steps`` steps of ``n`` rows from packed row ``row``.
    rows : int
        Packed rows (``sum(lengths)`` without merging).
    gather : int64 (rows,)
        Padded row (t*B + b) of each packed row, -1 for a padded one.
    scatter : int64 (T*B,)
        Packed row of each padded row, -1 in the padding.
    last : int64 (B,)
        Packed row of each sequence's last valid step.
    """

    def __init__(self, lengths, T, reverse, costs=None, limited=False, min_rows=1):
        lengths = np.asarray(lengths, np.int64)
        B = lengths.size
        self.T, self.B, self.reverse = int(T), B, bool(reverse)
        self.lengths = lengths
        self.costs = costs
        self.limited = bool(limited)
        self.min_rows = int(min_rows)
        if limited:
            costs = (1.0, 0.0, 0.0)     # one call over every row
        order = np.argsort(-lengths, kind="stable")
        ls = lengths[order]
        steps = int(ls[0])
        counts = np.count_nonzero(ls[None, :] > np.arange(steps)[:, None], axis=1)
        self.order = order
        self.counts = counts
        if costs is not None and self.min_rows > 1:
            # padded rows allowed: no call of fewer than min(B, min_rows) rows
            # (the direct gemm path of 1 to 3 rows rounds differently)
            counts = np.maximum(counts, min(B, self.min_rows))
        base = []
        t0 = 0
        for t1 in range(1, steps + 1):
            if t1 == steps or counts[t1] != counts[t0]:
                base.append((t0, t1 - t0, int(counts[t0])))
                t0 = t1
        calls = base if costs is None else _merge(base, costs)
        gathers, lasts, rank_rows, row = [], [], [], 0
        self.segments = []
        for t0, nsteps, n in calls:
            t = np.arange(t0, t0 + nsteps)[:, None]
            i = np.arange(n)[None, :]
            valid = t < ls[i]
            src_t = ls[i] - 1 - t if reverse else t
            idx = row + np.arange(nsteps * n).reshape(nsteps, n)
            gathers.append(np.where(valid, src_t * B + order[i], -1).ravel())
            end = t == ls[i] - 1
            lasts.append(idx[end])
            rank_rows.append(np.broadcast_to(i, end.shape)[end])
            self.segments.append((nsteps, n, row))
            row += nsteps * n
        self.rows = row
        self.gather = np.ascontiguousarray(np.concatenate(gathers), np.int64)
        valid = self.gather >= 0
        scatter = np.full(self.T * B, -1, np.int64)
        scatter[self.gather[valid]] = np.flatnonzero(valid)
        self.scatter = scatter
        last = np.empty(B, np.int64)
        last[order[np.concatenate(rank_rows)]] = np.concatenate(lasts)
        self.last = last
        # every sequence at full length, read forward: the packed layout is the
        # padded one (no gathers needed)
        self.identity = not reverse and steps == self.T and bool(np.all(lengths == self.T))
        self._device = {}

    @property
    def min_running(self):
        """The fewest sequences any step runs."""
        return int(self.counts[-1])

    def indices(self, backend):
        """(gather, scatter, order, last) as int64 arrays of ``backend``."""
        got = self._device.get(backend.name)
        if got is None:
            got = tuple(backend.xp.asarray(a) for a in
                        (self.gather, self.scatter, self.order.astype(np.int64),
                         self.last))
            self._device[backend.name] = got
        return got

    def matches(self, lengths, T, reverse, costs, limited=False, min_rows=1):
        """Whether this packing is the one of (lengths, T, reverse, costs,
        limited, min_rows)."""
        return (self.T == T and self.reverse == reverse and self.costs == costs
                and self.limited == limited and self.min_rows == min_rows
                and self.B == lengths.size
                and np.array_equal(self.lengths, lengths))


def _gather(backend, out, src, rows, C, ldy, ldx, nthreads):
    backend.seq_gather(out.reshape(-1), src.reshape(-1), rows, C, ldy, ldx, nthreads)


def _sorted_rows(backend, a, pk, H, dtype, nthreads):
    # (B, H) a (a state or its gradient, the caller's order; None: zeros) in
    # the packing's order of sequences, a fresh array.
    out = backend.xp.zeros((pk.B, H), dtype)
    if a is not None:
        _gather(backend, out, a, pk.indices(backend)[2], H, H, H, nthreads)
    return out


def _unsort_rows(backend, out, a, pk, H, nthreads):
    # out (B, H) = a's rows, sorted by the packing, back in the caller's order.
    inverse = backend.xp.empty(pk.B, np.int64)
    inverse[pk.indices(backend)[2]] = backend.xp.arange(pk.B)
    _gather(backend, out, a, inverse, H, H, H, nthreads)


def forward(engine, backend, pk, x, h0, y, H, train, nthreads):
    """Run ``engine`` over the padded ``x`` (T, B, I) packed by ``pk``.

    ``h0`` (B, H) or None (zeros); writes ``y`` (T, B, H), zeros in the
    padding.  Returns ``(final, records)``: the final states (B, H), each
    sequence's state after its last valid step, and the segments' training
    caches (train) or None.
    """
    return forward_runs(backend, [(engine, pk, x, h0, y)], H, train, nthreads)[0]


def forward_runs(backend, runs, H, train, nthreads, pair=None):
    """:func:`forward` of several runs ``(engine, pk, x, h0, y)`` whose
    packings have the same segments (the two directions of a layer), segment
    by segment; ``pair(engine_a, x_a, h_a, y_a, engine_b, x_b, h_b, y_b,
    train)``, where given, runs two engines' calls at once (one thread each).
    Returns ``[(final, records)]`` per run."""
    xp = backend.xp
    segments = runs[0][1].segments
    work = []
    # One limited call in unit slices reads the caller's x and writes its y
    # itself (Engine.limited_mode 2; training: Engine.limited_train, x copied
    # for the backward): no gathered x, no scatter of y.
    # Two directions' limited training calls run side by side, one thread each
    # (backend.forward_limited_pair).
    direct = False
    if runs[0][1].limited and len(runs) == 1:
        engine, pk = runs[0][:2]
        direct = (engine.limited_train(segments[0][0], pk.B) if train else
                  engine.limited_mode(segments[0][0], pk.B, nthreads) == 2)
    elif (runs[0][1].limited and len(runs) == 2 and train and pair is not None
          and getattr(backend, "forward_limited_pair", None) is not None):
        direct = all(r[0].limited_train(segments[0][0], r[1].B) for r in runs)
    for engine, pk, x, h0, y in runs:
        if pk.segments != segments:
            raise ValueError("runs: expected packings with the same segments")
        dtype = y.dtype
        I = x.shape[2]
        gather, scatter, order, last = pk.indices(backend)
        if pk.identity:
            # training keeps x: a private copy (later edits of the caller's
            # array must not reach the cache)
            xs = x.reshape(pk.rows, I).copy() if train else x.reshape(pk.rows, I)
            carry = xp.zeros((pk.B, H), dtype) if h0 is None else h0.copy()
            ys = y.reshape(pk.rows, H)
        else:
            if direct:      # (the engine reads x's rows itself)
                xs = x[:segments[0][0]]
                xs = (xs.copy() if train else xp.ascontiguousarray(xs)).reshape(pk.rows, I)
            else:
                xs = xp.empty((pk.rows, I), dtype)
                _gather(backend, xs, x, gather, I, I, I, nthreads)
            carry = _sorted_rows(backend, h0, pk, H, dtype, nthreads)
            ys = xp.empty((pk.rows, H), dtype)
        work.append((engine, I, xs, carry, ys, [] if train else None))
    for w in work:
        w[0].hold(True)      # weights packed once for all the segments, no tuning
    try:
        for steps, n, row in segments:
            end = row + steps * n
            calls = [(eng, xs[row:end].reshape(steps, n, I), carry[:n],
                      ys[row:end].reshape(steps, n, H)) for eng, I, xs, carry, ys, _ in work]
            if direct and len(calls) == 2:
                args = []
                for (eng, xa, h, ya), (_, pk, _, _, y) in zip(calls, runs):
                    rows, _, order, _ = pk.indices(backend)
                    args += [eng, xa, h, ya, pk.lengths[pk.order], rows, y, order]
                if not backend.forward_limited_pair(*args, train):
                    raise RuntimeError("the engines declined a limited pair their plans "
                                       "had promised")
                states = [w[3][:n] for w in work]
            elif pair is not None and len(calls) == 2:
                states = pair(*calls[0], *calls[1], train)
            elif len(calls) == 1 and runs[0][1].limited:
                # one call of all rows, chunks of rows stopping with their sequences
                eng, xa, h, ya = calls[0]
                pk = runs[0][1]
                more = (gather, runs[0][4], order, train) if direct else ()
                if not eng.forward_limited(xa, h, ya, pk.lengths[pk.order], nthreads, *more):
                    raise RuntimeError("the engine declined a chunk-limited forward "
                                       "its plan had promised")
                states = [work[0][3][:n]]       # (no later segment reads it)
            else:
                states = [eng.forward(xa, h, ya, train, nthreads) for eng, xa, h, ya in calls]
            for (eng, _, _, carry, _, records), state in zip(work, states):
                carry[:n] = state
                if train:
                    records.append(eng.take_cache())
    finally:
        for w in work:
            w[0].hold(False)
    out = []
    for (engine, pk, x, h0, y), (_, _, _, _, ys, records) in zip(runs, work):
        gather, scatter, order, last = pk.indices(backend)
        if pk.identity:
            final = y[-1].copy()
        else:
            if direct:
                y[segments[0][0]:] = 0      # (the engine wrote the steps it ran)
            else:
                _gather(backend, y, ys, scatter, H, H, H, nthreads)
            final = xp.empty((pk.B, H), y.dtype)
            _gather(backend, final, ys, last, H, H, H, nthreads)
        out.append((final, records))
    return out


def backward(engine, backend, pk, records, dy, dstate, dx, dh0, H, nthreads):
    """The backward of :func:`forward` with its ``records``.

    ``dy`` (T, B, H) (padding not read), ``dstate`` (B, H) or None; writes
    ``dx`` (T, B, I) (zeros in the padding) and ``dh0`` (B, H).  Parameter
    gradients accumulate in the engine's ``grad``.  The gradient of a final
    state joins ``dy`` at its sequence's last step (``y`` there is that
    state); a call's rows of ended sequences get zero gradients throughout.
    """
    backward_runs(backend, [(engine, pk, records, dy, dstate, dx, dh0)], H, nthreads)


def backward_runs(backend, runs, H, nthreads, pair=None):
    """:func:`backward` of several runs ``(engine, pk, records, dy, dstate, dx,
    dh0)`` with the same segments, as :func:`forward_runs`; ``pair(engine_a,
    dy_a, ds_a, dx_a, dh_a, engine_b, ...)`` runs two calls at once."""
    xp = backend.xp
    segments = runs[0][1].segments
    if runs[0][1].limited and all(_limited_record(r[2][0]) for r in runs):
        _backward_limited(backend, runs, H, nthreads)
        return
    work = []
    for engine, pk, records, dy, dstate, dx, dh0 in runs:
        dtype = dx.dtype
        I = dx.shape[2]
        gather, scatter, order, last = pk.indices(backend)
        if pk.identity:
            dys = dy.reshape(pk.rows, H)
            dxs = dx.reshape(pk.rows, I)
            dcarry = xp.zeros((pk.B, H), dtype) if dstate is None else dstate.copy()
        else:
            dys = xp.empty((pk.rows, H), dtype)
            _gather(backend, dys, dy, gather, H, H, H, nthreads)
            if dstate is not None:
                dys[last] += dstate
            dcarry = xp.zeros((pk.B, H), dtype)
            dxs = xp.empty((pk.rows, I), dtype)
        work.append((engine, I, dys, dcarry, dxs, records))
        engine.hold(True)
    try:
        for k in range(len(segments) - 1, -1, -1):
            steps, n, row = segments[k]
            end = row + steps * n
            calls = []
            for eng, I, dys, dcarry, dxs, records in work:
                eng.put_cache(records[k])
                calls.append((eng, dys[row:end].reshape(steps, n, H), dcarry[:n],
                              dxs[row:end].reshape(steps, n, I), xp.empty((n, H), dtype)))
            if pair is not None and len(calls) == 2:
                pair(*calls[0], *calls[1])
            else:
                for eng, d_y, d_s, d_x, d_h in calls:
                    eng.backward(d_y, d_s, d_x, d_h, nthreads)
            for (_, _, _, dcarry, _, _), call in zip(work, calls):
                dcarry[:n] = call[4]
    finally:
        for w in work:
            w[0].take_cache()
            w[0].hold(False)
    for (engine, pk, records, dy, dstate, dx, dh0), (_, I, _, dcarry, dxs, _) in zip(runs,
                                                                                    work):
        if pk.identity:
            dh0[...] = dcarry
            continue
        gather, scatter, order, last = pk.indices(backend)
        _gather(backend, dx, dxs, scatter, I, I, I, nthreads)
        _unsort_rows(backend, dh0, dcarry, pk, H, nthreads)


def _limited_record(rec):
    # Whether a training record is a limited forward's (the CPU engine's
    # take_cache: (cache, T, B, c kept, (limits, rows, order) or None)).
    return isinstance(rec, tuple) and len(rec) == 5 and rec[4] is not None


def _backward_limited(backend, runs, H, nthreads):
    # The backward of limited training forwards (one record each; two runs:
    # the directions of a layer, side by side, one thread each): the engine
    # reads the caller's dy and writes its dx through the packing's rows
    # (Engine.backward_limited); the final states' gradients go in, dh0 comes
    # out, in sorted rows.
    xp = backend.xp
    work = []
    for engine, pk, records, dy, dstate, dx, dh0 in runs:
        dh = _sorted_rows(backend, dstate, pk, H, dx.dtype, nthreads)
        work.append((engine, xp.ascontiguousarray(dy), dh, dx))
    for (engine, pk, records, *_) in runs:
        engine.put_cache(records[0])
    try:
        if len(work) == 2:
            backend.backward_limited_pair(*work[0], *work[1])
        else:
            engine, dy, dh, dx = work[0]
            engine.backward_limited(dy, dh, dx, nthreads)
    finally:
        for (engine, *_) in runs:
            engine.take_cache()
    for (engine, pk, records, dy, dstate, dx, dh0), (_, _, dh, _) in zip(runs, work):
        dx[pk.segments[0][0]:] = 0      # (the engine wrote the steps it ran)
        _unsort_rows(backend, dh0, dh, pk, H, nthreads)
