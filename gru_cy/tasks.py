"""Built-in training tasks and the ``gru-cy train`` / ``gru-cy generate`` commands.

Tasks (all train a Darknet-style network: ``[gru]`` -> ``[connected]`` -> loss):

* ``adding`` (default): the adding problem (Hochreiter & Schmidhuber 1997).
  Each step carries a value drawn from U(0, 1) and a marker; exactly two
  steps are marked (one in each half of the sequence) and the target is the
  sum of their values, read from the output of the last step.  Loss: mean
  squared error; predicting the constant 1 scores about 1/6 = 0.167.
* ``copy``: copy memory.  Five symbols out of eight, blanks, a delimiter,
  then the network must reproduce the five symbols.  Loss: cross-entropy per
  recalled symbol; guessing scores log 8 = 2.08.
* ``--text FILE``: a character-level language model over bytes, like
  Darknet's ``rnn`` example (256 inputs, ``[softmax]``, ``[cost]``); the
  baseline is the entropy of the file's byte frequencies.  ``gru-cy
  generate`` samples from the saved model.

The evaluation loss (``final_loss``) is measured on held-out sequences: fresh
ones for ``adding`` and ``copy``, the last tenth of the file (never trained
on) for text; ``--target`` and ``--eval-size`` apply to every task.

``--distributed`` (under ``mpiexec -n N``, ``gru_cy.distributed``): every rank
draws the same global batch of ``--batch`` sequences and trains on its shard
(rank r of N takes sequences r, r + N, ...); the update is the global one.
The held-out evaluation runs on every rank (the parameters are identical) and
rank 0's verdict is shared; rank 0 alone prints and writes files.  A rank that
fails ends the job through ``comm.Abort``.
"""

import argparse
import io
import json
import math
import os
import sys
import time

import numpy as np

from . import _files, darknet
from .backends import to_host
from .layer import GRU
from .nn import Connected, Cost, Network, Softmax
from . import _validate as V

__all__ = ["adding_batch", "copy_batch", "train_main", "generate_main", "Progress"]

DEFAULT_STEPS = {"adding": 50, "copy": 20, "text": 32}
COPY_SYMBOLS = 8
COPY_LENGTH = 5


# --- data ----------------------------------------------------------------------

DIVERGED = 10.0
"""A run whose final loss is this many times the task's baseline (predicting
without the input) or more has diverged: it ends with a message and exit 1."""


def adding_batch(rng, T, B, dtype=np.float32):
    """One batch of the adding problem.

    Parameters
    ----------
    rng : numpy.random.Generator
    T, B : int
        Sequence length (>= 2) and batch size.

    Returns
    -------
    x : ndarray, shape (T, B, 2)
        Channel 0 the values U(0, 1), channel 1 the markers (two ones).
    target : ndarray, shape (B, 1)
        The sum of the two marked values.
    """
    x = np.zeros((T, B, 2), dtype)
    x[:, :, 0] = rng.uniform(0, 1, (T, B))
    half = T // 2
    first = rng.integers(0, half, B)
    second = rng.integers(half, T, B)
    cols = np.arange(B)
    x[first, cols, 1] = 1
    x[second, cols, 1] = 1
    target = (x[first, cols, 0] + x[second, cols, 0]).reshape(B, 1)
    return x, target.astype(dtype)


def copy_batch(rng, T, B, dtype=np.float32):
    """One batch of the copy-memory task.

    Inputs are one-hot over 10 codes: 0 blank, 1..8 symbols, 9 delimiter.
    Steps 0..4 show five symbols, step ``T - 6`` the delimiter, and the last
    five steps must output the symbols.

    Returns
    -------
    x : ndarray, shape (T, B, 10)
    labels : ndarray of int, shape (T, B)
        The class expected at each step (0 = blank).
    mask : ndarray of bool, shape (T, B)
        The five recall steps, where the loss is measured.
    """
    K = COPY_LENGTH
    if T < 2 * K + 1:
        raise ValueError(f"--steps: the copy task needs at least {2 * K + 1} steps, got {T}")
    sym = rng.integers(1, COPY_SYMBOLS + 1, (K, B))
    codes = np.zeros((T, B), np.int64)
    codes[:K] = sym
    codes[T - K - 1] = COPY_SYMBOLS + 1
    x = np.zeros((T, B, COPY_SYMBOLS + 2), dtype)
    np.put_along_axis(x, codes[:, :, None], 1, axis=2)
    labels = np.zeros((T, B), np.int64)
    labels[T - K:] = sym
    mask = np.zeros((T, B), bool)
    mask[T - K:] = True
    return x, labels, mask


