// quant_kernels.cu: the multi-codebook quantizer (all K codebooks in one
// launch, no score ever written to memory), the fused lookup, and the
// optional usage histogram.
//
// Kernel shape: grid (token tiles, K). A block stages its codebook through
// shared memory in tiles of codewords; each thread keeps its tokens' chunks
// in registers (d = 8) and a running (best, index) per token, compared with
// strict > over ascending indices so ties go to the lowest index. Scores are
// float32 FMA chains (8 FFMA per d = 8 score, the bias as the chain's start):
// exact float32 arithmetic, rounded differently from the CPU engine's
// scalar order, so tests compare codes wherever the top-two margin exceeds
// float32 noise.
#include "csrc/launchers.h"
#include "kernels/common.cuh"

#include <math.h>

namespace unitok {
namespace {

constexpr int kQuantThreads = 128;
constexpr int kD8Tile = 512;   // codewords per shared tile (16 KiB)
constexpr int kGenTileFloats = 4096; // codeword floats per tile on the general path (16 KiB)

// d = 8 score: init + z . e as one chain of 8 FMAs (the kernel keeps
// kTok x 8 independent chains in flight, so the latency is hidden).
__device__ __forceinline__ float dot8(const float (&z)[8], float4 a, float4 b, float init) {
	float s = __fmaf_rn(z[0], a.x, init);
	s = __fmaf_rn(z[1], a.y, s);
	s = __fmaf_rn(z[2], a.z, s);
	s = __fmaf_rn(z[3], a.w, s);
	s = __fmaf_rn(z[4], b.x, s);
	s = __fmaf_rn(z[5], b.y, s);
	s = __fmaf_rn(z[6], b.z, s);
	return __fmaf_rn(z[7], b.w, s);
}

// Cheap argmax: scores of 8 consecutive codewords are kept in registers, and
// only when their maximum beats the running best (strict >) is the chunk
// rescanned for the lowest index holding that maximum; ascending chunks
// keep ties at the lowest index overall.
template <bool kBias, int kTok>
__global__ void __launch_bounds__(kQuantThreads)
quantize_d8_kernel(const float *__restrict__ z, const float *__restrict__ words,
                   const float *__restrict__ bias, int M, int K, int V,
                   int32_t *__restrict__ codes, uint32_t *__restrict__ hist) {
	__shared__ float4 sw[kD8Tile * 2];
	__shared__ float sb[kBias ? kD8Tile : 1];
	const int k = blockIdx.y;
	const int D = K * 8;
	const int m0 = blockIdx.x * (kQuantThreads * kTok) + threadIdx.x;

	float zr[kTok][8];
	float best[kTok];
	int bi[kTok];
#pragma unroll
	for (int t = 0; t < kTok; ++t) {
		const int m = m0 + t * kQuantThreads;
		const float *zp = z + (size_t)min(m, M - 1) * D + k * 8;
#pragma unroll
		for (int i = 0; i < 8; ++i) zr[t][i] = zp[i];
		best[t] = -INFINITY;
		bi[t] = 0;
	}

	const float4 *wk = reinterpret_cast<const float4 *>(words + (size_t)k * V * 8);
	const float *bk = kBias ? bias + (size_t)k * V : nullptr;
	for (int j0 = 0; j0 < V; j0 += kD8Tile) {
		const int n = min(kD8Tile, V - j0);
		__syncthreads(); // the previous tile is no longer read
		for (int i = threadIdx.x; i < 2 * n; i += kQuantThreads) sw[i] = wk[(size_t)j0 * 2 + i];
		if (kBias)
			for (int i = threadIdx.x; i < n; i += kQuantThreads) sb[i] = bk[j0 + i];
		__syncthreads();
		int j = 0;
		for (; j + 8 <= n; j += 8) {
			float sc[kTok][8];
#pragma unroll
			for (int u = 0; u < 8; ++u) {
				const float4 a = sw[2 * (j + u)], b = sw[2 * (j + u) + 1];
#pragma unroll
				for (int t = 0; t < kTok; ++t) {
					sc[t][u] = dot8(zr[t], a, b, kBias ? sb[j + u] : 0.f);
				}
			}
#pragma unroll
			for (int t = 0; t < kTok; ++t) {
				const float mx = fmaxf(fmaxf(fmaxf(sc[t][0], sc[t][1]), fmaxf(sc[t][2], sc[t][3])),
				                       fmaxf(fmaxf(sc[t][4], sc[t][5]), fmaxf(sc[t][6], sc[t][7])));
				if (mx > best[t]) {
					int idx = 7;
#pragma unroll
					for (int u = 6; u >= 0; --u)
						if (sc[t][u] == mx) idx = u;
					best[t] = mx;
					bi[t] = j0 + j + idx;
				}
			}
		}
		for (; j < n; ++j) { // the tile's last n % 8 codewords
			const float4 a = sw[2 * j], b = sw[2 * j + 1];
#pragma unroll
			for (int t = 0; t < kTok; ++t) {
				const float s = dot8(zr[t], a, b, kBias ? sb[j] : 0.f);
				if (s > best[t]) {
					best[t] = s;
					bi[t] = j0 + j;
				}
			}
		}
	}
#pragma unroll
	for (int t = 0; t < kTok; ++t) {
		const int m = m0 + t * kQuantThreads;
		if (m < M) {
			codes[(size_t)m * K + k] = bi[t];
			if (hist) atomicAdd(&hist[(size_t)k * V + bi[t]], 1u);
		}
	}
}

// General d: four strided FMA partial sums, tail into the first, then
// (s0 + s1) + (s2 + s3); the token's chunk is read through L1.
template <bool kBias>
__global__ void __launch_bounds__(kQuantThreads)
quantize_general_kernel(const float *__restrict__ z, const float *__restrict__ words,
                        const float *__restrict__ bias, int M, int K, int V, int d, int tile,
                        int32_t *__restrict__ codes, uint32_t *__restrict__ hist) {
	UNITOK_DYNAMIC_SMEM(float, smem); // tile*d codeword floats, then tile biases
	float *sw = smem;
	float *sb = smem + (size_t)tile * d;
	const int k = blockIdx.y;
	const int D = K * d;
	const int m = blockIdx.x * kQuantThreads + threadIdx.x;
	const float *zp = z + (size_t)min(m, M - 1) * D + (size_t)k * d;
	const float *wk = words + (size_t)k * V * d;
	const float *bk = kBias ? bias + (size_t)k * V : nullptr;
	const int d4 = d & ~3;

	float best = -INFINITY;
	int bi = 0;
	for (int j0 = 0; j0 < V; j0 += tile) {
		const int n = min(tile, V - j0);
		__syncthreads();
		for (int i = threadIdx.x; i < n * d; i += kQuantThreads) sw[i] = wk[(size_t)j0 * d + i];
		if (kBias)
			for (int i = threadIdx.x; i < n; i += kQuantThreads) sb[i] = bk[j0 + i];
		__syncthreads();
		for (int j = 0; j < n; ++j) {
			const float *e = sw + (size_t)j * d;
			float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;
			int i = 0;
			for (; i < d4; i += 4) {
				s0 = __fmaf_rn(__ldg(zp + i), e[i], s0);
				s1 = __fmaf_rn(__ldg(zp + i + 1), e[i + 1], s1);
				s2 = __fmaf_rn(__ldg(zp + i + 2), e[i + 2], s2);
				s3 = __fmaf_rn(__ldg(zp + i + 3), e[i + 3], s3);
			}
			for (; i < d; ++i) s0 = __fmaf_rn(__ldg(zp + i), e[i], s0);
			float s = (s0 + s1) + (s2 + s3);
			if (kBias) s += sb[j];
			if (s > best) {
				best = s;
				bi = j0 + j;
			}
		}
	}
	if (m < M) {
		codes[(size_t)m * K + k] = bi;
		if (hist) atomicAdd(&hist[(size_t)k * V + bi], 1u);
	}
}

__global__ void lookup_kernel(const int32_t *__restrict__ codes, const float *__restrict__ words,
                              int M, int K, int V, int d, float *__restrict__ out) {
	const size_t D = (size_t)K * d;
	const size_t total = (size_t)M * D;
	for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < total;
	     e += (size_t)gridDim.x * blockDim.x) {
		const size_t m = e / D, r = e % D;
		const int k = (int)(r / d), i = (int)(r % d);
		const int c = codes[m * K + k];
		out[e] = (c >= 0 && c < V) ? words[((size_t)k * V + c) * d + i] : NAN;
	}
}

} // namespace

