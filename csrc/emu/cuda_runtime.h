// cuda_runtime.h (emulation): a CPU stand-in for the CUDA runtime, used ONLY
// by `make emu-test`, a test harness that runs unitok's kernels on the CPU
// (one std::thread per CUDA thread, blocks one after another, std::barrier
// for __syncthreads/__syncwarp, warp shuffles through shared slots) so that
// indexing, masking, barriers and epilogues can be checked on a machine with
// no GPU. It says nothing about performance, and cannot catch everything
// (memory-model subtleties, real shared-memory limits). Never shipped: the
// real library is built by nvcc against the real CUDA headers.
#pragma once

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <cmath>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#define UNITOK_EMULATION 1
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
#define UNITOK_DYNAMIC_SMEM(T, name) T *name = reinterpret_cast<T *>(::emu::dynamic_smem())

using std::max;
using std::min;

struct dim3 {
	unsigned x = 1, y = 1, z = 1;
	dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
// 16-byte aligned as on a GPU. emu-test builds with
// -fsanitize=alignment, so a float4 load from an address that is not a
// multiple of 16 (which faults on a GPU) stops the test with the address.
struct alignas(16) float4 {
	float x, y, z, w;
};
static_assert(alignof(float4) == 16 && sizeof(float4) == 16, "float4 as on a GPU");

typedef enum cudaError {
	cudaSuccess = 0,
	cudaErrorInvalidValue = 1,
	cudaErrorMemoryAllocation = 2,
	cudaErrorStubLibrary = 34,
	cudaErrorInsufficientDriver = 35,
	cudaErrorDevicesUnavailable = 46,
	cudaErrorNoDevice = 100,
	cudaErrorInvalidDevice = 101,
	cudaErrorSystemDriverMismatch = 803,
	cudaErrorCompatNotSupportedOnDevice = 804,
	cudaErrorIllegalAddress = 700,
	cudaErrorLaunchFailure = 719,
} cudaError_t;

typedef struct CUstream_st *cudaStream_t;
typedef struct CUevent_st *cudaEvent_t;
enum cudaMemcpyKind { cudaMemcpyHostToHost, cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
#define cudaStreamNonBlocking 1
#define cudaHostAllocPortable 1

struct cudaDeviceProp {
	char name[256];
	int major, minor, multiProcessorCount;
	size_t sharedMemPerBlockOptin, totalGlobalMem;
};

namespace emu {

struct Warp {
	std::barrier<> bar{32};
	double slots[32];
};

// The state of the block being run. Launches are serialized (one mutex), so
// one block state suffices.
struct Block {
	std::unique_ptr<std::barrier<>> bar;
	std::vector<std::unique_ptr<Warp>> warps;
	std::vector<float4> smem; // dynamic shared memory, 16-byte aligned as on a GPU
};
inline Block &block() {
	static Block b;
	return b;
}
inline std::mutex &launch_mutex() {
	static std::mutex m;
	return m;
}
inline thread_local dim3 tl_thread, tl_block, tl_bdim, tl_gdim;
inline void *dynamic_smem() { return block().smem.data(); }
inline thread_local cudaError_t last_error = cudaSuccess;

template <typename K, typename... Args>
void launch(K kernel, dim3 grid, dim3 blk, size_t smem, cudaStream_t, Args... args) {
	std::lock_guard<std::mutex> lock(launch_mutex());
	const unsigned nt = blk.x * blk.y * blk.z;
	if (nt == 0 || nt > 1024 || smem > 227 * 1024 || grid.x == 0 || grid.y > 65535 || grid.z > 65535) {
		last_error = cudaErrorInvalidValue;
		return;
	}
	Block &b = block();
	b.smem.assign(smem / sizeof(float4) + 1, float4{});
	memset(b.smem.data(), 0xA5, b.smem.size() * sizeof(float4)); // poisoned, like uninitialized shared memory
	b.bar = std::make_unique<std::barrier<>>(nt);
	b.warps.clear();
	for (unsigned w = 0; w < (nt + 31) / 32; ++w) b.warps.push_back(std::make_unique<Warp>());
	// One host thread per CUDA thread of a block; the threads walk the
	// blocks in order together, meeting at a barrier between blocks.
	std::vector<std::thread> ts;
	ts.reserve(nt);
	for (unsigned t = 0; t < nt; ++t)
		ts.emplace_back([&, t] {
			tl_thread = dim3(t % blk.x, (t / blk.x) % blk.y, t / (blk.x * blk.y));
			tl_bdim = blk;
			tl_gdim = grid;
			for (unsigned bz = 0; bz < grid.z; ++bz)
				for (unsigned by = 0; by < grid.y; ++by)
					for (unsigned bx = 0; bx < grid.x; ++bx) {
						tl_block = dim3(bx, by, bz);
						kernel(args...);
						b.bar->arrive_and_wait();
					}
		});
	for (auto &th : ts) th.join();
}

inline unsigned linear_tid() { return tl_thread.x + tl_bdim.x * (tl_thread.y + tl_bdim.y * tl_thread.z); }
inline Warp &my_warp() { return *block().warps[linear_tid() / 32]; }

} // namespace emu

#define threadIdx (::emu::tl_thread)
#define blockIdx (::emu::tl_block)
#define blockDim (::emu::tl_bdim)
#define gridDim (::emu::tl_gdim)

inline void __syncthreads() { emu::block().bar->arrive_and_wait(); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu::my_warp().bar.arrive_and_wait(); }

template <typename T>
inline T __shfl_xor_sync(unsigned, T v, int lane_mask) {
	emu::Warp &w = emu::my_warp();
	const unsigned lane = emu::linear_tid() % 32;
	w.slots[lane] = (double)v;
	w.bar.arrive_and_wait();
	T r = (T)w.slots[lane ^ (unsigned)lane_mask];
	w.bar.arrive_and_wait();
	return r;
}

// Built with -ffp-contract=off, so these round once per operation.
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
template <typename T>
inline T __ldg(const T *p) { return *p; }
inline unsigned atomicAdd(unsigned *p, unsigned v) { return std::atomic_ref<unsigned>(*p).fetch_add(v); }

// Host API subset used by csrc/api.cu and the launchers (emu_runtime.cc).
extern "C++" {
const char *cudaGetErrorName(cudaError_t e);
const char *cudaGetErrorString(cudaError_t e);
cudaError_t cudaGetLastError();
cudaError_t cudaGetDeviceCount(int *n);
cudaError_t cudaRuntimeGetVersion(int *v);
cudaError_t cudaDriverGetVersion(int *v);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int dev);
cudaError_t cudaSetDevice(int dev);
cudaError_t cudaMemGetInfo(size_t *f, size_t *t);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaEventCreate(cudaEvent_t *e);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s);
cudaError_t cudaEventSynchronize(cudaEvent_t e);
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b);
cudaError_t cudaMalloc(void **p, size_t n);
cudaError_t cudaFree(void *p);
cudaError_t cudaHostAlloc(void **p, size_t n, unsigned flags);
cudaError_t cudaFreeHost(void *p);
cudaError_t cudaMemcpyAsync(void *d, const void *s, size_t n, cudaMemcpyKind k, cudaStream_t st);
cudaError_t cudaMemsetAsync(void *d, int v, size_t n, cudaStream_t st);
template <typename K>
cudaError_t cudaFuncSetAttribute(K, cudaFuncAttribute, int v) {
	return v <= 227 * 1024 ? cudaSuccess : cudaErrorInvalidValue;
}
}