# --- progress ------------------------------------------------------------------

class Progress:
    """A small progress bar on stderr (carriage returns on a terminal;
    otherwise a line every tenth of the run or every 10 seconds)."""

    def __init__(self, total, stream=None, width=30):
        self.total = max(int(total), 1)
        self.stream = sys.stderr if stream is None else stream
        self.width = width
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.perf_counter()
        self._last = -1.0
        self._last_decile = -1

    def update(self, done, text=""):
        now = time.perf_counter()
        frac = min(done / self.total, 1.0)
        if self.tty:
            if now - self._last < 0.1 and done < self.total:
                return
        else:
            decile = int(frac * 10)
            if decile == self._last_decile and done < self.total and now - self._last < 10:
                return
            self._last_decile = decile
        self._last = now
        fill = int(round(frac * self.width))
        bar = "#" * fill + "." * (self.width - fill)
        line = f"[{bar}] {done}/{self.total} {text} {now - self.start:6.1f}s"
        self.stream.write(("\r" + line) if self.tty else (line + "\n"))
        self.stream.flush()

    def close(self):
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


# --- models ----------------------------------------------------------------------

class _Job:
    """What the tasks share: the network, or under --distributed the network
    wrapped in ``gru_cy.distributed.DataParallel`` and this rank's sequences."""
    dp = None

    @property
    def model(self):
        return self.net if self.dp is None else self.dp

    def distribute(self, comm):
        from .distributed import DataParallel, shard_indices
        self.dp = DataParallel(self.net, comm)
        self.mine = shard_indices(self.B, comm.Get_rank(), comm.Get_size())

    def part(self, a, axis):
        """This rank's sequences of a global batch (``a`` itself alone)."""
        if self.dp is None:
            return a
        return np.ascontiguousarray(np.take(a, self.mine, axis=axis))

    def total(self, value):
        """``value`` summed over the ranks (itself alone)."""
        return value if self.dp is None else self.dp.sum(value)


def _build(args, inputs, outputs, head, T, B):
    """[gru] -> [connected linear] -> head, as a Darknet-compatible Network."""
    dtype = np.dtype(args.dtype)
    gru = GRU(inputs, args.hidden, variant="darknet", activation="tanh",
              optimizer=args.optimizer, dtype=dtype, device=args.device,
              seed=args.seed, num_threads=args.threads)
    fc = Connected(args.hidden, outputs, activation="linear", optimizer=args.optimizer,
                   dtype=dtype, device=args.device,
                   seed=None if args.seed is None else args.seed + 1,
                   num_threads=args.threads)
    layers = [gru, fc] + head
    return Network(layers, inputs, batch=B, time_steps=T,
                   learning_rate=args.learning_rate, momentum=args.momentum,
                   decay=args.decay, optimizer=args.optimizer, clip=args.clip)


class _Adding(_Job):
    name = "adding"

    def __init__(self, args, rng):
        self.T, self.B = args.steps, args.batch
        self.rng = rng
        self.net = _build(args, 2, 1, [Cost(1)], self.T, self.B)
        self.eval_x, self.eval_t = adding_batch(np.random.default_rng(12345), self.T,
                                                args.eval_size, args.dtype)
        self.baseline = float(np.mean((self.eval_t - 1.0) ** 2))

    def train_step(self):
        x, t = adding_batch(self.rng, self.T, self.B, self.net.dtype)
        x, t = self.part(x, 1), self.part(t, 0)
        net = self.model
        net.reset_state()
        y = net.forward(x, train=True)
        last = to_host(y[-1])
        dy = np.zeros(y.shape, y.dtype)
        # Only the last step is scored.  The gradient of sum_b (y_last - t)^2 is
        # 2 (y_last - t); the update divides by batch=B, making it the mean.
        dy[-1] = 2 * (last - t)
        net.backward(dy)
        net.update(batch=self.B)
        if self.dp is None:
            return float(np.mean((last - t) ** 2))
        return self.total(float(np.sum((last - t) ** 2))) / self.B

    def evaluate(self):
        self.net.reset_state()
        y = to_host(self.net.forward(self.eval_x))
        self.net.reset_state()
        return float(np.mean((y[-1] - self.eval_t) ** 2))


