"""The adaptive team: the fused forward and the backward pick the team or one thread by timing.

The decision logic is tested on synthetic call times (``tune_trace``), so that
no test depends on how busy the machine is; the engine-level tests check that
the timing is wired to the right calls and never changes a result.
"""
import subprocess
import sys

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from gru_cy import GRU
from gru_cy._cpu.team import fused_team_size, have_openmp, num_procs, tune_trace

TEAM, ONE = 1, 0
TUNED = ("inference", "training", "backward")       # the engine's records
two_threads = pytest.mark.skipif(not have_openmp() or num_procs() < 2,
                                 reason="built without OpenMP, or one processor: one thread only")
variants = pytest.mark.parametrize("variant", ["reset_after", "darknet"])


def ones(modes, after=-1):
    return [i for i, m in enumerate(modes) if m == ONE and i > after]


def test_quiet_machine_keeps_the_team():
    # Warm-up and first timing on the team, one thread timed up front (call
    # 2: calls under 10 ms), then the team: one thread, slower every time, is
    # timed again after waits that double (8, 16, 32, 64 calls: a stall that
    # made a timing slow cannot stand for long, and costs fall to 1/1024).
    modes = tune_trace([3e-4] * 200, [4.5e-4] * 200)
    assert modes[:3] == [TEAM, TEAM, ONE]
    assert ones(modes) == [2, 11, 28, 61, 126]


def test_one_thread_timed_slow_by_a_stall_is_timed_again():
    # A lockstep team slow from its first call (a slow phase: 6e-4) and one
    # thread's up-front timing caught in a stall (1e-2): the team never falls
    # behind its own best, yet one thread is timed again after 8 calls and
    # kept (config A darknet in a benchmark run: four samples at 0.55-0.60 ms
    # on the team, one thread 0.33).
    one = [4.5e-4] * 100
    one[2] = 1e-2
    modes = tune_trace([6e-4] * 100, one)
    assert modes[:3] == [TEAM, TEAM, ONE]
    assert modes[11] == ONE and modes[12:20] == [ONE] * 8


def test_team_slow_from_the_start_loses_to_one_thread():
    # A team that is slow from its first call has no best to fall behind:
    # the up-front timing finds one thread faster and keeps it.
    modes = tune_trace([6e-4] * 100, [4.5e-4] * 100)
    assert modes[:3] == [TEAM, TEAM, ONE] and modes[3:11] == [ONE] * 8


def test_team_that_never_beat_one_thread_is_retried_at_doubling_waits():
    # The team's timed calls run slow (cold, or a slow phase) until call 60,
    # then at their usual speed: one thread, faster than anything the team
    # has shown, runs meanwhile; the team is retried after 8, 8, 16, 32
    # calls and taken back at the first retry after it recovered (call 70).
    n = 200
    team = [6e-4] * 60 + [3e-4] * (n - 60)
    modes = tune_trace(team, [4.5e-4] * n)
    assert modes[:3] == [TEAM, TEAM, ONE]
    probes = [i for i, m in enumerate(modes) if m == TEAM and 2 < i < 60]
    assert probes == [11, 20, 37], probes
    back = modes.index(TEAM, 60)
    assert back == 70, back
    assert ones(modes, back) == [79, 88, 105, 138]      # (the doubling re-timings)


def test_one_thread_kept_while_the_team_stays_slow():
    # The team slows to 3x its best from call 10 on and one thread beats it:
    # one thread runs; the team is timed again after 8 calls (one lost timing
    # may be a stall), then after waits set by what a timing costs: it loses
    # by 1.5e-4 a step, against a best 5e-5 below one thread's, so 8 * 3 = 24
    # calls; it is never kept.
    n = 300
    modes = tune_trace([1e-4] * 10 + [3e-4] * (n - 10), [1.5e-4] * n)
    first_one = modes.index(ONE, 3)           # (after the up-front timing)
    assert first_one <= 14, modes[:20]
    probes = [i for i, m in enumerate(modes) if m == TEAM and i > first_one]
    gaps = np.diff(probes)
    assert len(probes) > 5 and gaps[0] == 9 and set(gaps[1:]) == {25}, probes[:12]


