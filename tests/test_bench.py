"""``gru-cy bench``: the command runs, its JSON has the promised structure, bad
arguments exit with status 2.  Timings are never asserted (the machine is shared)."""
import json
import os
import subprocess
import sys

import pytest
from numpy.testing import assert_allclose

from gru_cy import bench

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "gru_cy", "bench", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_smoke_json(tmp_path):
    out = tmp_path / "bench.json"
    res = _run("--configs", "D,stream", "--repeat", "1", "--min-time", "0.001",
               "--threads", "1", "--peakmem", "D", "--json", str(out))
    assert res.returncode == 0, res.stderr
    assert "Summary" in res.stdout
    report = json.loads(out.read_text())
    assert set(report) >= {"machine", "settings", "versions", "skipped", "results",
                           "summary", "peakmem", "mismatch"}
    assert report["mismatch"] is False
    assert report["settings"]["dtype"] == "float32" and report["settings"]["threads"] == 1
    assert report["settings"]["rows"] == ["peers"] and report["features"] == []
    results = report["results"]
    seen = {(r["config"], r["task"], r["engine"]) for r in results}
    assert {("D", "inference", "gru_cy"), ("D", "train", "gru_cy"),
            ("stream", "stream", "gru_cy"), ("D", "inference", "numpy")} <= seen
    for r in results:
        assert r["median_s"] > 0 and r["gflops"] > 0 and len(r["samples_s"]) == 1
        assert r["match"] is True
        assert (r["B"], r["T"], r["I"], r["H"]) == (
            (1, 128, 64, 128) if r["config"] == "stream" else bench.CONFIGS["D"])
    assert {(s["config"], s["task"]) for s in report["summary"]} == {
        ("D", "inference"), ("D", "train"), ("stream", "stream")}
    for s in report["summary"]:
        assert set(s) >= {"gru_cy_s", "best_peer", "best_peer_s", "ratio", "target", "met",
                          "ratio_of_minima"}
    mem = {m["engine"]: m for m in report["peakmem"]}
    assert "gru_cy" in mem and "error" not in mem["gru_cy"], mem
    assert mem["gru_cy"]["peak_kib"] >= mem["gru_cy"]["rss_before_kib"] > 0


@pytest.mark.slow
def test_darknet_float64_only_gru_cy_and_numpy(tmp_path):
    out = tmp_path / "bench.json"
    res = _run("--configs", "D", "--tasks", "inference", "--variant", "darknet",
               "--dtype", "float64", "--engines", "gru_cy,numpy,ort", "--repeat", "1",
               "--threads", "1", "--min-time", "0.001", "--json", str(out))
    assert res.returncode == 0, res.stderr
    report = json.loads(out.read_text())
    assert {r["engine"] for r in report["results"]} == {"gru_cy", "numpy"}
    assert "ort/darknet" in report["skipped"]
    # float64 engines computing the same recurrence agree to rounding (~1e-15 per step).
    assert all(r["max_abs_diff"] < 1e-9 for r in report["results"])


@pytest.mark.parametrize("args", [
    ["--configs", "E"], ["--configs", ""], ["--repeat", "0"], ["--repeat", "x"],
    ["--dtype", "float16"], ["--variant", "cudnn"], ["--engines", "tensorflow"],
    ["--peakmem", "Z"], ["--threads", "-1"], ["--min-time", "0"], ["--bogus"],
    ["--rows", "stream"], ["--rows", ""],
])
def test_bad_arguments_exit_2(args, capsys):
    assert bench.main(args) == 2
    assert "error" in capsys.readouterr().err


@pytest.mark.slow
def test_bad_arguments_exit_2_through_cli():
    res = _run("--configs", "Q")
    assert res.returncode == 2
    assert "--configs" in res.stderr


def test_help_mentions_openblas(capsys):
    assert bench.main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE" in text


def test_flop_count_matches_issue_numbers():
    # Issue 6: torch's config B training step, 65 ms, is 75 GFLOP/s; C's 1.41 s is 128.
    assert_allclose(bench.flops("train", 32, 64, 256, 256) / 0.065 / 1e9, 75, rtol=0.01)
    assert_allclose(bench.flops("train", 64, 100, 512, 1024) / 1.41 / 1e9, 128, rtol=0.01)