class _Copy(_Job):
    name = "copy"

    def __init__(self, args, rng):
        self.T, self.B = args.steps, args.batch
        self.rng = rng
        n = COPY_SYMBOLS + 2
        self.net = _build(args, n, n, [Softmax(n)], self.T, self.B)
        self.eval = copy_batch(np.random.default_rng(12345), self.T, args.eval_size,
                               args.dtype)
        self.baseline = math.log(COPY_SYMBOLS)

    @staticmethod
    def _nll(p, labels, mask):
        pl = np.take_along_axis(p, labels[:, :, None], axis=2)[:, :, 0]
        return -np.log(np.maximum(pl[mask], 1e-30))

    def _xent(self, p, labels, mask):
        return float(self._nll(p, labels, mask).mean())

    def train_step(self):
        x, labels, mask = copy_batch(self.rng, self.T, self.B, self.net.dtype)
        x, labels, mask = self.part(x, 1), self.part(labels, 1), self.part(mask, 1)
        net = self.model
        net.reset_state()
        p = to_host(net.forward(x, train=True))
        onehot = np.zeros_like(p)
        np.put_along_axis(onehot, labels[:, :, None], 1, axis=2)
        # Cross-entropy over the recall steps only: dL/dlogits = (p - t) there.
        d = (p - onehot) * mask[:, :, None]
        net.backward(d, start=len(net.layers) - 2)
        net.update(batch=self.B * COPY_LENGTH)
        if self.dp is None:
            return self._xent(p, labels, mask)
        return self.total(float(self._nll(p, labels, mask).sum())) / (self.B * COPY_LENGTH)

    def evaluate(self):
        x, labels, mask = self.eval
        self.net.reset_state()
        p = to_host(self.net.forward(x))
        self.net.reset_state()
        return self._xent(p, labels, mask)


