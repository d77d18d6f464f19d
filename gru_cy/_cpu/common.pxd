# What every module of the engine shares: omp_compat.h (OpenMP queries, one
# parallel region per call, the barrier and the step waits, all of which also
# build without OpenMP) and the team rule of the per-row kernels.

cdef extern from "omp_compat.h" nogil:
    int gru_max_threads()
    int gru_have_openmp()
    int gru_num_procs()
    double gru_now()
    # one parallel region: fn(arg, tid, n) on each of the n threads given (<= nt)
    ctypedef void (*gru_team_fn)(void* arg, int tid, int n) noexcept nogil
    void gru_run_team(int nt, gru_team_fn fn, void* arg)
    void gru_barrier()
    int gru_claim(int* c)
    # the fused forward's spinning barrier (per-thread epochs), whole or split
    ctypedef struct gru_bar:
        int n
        int slots
    void gru_bar_init(gru_bar* b, int n)
    void gru_bar_wait(gru_bar* b, int tid)
    int gru_bar_arrive(gru_bar* b, int tid)
    void gru_bar_await(gru_bar* b, int tid, int gen)
    # step order within a chain of steps (batch mode)
    void gru_step_wait(int* done, int v)
    void gru_step_done(int* done, int v)
    void gru_count_done(int* done)

# Work (elements) below which a kernel runs serially: an OpenMP region costs
# more than it saves there (batch-1 streaming).  The kernels write the serial
# loop and the prange loop side by side rather than prange's use_threads_if:
# that still opens a (one-thread) region.
cdef enum:
    PAR_MIN_WORK = 8192


cdef inline int team(Py_ssize_t units, Py_ssize_t work, int nthreads) noexcept nogil:
    """Threads for a loop over `units` independent units totalling `work` elements."""
    if nthreads <= 1 or units < 2 or work < PAR_MIN_WORK:
        return 1
    return <int>(units if units < nthreads else nthreads)