def test_calibration_is_not_set_by_one_stalled_call(monkeypatch):
    # warm-up 30 ms, then one call stalled at 11 ms among 0.25 ms ones: the
    # count follows the fast calls (0.05 s / 0.25 ms = 200), not the stall (5)
    times = iter([0.03, 0.011] + [0.00025] * 100)
    monkeypatch.setattr(bench.timing, "_timed", lambda fn: next(times))
    assert bench.timing._calibrate(lambda: None, 0.05) == 200
    times = iter([0.2])                      # a call longer than a sample
    assert bench.timing._calibrate(lambda: None, 0.05) == 1
    times = iter([0.01, 0.01, 0.07])         # ... after the warm-up
    assert bench.timing._calibrate(lambda: None, 0.05) == 1


def test_interleaving_rotates_the_order():
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    samples = bench.interleaved_medians(fns, repeat=3, min_time=1e-9)
    assert {k: len(v) for k, v in samples.items()} == {"a": 3, "b": 3, "c": 3}
    timed = calls[-9:]       # after the warm-up and calibration calls
    assert timed == list("abc") + list("bca") + list("cab")


# ------------------------------------------------------- operator features --
TINY = {"A": (1, 6, 4, 5), "D": (3, 7, 4, 6)}


def _tiny_features(monkeypatch, *extra):
    for name, sizes in TINY.items():
        monkeypatch.setitem(bench.CONFIGS, name, sizes)
    args = bench.parser().parse_args(
        ["--rows", "lengths,bidirectional,packed", "--configs", "D", "--repeat", "2",
         "--min-time", "1e-4", "--threads", "1", *extra])
    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch is not None else None
    try:
        return bench.run(args, log=lambda *a, **k: None)
    finally:                    # the packed row sets torch's thread count
        if threads is not None:
            torch.set_num_threads(threads)


def _torch_installed():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def test_feature_rows_tiny(monkeypatch):
    _torch_installed()          # imported first, so that _tiny_features restores its threads
    report = _tiny_features(monkeypatch)
    assert report["results"] == [] and report["summary"] == [] and report["peakmem"] == []
    assert report["mismatch"] is False
    feats = {(f["row"], f["config"], f["task"]): f for f in report["features"]}
    want = {("lengths", "D", "inference"), ("lengths", "D", "train"),
            ("bidirectional", "A", "inference"), ("bidirectional", "A", "train")}
    if _torch_installed():
        want.add(("packed", "D", "inference"))
    else:
        assert "packed/torch" in report["skipped"]
    assert set(feats) == want
    for f in feats.values():
        assert f["match"] is True
        assert (f["B"], f["T"], f["I"], f["H"]) == TINY[f["config"]]
        assert f["subject_s"] > 0 and f["baseline_s"] > 0 and f["ratio"] > 0
        assert {k: len(v) for k, v in f["samples_s"].items()} == {
            f["subject"]: 2, f["baseline"]: 2}
    assert feats["lengths", "D", "train"]["target"] == 0.65
    assert feats["bidirectional", "A", "inference"]["target"] == 1.3
    # the prefix check compares exactly the same recurrence on the valid steps
    assert feats["lengths", "D", "inference"]["max_abs_diff"] < 1e-6
    text = bench.render(report)
    assert "Operator features" in text and "Summary" not in text
    json.dumps(report)


def test_feature_lengths_are_seeded_and_in_range():
    a, b = bench.draw_lengths(64, 10), bench.draw_lengths(64, 10)
    assert (a == b).all() and a.min() >= 1 and a.max() <= 10 and a.dtype.kind == "i"


def test_packed_row_skipped_without_torch(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)     # import torch raises ImportError
    report = _tiny_features(monkeypatch, "--tasks", "inference")
    assert "packed/torch" in report["skipped"]
    assert {f["row"] for f in report["features"]} == {"lengths", "bidirectional"}
    assert "skipped packed/torch" in bench.render(report)