class _Text(_Job):
    name = "text"

    def __init__(self, args, rng):
        with open(args.text, "rb") as f:
            data = np.frombuffer(f.read(), np.uint8)
        # the last tenth (at least --steps + 2 bytes) is held out for evaluation
        held = max(data.size // 10, args.steps + 2)
        if data.size - held < args.steps + 2:
            raise ValueError(f"--text: {args.text} has {data.size} bytes; need at least "
                             f"{2 * (args.steps + 2)} (training and a held-out tenth, "
                             f"each more than --steps + 1 = {args.steps + 1})")
        self.held = data[data.size - held:]
        data = data[:data.size - held]
        self.data = data
        # the evaluation's windows: --eval-size of --steps bytes at fixed places
        starts = np.linspace(0, held - args.steps - 1,
                             min(args.eval_size, held - args.steps), dtype=np.int64)
        self.held_chunk = self.held[starts[None, :] + np.arange(args.steps + 1)[:, None]]
        self.T, self.B = args.steps, args.batch
        self.net = _build(args, 256, 256, [Softmax(256), Cost(256)], self.T, self.B)
        stride = data.size // self.B
        self.offsets = (np.arange(self.B) * stride + rng.integers(0, max(stride, 1), self.B)
                        ) % (data.size - self.T - 1)
        freq = np.bincount(data, minlength=256) / data.size
        nz = freq[freq > 0]
        self.baseline = float(-(nz * np.log(nz)).sum())
        self.recent = []
        self.eye = np.eye(256, dtype=self.net.dtype)

    def train_step(self):
        T, B = self.T, self.B
        idx = self.offsets[None, :] + np.arange(T + 1)[:, None]
        chunk = self.data[idx]
        x = self.part(self.eye[chunk[:-1]], 1)
        labels = self.part(chunk[1:].astype(np.int64), 1)
        loss = self.model.train_step(x, labels) / (T * B)
        self.offsets = self.offsets + T
        wrap = self.offsets + T + 1 >= self.data.size
        if wrap.any():
            self.offsets[wrap] = 0
            self.net.reset_state()
        self.recent.append(loss)
        return loss

    def evaluate(self):
        # Cross-entropy per byte on held-out text: --eval-size windows of
        # --steps bytes at fixed places of the held-out tenth, from a zero
        # state; the training state is put back afterwards.
        chunk = self.held_chunk
        grus = [layer for layer in self.net.layers if hasattr(layer, "reset_state")]
        states = [layer.state for layer in grus]
        self.net.reset_state()
        try:
            p = to_host(self.net.forward(self.eye[chunk[:-1]]))
        finally:
            for layer, s in zip(grus, states):
                layer.state = s
        picked = np.take_along_axis(p, chunk[1:, :, None].astype(np.int64), axis=2)
        return float(-np.mean(np.log(np.maximum(picked, np.finfo(p.dtype).tiny))))


# --- commands ----------------------------------------------------------------------

def train_parser():
    p = argparse.ArgumentParser(
        prog="gru-cy train",
        description="Train a GRU network on a built-in task (default: the adding "
                    "problem) and report the loss against the task's baseline.")
    p.add_argument("--task", choices=("adding", "copy"), default=None,
                   help="built-in task (default adding; exclusive with --text)")
    p.add_argument("--text", metavar="FILE",
                   help="train a character-level language model on FILE instead")
    p.add_argument("--iterations", type=V.POSITIVE_INT, default=None,
                   help="maximum training iterations (default 4000; text 1000)")
    p.add_argument("--steps", type=V.POSITIVE_INT, default=None,
                   help="sequence length T (default adding 50, copy 20, text 32)")
    p.add_argument("--hidden", type=V.POSITIVE_INT, default=None,
                   help="GRU outputs H (default 64; text 128)")
    p.add_argument("--batch", type=V.POSITIVE_INT, default=None,
                   help="sequences per iteration B (default 50; text 16)")
    p.add_argument("--learning-rate", type=V.POSITIVE_FLOAT, default=None,
                   help="learning rate (default adam 0.01, sgd 0.1; text with adam 0.003)")
    p.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    p.add_argument("--momentum", type=V.NONNEGATIVE_FLOAT, default=0.9)
    p.add_argument("--decay", type=V.NONNEGATIVE_FLOAT, default=0.0,
                   help="Darknet's weight decay (default 0)")
    p.add_argument("--clip", type=V.POSITIVE_FLOAT, default=None,
                   help="clamp each summed gradient element to [-CLIP, CLIP]")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--threads", type=V.THREADS, default=None,
                   help="OpenMP threads (default: OpenMP's choice)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--eval-every", type=V.POSITIVE_INT, default=50,
                   help="iterations between held-out evaluations (default 50)")
    p.add_argument("--eval-size", type=V.POSITIVE_INT, default=500,
                   help="held-out sequences (default 500)")
    p.add_argument("--target", type=V.NONNEGATIVE_FLOAT, default=0.1,
                   help="stop once the held-out loss stays below TARGET * baseline "
                        "(default 0.1; 0 never stops early)")
    p.add_argument("--json", metavar="FILE", help="write the result as JSON")
    p.add_argument("--save", metavar="PATH",
                   help="write the trained network as a checkpoint PATH.ckpt (gru_cy.load) "
                        "and a Darknet pair PATH.cfg, PATH.weights; Ctrl-C during training "
                        "saves the checkpoint first")
    p.add_argument("--resume", metavar="PATH",
                   help="continue training the network of checkpoint PATH (or PATH.ckpt) "
                        "written by --save: same task and sizes; parameters, optimiser "
                        "state and counters go on from there")
    p.add_argument("--plot", metavar="FILE.png",
                   help="draw the loss curve (needs matplotlib)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel over the ranks of mpiexec -n N (needs "
                        "gru_cy[mpi]): the global --batch split over the ranks; "
                        "--threads defaults to the processors over the ranks per machine")
    return p


