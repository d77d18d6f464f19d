"""Data-parallel training over MPI (gru_cy.distributed): ranks on their shards
against one process on the whole batch, run to run bit-identity, the sampler,
a failing rank, ``gru-cy train --distributed``.

The multi-rank cases run scripts through ``mpiexec -n 2`` and ``-n 3`` (more
ranks than this machine's cores is fine: MPICH oversubscribes) with a
timeout, so that a hang fails instead of blocking the suite.  They skip,
saying why, where mpi4py or mpiexec is missing (``pip install "gru_cy[mpi]"``);
they run subprocesses, hence ``slow`` (the sampler's test is not).
"""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from gru_cy import distributed as D
from tolerances import tol

HAVE_MPI4PY = importlib.util.find_spec("mpi4py") is not None
MPIEXEC = shutil.which("mpiexec", path=os.path.dirname(sys.executable) + os.pathsep
                       + os.environ.get("PATH", ""))
needs_mpi = pytest.mark.skipif(
    not (HAVE_MPI4PY and MPIEXEC),
    reason=f"needs mpi4py and mpiexec ({D.INSTALL}): "
           f"mpi4py {'found' if HAVE_MPI4PY else 'missing'}, "
           f"mpiexec {'found' if MPIEXEC else 'missing'}")

TIMEOUT = 60        # seconds for one mpiexec run; a hang fails the test


