/* OpenMP queries that also build without OpenMP (serial engine). */
#ifndef GRU_CY_OMP_COMPAT_H
#define GRU_CY_OMP_COMPAT_H
#ifdef _OPENMP
#include <omp.h>
static inline int gru_max_threads(void) { return omp_get_max_threads(); }
static inline int gru_have_openmp(void) { return 1; }
static inline double gru_now(void) { return omp_get_wtime(); }
/* omp_get_num_procs() asks the kernel (sched_getaffinity, ~0.5 us) on every
 * call: read it once per process (a race writes the same value twice). */
static int gru_procs_cached = 0;
static inline int gru_num_procs(void)
{
    int n = gru_procs_cached;
    if (n <= 0) {
        n = omp_get_num_procs();
        gru_procs_cached = n;
    }
    return n;
}
#else
static inline int gru_max_threads(void) { return 1; }
static inline int gru_have_openmp(void) { return 0; }
static inline double gru_now(void) { return 0.0; }  /* one thread: nothing to time */
static inline int gru_num_procs(void) { return 1; }
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

/* Claim the next work item (batch mode's chunks): returns *c, then
 * increments it, atomically. */
#if defined(__GNUC__) || defined(__clang__)
static inline int gru_claim(int *c) { return __atomic_fetch_add(c, 1, __ATOMIC_RELAXED); }
#else
static inline int gru_claim(int *c)
{
    int v;
#ifdef _OPENMP
#pragma omp atomic capture
    { v = *c; (*c)++; }
#else
    v = (*c)++;
#endif
    return v;
}
#endif

/* Step order within a chain of steps (batch mode: a chunk of sequences runs
 * its steps in order, any thread running any step): gru_step_wait waits until
 * *done >= v (the chain's step v - 1 finished), acquiring that step's
 * writes; gru_step_done(done, v) releases this step's writes and says so.
 * The wait spins, then yields the core (GRU_BAR_SPINS below). */
#if defined(__GNUC__) || defined(__clang__)
static inline void gru_step_done(int *done, int v) { __atomic_store_n(done, v, __ATOMIC_RELEASE); }
/* One more of a set of parts done (batch mode's packs), releasing its writes. */
static inline void gru_count_done(int *done) { __atomic_add_fetch(done, 1, __ATOMIC_RELEASE); }
static inline int gru_step_read(int *done) { return __atomic_load_n(done, __ATOMIC_ACQUIRE); }
#else
static inline void gru_step_done(int *done, int v)
{
#ifdef _OPENMP
#pragma omp flush
#endif
    *(volatile int *)done = v;
#ifdef _OPENMP
#pragma omp flush
#endif
}
static inline void gru_count_done(int *done)
{
#ifdef _OPENMP
#pragma omp flush
#pragma omp atomic
#endif
    (*done)++;
#ifdef _OPENMP
#pragma omp flush
#endif
}
static inline int gru_step_read(int *done)
{
    int v = *(volatile int *)done;
#ifdef _OPENMP
#pragma omp flush
#endif
    return v;
}
#endif

/* A barrier for the fused forward's team, met once or twice per step.
 * libgomp's barrier costs too much there (docs/performance.md, "The
 * barrier").  This one: each thread publishes the
 * number of barriers it has arrived at (its epoch) on a cache line of its
 * own, and waits until every other thread's epoch has reached its own.  A
 * barrier then costs one cache-line transfer per teammate, which is what
 * matters when the cores are far apart (a counter shared by all threads
 * costs two or three transfers, one after the other).  Teams larger than
 * GRU_BAR_SLOTS use a counter and a generation number: the last thread to
 * arrive resets the counter and bumps the generation.  Waiters spin (pause)
 * and after GRU_BAR_SPINS rounds yield the core at each round (a descheduled
 * teammate, or more threads than cores).  Release/acquire atomics order every
 * write made before the barrier before every read made after it.  Compilers
 * without GNU atomics use OpenMP's barrier. */
#define GRU_BAR_SLOTS 16
#if defined(__GNUC__) || defined(__clang__)
#define GRU_LINE_ALIGNED __attribute__((aligned(64)))
#else
#define GRU_LINE_ALIGNED
#endif