def _stem(path):
    root, ext = os.path.splitext(path)
    return root if ext in (".cfg", ".weights", ".ckpt") else path


def train_main(argv=None):
    """``gru-cy train``: returns the exit code (argparse exits 2 on bad usage)."""
    p = train_parser()
    args = p.parse_args(argv)
    args.comm = None
    if not args.distributed:
        return _train_main(p, args)
    from . import distributed
    try:
        args.comm = distributed.world()
    except ImportError as e:
        p.error(f"--distributed: {e}")
    with distributed.abort_on_error(args.comm, "gru-cy train"):
        if args.threads is None:
            args.threads = distributed.threads_per_rank(args.comm)
        code = _train_main(p, args)
        if code:
            # an error found by this rank alone (e.g. a --resume file another
            # machine lacks) must end the job, not leave the others waiting
            raise SystemExit(code)
        return code


def _rank(args):
    return 0 if args.comm is None else args.comm.Get_rank()


def _agreed_error(p, args, message):
    # A usage error that every rank finds alike: as p.error (usage, message,
    # exit 2), printed by rank 0 only, and each rank exits normally (an MPI
    # abort could lose the message before the launcher forwards it).
    if args.comm is None:
        p.error(message)
    if _rank(args) == 0:
        p.print_usage(sys.stderr)
        sys.stderr.write(f"{p.prog}: error: {message}\n")
        sys.stderr.flush()
    from .distributed import AgreedExit
    raise AgreedExit(2)


def _train_main(p, args):
    task = "text" if args.text else (args.task or "adding")
    if args.text and args.task:
        p.error("--task and --text are exclusive: --text trains a language model")
    if args.plot:
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot  # noqa: F401
        except ImportError:
            p.error("--plot needs matplotlib, which is not installed "
                    "(pip install 'gru_cy[plot]')")
    if args.text and not os.path.isfile(args.text):
        p.error(f"--text: no such file: {args.text}")
    # Where the results go, checked before the work starts (a run must not
    # end in a traceback that loses it).
    stem = _stem(args.save) if args.save else None
    bad = None
    if _rank(args) == 0:
        bad = _files.unwritable([(stem and stem + ".cfg", "--save"),
                                 (stem and stem + ".weights", "--save"),
                                 (stem and stem + ".ckpt", "--save"),
                                 (args.json, "--json"), (args.plot, "--plot")])
    if args.comm is not None:
        # rank 0 writes the files: its verdict stands for every rank
        bad = args.comm.bcast(bad, root=0)
    if bad:
        _agreed_error(p, args, bad)
    if args.resume and not os.path.isfile(args.resume):
        if os.path.isfile(args.resume + ".ckpt"):
            args.resume += ".ckpt"
        else:
            p.error(f"--resume: no such file: {args.resume}")
    args.steps = args.steps or DEFAULT_STEPS[task]
    if task == "adding" and args.steps < 2:
        p.error(f"--steps: the adding problem needs at least 2 steps, got {args.steps}")
    if task == "copy" and args.steps < 2 * COPY_LENGTH + 1:
        p.error(f"--steps: the copy task needs at least {2 * COPY_LENGTH + 1} steps, "
                f"got {args.steps}")
    text = task == "text"
    args.hidden = args.hidden or (128 if text else 64)
    args.batch = args.batch or (16 if text else 50)
    args.iterations = args.iterations or (1000 if text else 4000)
    if args.comm is not None and args.batch < args.comm.Get_size():
        _agreed_error(p, args, f"--batch {args.batch}: expected at least one sequence "
                               f"per rank ({args.comm.Get_size()})")
    if args.learning_rate is None:
        args.learning_rate = (0.003 if text else 0.01) if args.optimizer == "adam" else 0.1
    rng = np.random.default_rng(args.seed)
    try:
        job = {"adding": _Adding, "copy": _Copy, "text": _Text}[task](args, rng)
    except RuntimeError as e:
        # as every command: an unusable device is bad usage (exit 2)
        print(f"gru-cy train: error: --device {args.device}: {e}", file=sys.stderr)
        return 2
    except ValueError as e:
        msg = str(e)
        if msg.startswith(("outputs:", "inputs:")):
            # a layer's size is --hidden's (the task fixes the others)
            msg = f"--hidden {args.hidden}: {msg}"
        p.error(msg)
    with np.errstate(over="ignore", invalid="ignore"):
        return _run(job, task, args)


