"""The ``gru-cy`` command: ``info``, ``train``, ``generate``, ``gradcheck``, ``bench``,
``export``."""
import argparse
import importlib
import json
import platform
import sys

# subcommand -> (module, function taking argv and returning an exit code, help)
COMMANDS = {
    "train": ("gru_cy.tasks", "train_main", "train a GRU on a built-in task (the main job)"),
    "generate": ("gru_cy.tasks", "generate_main", "sample text from a saved character model"),
    "gradcheck": ("gru_cy.gradcheck", "main", "check the backward against finite differences"),
    "bench": ("gru_cy.bench", "main",
              "side-by-side timings against NumPy, PyTorch, ONNX Runtime, OpenVINO, JAX"),
    "export": ("gru_cy.onnx._cli", "main", "convert a checkpoint or Darknet pair to ONNX"),
    "info": ("gru_cy.cli", "info_main", "version, OpenMP, threads, build flags, CUDA"),
}


def info():
    """Facts about this installation, as a dict."""
    import numpy as np
    import scipy

    import gru_cy
    from gru_cy._cpu import team
    try:
        from gru_cy._build_info import BUILD_INFO
    except ImportError:
        BUILD_INFO = {"cflags": "unknown (not built by setup.py build_py)"}
    try:
        from gru_cy import cuda
        ok, why = cuda.available()
    except ImportError as e:
        ok, why = False, f"gru_cy.cuda could not be imported: {e}"
    return {
        "version": gru_cy.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "openmp": team.have_openmp(),
        "threads": team.max_threads(),
        "adaptive_team": team.adaptive_default(),     # GRU_CY_ADAPTIVE (README: num_threads)
        "build_flags": BUILD_INFO.get("cflags"),
        "cuda": ok,
        "cuda_reason": why,
    }


def info_main(argv):
    p = argparse.ArgumentParser(prog="gru-cy info", description=COMMANDS["info"][2])
    p.add_argument("--json", action="store_true", help="print JSON")
    args = p.parse_args(argv)
    facts = info()
    if args.json:
        print(json.dumps(facts, indent=2))
    else:
        width = max(map(len, facts))
        for k, v in facts.items():
            print(f"{k:<{width}}  {v}")
    return 0


def _version():
    from gru_cy import __version__
    return __version__


def main(argv=None):
    """Entry point of ``gru-cy`` and ``python -m gru_cy``; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(
        prog="gru-cy",
        description="gru_cy: a Darknet-style GRU with a Cython/OpenMP engine.",
        epilog="Run 'gru-cy COMMAND --help' for a command's options.")
    p.add_argument("command", choices=sorted(COMMANDS), metavar="COMMAND",
                   help="; ".join(f"{k}: {v[2]}" for k, v in COMMANDS.items()))
    p.add_argument("--version", action="version", version=_version())
    if not argv or argv[0] in ("-h", "--help"):
        p.print_help()
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"gru-cy {_version()}")
        return 0
    args = p.parse_args(argv[:1])
    module, func, _ = COMMANDS[args.command]
    try:
        try:
            fn = getattr(importlib.import_module(module), func)
        except (ImportError, AttributeError) as e:
            print(f"gru-cy {args.command}: not available in this build ({e})",
                  file=sys.stderr)
            return 2
        return fn(argv[1:])
    except KeyboardInterrupt:
        # Ctrl-C: a line, not a traceback; 130 = 128 + SIGINT, as shells report it
        print(f"\ngru-cy {args.command}: interrupted", file=sys.stderr)
        return 130
