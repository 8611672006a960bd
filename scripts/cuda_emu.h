// A tiny CUDA execution-model emulator, enough to run engine/kernels/fused.cu on a CPU.
//
// Each block runs as blockDim.x std::threads (blocks one after another), so function-static
// memory is the block's __shared__ memory; __syncthreads() is a barrier over the block and
// warp shuffles exchange values through a per-warp buffer between two barriers. It checks
// the kernels' logic (indexing, reductions, merges, rounding), not their speed: used by
// scripts/cuda_emu.py for CPU tests. Every shuffle must be reached by all 32 lanes, as on a GPU
// with a full mask; blockDim.x must be a multiple of 32.
#pragma once
#include <barrier>
#include <cmath>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};

static dim3 gridDim, blockDim;
static thread_local dim3 threadIdx, blockIdx;

struct EmuWarp {
    std::barrier<> bar{32};
    unsigned long long slot[32];
};
static thread_local EmuWarp* emu_warp = nullptr;
static thread_local int emu_lane = 0;
static std::barrier<>* emu_block_barrier = nullptr;

#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __shared__ static

inline void __syncthreads() { emu_block_barrier->arrive_and_wait(); }

template <typename T>
inline T emu_exchange(T v, int src) {
    static_assert(sizeof(T) <= 8, "shuffle of a value larger than 8 bytes");
    emu_warp->bar.arrive_and_wait();                 // everyone has read the previous exchange
    unsigned long long bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    emu_warp->slot[emu_lane] = bits;
    emu_warp->bar.arrive_and_wait();                 // everyone has written
    T out;
    bits = emu_warp->slot[src];
    std::memcpy(&out, &bits, sizeof(T));
    return out;
}

template <typename T> inline T __shfl_xor_sync(unsigned, T v, int mask) { return emu_exchange(v, emu_lane ^ mask); }
template <typename T> inline T __shfl_down_sync(unsigned, T v, int delta) {
    const int src = emu_lane + delta;
    return emu_exchange(v, src < 32 ? src : emu_lane);
}

inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline float __uint_as_float(unsigned int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline unsigned int __float_as_uint(float f) { unsigned int i; std::memcpy(&i, &f, 4); return i; }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }

template <typename F>
void emu_launch(unsigned gx, unsigned gy, unsigned bx, F kernel) {
    gridDim = dim3{gx, gy, 1};
    blockDim = dim3{bx, 1, 1};
    for (unsigned by = 0; by < gy; ++by) {
        for (unsigned b = 0; b < gx; ++b) {
            std::barrier<> block_barrier((std::ptrdiff_t)bx);
            emu_block_barrier = &block_barrier;
            std::vector<std::unique_ptr<EmuWarp>> warps;
            for (unsigned w = 0; w < (bx + 31) / 32; ++w) warps.emplace_back(new EmuWarp());
            std::vector<std::thread> threads;
            for (unsigned t = 0; t < bx; ++t) {
                threads.emplace_back([&, t, b, by] {
                    threadIdx = dim3{t, 0, 0};
                    blockIdx = dim3{b, by, 0};
                    emu_warp = warps[t / 32].get();
                    emu_lane = (int)(t % 32);
                    kernel();
                });
            }
            for (auto& th : threads) th.join();
        }
    }
}