@pytest.mark.slow
def test_feature_rows_through_cli(tmp_path):
    out = tmp_path / "bench.json"
    res = _run("--rows", "lengths,bidirectional", "--configs", "D", "--tasks", "inference",
               "--repeat", "1", "--min-time", "0.001", "--threads", "1", "--json", str(out))
    assert res.returncode == 0, res.stderr
    assert "Operator features" in res.stdout
    report = json.loads(out.read_text())
    assert {(f["row"], f["config"]) for f in report["features"]} == {
        ("lengths", "D"), ("bidirectional", "A")}


# ------------------------------------------------------- stronger peers ---
@pytest.mark.parametrize("variant", ("reset_after", "darknet"))
@pytest.mark.parametrize("name, module", [("openvino", "openvino"),
                                          ("openvino_default", "openvino"),
                                          ("jax", "jax"), ("gru_cy_bf16", "numpy")])
def test_issue17_peers_agree_with_gru_cy(monkeypatch, name, module, variant):
    pytest.importorskip(module, reason=f"{module} is a benchmark reference only")
    from gru_cy.bench import engines as E
    monkeypatch.setitem(bench.CONFIGS, "D", (3, 7, 4, 6))
    import numpy as np
    f32 = np.dtype(np.float32)
    params, x, dy, h0 = E.make_problem("D", f32, variant)
    built, skipped = E.build_engines(["gru_cy", name], params, variant, f32, 1)
    if name == "gru_cy_bf16" and skipped:
        pytest.skip(f"bfloat16 inference: {skipped[name]}")
    assert not skipped and [e.name for e in built] == ["gru_cy", name]
    for task in built[1].tasks:
        if task == "stream":
            xs = x[:, :1]
            ours = built[0].stream_outputs(xs)
            assert E._within(E._max_diff(built[1].stream_outputs(xs), ours), ours,
                             x.dtype, built[1])
            built[1].stream(xs)()
            continue
        diff, ok = E.check_outputs(task, built, x, dy, h0)[name]
        assert ok, (task, diff)
        fn = built[1].infer(x, h0) if task == "inference" else built[1].train(x, dy, h0)
        fn()                                         # the timed call runs
    if name == "jax":                                # the training step moves the weights
        step = built[1].train(x, dy, h0)
        before = np.asarray(built[1].trained["p"]["Wh"]).copy()
        step()
        assert not np.array_equal(before, np.asarray(built[1].trained["p"]["Wh"]))


def test_engines_list_names_the_new_peers(capsys):
    assert bench.main(["--engines", "gru_cy,openvino,openvino_default,jax", "--help"]) == 0
    assert "openvino" in " ".join(bench.ENGINES) and "jax" in bench.ENGINES


def _asv_peers():
    import importlib.util
    path = os.path.join(ROOT, "asv_bench", "benchmarks", "bench_peers.py")
    spec = importlib.util.spec_from_file_location("asv_bench_peers", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_asv_peer_benchmarks():
    # asv_bench/benchmarks/bench_peers.py: gru_cy's cases run; a case an engine
    # cannot run is asv's "skipped" (NotImplementedError from setup), never an error
    mod = _asv_peers()
    inf = mod.PeerInference()
    inf.setup("A", "reset_after", "gru_cy")
    inf.time_inference("A", "reset_after", "gru_cy")
    step = mod.PeerTrainingStep()
    step.setup("D", "darknet", "gru_cy")
    step.time_train_step("D", "darknet", "gru_cy")
    with pytest.raises(NotImplementedError):
        mod.PeerTrainingStep().setup("A", "darknet", "torch")   # nn.GRU: reset_after only


def test_asv_peer_benchmarks_check_the_peer(monkeypatch):
    # a peer is timed only after its outputs agree with gru_cy's
    pytest.importorskip("onnxruntime", reason="ONNX Runtime is not installed")
    pytest.importorskip("onnx", reason="onnx is not installed")
    mod = _asv_peers()
    inf = mod.PeerInference()
    inf.setup("D", "darknet", "ort")
    inf.time_inference("D", "darknet", "ort")
    from gru_cy.bench import engines
    monkeypatch.setattr(engines, "check_outputs",
                        lambda task, engs, x, dy, h0: {e.name: (1.0, False) for e in engs})
    with pytest.raises(RuntimeError, match="disagrees"):
        mod.PeerInference().setup("D", "darknet", "ort")
