"""The fused forward's barrier (omp_compat.h): per-thread epochs for teams of
up to 16 threads, a shared counter for larger ones.  Every thread writes the
round's number, passes the split barrier (arrive, then await), and must read
that number from every thread; then passes the whole barrier.  A barrier that
let a thread through one round early fails this within a few rounds (an await
that waited one epoch short read 1917 wrong values in 2000 rounds)."""
import pytest

from gru_cy._cpu.team import barrier_check, have_openmp

needs_openmp = pytest.mark.skipif(not have_openmp(), reason="built without OpenMP")


@needs_openmp
@pytest.mark.parametrize("nthreads,slots,rounds", [
    (2, True, 3000), (3, True, 500), (16, True, 30),    # per-thread epochs
    (2, False, 3000), (5, False, 200),                   # the counter, forced
    (17, True, 30),                                      # the counter: > 16 threads
])
def test_every_thread_sees_every_write_of_the_round(nthreads, slots, rounds):
    # More threads than processors is fine here: waiters yield the core.
    team, bad = barrier_check(nthreads, rounds, slots)
    assert team == nthreads
    assert bad == 0


def test_one_thread_needs_no_barrier():
    assert barrier_check(1, 10) == (1, 0)
