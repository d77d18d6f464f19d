"""Data-parallel training steps on this machine, and a model of larger jobs.

    python tools/bench_distributed.py [--configs B,C] [--repeats 5] [--steps 10,3]

For each config (``gru_cy.bench.configs``: one ``reset_after`` float32 GRU
layer, B sequences of T steps, I inputs, H units; a step is ``forward(train)``,
``backward``, ``update`` as in ``gru-cy bench``) it times, interleaved, run by
run:

* ``mpiexec -n 2`` ranks x 1 thread, each on its half of the global batch
  through ``gru_cy.distributed.DataParallel``;
* 1 process x 2 threads on the whole batch.

It prints the time per global step (min and median over every step of every
run), the share of a 2-rank step spent in the gradient sum (``_reduce``: the
rank's wait for the others included), and a model of n ranks on n machines
over a network (``--gbps``, ``--latency-us``; see ``model()``) from the
measured 1-thread compute of a shard and the gradient's size.  ``--json``
writes everything.

``--worker`` is the inner mode that the driver runs (one run of STEPS steps;
rank 0 prints one JSON line).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


# --- one run ----------------------------------------------------------------------

def worker(config, steps, threads, distributed):
    import gru_cy
    from gru_cy.bench.configs import CONFIGS, SEED
    B, T, I, H = CONFIGS[config]
    rng = np.random.default_rng(SEED)
    x = rng.standard_normal((T, B, I), dtype=np.float32)
    dy = rng.standard_normal((T, B, H), dtype=np.float32)
    layer = gru_cy.GRU(I, H, variant="reset_after", dtype=np.float32, seed=0,
                       num_threads=threads)
    rank, comm, model = 0, None, layer
    if distributed:
        from gru_cy import distributed as D
        comm = D.world()
        rank = comm.Get_rank()
        model = D.DataParallel(layer, comm)
        x, _, _ = D.shard(x)
        dy, _, _ = D.shard(dy)
    hp = dict(learning_rate=1e-4, momentum=0.9, decay=1e-4)
    times = {"step": [], "compute": [], "reduce": [], "rule": []}
    for i in range(steps + 1):              # the first step warms up
        if comm is not None:
            comm.Barrier()
        t0 = time.perf_counter()
        model.forward(x, train=True)
        model.backward(dy)
        t1 = time.perf_counter()
        if comm is not None:
            rows = model._reduce()          # what DataParallel.update does first
            t2 = time.perf_counter()
            layer.update(batch=rows, **hp)
        else:
            t2 = t1
            layer.update(**hp)
        t3 = time.perf_counter()
        if i:
            times["step"].append(t3 - t0)
            times["compute"].append(t1 - t0)
            times["reduce"].append(t2 - t1)
            times["rule"].append(t3 - t2)
    if rank == 0:
        print(json.dumps({"config": config, "threads": threads,
                          "ranks": 1 if comm is None else comm.Get_size(),
                          "shard": int(x.shape[1]),
                          "gradient_bytes": int(layer._grad.nbytes), **times}))


def run(config, steps, ranks, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", config, str(steps),
           str(threads)]
    if ranks > 1:
        mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
        cmd = [mpiexec, "-n", str(ranks)] + cmd + ["--distributed"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if out.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- the model of larger jobs ----------------------------------------------------------

def model(n, S, compute, gbps, latency, memory_gbs, reduction="scatter"):
    """Seconds of one step on ``n`` ranks, one per machine.

    ``compute``: a rank's forward + backward + update rule (measured, 1 thread
    per rank here); ``S``: the gradient's bytes; the network ``gbps`` Gb/s per
    machine, full duplex, ``latency`` s per message; ``memory_gbs``: the rate
    of the local rank-order sum.  The communication does not overlap the
    compute (one GRU layer: its gradient is complete only at the end).

    * "scatter" (DataParallel's default): Alltoallv (pairwise, n-1 rounds of
      S/n) then Allgatherv (ring, n-1 rounds of S/n):
      2 (n-1) (latency + S / (n beta)), plus the sum of n chunks of S/n.
    * "gather": Allgather (ring, n-1 rounds of S): (n-1) (latency + S/beta),
      plus the sum of n buffers of S.
    """
    beta = gbps * 1e9 / 8
    if n == 1:
        return compute, 0.0
    if reduction == "scatter":
        comm = 2 * (n - 1) * (latency + S / (n * beta)) + S / (memory_gbs * 1e9)
    else:
        comm = (n - 1) * (latency + S / beta) + n * S / (memory_gbs * 1e9)
    return compute + comm, comm


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", default="B,C")
    p.add_argument("--steps", default="10,3", help="timed steps per run, per config")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--gbps", type=float, default=10.0)
    p.add_argument("--latency-us", type=float, default=20.0)
    p.add_argument("--memory-gbs", type=float, default=5.0,
                   help="rate of the local sum, GB/s of parts read")
    p.add_argument("--json", help="write the measurements and the model here")
    p.add_argument("--worker", nargs=3, metavar=("CONFIG", "STEPS", "THREADS"))
    p.add_argument("--distributed", action="store_true")
    args = p.parse_args(argv)
    if args.worker:
        c, s, t = args.worker
        worker(c, int(s), int(t), args.distributed)
        return 0
    configs = args.configs.split(",")
    steps = [int(s) for s in args.steps.split(",")]
    report = {"machine": os.uname().nodename, "cpus": os.cpu_count(), "configs": {},
              "load_before": os.getloadavg()}
    for config, n_steps in zip(configs, steps + steps[-1:] * len(configs)):
        runs = {"2x1": [], "1x2": []}
        for r in range(args.repeats):
            order = [("2x1", 2, 1), ("1x2", 1, 2)]
            if r % 2:
                order.reverse()
            for key, ranks, threads in order:
                runs[key].append(run(config, n_steps, ranks, threads))
        res = {}
        for key, rs in runs.items():
            step = [t for r in rs for t in r["step"]]
            reduce = [t for r in rs for t in r["reduce"]]
            compute = [t + u for r in rs for t, u in zip(r["compute"], r["rule"])]
            res[key] = {"step_min": min(step), "step_median": statistics.median(step),
                        "compute_min": min(compute),
                        "compute_median": statistics.median(compute),
                        "reduce_min": min(reduce), "reduce_median": statistics.median(reduce),
                        "reduce_share_median": statistics.median(
                            [a / b for a, b in zip(reduce, step)]),
                        "steps": len(step), "runs": len(rs)}
        S = runs["2x1"][0]["gradient_bytes"]
        shard = runs["2x1"][0]["shard"]
        compute = res["2x1"]["compute_median"]
        sim = {}
        for n in (2, 8, 64):
            for red in ("scatter", "gather"):
                total, comm = model(n, S, compute, args.gbps, args.latency_us * 1e-6,
                                    args.memory_gbs, red)
                sim[f"{red}_{n}"] = {"step": total, "comm": comm, "comm_share": comm / total,
                                     "efficiency": compute / total}
        # strong scaling: the global batch fixed, a shard of B/n sequences
        # assumed to take 2/n of the measured half batch's compute (optimistic:
        # small shards use the gemm less well)
        B = 2 * shard
        for n in (8, 64):
            if B >= n:
                total, comm = model(n, S, compute * 2 / n, args.gbps, args.latency_us * 1e-6,
                                    args.memory_gbs, "scatter")
                sim[f"strong_scatter_{n}"] = {"step": total, "comm": comm,
                                              "comm_share": comm / total,
                                              "speedup_vs_2": (compute + sim["scatter_2"]["comm"])
                                              / total}
        report["configs"][config] = {"gradient_bytes": S, "shard": shard, "measured": res,
                                     "model": sim}
        m = res
        print(f"config {config}: gradient {S / 1e6:.2f} MB, shard {shard} sequences")
        for key in ("2x1", "1x2"):
            print(f"  {key}: step min {m[key]['step_min'] * 1e3:8.1f} ms, median "
                  f"{m[key]['step_median'] * 1e3:8.1f} ms ({m[key]['steps']} steps, "
                  f"{m[key]['runs']} runs)")
        print(f"  2x1 gradient sum: median {m['2x1']['reduce_median'] * 1e3:.2f} ms, "
              f"{100 * m['2x1']['reduce_share_median']:.1f}% of a step")
        print(f"  model (weak scaling: {shard} sequences and {compute * 1e3:.1f} ms of compute "
              f"per rank, {args.gbps:g} Gb/s, {args.latency_us:g} us per message):")
        for n in (2, 8, 64):
            a, b = sim[f"scatter_{n}"], sim[f"gather_{n}"]
            print(f"    {n:3d} ranks: scatter step {a['step'] * 1e3:8.1f} ms (comm "
                  f"{100 * a['comm_share']:4.1f}%, efficiency {100 * a['efficiency']:5.1f}%); "
                  f"gather step {b['step'] * 1e3:8.1f} ms (comm {100 * b['comm_share']:4.1f}%)")
        for n in (8, 64):
            a = sim.get(f"strong_scatter_{n}")
            if a is not None:
                print(f"    strong scaling, {n} ranks x {B // n} sequences: step "
                      f"{a['step'] * 1e3:.1f} ms (comm {100 * a['comm_share']:.1f}%), "
                      f"{a['speedup_vs_2']:.2f}x the 2-rank step")
    report["load_after"] = os.getloadavg()
    print(f"load average (1, 5, 15 min) before {report['load_before']}, "
          f"after {report['load_after']}: other work on the machine skews the times")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
