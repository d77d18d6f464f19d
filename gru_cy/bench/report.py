"""``gru-cy bench``'s measurements (``run``) and their text tables (``render``)."""
import importlib.util
import os
import platform
import statistics
import sys

import numpy as np

from . import features
from .configs import CONFIGS, DEFAULT_ROWS, STREAM_SIZES, TARGET_PEERS, TARGETS, flops
from .engines import build_engines, check_outputs, make_problem
from .timing import interleaved_medians, peak_memory


def _versions():
    import gru_cy

    v = {"gru_cy": gru_cy.__version__, "numpy": np.__version__,
         "python": platform.python_version()}
    for mod in ("torch", "onnxruntime"):
        try:
            v[mod] = __import__(mod).__version__
        except ImportError:
            v[mod] = None
    return v


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _installed(module):
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError, AttributeError):
        return False


def _loadavg():
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def _fmt_time(s):
    if s >= 1:
        return f"{s:.3f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.1f} us"


def _table(rows, headers):
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip(),
           "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(out)


def run(args, log=print):
    """Measure everything ``args`` asks for; the JSON-ready report."""
    from gru_cy import backends

    threads = args.threads
    eff_threads = threads if threads is not None else backends.get("cpu").max_threads()
    peer_threads = eff_threads
    dtype = np.dtype(args.dtype).type
    variants = ["reset_after", "darknet"] if args.variant == "both" else [args.variant]
    names = ["gru_cy"] + [e for e in args.engines if e != "gru_cy"]
    rows = list(getattr(args, "rows", DEFAULT_ROWS))
    blas_limit = None
    if "numpy" in names and "peers" in rows:
        try:
            from threadpoolctl import threadpool_limits
            blas_limit = threadpool_limits(limits=peer_threads, user_api="blas")
        except ImportError:
            pass
    report = {"machine": {"cpu": _cpu_name(), "cores": os.cpu_count(),
                          "platform": platform.platform(), "loadavg_start": _loadavg()},
              "settings": {"configs": args.configs, "repeat": args.repeat,
                           "dtype": args.dtype, "threads": eff_threads,
                           "variant": args.variant, "min_time": args.min_time,
                           "rows": rows,
                           "openblas_env": {k: os.environ.get(k) for k in
                                            ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}},
              "versions": _versions(), "skipped": {}, "results": [], "summary": [],
              "peakmem": [], "features": []}
    mismatch = False
    for variant in variants if "peers" in rows else ():
        for config in args.configs:
            tasks = ["stream"] if config == "stream" else args.tasks
            params, x, dy, h0 = make_problem(config, dtype, variant)
            B, T, I, H = CONFIGS.get(config, (1,) + STREAM_SIZES[1:])
            engines, skipped = build_engines(names, params, variant, dtype, peer_threads)
            for name, why in skipped.items():
                report["skipped"].setdefault(f"{name}/{variant}", why)
            for task in tasks:
                active = [e for e in engines if task in e.tasks]
                guard = check_outputs(task, active, x, dy, h0)
                if task == "stream":
                    fns = {e.name: e.stream(x) for e in active}
                elif task == "inference":
                    fns = {e.name: e.infer(x, h0) for e in active}
                else:
                    fns = {e.name: e.train(x, dy, h0) for e in active}
                samples = interleaved_medians(fns, args.repeat, args.min_time)
                med = {n: statistics.median(s) for n, s in samples.items()}
                work = flops(task, B, T, I, H)
                for name in fns:
                    diff, ok = guard[name]
                    mismatch |= not ok
                    report["results"].append({
                        "config": config, "variant": variant, "task": task, "engine": name,
                        "B": B, "T": T, "I": I, "H": H, "dtype": args.dtype,
                        "median_s": med[name], "samples_s": samples[name],
                        "gflops": work / med[name] / 1e9,
                        "gru_cy_over_this": med["gru_cy"] / med[name],
                        "max_abs_diff": diff, "match": ok})
                peers = {n: t for n, t in med.items() if n in TARGET_PEERS}
                target = TARGETS.get((task, config))
                if not peers:       # no torch or ORT: compare with NumPy, no verdict
                    peers = {n: t for n, t in med.items()
                             if n not in ("gru_cy", "gru_cy_bf16")}
                    target = None
                best = min(peers, key=peers.get) if peers else None
                ratio = med["gru_cy"] / peers[best] if best else None
                fastest = {n: min(s) for n, s in samples.items()}
                ratio_min = (fastest["gru_cy"] / min(fastest[n] for n in peers)
                             if peers else None)
                report["summary"].append({
                    "config": config, "variant": variant, "task": task,
                    "gru_cy_s": med["gru_cy"], "best_peer": best,
                    "best_peer_s": peers.get(best), "ratio": ratio, "target": target,
                    "ratio_of_minima": ratio_min,
                    "met": None if ratio is None or target is None else ratio <= target})
                log(f"  measured {config} {variant} {task}", file=sys.stderr)
            del engines
    for spec in features.specs(rows, args.configs, args.tasks, variants, dtype, threads,
                               peer_threads, report["skipped"]):
        record = _measure_feature(spec, args)
        mismatch |= not record["match"]
        report["features"].append(record)
        log(f"  measured {spec['row']} {spec['config']} {spec['variant']} {spec['task']}",
            file=sys.stderr)
    mem_cfg = args.peakmem
    if mem_cfg is None:
        mem_cfg = "C" if "C" in args.configs and "peers" in rows else "none"
    if mem_cfg != "none":
        for name in ("gru_cy", "torch"):
            if name in names and (name == "gru_cy" or _installed(name)):
                res = peak_memory(name, mem_cfg, args.dtype,
                                  threads if name == "gru_cy" else eff_threads)
                res.update({"engine": name, "config": mem_cfg})
                report["peakmem"].append(res)
    if blas_limit is not None:
        blas_limit.restore_original_limits()
    report["machine"]["loadavg_end"] = _loadavg()
    report["mismatch"] = mismatch
    return report