def test_wait_after_a_lost_timing_follows_what_it_costs():
    # On one thread (the team slowed down from call 20): a team timing that
    # loses by little against a team best far below one thread (22 ms against
    # 17, best 8.5: config B in a busy phase) is repeated after 8 calls; one
    # that loses 18 times (0.3 s), after 8 calls once (it may have been one
    # stalled call), then after some 270 calls.
    n = 600
    for slow, want in ((2.2e-2, 9), (3e-1, 267)):
        team = [8.5e-3] * 20 + [slow] * (n - 20)
        modes = tune_trace(team, [1.7e-2] * n)
        first_one = modes.index(ONE, 20)
        probes = [i for i, m in enumerate(modes) if m == TEAM and i > first_one]
        gaps = np.diff(probes)
        assert len(gaps) >= 2 and gaps[0] == 9, (slow, probes)
        assert all(abs(g - want) <= 1 for g in gaps[1:]), (slow, probes)


def test_slow_phase_switches_to_one_thread_and_back():
    # The team's calls slow 30x from call 50 to 149 (a descheduled core):
    # the next call already runs on one thread; after the phase the team is
    # back within one wait (at most TUNE_WAIT_MAX calls).
    n = 2000
    team = [3e-4] * 50 + [1e-2] * 100 + [3e-4] * (n - 150)
    modes = tune_trace(team, [4.5e-4] * n)
    assert modes[51] == ONE
    slow = modes[51:150]
    assert slow.count(TEAM) <= 4, slow        # only the team's timings
    back = modes.index(TEAM, 150)
    assert back - 150 <= 1024 + 1
    # then the team, one thread re-timed at doubling waits
    assert ones(modes, back) == [587, 596, 613, 646, 711, 840, 1097, 1610]


def test_one_stalled_team_timing_does_not_park_one_thread():
    # On one thread for a while (the team slowed 3x from call 10 to 39), the
    # team's first timing after it recovered hits a 10 ms stall: the wait is
    # set by the smaller excess of the last two lost timings (24 calls, as
    # after the genuine loss before it), not by the stall's (~860 calls).
    n = 200
    team = [2e-4] * 10 + [6e-4] * 30 + [2e-4] * (n - 40)
    modes = tune_trace(team, [3e-4] * n)
    probes = [i for i, m in enumerate(modes) if m == TEAM and i > 40]
    stalled = list(team)
    stalled[probes[0]] = 1e-2
    modes = tune_trace(stalled, [3e-4] * n)
    assert modes[probes[0]] == TEAM and modes[probes[0] + 1] == ONE
    back = modes.index(TEAM, probes[0] + 1)
    assert back == probes[0] + 25, (probes[0], back)
    assert ones(modes, back)[:3] == [back + 9, back + 18, back + 35]   # re-timings only


def test_single_slow_call_costs_little():
    # One 10 ms outlier on the team: a few calls on one thread, then back.
    n = 200
    team = [3e-4] * n
    team[20] = 1e-2
    modes = tune_trace(team, [4.5e-4] * n)
    assert modes[21] == ONE
    assert ones(modes, 28) == [38, 47, 64, 97, 162]     # the doubling re-timings


def test_cold_first_calls_do_not_make_the_team_look_slow():
    # Config B's first calls in a benchmark: 60 (warm-up), 45, 34, then 9 ms
    # on the team, 17 on one thread.  The fastest call restarts the team's
    # average, so the team does not look slow: one thread is timed up front
    # (and at doubling waits) and never kept.
    n = 100
    team = [6e-2, 4.5e-2, 3.4e-2, 9.3e-3] + [8.5e-3] * (n - 4)
    modes = tune_trace(team, [1.7e-2] * n)
    assert ones(modes) == [4, 13, 30, 63], modes[:12]


def test_nothing_to_pick_when_the_fused_call_runs_one_thread():
    assert tune_trace([3e-4] * 50, [1e-4] * 50, used=1) == [TEAM] * 50


UNITS = (24, 2, 16, 128)        # T, B, I, H: two 64-unit slices, 196k flops a step: a team


def _units_layer(variant, num_threads, seed):
    """A float32 layer of the UNITS shape, and x, h0, dy drawn from ``seed``."""
    T, B, I, H = UNITS
    rng = np.random.default_rng(seed)
    x, h0, dy = (rng.standard_normal(shape).astype(np.float32)
                 for shape in ((T, B, I), (B, H), (T, B, H)))
    return GRU(I, H, variant=variant, seed=2, num_threads=num_threads), x, h0, dy