def mpirun(n, args, tmp_path, timeout=TIMEOUT, options=()):
    """``mpiexec [options] -n n python args...`` (one thread per rank); the completed
    process."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [MPIEXEC] + list(options) + ["-n", str(n), sys.executable] + list(args)
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=timeout)


# The training script: 5 steps of a [gru] -> [connected] -> [softmax] network on
# fixed global batches.  Each rank trains its shard through DataParallel; rank 0
# then writes the parameters, and (``--oracle``) also trains the reference in
# the same process: one Network on the whole batch, or, with BN (per-rank
# statistics), one copy per shard whose gradients are summed in rank order and
# whose rolling statistics are averaged, i.e. what DataParallel promises.
SCRIPT = textwrap.dedent('''
    import sys
    import numpy as np
    import gru_cy
    from gru_cy import distributed as D

    dtype, optimizer, bn, out = sys.argv[1], sys.argv[2], sys.argv[3] == "bn", sys.argv[4]
    reduction = "gather" if "--gather" in sys.argv else "scatter"
    dtype = np.dtype(dtype)
    T, B, I, H, C, STEPS = 4, 6, 3, 5, 4, 5

    def network():
        return gru_cy.Network(
            [gru_cy.GRU(I, H, optimizer=optimizer, dtype=dtype, seed=1, batch_normalize=bn,
                        num_threads=1),
             gru_cy.Connected(H, C, activation="leaky", optimizer=optimizer, dtype=dtype,
                              seed=2, batch_normalize=bn, num_threads=1),
             gru_cy.Softmax(C)],
            inputs=I, batch=B, time_steps=T, learning_rate=0.05, decay=0.001)

    def batches():
        rng = np.random.default_rng(7)
        for _ in range(STEPS):
            yield rng.standard_normal((T, B, I)).astype(dtype), rng.integers(0, C, (T, B))

    def params(net):
        return np.concatenate([np.concatenate([leaf._theta, leaf._rolling.ravel()])
                               if leaf._rolling is not None else leaf._theta
                               for leaf in D._leaves(net)])

    comm = D.world()
    with D.abort_on_error(comm, "test"):
        local = network()
        if comm.Get_rank() > 0:      # another start: the broadcast must overwrite it
            for leaf in D._leaves(local):
                leaf._theta[...] = 0.5
        model = D.DataParallel(local, reduction=reduction)
        losses = []
        for x, labels in batches():
            xs, ls, _ = D.shard(x, labels)
            losses.append(model.train_step(xs, ls))
        mine = params(local)
        every = comm.gather(mine, root=0)
        if comm.Get_rank() == 0:
            for r, p in enumerate(every):
                assert np.array_equal(p, mine), f"rank {r} differs from rank 0"
            assert local.seen == 5 * T * B, local.seen      # every rank's rows
            result = {"params": mine, "losses": np.array(losses)}
            if "--oracle" in sys.argv:
                n = comm.Get_size()
                if not bn:
                    ref = network()
                    ref_losses = [ref.train_step(x, l) for x, l in batches()]
                    result["ref"] = params(ref)
                else:
                    copies = [network() for _ in range(n)]
                    ref_losses = []
                    for x, labels in batches():
                        loss = 0.0
                        for r, net in enumerate(copies):
                            xs, ls, _ = D.shard(x, labels, rank=r, size=n)
                            y = net.forward(xs, train=True)
                            l, d = net.loss(y, ls)
                            net.backward(d.reshape(y.shape[0], y.shape[1], -1),
                                         start=len(net.layers) - 2)
                            loss += l
                        ref_losses.append(loss)
                        leaves = [D._leaves(net) for net in copies]
                        for j, leaf in enumerate(leaves[0]):
                            D._sum_in_order(leaf._grad, [ls[j]._grad.copy() for ls in leaves])
                            if leaf._rolling is not None:
                                D._sum_in_order(leaf._rolling,
                                                [ls[j]._rolling.copy() for ls in leaves])
                                leaf._rolling /= n
                        rows = sum(net._rows for net in copies)
                        copies[0].update(batch=rows)
                        for net in copies[1:]:
                            net.zero_grad()
                        for net in copies[1:]:
                            for a, b in zip(D._leaves(net), D._leaves(copies[0])):
                                a._theta[...] = b._theta
                                if a._rolling is not None:
                                    a._rolling[...] = b._rolling
                                a._optim.state = {k: v.copy() for k, v in b._optim.state.items()}
                                a._optim.t = b._optim.t
                    result["ref"] = params(copies[0])
                result["ref_losses"] = np.array(ref_losses, dtype=np.float64)
            np.savez(out, **result)
''')


@pytest.fixture(scope="module")
def script(tmp_path_factory):
    path = tmp_path_factory.mktemp("dist") / "train5.py"
    path.write_text(SCRIPT)
    return path


def _train(script, tmp_path, n, dtype, optimizer, bn, name, oracle=True, gather=False):
    out = tmp_path / f"{name}.npz"
    args = [str(script), dtype, optimizer, "bn" if bn else "plain", str(out)]
    args += (["--oracle"] if oracle else []) + (["--gather"] if gather else [])
    p = mpirun(n, args, tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    return np.load(out)


@pytest.mark.slow
@needs_mpi
@pytest.mark.parametrize("bn", [False, True], ids=["plain", "bn"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_ranks_match_one_process(script, tmp_path, dtype, optimizer, bn):
    # 2 ranks: against the reference, and a second run bit for bit.
    first = _train(script, tmp_path, 2, dtype, optimizer, bn, "a")
    again = _train(script, tmp_path, 2, dtype, optimizer, bn, "b", oracle=False)
    what = "distributed"
    # relative to each vector's largest element (Adam moves parameters near 0 too)
    scale = np.abs(first["ref"]).max()
    rtol = tol(dtype, what)["rtol"]
    assert_allclose(first["params"], first["ref"], rtol=rtol, atol=rtol * scale)
    assert_allclose(first["losses"], first["ref_losses"], rtol=rtol)
    assert_array_equal(first["params"], again["params"])
    assert_array_equal(first["losses"], again["losses"])


@pytest.mark.slow
@needs_mpi
@pytest.mark.parametrize("bn", [False, True], ids=["plain", "bn"])
def test_three_ranks(script, tmp_path, bn):
    # 3 ranks on 2 cores (oversubscribed); B = 6 gives each rank 2 sequences.
    # Both reductions add in rank order: the same bits.
    first = _train(script, tmp_path, 3, "float64", "adam", bn, "a")
    again = _train(script, tmp_path, 3, "float64", "adam", bn, "b", oracle=False)
    gathered = _train(script, tmp_path, 3, "float64", "adam", bn, "c", oracle=False,
                      gather=True)
    scale = np.abs(first["ref"]).max()
    rtol = tol("float64", "distributed")["rtol"]
    assert_allclose(first["params"], first["ref"], rtol=rtol, atol=rtol * scale)
    assert_array_equal(first["params"], again["params"])
    assert_array_equal(first["params"], gathered["params"])


@pytest.mark.slow
@needs_mpi
def test_a_failing_rank_ends_the_job(tmp_path):
    # rank 1 raises while the others wait in a collective: without the abort
    # MPICH would hang; the timeout turns a hang into a failure.
    path = tmp_path / "fail.py"
    path.write_text(textwrap.dedent('''
        from gru_cy import distributed as D
        comm = D.world()
        with D.abort_on_error(comm, "test"):
            if comm.Get_rank() == 1:
                raise RuntimeError("rank one cannot go on")
            comm.Barrier()
    '''))
    # each rank's stderr in a file of its own (the launcher may interleave lines)
    p = mpirun(3, [str(path)], tmp_path, timeout=30,
               options=["-errfile-pattern", str(tmp_path / "err.%r")])
    assert p.returncode != 0
    err = (tmp_path / "err.1").read_text()
    assert "rank 1 of 3 failed: RuntimeError: rank one cannot go on" in err, err


@pytest.mark.slow
@needs_mpi
def test_the_wrapper_forwards_and_checks(tmp_path):
    # GRU and StackedGRU wrapped (gradient sums and rows over 2 ranks against
    # one process), attributes forwarded, mismatched models refused on every rank.
    path = tmp_path / "wrap.py"
    path.write_text(textwrap.dedent('''
        import numpy as np
        import gru_cy
        from gru_cy import distributed as D
        comm = D.world()
        r, n = comm.Get_rank(), comm.Get_size()
        with D.abort_on_error(comm, "test"):
            x = np.random.default_rng(0).standard_normal((5, 4, 3))
            for make in (lambda: gru_cy.GRU(3, 4, dtype=np.float64, seed=3, num_threads=1),
                         lambda: gru_cy.StackedGRU(3, 4, num_layers=2, bidirectional=True,
                                                   dtype=np.float64, seed=3, num_threads=1)):
                model = D.DataParallel(make())
                xs, _, _ = D.shard(x)
                y = model.forward(xs, train=True)
                model.backward(np.ones_like(y))
                model.update(learning_rate=0.1)
                ref = make()
                y = ref.forward(x, train=True)
                ref.backward(np.ones_like(y))
                ref.update(learning_rate=0.1)
                for k, v in ref.params.items():
                    np.testing.assert_allclose(model.params[k], v, rtol=1e-13, atol=1e-15)
                assert model.inputs == 3 and model.rank == r and model.size == n
            # gradients accumulated before the wrap (alike on every rank) count once
            def gru():
                g = gru_cy.GRU(3, 4, dtype=np.float64, seed=5, num_threads=1)
                g.backward(np.ones_like(g.forward(x, train=True)))
                return g
            model, ref = D.DataParallel(gru()), gru()
            model.update(learning_rate=0.1)
            ref.update(learning_rate=0.1)
            np.testing.assert_array_equal(model._theta, ref._theta)
            # a Network around a StackedGRU (its layers' sums start in its backward)
            def make():
                return gru_cy.Network(
                    [gru_cy.StackedGRU(3, 4, num_layers=2, bidirectional=True,
                                       dtype=np.float64, seed=3, num_threads=1),
                     gru_cy.Connected(8, 2, dtype=np.float64, seed=4, num_threads=1),
                     gru_cy.Softmax(2)], inputs=3, batch=4, time_steps=5,
                    learning_rate=0.1)
            labels = np.arange(20).reshape(5, 4) % 2
            model = D.DataParallel(make())
            xs, ls, _ = D.shard(x, labels)
            for _ in range(2):
                model.train_step(xs, ls)
            ref = make()
            for _ in range(2):
                ref.train_step(x, labels)
            for a, b in zip(D._leaves(model.model), D._leaves(ref)):
                np.testing.assert_allclose(a._theta, b._theta, rtol=1e-13, atol=1e-15)
            try:
                D.DataParallel(gru_cy.GRU(3, 4 + r, seed=0))
            except ValueError as e:
                assert "build the same model on every rank" in str(e)
            else:
                raise AssertionError("no ValueError for different models")
            s = D.DataParallel(gru_cy.GRU(3, 4, seed=0)).sum(float(r + 1))
            assert s == n * (n + 1) / 2, s
        if r == 0:
            print("ok")
    '''))
    p = mpirun(2, [str(path)], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.strip() == "ok"


def test_chunks_cover_the_buffer():
    for m, n in [(10, 3), (2, 3), (0, 2), (7, 7), (1000, 64)]:
        counts, displs = D._chunks(m, n)
        assert counts.sum() == m and counts.max() - counts.min() <= 1
        assert_array_equal(displs, np.concatenate([[0], np.cumsum(counts)[:-1]]))


def test_shard_takes_every_nth_sequence():
    x = np.arange(2 * 7 * 3).reshape(2, 7, 3)
    t = np.arange(2 * 7).reshape(2, 7)
    lengths = np.array([1, 2, 2, 1, 2, 1, 2])
    seen = []
    for r in range(3):
        xs, ts, ls = D.shard(x, t, lengths, rank=r, size=3)
        idx = D.shard_indices(7, r, 3)
        assert_array_equal(idx, np.arange(r, 7, 3))
        assert_array_equal(xs, x[:, r::3])
        assert_array_equal(ts, t[:, r::3])
        assert_array_equal(ls, lengths[r::3])
        assert xs.flags.c_contiguous
        seen.extend(idx)
    assert sorted(seen) == list(range(7))
    xb, tb, lb = D.shard(x.transpose(1, 0, 2), rank=1, size=2, batch_axis=0)
    assert_array_equal(xb, x.transpose(1, 0, 2)[1::2])
    assert tb is None and lb is None
    with pytest.raises(ValueError, match="batch: expected at least one sequence per rank"):
        D.shard_indices(2, 0, 3)
    with pytest.raises(ValueError, match="rank: expected 0 <= rank < 2"):
        D.shard_indices(4, 2, 2)
    with pytest.raises(ValueError, match="shard: expected 7 sequences"):
        D.shard(x, t[:, :3], rank=0, size=2)


@pytest.mark.slow
def test_import_gru_cy_does_not_import_mpi4py():
    code = ("import sys, gru_cy, gru_cy.distributed, gru_cy.tasks, gru_cy.cli; "
            "print('mpi4py' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


@pytest.mark.slow
def test_cli_without_mpi4py_exits_2(tmp_path):
    # mpi4py hidden: --distributed is bad usage naming the extra
    (tmp_path / "mpi4py").mkdir()
    (tmp_path / "mpi4py" / "__init__.py").write_text("raise ImportError('hidden')\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    p = subprocess.run([sys.executable, "-m", "gru_cy", "train", "--distributed",
                        "--iterations", "1", "--quiet"], capture_output=True, text=True,
                       env=env, timeout=120)
    assert p.returncode == 2, p.stderr
    assert 'pip install "gru_cy[mpi]"' in p.stderr


@pytest.mark.slow
@needs_mpi
def test_cli_distributed(tmp_path):
    # 2 ranks: rank 0 alone prints the result and writes the files; the run
    # equals itself bit for bit.
    def run(name):
        args = ["-m", "gru_cy", "train", "--distributed", "--task", "adding", "--steps", "6",
                "--hidden", "4", "--batch", "6", "--iterations", "8", "--eval-every", "4",
                "--eval-size", "10", "--target", "0", "--dtype", "float64",
                "--json", f"{name}.json", "--save", name]
        return mpirun(2, args, tmp_path)

    p = run("a")
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count("adding: final loss") == 1, p.stdout
    assert p.stdout.count("saved ") == 1
    assert p.stderr.count("] 1/8 ") == 1, p.stderr           # one progress bar
    result = json.loads((tmp_path / "a.json").read_text())
    assert result["iterations"] == 8 and result["ranks"] == 2 and result["batch"] == 6
    import gru_cy
    net = gru_cy.load(str(tmp_path / "a.ckpt"))
    assert (tmp_path / "a.cfg").exists() and (tmp_path / "a.weights").exists()
    q = run("b")
    assert q.returncode == 0, q.stderr[-3000:]
    again = gru_cy.load(str(tmp_path / "b.ckpt"))
    for a, b in zip(D._leaves(net), D._leaves(again)):
        assert_array_equal(a._theta, b._theta)
    assert json.loads((tmp_path / "b.json").read_text())["final_loss"] == result["final_loss"]


@pytest.mark.slow
@needs_mpi
def test_cli_batch_smaller_than_ranks_is_usage(tmp_path):
    p = mpirun(3, ["-m", "gru_cy", "train", "--distributed", "--batch", "2",
                   "--iterations", "1", "--quiet"], tmp_path)
    assert p.returncode == 2, p.stderr[-3000:]
    assert "--batch 2: expected at least one sequence per rank (3)" in p.stderr


@pytest.mark.slow
@needs_mpi
def test_readme_example(tmp_path):
    # The README's MPI example (a ```python mpiexec -n N block, which
    # test_readme.py leaves out) runs as written under mpiexec.
    import re
    readme = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "README.md")
    with open(readme, encoding="utf-8") as f:
        blocks = re.findall(r"```python mpiexec -n (\d+)\n(.*?)```", f.read(), re.S)
    assert blocks
    for n, code in blocks:
        path = tmp_path / "example.py"
        path.write_text(code)
        p = mpirun(int(n), [str(path)], tmp_path)
        assert p.returncode == 0, p.stderr[-3000:]
    import gru_cy
    net = gru_cy.load(str(tmp_path / "model.ckpt"))
    assert isinstance(net, gru_cy.Network)


@pytest.mark.slow
@needs_mpi
def test_cli_checkpoint_holds_the_whole_batch(tmp_path):
    # A character model trained on 2 ranks: its checkpoint carries the state of
    # all 6 sequences (each rank's rows put back in place), so training goes on
    # from it in one process or on 3 ranks, to the same loss.
    (tmp_path / "book.txt").write_text("the quick brown fox jumps over the lazy dog. " * 60)
    common = ["-m", "gru_cy", "train", "--text", "book.txt", "--iterations", "6",
              "--hidden", "8", "--batch", "6", "--steps", "8", "--eval-size", "20",
              "--dtype", "float64", "--quiet", "--target", "0"]
    p = mpirun(2, common + ["--distributed", "--save", "m"], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    import gru_cy
    net = gru_cy.load(str(tmp_path / "m.ckpt"))
    assert net.layers[0].state.shape == (6, 8)
    assert net.seen == 6 * 6 * 8
    env = dict(os.environ, OMP_NUM_THREADS="1")
    one = subprocess.run([sys.executable] + common + ["--resume", "m", "--json", "one.json"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert one.returncode == 0, one.stderr[-3000:]
    three = mpirun(3, common + ["--distributed", "--resume", "m", "--json", "three.json"],
                   tmp_path)
    assert three.returncode == 0, three.stderr[-3000:]
    a = json.loads((tmp_path / "one.json").read_text())["final_loss"]
    b = json.loads((tmp_path / "three.json").read_text())["final_loss"]
    assert_allclose(b, a, **tol("float64", "distributed"))


@pytest.mark.slow
@needs_mpi
def test_refused_update_retry_dropout_streams_and_a_one_rank_exit(tmp_path):
    # (1) an update refused after the gradient sum leaves each rank's own
    # gradients: a retry equals one process's step (was: summed twice);
    # (2) dropout masks differ between ranks (rank 0's generator, jumped);
    # (3) a non-zero exit on one rank ends the job instead of a hang.
    path = tmp_path / "review.py"
    path.write_text(textwrap.dedent('''
        import sys
        import numpy as np
        import gru_cy
        from gru_cy import distributed as D
        comm = D.world()
        r, n = comm.Get_rank(), comm.Get_size()
        with D.abort_on_error(comm, "test"):
            x = np.random.default_rng(0).standard_normal((5, 4, 3))
            make = lambda: gru_cy.GRU(3, 4, dtype=np.float64, seed=3, num_threads=1)
            model, ref = D.DataParallel(make()), make()
            xs, _, _ = D.shard(x)
            model.backward(np.ones_like(model.forward(xs, train=True)))
            try:
                model.update(learning_rate=-1.0)
            except ValueError:
                pass
            else:
                raise AssertionError("a negative learning rate was taken")
            model.update(learning_rate=0.1)
            ref.backward(np.ones_like(ref.forward(x, train=True)))
            ref.update(learning_rate=0.1)
            np.testing.assert_allclose(model._theta, ref._theta, rtol=1e-13, atol=1e-15)
            drop = D.DataParallel(gru_cy.Network(
                [gru_cy.GRU(3, 4, seed=1, num_threads=1), gru_cy.Dropout(4, 0.5, seed=7)],
                inputs=3))
            y = drop.forward(np.ones((3, 2, 3)), train=True)
            masks = comm.allgather(y != 0)
            assert not np.array_equal(masks[0], masks[1]), "the same dropout mask on every rank"
            if sys.argv[1] == "exit" and r == 1:
                sys.exit(2)              # e.g. a file only rank 0 has
            comm.Barrier()
        if r == 0:
            print("ok")
    '''))
    p = mpirun(2, [str(path), "run"], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.strip() == "ok"
    p = mpirun(2, [str(path), "exit"], tmp_path, timeout=30)
    assert p.returncode != 0 and "rank 1 of 2 exits with status 2" in p.stderr, p.stderr[-2000:]


@pytest.mark.slow
@needs_mpi
def test_cli_a_check_failing_on_one_rank_ends_the_job(tmp_path):
    # --resume names a checkpoint only rank 0's machine has (its own working
    # directory here): rank 1's usage error must end the job, not hang rank 0.
    common = ["--task", "adding", "--steps", "6", "--hidden", "4", "--batch", "6",
              "--eval-size", "10", "--target", "0", "--quiet"]
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    r = subprocess.run([sys.executable, "-m", "gru_cy", "train", *common, "--iterations", "2",
                        "--save", "m"], cwd=a, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    env = dict(os.environ, OMP_NUM_THREADS="1")
    train = [sys.executable, "-m", "gru_cy", "train", "--distributed", *common,
             "--iterations", "4", "--resume", "m"]
    cmd = [MPIEXEC, "-n", "1", "-wdir", str(a), *train, ":", "-n", "1", "-wdir", str(b), *train]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert p.returncode != 0
    assert "--resume: no such file" in p.stderr and "ending the job" in p.stderr, p.stderr
