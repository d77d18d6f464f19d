# Thread-team policy (team.pyx): how many threads a call gets, and the adaptive
# team that runs a call on one thread where the team is slower.
from gru_cy._cpu.layout cimport Dims

cdef struct Tune:
    int state
    Py_ssize_t B             # the batch size tuned for (another starts anew)
    int nt                   # and the team size
    int mode                 # 1: the team, 0: one thread
    int wait                 # calls until the other mode is timed again
    int backoff              # that wait after a timing that showed no gain (doubles)
    int last                 # threads the last call was given
    double lost_excess       # the last lost timing's excess per step (< 0: none since a switch)
    bint early               # one thread timed up front for quick calls (lockstep teams)
    double est[2]            # seconds per step by mode, moving average (< 0: not timed)
    double best[2]           # fastest step by mode (< 0: not timed)

# The threads a call may use: nthreads (< 1: OpenMP's current count), at most
# one per processor.
cdef int resolve_threads(int nthreads) noexcept nogil

cdef enum:
    FUSED_MIN_FLOPS = 50000  # recurrent flops per step below which one thread runs,
    FUSED_MIN_CALL = 1000000 # and per call (a region costs microseconds to open)


cdef inline int fused_team(Dims* d, Py_ssize_t units) noexcept nogil:
    # Threads for the fused forward: at most `units` (granules or chunks of
    # rows), one when a step's recurrent product is too small to share.
    # d.nthreads: resolved by the engine (resolve_threads).  Inline: every
    # forward call asks it, batch-1 streaming included.
    cdef int nt = d.nthreads
    cdef double per_step = 6.0 * d.B * d.H * d.H
    if per_step < FUSED_MIN_FLOPS or per_step * d.T < FUSED_MIN_CALL:
        return 1
    if nt > units:
        nt = <int>units
    return nt if nt >= 1 else 1

cdef void tune_reset(Tune* s, Py_ssize_t B, int nt, bint early) noexcept nogil
# A tuned call of d's shape starts: its mode (1 team, 0 one thread: then
# d.nthreads = 1).  The caller times it and hands the time to tune_record.
cdef int tune_begin(Tune* s, Dims* d, bint early) noexcept nogil
cdef void tune_record(Tune* s, int mode, double t, Py_ssize_t T, int used) noexcept nogil
cdef dict tune_report(Tune* s)
cdef void tune_force(Tune* s, int mode) noexcept nogil
cdef bint env_adaptive()
