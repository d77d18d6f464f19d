"""The command line of ``gru-cy bench``: its parser and entry point."""
import argparse
import json
import sys

from gru_cy import _files
from gru_cy import _validate as V

from .configs import BIDIRECTIONAL_CONFIG, CONFIGS, DEFAULT_ROWS, ENGINES, ROWS
from .report import render, run

CONFIG_NAMES = list(CONFIGS) + ["stream"]
"""What ``--configs`` accepts: the configurations and batch-1 streaming."""

EPILOG = f"""\
Configs (B, T, I, H): A {CONFIGS['A']}, B {CONFIGS['B']},
C {CONFIGS['C']}, D {CONFIGS['D']}; "stream" is batch-1 streaming
(one call per step, T = 1, B = 1, state carried, config A's I and H).

Engines: gru_cy; numpy (a NumPy forward in the requested dtype, inference
and streaming); torch (torch.nn.GRU, variant reset_after only) and ort (ONNX
Runtime's GRU operator, float32), each when installed. Ratios are gru_cy's
time over another engine's; the summary gives gru_cy over the faster of
torch and ort (NumPy when neither is installed) and the project's
performance target, judged on medians; the ratio of the fastest samples
beside it is less sensitive to other processes on a shared machine.

Rows (--rows): "peers" is the engine comparison above (the default); the
operator features' rows time gru_cy against a baseline, interleaved, after
checking that the two agree, and give the ratio of the two times:
  lengths        GRU.forward(x, lengths=L) and a training step (forward,
                 backward, zero_grad) with L uniform in 1..T (seeded) over the
                 same calls at full length; configs of --configs, tasks of
                 --tasks; target <= 0.65
  bidirectional  StackedGRU(bidirectional=True) over bidirectional=False,
                 config {BIDIRECTIONAL_CONFIG}'s sizes, tasks of --tasks; inference target <= 1.3
                 (the directions run side by side: needs 2 or more threads)
  packed         StackedGRU(num_layers=2, bidirectional=True, reset_after),
                 forward(x, lengths=L), over torch.nn.GRU on
                 pack_padded_sequence(x, L) (and pad_packed_sequence) under
                 no_grad, torch's weights copied (from_torch); inference,
                 configs of --configs; needs torch
e.g.  gru-cy bench --rows lengths,bidirectional,packed --configs B --threads 2

NumPy's OpenBLAS reads OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE; if your shell
sets them (e.g. to pin a slow kernel), unset them for a fair comparison in
that command only:
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE gru-cy bench --threads 2

Exit status: 0, 1 if an engine's output differs from gru_cy's beyond the
tolerance, or a feature row's check fails (the ratios would not compare the
same math), 2 for bad arguments.
"""


def _parse_list(value, allowed):
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if not items or bad:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated list of {', '.join(allowed)}; got {value!r}")
    return list(dict.fromkeys(items))


def parser():
    """The argument parser of ``gru-cy bench``."""
    p = argparse.ArgumentParser(
        prog="gru-cy bench",
        description="Side-by-side timings of gru_cy, NumPy, PyTorch and ONNX Runtime:\n"
                    "inference, training step and batch-1 streaming; GFLOP/s and\n"
                    "ratios; medians of interleaved runs; outputs checked first.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default=",".join(CONFIG_NAMES),
                   type=lambda v: _parse_list(v, CONFIG_NAMES),
                   help=f"comma-separated subset of {','.join(CONFIG_NAMES)} (default: all)")
    p.add_argument("--repeat", type=V.POSITIVE_INT, default=5,
                   help="samples per engine and measurement (default 5)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--threads", type=V.THREADS, default=None,
                   help="threads for every engine (default: gru_cy's default, "
                        "OpenMP's count, given to the others too)")
    p.add_argument("--variant", choices=("reset_after", "darknet", "both"),
                   default="reset_after",
                   help="gru_cy's variant (torch runs reset_after only; ORT's "
                        "linear_before_reset follows it)")
    p.add_argument("--engines", default=",".join(ENGINES),
                   type=lambda v: _parse_list(v, ENGINES),
                   help="comma-separated subset of " + ",".join(ENGINES) + " (gru_cy always "
                        "runs; peers not installed are skipped, saying why)")
    p.add_argument("--tasks", default="inference,train",
                   type=lambda v: _parse_list(v, ("inference", "train")),
                   help="for configs A-D: inference,train (default both)")
    p.add_argument("--rows", default=",".join(DEFAULT_ROWS),
                   type=lambda v: _parse_list(v, ROWS),
                   help=f"comma-separated subset of {','.join(ROWS)}: the engine comparison "
                        "and the operator features' rows (see below; default peers)")
    p.add_argument("--min-time", type=V.POSITIVE_FLOAT, default=0.05,
                   help="shortest sample in seconds; faster calls are repeated (default 0.05)")
    p.add_argument("--peakmem", default=None,
                   help="config whose training step's peak memory is measured for "
                        "gru_cy and torch, each in a fresh process, or 'none' "
                        "(default: C when C is among --configs, else none)")
    p.add_argument("--json", metavar="FILE", default=None,
                   help="also write every sample and the summary as JSON")
    return p



def main(argv=None):
    """Entry point of ``gru-cy bench``; returns the exit code."""
    p = parser()
    try:
        args = p.parse_args(sys.argv[1:] if argv is None else list(argv))
    except SystemExit as e:
        return int(e.code or 0)
    mem_choices = list(CONFIGS) + ["none"]
    if args.peakmem is not None and args.peakmem not in mem_choices:
        p.print_usage(sys.stderr)
        print(f"gru-cy bench: error: --peakmem: expected one of {', '.join(mem_choices)}; "
              f"got {args.peakmem!r}", file=sys.stderr)
        return 2
    bad = _files.unwritable([(args.json, "--json")])
    if bad:
        print(f"gru-cy bench: error: {bad}", file=sys.stderr)
        return 2
    report = run(args, log=lambda *a, **k: print(*a, **k))
    print(render(report))
    if args.json:
        _files.write_atomic(args.json, json.dumps(report, indent=1))
    if report["mismatch"]:
        print("gru-cy bench: an engine's output differs from gru_cy's beyond the tolerance "
              "(or a feature row's check failed); the ratios do not compare the same math",
              file=sys.stderr)
        return 1
    return 0
