// Shared device helpers for the gru_cy CUDA kernels (see gru_cy/kernels.py for
// the kernel contract).  Included by every .cu file; compiled by NVRTC (through
// CuPy), by nvcc, and by g++ through tests/cuda_emulation/cuda_shim.h.  It uses
// no header: the math functions (exp, expm1, tanh, sqrt, log, fabs, pow) are the
// overloaded float/double device functions every CUDA compiler provides.
//
// Sizes are `long long` throughout (T*B*3H can pass 2^31 for large layers);
// integer flags (transA, transB, act) and the Adam step t are `int`.
#pragma once

namespace gru_cy {

// Activation codes: the index in gru_cy.kernels.ACTIVATIONS.
enum Activation {
    ACT_LOGISTIC = 0, ACT_TANH = 1, ACT_LINEAR = 2, ACT_RELU = 3, ACT_LEAKY = 4,
    ACT_ELU = 5, ACT_SELU = 6, ACT_RELIE = 7, ACT_RAMP = 8, ACT_HARDTAN = 9,
    ACT_LHTAN = 10, ACT_PLSE = 11, ACT_LOGGY = 12
};

// Batch-normalisation constants (gru_cy.kernels.BN_EPS / BN_MOMENTUM), used
// in double arithmetic; RATE is written out (not 1 - MOMENTUM) as on the CPU.
#define GRU_CY_BN_EPS 1e-6
#define GRU_CY_BN_MOMENTUM 0.99
#define GRU_CY_BN_RATE 0.01

// ---- index helpers --------------------------------------------------------

// Global index of this thread along x and the stride of a grid-stride loop.
__device__ __forceinline__ long long global_index() {
    return (long long)blockIdx.x * (long long)blockDim.x + (long long)threadIdx.x;
}

__device__ __forceinline__ long long grid_stride() {
    return (long long)blockDim.x * (long long)gridDim.x;
}

// ---- numerically stable scalar functions ----------------------------------

// logistic(x) = 1 / (1 + exp(-x)), evaluated through exp(-|x|) <= 1 so that
// no intermediate overflows for any finite x.
template <typename T>
__device__ __forceinline__ T logistic(T x) {
    const T e = exp(-fabs(x));
    return x >= T(0) ? T(1) / (T(1) + e) : e / (T(1) + e);
}

template <typename T>
__device__ __forceinline__ T clamp_abs(T x, T c) {
    return x > c ? c : (x < -c ? -c : x);
}

// act(x) for every code of ACTIVATIONS, Darknet's formulas made stable:
// tanh through tanh(), logistic and loggy through logistic(), elu/selu
// through expm1() of non-positive inputs only.
template <typename T>
__device__ __forceinline__ T activate(T x, int act) {
    switch (act) {
    case ACT_LOGISTIC: return logistic(x);
    case ACT_TANH: return tanh(x);
    case ACT_LINEAR: return x;
    case ACT_RELU: return x > T(0) ? x : T(0);
    case ACT_LEAKY: return x > T(0) ? x : T(0.1) * x;
    case ACT_ELU: return x >= T(0) ? x : expm1(x);
    case ACT_SELU:
        return x >= T(0) ? T(1.0507) * x : T(1.0507) * T(1.6732) * expm1(x);
    case ACT_RELIE: return x > T(0) ? x : T(0.01) * x;
    case ACT_RAMP: return (x > T(0) ? x : T(0)) + T(0.1) * x;
    case ACT_HARDTAN: return x < T(-1) ? T(-1) : (x > T(1) ? T(1) : x);
    case ACT_LHTAN:
        if (x < T(0)) return T(0.001) * x;
        if (x > T(1)) return T(0.001) * (x - T(1)) + T(1);
        return x;
    case ACT_PLSE:
        if (x < T(-4)) return T(0.01) * (x + T(4));
        if (x > T(4)) return T(0.01) * (x - T(4)) + T(1);
        return T(0.125) * x + T(0.5);
    case ACT_LOGGY: return T(2) * logistic(x) - T(1);
    default: return x;
    }
}

// act'(x) expressed through the output y = act(x), as Darknet's gradient().
template <typename T>
__device__ __forceinline__ T activate_gradient(T y, int act) {
    switch (act) {
    case ACT_LOGISTIC: return (T(1) - y) * y;
    case ACT_TANH: return T(1) - y * y;
    case ACT_LINEAR: return T(1);
    case ACT_RELU: return y > T(0) ? T(1) : T(0);
    case ACT_LEAKY: return y > T(0) ? T(1) : T(0.1);
    case ACT_ELU: return y >= T(0) ? T(1) : y + T(1);
    case ACT_SELU: return y >= T(0) ? T(1.0507) : y + T(1.0507) * T(1.6732);
    case ACT_RELIE: return y > T(0) ? T(1) : T(0.01);
    case ACT_RAMP: return (y > T(0) ? T(1) : T(0)) + T(0.1);
    case ACT_HARDTAN: return (y > T(-1) && y < T(1)) ? T(1) : T(0);
    case ACT_LHTAN: return (y > T(0) && y < T(1)) ? T(1) : T(0.001);
    case ACT_PLSE: return (y < T(0) || y > T(1)) ? T(0.01) : T(0.125);
    case ACT_LOGGY: {
        const T p = (y + T(1)) / T(2);
        return T(2) * (T(1) - p) * p;
    }
    default: return T(1);
    }
}

// Smallest positive normal number of T: the floor of log() arguments.
template <typename T> __device__ __forceinline__ T tiny();
template <> __device__ __forceinline__ float tiny<float>() { return 1.17549435e-38f; }
template <> __device__ __forceinline__ double tiny<double>() { return 2.2250738585072014e-308; }

}  // namespace gru_cy