@two_threads
@variants
def test_engine_times_its_calls_and_results_do_not_change(variant):
    one, x, h0, dy = _units_layer(variant, 1, seed=5)
    two = _units_layer(variant, 2, seed=5)[0]
    assert two._engine.adaptive
    want = one.forward(x, h0=h0)
    want_train = one.forward(x, train=True, h0=h0)
    want_dx = one.backward(dy)
    want_grads = {k: np.array(v) for k, v in one.grads.items()}
    for _ in range(12):
        assert_array_equal(two.forward(x, h0=h0), want)
        two.zero_grad()
        assert_array_equal(two.forward(x, train=True, h0=h0), want_train)
        assert_array_equal(two.backward(dy), want_dx)
        for k, v in want_grads.items():
            assert_array_equal(two.grads[k], v, err_msg=k)
    for which in TUNED:
        info = two._engine.tuning(which)
        # the team's timing (the second call) is always there; whether one
        # thread was timed depends on how fast the machine is now
        assert info["state"] == "on" and info["threads"] == 2, info
        assert info["seconds_per_step"]["team"] > 0 and info["best"] > 0, info
        assert info["last_threads"] in (1, 2)
    # another batch size starts anew: its first call warms up, untimed
    two.forward(x[:, :1], h0=h0[:1])
    info = two._engine.tuning()
    assert info["state"] == "on"
    assert info["seconds_per_step"] == {"team": None, "one thread": None}


@two_threads
@variants
def test_each_mode_runs_its_thread_count_with_the_same_results(variant):
    # Forcing the record's mode: calls run on one thread or on the team as
    # told (last_threads), and give the same bits either way.
    layer, x, h0, dy = _units_layer(variant, 2, seed=6)
    eng = layer._engine
    out = {}
    for mode, threads in ((1, 2), (0, 1), (1, 2)):
        layer.forward(x, h0=h0)                       # warm-up (first call of the shape)
        layer.forward(x, train=True, h0=h0)
        layer.backward(dy)
        for which in TUNED:
            eng._tune_force(which, mode)
        layer.zero_grad()
        got = [layer.forward(x, h0=h0), layer.forward(x, train=True, h0=h0),
               layer.backward(dy)] + [np.array(g) for g in layer.grads.values()]
        for which in TUNED:
            assert eng.tuning(which)["last_threads"] == threads, (which, mode)
        out.setdefault(mode, []).append(got)
    for a, b in zip(out[1][0], out[0][0]):
        assert_array_equal(a, b)
    for a, b in zip(out[1][0], out[1][1]):
        assert_array_equal(a, b)


@two_threads
def test_engine_leaves_small_and_one_thread_layers_alone():
    x = np.ones((4, 1, 3), np.float32)
    small = GRU(3, 8, num_threads=2)          # below the fused forward's thresholds
    for _ in range(6):
        small.forward(x)
    info = small._engine.tuning()
    # its calls run one thread anyway: nothing timed, nothing picked
    assert info["seconds_per_step"] == {"team": None, "one thread": None}, info
    assert info["mode"] == "team"
    T, B, I, H = UNITS
    fixed = GRU(I, H, num_threads=1)
    for _ in range(4):
        fixed.forward(np.ones((T, B, I), np.float32))
    assert fixed._engine.tuning()["state"] == "new"     # never consulted
    blas = GRU(I, H, num_threads=2, gemm="blas")
    for _ in range(4):
        blas.forward(np.ones((T, B, I), np.float32), train=True)
        blas.backward(np.ones((T, B, H), np.float32))
    for which in TUNED:
        assert blas._engine.tuning(which)["state"] == "new", which     # BLAS's threads


def test_varying_lengths_share_one_record():
    # Times are per step: calls of 10 and 1000 steps at the same speed per
    # step count as equal (the long calls do not look slow to the team).
    n = 200
    steps = [10 if i % 2 else 1000 for i in range(n)]
    modes = tune_trace([1e-4 * T for T in steps], [3e-4 * T for T in steps], steps=steps)
    assert ones(modes) == [3, 13, 31, 65, 131]     # up front (a 1 ms call), then doubling
    # and a slow phase is seen whatever the length of the calls in it
    team = [1e-4 * T for T in steps[:100]] + [1e-2 * T for T in steps[100:]]
    modes = tune_trace(team, [3e-4 * T for T in steps], steps=steps)
    assert modes[101] == ONE and modes[102:].count(TEAM) <= 6


def test_tuning_names_an_unknown_kind_of_call():
    with pytest.raises(ValueError, match=r"which: expected one of .*'backward'.*got 'forward'"):
        GRU(4, 8)._engine.tuning("forward")


@pytest.mark.slow
def test_environment_turns_it_off():
    code = ("import gru_cy; g = gru_cy.GRU(4, 8); "
            "print(g._engine.adaptive)")
    for value, want in (("0", "False"), ("1", "True"), ("off", "False")):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env={**__import__("os").environ, "GRU_CY_ADAPTIVE": value},
                             check=True)
        assert out.stdout.strip() == want, (value, out)


