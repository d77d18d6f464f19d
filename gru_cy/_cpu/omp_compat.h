/* OpenMP queries that also build without OpenMP (serial engine). */
#ifndef GRU_CY_OMP_COMPAT_H
#define GRU_CY_OMP_COMPAT_H
#ifdef _OPENMP
#include <omp.h>
static inline int gru_max_threads(void) { return omp_get_max_threads(); }
static inline int gru_have_openmp(void) { return 1; }
#else
static inline int gru_max_threads(void) { return 1; }
static inline int gru_have_openmp(void) { return 0; }
#endif

/* One parallel region around a whole driver (the fused forward's step loop):
 * fn(arg, tid, n) runs on each of the n threads OpenMP gives (at most nt; the
 * caller partitions the work by n, never by nt).  nt <= 1: called directly, no
 * region.  Threads inside meet at gru_barrier() (an orphaned barrier binds to
 * this region; outside any region it is a no-op). */
typedef void (*gru_team_fn)(void *arg, int tid, int n);

static inline void gru_run_team(int nt, gru_team_fn fn, void *arg)
{
#ifdef _OPENMP
    if (nt > 1) {
#pragma omp parallel num_threads(nt)
        fn(arg, omp_get_thread_num(), omp_get_num_threads());
        return;
    }
#endif
    fn(arg, 0, 1);
}

static inline void gru_barrier(void)
{
#ifdef _OPENMP
#pragma omp barrier
#endif
}

/* A flag the team's threads share (relaxed atomics: a barrier orders them). */
#if defined(__GNUC__) || defined(__clang__)
static inline void gru_flag_set(int *f) { __atomic_store_n(f, 1, __ATOMIC_RELAXED); }
static inline int gru_flag_get(int *f) { return __atomic_load_n(f, __ATOMIC_RELAXED); }
#else
static inline void gru_flag_set(int *f) { *(volatile int *)f = 1; }
static inline int gru_flag_get(int *f) { return *(volatile int *)f; }
#endif
#endif
