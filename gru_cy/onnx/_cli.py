"""``gru-cy export PATH --onnx OUT``: a checkpoint or a Darknet pair as ONNX."""
import argparse
import os
import sys

import numpy as np


def parser():
    p = argparse.ArgumentParser(
        prog="gru-cy export",
        description="Convert a gru_cy checkpoint (PATH or PATH.ckpt, from model.save or "
                    "'gru-cy train --save') or a Darknet pair (PATH.cfg with PATH.weights) "
                    "to an ONNX model for ONNX Runtime or OpenVINO.")
    p.add_argument("path", metavar="PATH",
                   help="a checkpoint, a .cfg (its .weights beside it), or their common stem")
    p.add_argument("--onnx", metavar="OUT", required=True, help="the ONNX file to write")
    p.add_argument("--weights", metavar="FILE",
                   help="the Darknet .weights for a .cfg PATH (default: beside the cfg)")
    p.add_argument("--opset", type=int, default=None,
                   help="ONNX opset, 14 or newer (default 17)")
    p.add_argument("--sequence-lens", action="store_true",
                   help="add the sequence_lens input (B,) int32: padded batches")
    p.add_argument("--initial-h", action="store_true",
                   help="add the initial-state input(s)")
    p.add_argument("--static-shape", metavar="T,B",
                   help="fixed time and batch sizes (OpenVINO needs them with "
                        "--sequence-lens)")
    p.add_argument("--no-check", action="store_true",
                   help="do not compare the file with gru_cy in ONNX Runtime "
                        "(done when onnxruntime is installed)")
    return p


def _source(path, weights):
    """('checkpoint', path) or ('darknet', cfg, weights), or a ValueError."""
    root, ext = os.path.splitext(path)
    if ext == ".cfg" or (ext != ".ckpt" and not os.path.isfile(path)
                         and not os.path.isfile(path + ".ckpt")
                         and os.path.isfile(path + ".cfg")):
        cfg = path if ext == ".cfg" else path + ".cfg"
        stem = root if ext == ".cfg" else path
        weights = weights or stem + ".weights"
        for f, what in ((cfg, "PATH"), (weights, "--weights")):
            if not os.path.isfile(f):
                raise ValueError(f"{what}: no such file: {f}")
        return ("darknet", cfg, weights)
    if weights:
        raise ValueError("--weights: only with a Darknet .cfg PATH")
    if os.path.isfile(path):
        return ("checkpoint", path)
    if os.path.isfile(path + ".ckpt"):
        return ("checkpoint", path + ".ckpt")
    raise ValueError(f"PATH: no such file: {path} (nor {path}.ckpt, {path}.cfg)")


def _static(text):
    try:
        T, B = (int(v) for v in text.split(","))
        if T > 0 and B > 0:
            return T, B
    except ValueError:
        pass
    raise ValueError(f"--static-shape: expected T,B (two positive ints), got {text!r}")


CHECK_ELEMENTS = 10 ** 7
"""The largest input (T * B * features) the check after an export runs."""


def _check(model, proto, args):
    """Max |gru_cy - ONNX Runtime| on a random batch, or None without ORT."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    T, B = _static(args.static_shape) if args.static_shape else (5, 3)
    if T * B * max(model.inputs, getattr(model, "outputs", 1)) > CHECK_ELEMENTS:
        return "too large"
    # the file holds float32 products: compare with the model's float32 path
    for layer in [model] + [m for m in getattr(model, "layers", []) if not isinstance(m, list)]:
        if getattr(layer, "inference_precision", "float32") != "float32":
            layer.inference_precision = "float32"
    rng = np.random.default_rng(0)
    bf = getattr(model, "batch_first", False)
    x = rng.normal(size=(B, T, model.inputs) if bf else (T, B, model.inputs))
    x = x.astype(np.float32)
    feeds = {"x": x}
    lengths = None
    if args.sequence_lens:
        lengths = np.maximum(1, T - np.arange(B) % T).astype(np.int32)
        feeds["sequence_lens"] = lengths
    for v in proto.graph.input:
        if v.name.startswith("initial_h"):
            dims = [d.dim_value or B for d in v.type.tensor_type.shape.dim]
            feeds[v.name] = np.zeros(dims, np.float32)
    sess = ort.InferenceSession(proto.SerializeToString(),
                                providers=["CPUExecutionProvider"])
    y_ort = sess.run(["y"], feeds)[0]
    if hasattr(model, "reset_state"):
        model.reset_state()
    y = model.forward(x.astype(model.dtype), lengths=lengths)
    return float(np.max(np.abs(np.asarray(y, np.float64) - y_ort)))


def main(argv=None):
    p = parser()
    args = p.parse_args(argv)
    from gru_cy import _files
    try:
        source = _source(args.path, args.weights)
        static = _static(args.static_shape) if args.static_shape else None
        _files.check_writable(args.onnx, "--onnx")
    except ValueError as e:
        p.error(str(e))
    try:
        from gru_cy.onnx._export import require_onnx
        require_onnx()
    except ImportError as e:
        print(f"gru-cy export: error: {e}", file=sys.stderr)
        return 2
    from gru_cy import checkpoint, darknet
    from gru_cy.onnx._export import export
    try:
        if source[0] == "checkpoint":
            model = checkpoint.load(source[1])
        else:
            model = darknet.load_network(source[1], source[2])
        proto = export(model, args.onnx, opset=args.opset, sequence_lens=args.sequence_lens,
                       initial_h=args.initial_h, static_shape=static)
    except (ValueError, TypeError, RuntimeError, MemoryError) as e:
        msg = str(e)
        for name in ("opset", "static_shape"):
            if msg.startswith(name + ":"):
                msg = "--" + name.replace("_", "-") + msg[len(name):]
        print(f"gru-cy export: error: {msg}", file=sys.stderr)
        return 2
    size = os.path.getsize(args.onnx)
    print(f"wrote {args.onnx} ({size:,} bytes, opset "
          f"{proto.opset_import[0].version}): {model!r}")
    if not args.no_check:
        diff = _check(model, proto, args)
        if diff is None:
            print("not checked: onnxruntime is not installed (pip install onnxruntime)")
        elif diff == "too large":
            print(f"not checked: --static-shape {args.static_shape} is larger than a check "
                  f"run takes ({CHECK_ELEMENTS:,} input values)")
        else:
            print(f"checked with ONNX Runtime: max |gru_cy - ONNX Runtime| = {diff:.3g} "
                  f"on a random batch")
            if not diff <= 1e-4:
                print("gru-cy export: error: ONNX Runtime disagrees with gru_cy",
                      file=sys.stderr)
                return 1
    return 0