def test_long_calls_time_one_thread_only_when_the_team_is_slow():
    # Calls of 50 ms: one thread is not timed while the team keeps its
    # speed; once the team slows down, one thread is timed and kept.
    n = 100
    team = [0.05] * 40 + [0.5] * (n - 40)
    modes = tune_trace(team, [0.09] * n)
    assert modes[:41] == [TEAM] * 41
    assert modes[41] == ONE and modes[42:].count(ONE) > 50


def test_batch_mode_times_one_thread_only_when_the_team_is_slow():
    # The batch mode's threads wait for no teammate (early=False): quick
    # calls too keep the team without an up-front timing of one thread, and
    # time it once the team slows down.
    n = 60
    modes = tune_trace([3e-4] * 30 + [9e-4] * (n - 30), [4.5e-4] * n, early=False)
    assert modes[:31] == [TEAM] * 31
    assert ONE in modes[31:34] and modes[40:].count(ONE) > 10


@two_threads
@pytest.mark.parametrize("B, lockstep", [(32, False), (12, True)], ids=["batch", "units"])
def test_engine_times_one_thread_up_front_for_lockstep_teams_only(B, lockstep):
    # Two chunks of 16 sequences run the batch mode (config B's path): no
    # one-thread timing up front (it took B's first benchmark sample to 10-11
    # ms against 8.2); fewer than two half chunks (B < 16) run unit slices, a team that meets at a
    # barrier every step: one thread is timed up front where calls are quick.
    # A record's third call is the first that may run one thread: it must
    # run as the policy (tune_trace, early=lockstep) decides on the engine's
    # own timing of the second call, whatever that timing.  A machine so slow
    # that the call is not quick (under 10 ms) keeps the team either way: the
    # check then cannot tell the two apart, but cannot fail either.  Two
    # steps keep the call quick even on a loaded machine (8 ms with two
    # spinning processes on two cores, against 0.05 ms idle).
    T = 2
    layer = GRU(64, 128, seed=1, num_threads=2)
    x = np.random.default_rng(3).standard_normal((T, B, 64)).astype(np.float32)
    layer.forward(x)                      # warm-up: untimed
    layer.forward(x)                      # the team's first timing
    info = layer._engine.tuning()
    assert info["state"] == "on" and info["threads"] == 2, info
    assert info["seconds_per_step"]["one thread"] is None, info
    call = info["seconds_per_step"]["team"] * T        # seconds the timed call took
    want = tune_trace([call] * 3, [call] * 3, early=lockstep)[2]
    layer.forward(x)
    got = layer._engine.tuning()["last_threads"]
    assert got == (2 if want == TEAM else 1), (call, want, got)


@pytest.mark.slow
def test_info_reports_it():
    import json
    for value, want in (("0", False), ("1", True)):
        out = subprocess.run([sys.executable, "-m", "gru_cy", "info", "--json"],
                             capture_output=True, text=True, check=True,
                             env={**__import__("os").environ, "GRU_CY_ADAPTIVE": value})
        facts = json.loads(out.stdout)
        assert facts["adaptive_team"] is want and facts["threads"] >= 1, facts


def test_team_never_exceeds_the_processors():
    # More threads than processors: a thread waiting at a barrier or for a
    # chunk's previous step spins while the one it waits for is not running
    # (config A with num_threads=4 on 2 cores took 64 ms a call, 0.25 now).
    procs = num_procs()
    assert procs >= 1
    for units in (1, 2, 64, 10 ** 6):
        got = fused_team_size(128, 32, 256, 4 * procs + 3, units)
        assert 1 <= got <= min(procs, units), (units, got)
    assert fused_team_size(128, 32, 256, 1, 64) == 1
    assert fused_team_size(1, 1, 8, 8, 64) == 1          # too small to share


@two_threads
@pytest.mark.parametrize("sizes", [UNITS, (16, 40, 8, 64)], ids=["units", "batch"])
def test_more_threads_than_processors_same_bits(sizes):
    T, B, I, H = sizes
    rng = np.random.default_rng(8)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    h0 = rng.standard_normal((B, H)).astype(np.float32)
    want = GRU(I, H, seed=3, num_threads=1).forward(x, h0=h0)
    many = GRU(I, H, seed=3, num_threads=4 * num_procs() + 1)
    for _ in range(3):
        assert_array_equal(many.forward(x, h0=h0), want)
