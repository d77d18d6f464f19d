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
#endif
