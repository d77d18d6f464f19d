# cython: language_level=3
"""Thread-team policy: how many threads a call gets, the adaptive team, and
the test hooks of both.

Results are bit-identical for any thread count, so this module only ever
changes speed.  The measurements behind each rule are in docs/performance.md
("Threads").

The adaptive team.  The fused forward's team works in lockstep (unit slices
meet at a barrier every step) or splits the batch into chunks; the backward's
parallel regions meet at barriers too.  On a machine whose cores are shared,
one descheduled thread stalls the whole call, so the engine times its fused
forward calls (no BN, native gemm) and its backward calls (native gemm) per
batch size and runs the faster of the team and one thread.  Times are kept per
step, so sequences of varying length share one record.  Rules:

* The first call of a record warms up (first touch of buffers) and is not timed.
* Where a call takes under TUNE_QUICK and the team meets at barriers (unit
  slices, the backward; not the batch mode, whose threads wait for no one),
  one thread is timed up front and again after every wait; otherwise only
  while the team runs slower than TUNE_SLOW times its best step.
* A timing of the other mode that wins switches to it.  One that loses sets
  the wait before the next timing by what timing costs against what it may
  find: TUNE_WAIT x (its excess over the current mode, or the last lost
  timing's if smaller, so that one stalled call does not set a long wait) /
  (the current mode's time less the other's best), within TUNE_WAIT ..
  TUNE_WAIT_MAX calls; a first loss waits TUNE_WAIT.  Where the other mode's
  best never beat the current mode, the waits double: 8, 16, 32, ... calls.
* A fastest call restarts its mode's average (the first calls of a shape run
  cold).  The current mode's average rising above the other's last timing
  switches too.  Timing costs two clock reads a call.
"""
import os

import numpy as np

from libc.string cimport memset

from gru_cy._cpu.common cimport (gru_bar, gru_bar_arrive, gru_bar_await, gru_bar_init,
                                 gru_bar_wait, gru_barrier, gru_claim, gru_have_openmp,
                                 gru_max_threads, gru_num_procs, gru_run_team)
from gru_cy._cpu.layout cimport Dims

cdef enum:
    TUNE_NEW = 0             # the next call warms up (first touch of buffers): untimed
    TUNE_ON = 1
    TUNE_WAIT = 8            # calls before the other mode is timed again (first wait)
    TUNE_WAIT_MAX = 1024     # the longest wait

cdef double TUNE_SLOW = 2.0    # the team is slow above this times its best step
cdef double TUNE_AVG = 0.25    # weight of the newest call in a mode's average
cdef double TUNE_QUICK = 0.01  # seconds: shorter calls time one thread up front


cdef int resolve_threads(int nthreads) noexcept nogil:
    # The engine's threads wait for each other (a barrier per step, a chunk's
    # previous step, a region's end); with more threads than cores a waiting
    # thread spins while the one it waits for is not running.
    cdef int nt = nthreads if nthreads >= 1 else gru_max_threads()
    cdef int procs = gru_num_procs()
    if procs >= 1 and nt > procs:
        nt = procs
    return nt if nt >= 1 else 1


# ------------------------------------------------------------ adaptive team ---

cdef bint env_adaptive():
    # GRU_CY_ADAPTIVE=0 turns the adaptive team off for new layers.
    return os.environ.get("GRU_CY_ADAPTIVE", "1").strip() not in ("0", "false", "no", "off")


cdef void tune_reset(Tune* s, Py_ssize_t B, int nt, bint early) noexcept nogil:
    s.state = TUNE_NEW
    s.B = B
    s.nt = nt
    s.early = early
    s.mode = 1
    s.wait = 0
    s.backoff = TUNE_WAIT
    s.last = 0
    s.lost_excess = -1.0
    s.est[0] = s.est[1] = -1.0
    s.best[0] = s.best[1] = -1.0