def _resume(job, path):
    # The checkpoint's network in place of the job's new one (same task and sizes).
    from .checkpoint import load
    net = load(path, device=job.net.device)
    old = job.net
    same = (type(net) is type(old) and len(net.layers) == len(old.layers)
            and all(type(a) is type(b) and getattr(a, "inputs", None) == b.inputs
                    and getattr(a, "outputs", None) == b.outputs
                    for a, b in zip(net.layers, old.layers))
            and np.dtype(net.dtype) == np.dtype(old.dtype))
    if not same:
        def sizes(n):
            return ", ".join(f"{getattr(layer, 'type', type(layer).__name__.lower())}"
                             f"({layer.inputs}->{layer.outputs})" for layer in n.layers)
        raise ValueError(f"--resume: {path} holds [{sizes(net)}] ({net.dtype}), this task "
                         f"trains [{sizes(old)}] ({old.dtype}): give the options it was "
                         f"trained with")
    job.net = net


def _save_checkpoint(job, args, collective=True):
    # Distributed: every rank calls it (the carried states of every rank's
    # sequences go into rank 0's file), unless not collective (Ctrl-C: rank 0
    # alone, without the carried state).
    stem = _stem(args.save)
    if job.dp is None:
        job.net.save(stem + ".ckpt")
    elif collective:
        job.dp.save(stem + ".ckpt")
    else:
        job.net.save(stem + ".ckpt", state=False)
    return stem + ".ckpt"


def _run(job, task, args):
    if args.resume:
        try:
            _resume(job, args.resume)
        except ValueError as e:
            print(f"gru-cy train: error: {e}", file=sys.stderr)
            return 2
    if args.comm is not None:
        job.distribute(args.comm)
    try:
        return _train(job, task, args)
    except KeyboardInterrupt:
        if args.save and _rank(args) == 0:
            path = _save_checkpoint(job, args, collective=False)
            print(f"\ngru-cy train: saved the network so far as {path} "
                  f"(continue with --resume {path})", file=sys.stderr)
        raise


def _train(job, task, args):
    lead = _rank(args) == 0
    bar = None if args.quiet or not lead else Progress(args.iterations)
    goal = args.target * job.baseline
    history, evals = [], []
    start = time.perf_counter()
    below = 0
    final = float("nan")
    it = 0
    for it in range(1, args.iterations + 1):
        loss = job.train_step()
        history.append(loss)
        if not math.isfinite(loss):
            break
        if it % args.eval_every == 0 or it == args.iterations:
            final = _evaluate(job, args)
            evals.append((it, final))
            # "Reached and stable": two consecutive evaluations under the goal.
            below = below + 1 if final < goal else 0
        if bar is not None:
            recent = np.mean(history[-20:])
            bar.update(it, f"loss {recent:.4f} (baseline {job.baseline:.4f})")
        if below >= 2:
            break
    if not evals or evals[-1][0] != it:
        final = _evaluate(job, args)
        evals.append((it, final))
    seconds = time.perf_counter() - start
    if bar is not None:
        bar.total = it
        bar.update(it, f"held-out loss {final:.4f} (baseline {job.baseline:.4f})")
        bar.close()
    result = {"task": task, "final_loss": final if math.isfinite(final) else None,
              "baseline_loss": job.baseline,
              "steps": args.steps, "seconds": round(seconds, 3), "iterations": it,
              "hidden": args.hidden, "batch": args.batch, "optimizer": args.optimizer,
              "learning_rate": args.learning_rate, "device": args.device,
              "seed": args.seed, "reached_target": bool(final < goal),
              "ranks": 1 if args.comm is None else args.comm.Get_size()}
    ckpt = _save_checkpoint(job, args) if args.save else None
    if not lead:
        return 1 if not math.isfinite(final) or final > DIVERGED * job.baseline else 0
    print(f"{task}: final loss {final:.5f}, baseline {job.baseline:.5f} "
          f"(ratio {final / job.baseline:.4f}), {it} iterations, {seconds:.1f} s")
    diverged = not math.isfinite(final) or final > DIVERGED * job.baseline
    result["diverged"] = diverged
    if diverged:
        print(f"gru-cy train: the loss diverged ({final:.4g} after {it} iterations, "
              f"{DIVERGED:g} times the baseline or more); try a smaller --learning-rate "
              f"or --clip", file=sys.stderr)
    if args.json:
        _files.write_atomic(args.json, json.dumps(result, indent=2) + "\n")
    if args.save:
        stem = _stem(args.save)
        darknet.save(job.net, stem + ".cfg", stem + ".weights")
        print(f"saved {ckpt}, {stem}.cfg and {stem}.weights")
    if args.plot:
        _plot(args.plot, history, evals, job.baseline, task)
        print(f"plotted {args.plot}")
    return 1 if diverged else 0


