// cuda_shim.h: compile the CUDA sources of src_kernels/ as plain C++ (g++ -std=c++20)
// and run their kernels on the CPU, so that the kernels are tested where no GPU is.
//
// What it provides:
// * __global__ / __device__ / __host__ / __forceinline__ as ordinary C++;
// * dim3 / uint3 and threadIdx, blockIdx, blockDim, gridDim as thread_local
//   variables set by the launcher;
// * emu::launch(grid, block, body): runs the blocks one after another; the
//   threads of a block are real std::threads (a pool created once and reused
//   by every launch and block) that meet at a barrier for __syncthreads();
// * __shared__ as `static`: one object per (kernel, type) shared by all
//   threads.  That is exactly per-block storage because only one block runs at
//   a time (a global mutex serialises launches, and the launcher makes every
//   thread finish a block before any starts the next);
// * the float/double math functions the kernels use (exp, tanh, sqrt, log,
//   fabs, pow, ...) from <cmath>, and atomicAdd through std::atomic_ref.
//
// A kernel in which some threads of a block skip a __syncthreads() deadlocks
// here as it misbehaves on a GPU; the emulation is meant to expose that.
#pragma once

#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <thread>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __restrict__

using std::exp;
using std::expm1;
using std::fabs;
using std::fmax;
using std::fmin;
using std::log;
using std::pow;
using std::sqrt;
using std::tanh;

struct uint3 {
    unsigned int x, y, z;
};

struct dim3 {
    unsigned int x, y, z;
    dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};

inline thread_local uint3 threadIdx;
inline thread_local uint3 blockIdx;
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;

namespace emu {

// A reusable barrier for the threads of one block.  A thread waiting more
// than a minute means some threads of the block never reach the barrier (a
// __syncthreads() inside divergent code): abort with a message rather than
// hang the test run.
class Barrier {
  public:
    explicit Barrier(unsigned int n) : n_(n), left_(n) {}

    void arrive_and_wait() {
        std::unique_lock<std::mutex> lock(m_);
        const unsigned long long gen = gen_;
        if (--left_ == 0) {
            left_ = n_;
            ++gen_;
            cv_.notify_all();
            return;
        }
        if (!cv_.wait_for(lock, std::chrono::seconds(60), [&] { return gen_ != gen; })) {
            std::fprintf(stderr, "cuda_shim: threads of a block did not all reach "
                                 "__syncthreads() within 60 s (divergent barrier?)\n");
            std::abort();
        }
    }

  private:
    std::mutex m_;
    std::condition_variable cv_;
    unsigned int n_, left_;
    unsigned long long gen_ = 0;
};

// The threads of the emulated blocks: created once, grown to the largest
// block launched, reused by every launch (creating hundreds of threads per
// launch would dominate the tests' time).  Never destroyed: the workers are
// detached and wait on the pool's condition variable until the process ends.
struct Pool {
    std::mutex m;
    std::condition_variable start, done;
    unsigned long long epoch = 0;
    unsigned int active = 0, finished = 0, spawned = 0;
    const std::function<void()>* body = nullptr;
    dim3 grid, block;
    Barrier* bar = nullptr;

    void run_blocks(unsigned int t) {
        threadIdx = uint3{t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
        blockDim = block;
        gridDim = grid;
        for (unsigned int bz = 0; bz < grid.z; ++bz)
            for (unsigned int by = 0; by < grid.y; ++by)
                for (unsigned int bx = 0; bx < grid.x; ++bx) {
                    blockIdx = uint3{bx, by, bz};
                    (*body)();
                    // No thread starts the next block (and rewrites the
                    // shared storage) before all have left this one.
                    bar->arrive_and_wait();
                }
    }

    void work(unsigned int t) {
        unsigned long long seen = 0;
        std::unique_lock<std::mutex> lock(m);
        for (;;) {
            start.wait(lock, [&] { return epoch != seen; });
            seen = epoch;
            if (t >= active) continue;  // not part of this launch
            lock.unlock();
            run_blocks(t);
            lock.lock();
            if (++finished == active) done.notify_one();
        }
    }
};

inline Pool* pool = new Pool;
inline std::mutex launch_mutex;

// Run body() as the kernel grid (grid, block): blocks in order x fastest,
// each by block.x*block.y*block.z threads.
inline void launch(dim3 grid, dim3 block, const std::function<void()>& body) {
    const unsigned int nthreads = block.x * block.y * block.z;
    if (nthreads == 0 || grid.x == 0 || grid.y == 0 || grid.z == 0) return;
    std::lock_guard<std::mutex> serial(launch_mutex);
    Barrier bar(nthreads);
    std::unique_lock<std::mutex> lock(pool->m);
    for (; pool->spawned < nthreads; ++pool->spawned) {
        const unsigned int t = pool->spawned;
        std::thread([t] { pool->work(t); }).detach();
    }
    pool->body = &body;
    pool->grid = grid;
    pool->block = block;
    pool->bar = &bar;
    pool->active = nthreads;
    pool->finished = 0;
    ++pool->epoch;
    pool->start.notify_all();
    pool->done.wait(lock, [&] { return pool->finished == pool->active; });
}

inline void syncthreads() { pool->bar->arrive_and_wait(); }

}  // namespace emu

inline void __syncthreads() { emu::syncthreads(); }

template <typename T>
inline T atomicAdd(T* address, T value) {
    return std::atomic_ref<T>(*address).fetch_add(value);
}