cdef int _tune_mode(Tune* s, Py_ssize_t T) noexcept nogil:
    # The mode to run the next call (T steps) in: 1 the team, 0 one thread.
    cdef bint slow, quick
    if s.state != TUNE_ON or s.est[1] < 0:
        return 1
    if s.mode == 1:
        slow = s.est[1] > TUNE_SLOW * s.best[1]
        quick = s.early and s.est[1] * T < TUNE_QUICK
        if s.est[0] < 0:
            return 0 if slow or quick else 1
        # quick calls: one thread again after every wait, whether or not the
        # team is slow (an up-front timing that a stall made slow would
        # otherwise stand while a team slow from its first call never falls
        # behind its own best)
        return 0 if s.wait <= 0 and (slow or quick) else 1
    return 1 if s.wait <= 0 else 0


cdef void tune_record(Tune* s, int mode, double t, Py_ssize_t T, int used) noexcept nogil:
    # A call of mode, T steps, took t seconds; used: the threads the call
    # asked for (a team call that ran one thread anyway tells nothing).
    cdef int other = 1 - mode
    cdef double gain, w, excess
    if s.state == TUNE_NEW:
        s.state = TUNE_ON
        return
    if mode == 1 and used <= 1:
        return
    t = t / T
    if mode == s.mode:
        if s.best[mode] < 0 or t < s.best[mode]:
            # a fastest call restarts the average (cold first calls would make
            # the team look slow)
            s.best[mode] = s.est[mode] = t
        else:
            s.est[mode] = s.est[mode] + TUNE_AVG * (t - s.est[mode])
        if s.wait > 0:
            s.wait -= 1
        if 0 <= s.est[other] < s.est[mode]:
            # the other mode's last timing is better (maybe old): switch,
            # and time this mode again soon
            s.mode = other
            s.wait = s.backoff = TUNE_WAIT
            s.lost_excess = -1.0
        return
    # a timing of the other mode: it replaces that mode's average
    s.est[mode] = t
    if s.best[mode] < 0 or t < s.best[mode]:
        s.best[mode] = t
    if t < s.est[s.mode] or s.est[s.mode] < 0:
        s.mode = mode
        s.wait = s.backoff = TUNE_WAIT
        s.lost_excess = -1.0
        return
    gain = s.est[s.mode] - s.best[mode]
    if gain <= 0:
        # the other mode never beat this one: the wait doubles (its first
        # calls may have run cold or in a slow phase)
        s.wait = s.backoff
        if s.backoff < TUNE_WAIT_MAX:
            s.backoff *= 2
        return
    # the smaller of this timing's excess and the last losing one's
    excess = t - s.est[s.mode]
    w = TUNE_WAIT * (excess if excess < s.lost_excess else s.lost_excess) / gain \
        if s.lost_excess >= 0 else TUNE_WAIT
    s.lost_excess = excess
    s.wait = <int>(TUNE_WAIT if w < TUNE_WAIT else (TUNE_WAIT_MAX if w > TUNE_WAIT_MAX else w))


cdef int tune_begin(Tune* s, Dims* d, bint early) noexcept nogil:
    # Its record starts anew for another batch size or team.  early: time one
    # thread up front where calls are quick (teams that meet at barriers).
    cdef int mode
    if s.B != d.B or s.nt != d.nthreads:
        tune_reset(s, d.B, d.nthreads, early)
    mode = _tune_mode(s, d.T)
    if mode == 0:
        d.nthreads = 1
    s.last = d.nthreads
    return mode


cdef dict tune_report(Tune* s):
    # Engine.tuning's record (see there).
    return {"state": ("new", "on")[s.state], "threads": s.nt,
            "mode": "team" if s.mode else "one thread",
            "seconds_per_step": {m: (s.est[i] if s.est[i] >= 0 else None)
                                 for i, m in ((1, "team"), (0, "one thread"))},
            "best": s.best[1] if s.best[1] >= 0 else None, "last_threads": s.last}


