"""bfloat16 inference against float32: error and speed (issue 17, item 3).

    python tools/bench_bf16.py [--configs A,B,C,D] [--time B,C] [--repeat 7]
                               [--threads 2] [--variant reset_after] [--model M.ckpt]
                               [--text FILE]

Error: max |y_bf16 - y_float32| (and the final states') of the same layer
(seeded Darknet initialisation, N(0, 1) inputs) on each config.  With
``--model`` (a checkpoint of ``gru-cy train --text``; ``--text`` its training
text): the network's next-character distributions on windows of the text,
max abs and max total-variation difference of the softmax outputs, and how
often the most likely character differs.  Speed: one float32 and one bf16
layer of the same weights, calls interleaved (float32, bf16, float32, ...),
``--repeat`` calls each after a warm-up; min and median, and the ratio float32
/ bf16 of each.  Timings move with the load of the machine: run it quiet.
"""
import argparse
import statistics
import time

import numpy as np

import gru_cy
from gru_cy.bench.configs import CONFIGS, SEED, flops


def layers(B, T, I, H, variant, threads):
    f32 = gru_cy.GRU(I, H, variant=variant, seed=SEED, num_threads=threads)
    b16 = gru_cy.GRU(I, H, variant=variant, seed=SEED, num_threads=threads,
                     inference_precision="bfloat16")
    x = np.random.default_rng(SEED).standard_normal((T, B, I)).astype(np.float32)
    return f32, b16, x


def error(name, variant, threads):
    B, T, I, H = CONFIGS[name]
    f32, b16, x = layers(B, T, I, H, variant, threads)
    y, yb = f32.forward(x), b16.forward(x)
    return float(np.abs(yb - y).max()), float(np.abs(b16.state - f32.state).max())


def openvino_call(layer, x, h0, threads, precision):
    """A call of OpenVINO's CPU plugin on the ONNX GRU node of ``layer``'s
    weights (``gru_cy.bench.common.gru_onnx_model``), compiled with
    INFERENCE_NUM_THREADS and ``precision`` ("f32", or None: the plugin's
    default, bf16 on a CPU with AVX512_BF16); None where OpenVINO or onnx is
    not installed.  Checked against the float32 layer first."""
    try:
        import openvino as ov
    except ImportError:
        return None
    from gru_cy.bench.common import gru_onnx_model
    model = gru_onnx_model(dict(layer.params), int(layer.variant == "reset_after"),
                           stream=False)
    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": threads}
    if precision is not None:
        config["INFERENCE_PRECISION_HINT"] = precision
    compiled = core.compile_model(core.read_model(model.SerializeToString(), b""), "CPU",
                                  config)
    request = compiled.create_infer_request()
    feed = {"X": x, "initial_h": h0[None]}

    def call():
        request.infer(feed)
        return request.get_output_tensor(0).data[:, 0]

    return call


def timing(name, variant, threads, repeat, openvino=False):
    B, T, I, H = CONFIGS[name]
    f32, b16, x = layers(B, T, I, H, variant, threads)
    h0 = np.zeros((B, H), np.float32)
    calls = {"float32": lambda: f32.forward(x, h0=h0), "bfloat16": lambda: b16.forward(x, h0=h0)}
    if openvino:
        for key, prec in (("openvino_f32", "f32"), ("openvino_default", None)):
            call = openvino_call(f32, x, h0, threads, prec)
            if call is not None:
                y = f32.forward(x, h0=h0)
                err = float(np.abs(call() - y).max())
                print(f"check {name} {key}: max|y - y_gru_cy_float32| {err:.3g}")
                calls[key] = call
    for call in calls.values():   # warm-up (bf16: the weights' conversion)
        call()
    times = {key: [] for key in calls}
    for _ in range(repeat):
        for key, call in calls.items():
            t0 = time.perf_counter()
            call()
            times[key].append(time.perf_counter() - t0)
    return times, flops("inference", B, T, I, H)


def model_error(path, text_path, windows=64, length=64):
    net = gru_cy.load(path)
    data = np.frombuffer(open(text_path, "rb").read(), np.uint8)
    rng = np.random.default_rng(SEED)
    starts = rng.integers(0, data.size - length, windows)
    x = np.zeros((length, windows, 256), np.float32)
    for b, s in enumerate(starts):
        x[np.arange(length), b, data[s:s + length]] = 1
    grus = [layer for layer in getattr(net, "layers", []) if isinstance(layer, gru_cy.GRU)]

    def run(precision):
        for g in grus:
            g.inference_precision = precision
            g.reset_state()
        y = grus[0].forward(x, h0=np.zeros((windows, grus[0].outputs), np.float32))
        for g in grus:
            g.reset_state()
        return y, np.asarray(net.predict(x))

    y32, p32 = run("float32")
    y16, p16 = run("bfloat16")
    p32, p16 = p32.reshape(-1, 256), p16.reshape(-1, 256)
    return dict(first_gru_y_max_abs=float(np.abs(y16 - y32).max()),
                max_abs=float(np.abs(p16 - p32).max()),
                max_tv=float(0.5 * np.abs(p16 - p32).sum(axis=1).max()),
                argmax_differs=float((p16.argmax(1) != p32.argmax(1)).mean()),
                rows=p32.shape[0], gru_layers=len(grus))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configs", default="A,B,C,D")
    ap.add_argument("--time", default="B,C")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variant", default="reset_after")
    ap.add_argument("--model")
    ap.add_argument("--text")
    ap.add_argument("--openvino", action="store_true",
                    help="time OpenVINO (f32 and its default precision) in the rotation too")
    a = ap.parse_args()
    for name in filter(None, a.configs.split(",")):
        for variant in ("darknet", "reset_after"):
            ey, eh = error(name, variant, a.threads)
            print(f"error {name} {variant:12s} max|y| {ey:.3g}  max|state| {eh:.3g}")
    if a.model:
        print("model", a.model, model_error(a.model, a.text))
    for name in filter(None, a.time.split(",")):
        times, fl = timing(name, a.variant, a.threads, a.repeat, a.openvino)
        f, b = times["float32"], times["bfloat16"]
        for key in ("openvino_f32", "openvino_default"):
            if key in times:
                o = times[key]
                print(f"time {name} {key}: min {min(o) * 1e3:.2f} ms median "
                      f"{statistics.median(o) * 1e3:.2f}; bfloat16 / {key} min "
                      f"{min(b) / min(o):.2f} median "
                      f"{statistics.median(b) / statistics.median(o):.2f}")
        print(f"time {name} {a.variant} {a.threads} threads: "
              f"float32 min {min(f) * 1e3:.2f} ms median {statistics.median(f) * 1e3:.2f}; "
              f"bfloat16 min {min(b) * 1e3:.2f} median {statistics.median(b) * 1e3:.2f}; "
              f"float32/bfloat16 min {min(f) / min(b):.2f} median "
              f"{statistics.median(f) / statistics.median(b):.2f}; "
              f"bf16 {fl / min(b) / 1e9:.0f} GFLOP/s at its fastest")


if __name__ == "__main__":
    main()