def _evaluate(job, args):
    # Every rank evaluates (identical parameters); rank 0's number stands.
    final = job.evaluate()
    return final if args.comm is None else args.comm.bcast(final, root=0)


def _plot(path, history, evals, baseline, task):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(np.arange(1, len(history) + 1), history, lw=0.8, alpha=0.6, label="training batch")
    if evals:
        e = np.array(evals)
        ax.plot(e[:, 0], e[:, 1], "o-", label="held-out")
    ax.axhline(baseline, color="k", ls="--", lw=1, label="baseline")
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_title(f"gru-cy train: {task}")
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, dpi=100, format=os.path.splitext(path)[1][1:] or "png")
    _files.write_atomic(path, buf.getvalue())
    plt.close(fig)


def generate_parser():
    p = argparse.ArgumentParser(
        prog="gru-cy generate",
        description="Sample bytes from a character model saved by "
                    "'gru-cy train --text FILE --save PATH' (or Darknet's rnn).")
    p.add_argument("--cfg", required=True, help="the model's .cfg")
    p.add_argument("--weights", required=True, help="the model's .weights")
    p.add_argument("--length", type=V.POSITIVE_INT, default=200,
                   help="bytes to generate (default 200)")
    p.add_argument("--seed-text", default="\n", help="text fed first (default a newline)")
    p.add_argument("--temperature", type=V.POSITIVE_FLOAT, default=0.7,
                   help="sampling temperature (default 0.7, as Darknet's rnn)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    return p


def generate_main(argv=None):
    """``gru-cy generate``: prints the seed text and the sampled continuation."""
    p = generate_parser()
    args = p.parse_args(argv)
    for name in ("cfg", "weights"):
        if not os.path.isfile(getattr(args, name)):
            p.error(f"--{name}: no such file: {getattr(args, name)}")
    try:
        net = darknet.load_network(args.cfg, args.weights)
    except ValueError as e:
        p.error(str(e))
    if net.inputs != 256 or net.outputs != 256:
        p.error(f"--cfg: expected a byte model with 256 inputs and outputs, got "
                f"{net.inputs} and {net.outputs}")
    rng = np.random.default_rng(args.seed)
    seed = args.seed_text.encode("utf-8") or b"\n"
    eye = np.eye(256, dtype=net.dtype)
    out = bytearray(seed)
    p_next = None
    for b in seed:
        p_next = to_host(net.predict(eye[b][None, None, :]))[0, 0]
    for _ in range(args.length):
        logp = np.log(np.maximum(p_next.astype(np.float64), 1e-300)) / args.temperature
        q = np.exp(logp - logp.max())
        q /= q.sum()
        b = int(rng.choice(256, p=q))
        out.append(b)
        p_next = to_host(net.predict(eye[b][None, None, :]))[0, 0]
    sys.stdout.buffer.write(bytes(out) + b"\n")
    sys.stdout.flush()
    return 0