cdef void tune_force(Tune* s, int mode) noexcept nogil:
    # Tests: the next calls run in mode (1 team, 0 one thread), both modes
    # timed as equal so that no call times the other.
    s.state = TUNE_ON
    s.mode = mode
    s.est[0] = s.est[1] = s.best[0] = s.best[1] = 1.0
    s.wait = TUNE_WAIT_MAX


# -------------------------------------------------------------- test hooks ---

def have_openmp():
    """True when the engine was built with OpenMP."""
    return bool(gru_have_openmp())


def max_threads():
    """OpenMP's current thread count (honours OMP_NUM_THREADS and threadpoolctl)."""
    return gru_max_threads()


def adaptive_default():
    """Whether new layers use the adaptive team (``GRU_CY_ADAPTIVE``, default on)."""
    return bool(env_adaptive())


def num_procs():
    """Processors OpenMP says this process may use (1 without OpenMP)."""
    return gru_num_procs()


def fused_team_size(Py_ssize_t T, Py_ssize_t B, Py_ssize_t H, int nthreads,
                    Py_ssize_t units):
    """The threads the fused forward runs for these sizes, ``nthreads`` asked
    for and ``units`` of work (granules or chunks); tests."""
    cdef Dims d
    memset(&d, 0, sizeof(Dims))
    d.T = T
    d.B = B
    d.H = H
    d.nthreads = resolve_threads(nthreads)
    return fused_team(&d, units)


def tune_trace(team_times, one_times, int used=2, steps=None, bint early=True):
    """The modes the adaptive team picks for synthetic call times (tests).

    ``team_times[i]`` / ``one_times[i]``: seconds call ``i`` takes on the team
    / on one thread; ``steps[i]``: its steps (default 1); ``used``: the
    threads the team call asks for (1: none to pick); ``early``: one thread
    is timed up front for quick calls (a lockstep team).  Returns the list of
    modes run (1 team, 0 one thread).
    """
    cdef Tune s
    cdef int m
    cdef Py_ssize_t T
    tune_reset(&s, 1, 2, early)
    modes = []
    for i in range(len(team_times)):
        T = 1 if steps is None else steps[i]
        m = _tune_mode(&s, T)
        tune_record(&s, m, team_times[i] if m else one_times[i], T, used)
        modes.append(m)
    return modes


cdef struct BarCheck:
    gru_bar bar
    int* vals               # one per thread, 16 ints apart
    int rounds
    int slots
    int bad


cdef void _bar_check_thread(void* arg, int tid, int n) noexcept nogil:
    cdef BarCheck* c = <BarCheck*>arg
    cdef int r, i, tok
    if tid == 0:
        gru_bar_init(&c.bar, n)
        if not c.slots:
            c.bar.slots = 0
    gru_barrier()
    for r in range(1, c.rounds + 1):
        c.vals[16 * tid] = r
        tok = gru_bar_arrive(&c.bar, tid)
        gru_bar_await(&c.bar, tid, tok)
        for i in range(n):
            if c.vals[16 * i] != r:
                gru_claim(&c.bad)
        gru_bar_wait(&c.bar, tid)


def barrier_check(int nthreads, int rounds, bint slots=True):
    """Run ``rounds`` rounds of the fused forward's barrier on an OpenMP team
    of ``nthreads`` (not capped at the processors): each thread writes the
    round, passes the split barrier, reads every thread's value, passes the
    whole barrier.  ``slots`` False: the counter barrier of large teams.
    Returns (team size, values read that were not the round's); tests."""
    cdef BarCheck c
    cdef int[::1] vals = np.zeros(16 * max(nthreads, 1), np.intc)
    c.vals = &vals[0]
    c.rounds = rounds
    c.slots = slots
    c.bad = 0
    with nogil:
        gru_run_team(nthreads, _bar_check_thread, &c)
    return int(c.bar.n), int(c.bad)
