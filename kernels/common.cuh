// common.cuh: device-side helpers shared by unitok's kernels. Device code
// only; host validation lives in csrc/.
#pragma once

#include <cuda_runtime.h>
#include <stdint.h>

// Dynamic shared memory of a kernel. A macro so that the CPU emulation of
// csrc/emu (a test harness, never shipped) can supply its own buffer.
#ifndef UNITOK_DYNAMIC_SMEM
#define UNITOK_DYNAMIC_SMEM(T, name) extern __shared__ T name[]
#endif

namespace unitok {

__host__ __device__ __forceinline__ int ceil_div(int a, int b) { return (a + b - 1) / b; }

// Sum over the lanes of a warp; every lane gets the result.
template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
	for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
	return v;
}

// Sum over a block of up to 1024 threads (blockDim.x a multiple of 32);
// every thread gets the result. scratch holds 32 values. Contains two
// __syncthreads, so every thread of the block must call it.
template <typename T>
__device__ __forceinline__ T block_sum(T v, T *scratch) {
	const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
	const int nwarps = blockDim.x >> 5;
	v = warp_sum(v);
	__syncthreads(); // scratch may still be read by a previous call
	if (lane == 0) scratch[warp] = v;
	__syncthreads();
	T r = lane < nwarps ? scratch[lane] : T(0);
	return warp_sum(r);
}

// GELU, tanh approximation (nn.GELU(approximate='tanh')), evaluated in
// double and rounded once, as the CPU engine does.
__device__ __forceinline__ float gelu_tanh(float x) {
	const double v = (double)x;
	return (float)(0.5 * v * (1.0 + tanh(0.7978845608028654 * (v + 0.044715 * v * v * v))));
}

// Products and sums that nvcc must not contract into FMA, so that a score
// is bit-identical to the CPU engine's (Go on amd64 does not fuse).
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }

} // namespace unitok