typedef struct {
    int epoch;     /* barriers this thread has arrived at */
    char pad[60];  /* one cache line per thread */
} gru_bar_slot;

typedef struct GRU_LINE_ALIGNED {
    gru_bar_slot slot[GRU_BAR_SLOTS];
    int count;     /* n > GRU_BAR_SLOTS: threads arrived at the current barrier */
    char pad[60];  /* gen on another cache line: arrivals do not disturb the waiters */
    int gen;       /* barriers completed */
    int n;         /* team size */
    int slots;     /* 1: the per-thread epochs (n <= GRU_BAR_SLOTS), 0: the counter */
} gru_bar;

#define GRU_BAR_SPINS 20000

static inline void gru_bar_init(gru_bar *b, int n)
{
    int i;
    for (i = 0; i < GRU_BAR_SLOTS; i++)
        b->slot[i].epoch = 0;
    b->count = 0;
    b->gen = 0;
    b->n = n;
    b->slots = n <= GRU_BAR_SLOTS;
}

#if defined(__GNUC__) || defined(__clang__)
#include <sched.h>
static inline void gru_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* One round of a wait: pause for the first GRU_BAR_SPINS rounds, then give
 * the core away (the awaited thread may need it). */
static inline void gru_wait_round(int *spins)
{
    if (*spins < GRU_BAR_SPINS) {
        (*spins)++;
        gru_cpu_relax();
    } else {
        sched_yield();
    }
}

/* The barrier in two halves, with work between them that needs no other
 * thread's writes (the darknet step's z while r * h_{t-1} is completed):
 * gru_bar_arrive (thread tid) releases this thread's writes and returns a
 * token for gru_bar_await, which returns once every thread has arrived,
 * acquiring their writes.  A thread that arrives late is then waited for
 * while the others work, not while they spin. */
static inline int gru_bar_arrive(gru_bar *b, int tid)
{
    int gen;
    if (b->n <= 1)
        return 0;
    if (b->slots) {
        /* only this thread writes its epoch */
        gen = __atomic_load_n(&b->slot[tid].epoch, __ATOMIC_RELAXED) + 1;
        __atomic_store_n(&b->slot[tid].epoch, gen, __ATOMIC_RELEASE);
        return gen;
    }
    gen = __atomic_load_n(&b->gen, __ATOMIC_ACQUIRE);
    if (__atomic_add_fetch(&b->count, 1, __ATOMIC_ACQ_REL) == b->n) {
        __atomic_store_n(&b->count, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&b->gen, gen + 1, __ATOMIC_RELEASE);
    }
    return gen;
}
static inline void gru_bar_await(gru_bar *b, int tid, int gen)
{
    int spins = 0, i;
    if (b->n <= 1)
        return;
    if (b->slots) {
        /* a teammate is at most one barrier ahead: epoch gen or gen + 1 */
        for (i = 0; i < b->n; i++)
            while (i != tid && __atomic_load_n(&b->slot[i].epoch, __ATOMIC_ACQUIRE) < gen)
                gru_wait_round(&spins);
        return;
    }
    while (__atomic_load_n(&b->gen, __ATOMIC_ACQUIRE) == gen)
        gru_wait_round(&spins);
}
static inline void gru_bar_wait(gru_bar *b, int tid) { gru_bar_await(b, tid, gru_bar_arrive(b, tid)); }
static inline void gru_step_wait(int *done, int v)
{
    int spins = 0;
    while (gru_step_read(done) < v)
        gru_wait_round(&spins);
}
#else
static inline void gru_bar_wait(gru_bar *b, int tid) { (void)b; (void)tid; gru_barrier(); }
static inline int gru_bar_arrive(gru_bar *b, int tid) { (void)b; (void)tid; gru_barrier(); return 0; }
static inline void gru_bar_await(gru_bar *b, int tid, int gen) { (void)b; (void)tid; (void)gen; }
static inline void gru_step_wait(int *done, int v)
{
    while (gru_step_read(done) < v)
        ;
}
#endif
#endif
