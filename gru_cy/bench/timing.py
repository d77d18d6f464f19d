"""Timing for ``gru-cy bench``: waiting for idle threads, calibration,
interleaved samples, and the peak memory of a training step in a fresh process."""
import gc
import json
import math
import subprocess
import sys
import time

import numpy as np

from .engines import ENGINE_CLASSES, make_problem

SETTLE_WINDOW_S = 0.02
SETTLE_MAX_S = 1.0
SETTLE_BUSY = 0.1
"""Before each sample the process waits until its threads are idle: its CPU
time grows by less than SETTLE_BUSY of the wall time over a SETTLE_WINDOW_S
window (at most SETTLE_MAX_S).  Idle worker threads spin before they block:
libgomp's (gru_cy's, torch's) for a few milliseconds, ONNX Runtime's for about
2^20 pause instructions (~20 ms here), OpenBLAS's (NumPy) for up to ~0.1 s.  A
spinning thread of the previous engine takes a core from the next one, and a
team that meets at barriers (every engine here) then waits for a descheduled
thread."""


def settle():
    """Wait until this process's threads stop using CPU (see SETTLE_BUSY)."""
    deadline = time.perf_counter() + SETTLE_MAX_S
    while True:
        c0, w0 = time.process_time(), time.perf_counter()
        time.sleep(SETTLE_WINDOW_S)
        busy = (time.process_time() - c0) / max(time.perf_counter() - w0, 1e-9)
        if busy < SETTLE_BUSY or time.perf_counter() > deadline:
            return


# ----------------------------------------------------------------- timing --
def _timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


CALIBRATE_SHARE = 0.2
CALIBRATE_MAX_CALLS = 1000


def _calibrate(fn, min_time):
    """Calls per sample so that a sample lasts at least ``min_time`` seconds.

    The first call warms up (caches, thread pools, first-touch pages).  Then
    calls are timed until they add up to CALIBRATE_SHARE of ``min_time`` (at
    least three, at most CALIBRATE_MAX_CALLS) and the fastest sets the count:
    one call that a stall of the machine made 40 times slower would otherwise
    set it (a 0.25 ms call timed at 11 ms gave samples of five calls, whose
    medians then moved with single stalls).  A call that alone outlasts
    ``min_time`` is not repeated.
    """
    once = _timed(fn)
    if once >= min_time:
        return 1
    times = []
    while len(times) < 3 or (sum(times) < CALIBRATE_SHARE * min_time
                             and len(times) < CALIBRATE_MAX_CALLS):
        times.append(_timed(fn))
        if times[-1] >= min_time:
            return 1
    return max(1, min(100000, int(math.ceil(min_time / max(min(times), 1e-7)))))


def interleaved_medians(fns, repeat, min_time):
    """Median seconds per call of each named callable, sampled round-robin.

    Parameters
    ----------
    fns : dict of str to callable
    repeat : int
        Samples per callable; repeat ``r`` starts the rotation at engine ``r``.
    min_time : float
        Shortest sample; faster callables are called several times per sample.

    Returns
    -------
    dict of str to list of float
        Every sample (seconds per call), in sampling order.
    """
    names = list(fns)
    numbers = {name: _calibrate(fns[name], min_time) for name in names}
    samples = {name: [] for name in names}
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for r in range(repeat):
            for k in range(len(names)):
                name = names[(r + k) % len(names)]
                fn, number = fns[name], numbers[name]
                settle()
                t0 = time.perf_counter()
                for _ in range(number):
                    fn()
                samples[name].append((time.perf_counter() - t0) / number)
    finally:
        if gc_was:
            gc.enable()
    return samples



# ----------------------------------------------------------------- memory --
def _proc_status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"/proc/self/status has no {field}")


def _peakmem_child(argv):
    """In a fresh process: memory of one training step of one engine.

    ``argv``: engine, config, dtype, threads ("none" or an int).  Prints a JSON
    object with ``rss_before_kib`` (resident size after building the model and
    data and after a tiny warm-up step that starts thread pools), and
    ``peak_kib`` (the high-water mark of the first full step, reset before it
    through ``/proc/self/clear_refs`` where allowed, else ``ru_maxrss``).
    """
    import resource

    engine, config, dtype, threads = argv
    threads = None if threads == "none" else int(threads)
    dtype = np.dtype(dtype).type
    warm_params, wx, wdy, wh0 = make_problem("D", dtype, "reset_after")
    warm = ENGINE_CLASSES[engine](warm_params, "reset_after", dtype, threads)
    warm.train(wx[:2, :2], wdy[:2, :2], wh0[:2])()
    params, x, dy, h0 = make_problem(config, dtype, "reset_after")
    eng = ENGINE_CLASSES[engine](params, "reset_after", dtype, threads)
    step = eng.train(x, dy, h0)
    del params, warm, warm_params
    gc.collect()
    method = "clear_refs"
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = _proc_status_kib("VmRSS")
    except OSError:
        method = "ru_maxrss"
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    step()
    if method == "clear_refs":
        peak = _proc_status_kib("VmHWM")
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"rss_before_kib": before, "peak_kib": peak, "method": method}))
    return 0


def peak_memory(engine, config, dtype, threads, timeout=1800):
    """Run ``_peakmem_child`` in a fresh interpreter; its dict, or {"error": ...}."""
    code = ("import sys; from gru_cy.bench.timing import _peakmem_child; "
            "sys.exit(_peakmem_child(sys.argv[1:]))")
    cmd = [sys.executable, "-c", code, engine, config, np.dtype(dtype).name,
           "none" if threads is None else str(threads)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    if res.returncode != 0:
        lines = (res.stderr.strip() or "no output").splitlines()
        return {"error": lines[-1]}
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["delta_kib"] = out["peak_kib"] - out["rss_before_kib"]
    return out

