# The fused forward (fused.pyx): one parallel region per call, in unit slices
# or in chunks of the batch.  The engine asks plan_forward which path a call
# takes (before it allocates anything), gives the plan's scratch, then runs it.
from gru_cy._cpu.layout cimport Dims, Ptrs
from gru_cy._cpu.team cimport fused_team

cdef enum:
    FUSED_GRAN = 32          # units per granule of a thread's slice
    BATCH_ROWS = 16          # batch mode: B >= 2 * 16, chunks of 16..31 rows, or of 8..15
                             # where that makes fewer than two chunks per thread
    BATCH_MAX_WEIGHTS = 2097152 # batch mode: U and W at most this many bytes (each chunk
                                # reads them at every step: they must stay in cache)
    UNITS_FIRST_H = 128      # a padded batch's limited call runs in unit slices (not
                             # the batch mode, not segments) from this many units

cdef enum:
    PATH_STEPS = 0    # the per-kernel step loop (steps.pyx): BN, BLAS, or a team
                      # better spent on the input projection
    PATH_UNITS = 1    # fused: each thread a slice of the H units, a barrier per step
    PATH_BATCH = 2    # fused: chunks of the batch, (chunk, step) items, no barrier

cdef struct Plan:
    int path
    int nt                    # the team the path asks for
    int nchunks               # PATH_BATCH: chunks of rows
    Py_ssize_t scratch_bytes  # the scratch forward_fused needs (64-byte aligned inside)
    bint packs_ready          # PATH_BATCH: the scratch already holds this layer's packs
                              # (an earlier call's, same parameters): not packed again

cdef inline bint batch_mode(Dims* d, bint dbl) noexcept nogil:
    # Whether the fused forward would split the batch among its threads (whose
    # threads wait for no one) rather than the units: a team of two or more on
    # chunks of BATCH_ROWS rows, weights that stay in each core's cache.
    return fused_team(d, d.B // (BATCH_ROWS // 2)) > 1 and \
        3 * d.H * (d.In + d.H) * (8 if dbl else 4) <= BATCH_MAX_WEIGHTS

# The path of a forward of d's sizes (d.nthreads resolved, and set to 1 by the
# adaptive team where it runs one thread).
cdef Plan plan_forward(Dims* d, bint dbl) noexcept nogil

# Runs a PATH_UNITS or PATH_BATCH plan; scratch: plan.scratch_bytes bytes.
cdef void forward_fused(void* theta, Dims d, Ptrs p, bint train, bint dbl, Plan* plan,
                        void* scratch) noexcept nogil