def _measure_feature(spec, args):
    """Time one feature row's subject and baseline, interleaved; its record."""
    subject, baseline = features.LABELS[spec["row"]]
    samples = interleaved_medians(spec["fns"], args.repeat, args.min_time)
    med = {n: statistics.median(v) for n, v in samples.items()}
    ratio = med[subject] / med[baseline]
    B, T, I, H = spec["sizes"]
    target = spec["target"]
    return {"row": spec["row"], "config": spec["config"], "variant": spec["variant"],
            "task": spec["task"], "B": B, "T": T, "I": I, "H": H, "dtype": args.dtype,
            "subject": subject, "baseline": baseline,
            "subject_s": med[subject], "baseline_s": med[baseline], "samples_s": samples,
            "ratio": ratio, "ratio_of_minima": min(samples[subject]) / min(samples[baseline]),
            "target": target, "met": None if target is None else ratio <= target,
            "max_abs_diff": spec["max_abs_diff"], "match": bool(spec["match"]),
            "check": spec["check"], "note": spec["note"]}


def _render_features(records):
    rows = []
    for r in records:
        rows.append([r["row"], r["config"], r["variant"], r["task"],
                     f"{r['subject']} / {r['baseline']}", _fmt_time(r["subject_s"]),
                     _fmt_time(r["baseline_s"]), f"{r['ratio']:.2f}",
                     f"<= {r['target']}" if r["target"] is not None else "-",
                     {True: "yes", False: "NO", None: "-"}[r["met"]],
                     f"{r['ratio_of_minima']:.2f}",
                     f"{r['max_abs_diff']:.1e}" + ("" if r["match"] else " MISMATCH"),
                     r["note"]])
    return _table(rows, ["row", "config", "variant", "task", "timed", "time", "baseline",
                         "ratio", "target", "met", "ratio of minima", "max|diff|", "note"])