int quant_variant(const unitok_quant_args &a) {
	if (a.variant != UNITOK_QUANT_AUTO) return a.variant;
	if (a.d != 8) return UNITOK_QUANT_GENERAL;
	// Four tokens per thread when that still leaves about eight blocks per
	// SM of an H200; two otherwise, for more blocks on small batches.
	return (long long)ceil_div(a.M, kQuantThreads * 4) * a.K >= 1024 ? UNITOK_QUANT_D8_TOK4 : UNITOK_QUANT_D8_TOK2;
}

cudaError_t launch_quantize(const unitok_quant_args &a, cudaStream_t s) {
	const bool bias = a.bias != nullptr;
	const int variant = quant_variant(a);
	if (variant == UNITOK_QUANT_D8_TOK4 || variant == UNITOK_QUANT_D8_TOK2) {
		const bool four = variant == UNITOK_QUANT_D8_TOK4;
		const int tok = four ? 4 : 2;
		dim3 grid(ceil_div(a.M, kQuantThreads * tok), a.K);
		if (four) {
			if (bias)
				quantize_d8_kernel<true, 4><<<grid, kQuantThreads, 0, s>>>(a.z, a.words, a.bias, a.M, a.K, a.V, a.codes, a.histogram);
			else
				quantize_d8_kernel<false, 4><<<grid, kQuantThreads, 0, s>>>(a.z, a.words, a.bias, a.M, a.K, a.V, a.codes, a.histogram);
		} else {
			if (bias)
				quantize_d8_kernel<true, 2><<<grid, kQuantThreads, 0, s>>>(a.z, a.words, a.bias, a.M, a.K, a.V, a.codes, a.histogram);
			else
				quantize_d8_kernel<false, 2><<<grid, kQuantThreads, 0, s>>>(a.z, a.words, a.bias, a.M, a.K, a.V, a.codes, a.histogram);
		}
		return cudaGetLastError();
	}
	const int tile = max(1, kGenTileFloats / a.d);
	const size_t smem = ((size_t)tile * a.d + tile) * sizeof(float);
	dim3 grid(ceil_div(a.M, kQuantThreads), a.K);
	cudaError_t e;
	if (bias) {
		if ((e = cudaFuncSetAttribute(quantize_general_kernel<true>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem)) != cudaSuccess) return e;
		quantize_general_kernel<true><<<grid, kQuantThreads, smem, s>>>(a.z, a.words, a.bias, a.M, a.K, a.V, a.d, tile, a.codes, a.histogram);
	} else {
		if ((e = cudaFuncSetAttribute(quantize_general_kernel<false>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem)) != cudaSuccess) return e;
		quantize_general_kernel<false><<<grid, kQuantThreads, smem, s>>>(a.z, a.words, a.bias, a.M, a.K, a.V, a.d, tile, a.codes, a.histogram);
	}
	return cudaGetLastError();
}

cudaError_t launch_lookup(const unitok_lookup_args &a, cudaStream_t s) {
	const size_t total = (size_t)a.M * a.K * a.d;
	const int threads = 256;
	const int blocks = (int)((total + threads - 1) / threads < 65535 * 8 ? (total + threads - 1) / threads : 65535 * 8);
	lookup_kernel<<<blocks, threads, 0, s>>>(a.codes, a.words, a.M, a.K, a.V, a.d, a.latents);
	return cudaGetLastError();
}

} // namespace unitok