def render(report):
    """The report as text tables."""
    s = report["settings"]
    v = report["versions"]
    plural = "s" if s["threads"] != 1 else ""
    head = (f"gru-cy bench: {s['dtype']}, {s['threads']} thread{plural}, {s['repeat']} "
            f"interleaved samples per engine (median); {report['machine']['cpu']}, "
            f"{report['machine']['cores']} cores\n"
            + ", ".join(f"{k} {val}" for k, val in v.items() if val) + "\n")
    m = report["machine"]
    loads = [x for x in (m.get("loadavg_start"), m.get("loadavg_end")) if x is not None]
    if loads:
        head += (f"1-minute load average {loads[0]:.1f} at the start, {loads[-1]:.1f} at "
                 f"the end")
        if max(loads) > 0.5 * (m["cores"] or 1):
            head += ("\nnote: other processes compete for the cores; OpenMP engines that "
                     "spin at barriers\n(gru_cy, torch) suffer most: rerun on a quiet machine")
        head += "\n"
    if any(s["openblas_env"].values()):
        head += ("note: OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE are set; NumPy's timings may not "
                 "be representative (see --help)\n")
    for k, why in report["skipped"].items():
        head += f"skipped {k}: {why}\n"
    rows = []
    for r in report["results"]:
        ratio = "-" if r["engine"] == "gru_cy" else f"{r['gru_cy_over_this']:.2f}"
        unit = " /step" if r["task"] == "stream" else ""
        rows.append([r["config"], r["variant"], r["task"], r["engine"],
                     _fmt_time(r["median_s"]) + unit, _fmt_time(min(r["samples_s"])),
                     f"{r['gflops']:.1f}", ratio,
                     "-" if r["engine"] == "gru_cy" else
                     f"{r['max_abs_diff']:.1e}" + ("" if r["match"] else " MISMATCH")])
    body = _table(rows, ["config", "variant", "task", "engine", "median", "min", "GFLOP/s",
                         "gru_cy/this", "max|diff| vs gru_cy"])
    srows = []
    for r in report["summary"]:
        srows.append([r["config"], r["variant"], r["task"], _fmt_time(r["gru_cy_s"]),
                      r["best_peer"] or "-",
                      _fmt_time(r["best_peer_s"]) if r["best_peer"] else "-",
                      f"{r['ratio']:.2f}" if r["ratio"] is not None else "-",
                      f"<= {r['target']}" if r["target"] is not None else "-",
                      {True: "yes", False: "NO", None: "-"}[r["met"]],
                      f"{r['ratio_of_minima']:.2f}" if r.get("ratio_of_minima") else "-"])
    summary = _table(srows, ["config", "variant", "task", "gru_cy", "fastest peer",
                             "peer time", "ratio", "target", "met", "ratio of minima"])
    if report["results"]:
        text = (head + "\n" + body
                + "\n\nSummary (gru_cy time / the fastest float32 peer of torch, ORT, "
                  "OpenVINO, JAX):\n" + summary)
    else:
        text = head.rstrip("\n")
    by_variant = {(r["config"], r["task"], r["variant"]): r["gru_cy_s"]
                  for r in report["summary"]}
    vrows = [[c, t, f"{by_variant[c, t, 'darknet'] / s:.2f}"]
             for (c, t, v), s in by_variant.items()
             if v == "reset_after" and (c, t, "darknet") in by_variant]
    if vrows:
        text += ("\n\ngru_cy darknet / reset_after time (target <= 1.10):\n"
                 + _table(vrows, ["config", "task", "ratio"]))
    if report["peakmem"]:
        mrows = []
        for r in report["peakmem"]:
            if "error" in r:
                mrows.append([r["config"], r["engine"], "-", "-", "-", r["error"]])
            else:
                mrows.append([r["config"], r["engine"], f"{r['rss_before_kib'] / 1024:.1f}",
                              f"{r['peak_kib'] / 1024:.1f}", f"{r['delta_kib'] / 1024:.1f}",
                              r["method"]])
        text += ("\n\nPeak memory of one training step (fresh process per engine; MiB):\n"
                 + _table(mrows, ["config", "engine", "RSS before", "peak", "step delta",
                                  "method"]))
        d = {r["engine"]: r.get("delta_kib") for r in report["peakmem"]}
        if d.get("gru_cy") is not None and d.get("torch"):
            text += f"\ngru_cy / torch step delta: {d['gru_cy'] / d['torch']:.2f} (target <= 0.6)"
    if report.get("features"):
        text += ("\n\nOperator features (median time of the first / the second; "
                 "max|diff|: the check before timing):\n" + _render_features(report["features"]))
    return text

