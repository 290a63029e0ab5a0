// attention_kernels.cu: UniTok's AttnProjection forward on one stream:
// LayerNorm (float64 statistics), a tiled SIMT float32 GEMM with fused
// epilogues (bias, residual, GeGLU on interleaved w0/w1 rows), flash-style
// multi-head attention (online softmax, causal or full, head dim <= 128)
// whose epilogue writes the head mean or the concatenated heads directly,
// and adaptive average pooling for a head width that differs from out.
#include "csrc/launchers.h"
#include "kernels/common.cuh"

#include <math.h>

namespace unitok {
namespace {

// ---------------------------------------------------------------- LayerNorm

constexpr int kLNThreads = 256;

// One block per row. Statistics in float64 (as the CPU engine), two passes
// (mean, then biased variance); output float32((x-mean)*inv)*w + b without
// FMA. With w2 != nullptr a second affine output (same statistics, its own
// eps) goes to y2: norm1 and norm3 read the same input.
__global__ void __launch_bounds__(kLNThreads)
layernorm_kernel(const float *x, int n,
                 const float *__restrict__ w1, const float *__restrict__ b1, float eps1, float *y1,
                 const float *__restrict__ w2, const float *__restrict__ b2, float eps2, float *y2) {
	__shared__ double scratch[32];
	const size_t row = blockIdx.x;
	const float *xr = x + row * n;
	double s = 0;
	for (int i = threadIdx.x; i < n; i += kLNThreads) s += (double)xr[i];
	const double mean = block_sum(s, scratch) / n;
	double v = 0;
	for (int i = threadIdx.x; i < n; i += kLNThreads) {
		const double t = (double)xr[i] - mean;
		v += t * t;
	}
	const double var = block_sum(v, scratch) / n;
	const double inv1 = 1.0 / sqrt(var + (double)eps1);
	const double inv2 = w2 ? 1.0 / sqrt(var + (double)eps2) : 0.0;
	float *o1 = y1 + row * n;
	float *o2 = w2 ? y2 + row * n : nullptr;
	for (int i = threadIdx.x; i < n; i += kLNThreads) {
		const double t = (double)xr[i] - mean;
		const float r1 = add_rn(mul_rn((float)(t * inv1), w1[i]), b1[i]);
		if (w2) o2[i] = add_rn(mul_rn((float)(t * inv2), w2[i]), b2[i]);
		o1[i] = r1; // written last: y1 may alias x
	}
}

// --------------------------------------------------------------------- GEMM

// C (M, N) = A (M, Kd) . W (N, Kd)^T + bias, then the epilogue. 256 threads
// as a 16 x 16 grid; a block computes a kBM x kBN tile, 16 deep per step,
// each thread kBM/16 x kBN/16 outputs held in registers. A thread's rows are
// groups of four, ty*4 + 64*g, and likewise its columns, tx*4 + 64*g, so that
// the shared-memory reads of a warp are contiguous float4s, and a GeGLU pair
// (gate 2c, value 2c+1) always sits in one thread. 64 x 64 tiles for narrow
// outputs, 128 x 128 (8 x 8 per thread, half the shared-memory traffic per
// FMA) for wide ones.
constexpr int kBK = 16, kPad = 4;
constexpr int kGemmThreads = 256;
#ifndef UNITOK_GEMM_WIDE_MIN_BLOCKS
#define UNITOK_GEMM_WIDE_MIN_BLOCKS 264 // two blocks per SM of an H200
#endif

enum Epilogue { kEpiBias = 0, kEpiResidual = 1, kEpiGeGLU = 2 };

template <int kEpi, int kBM, int kBN>
__global__ void __launch_bounds__(kGemmThreads)
gemm_kernel(const float *__restrict__ A, const float *__restrict__ W, const float *__restrict__ bias,
            const float *residual, float *C, int M, int N, int Kd) {
	constexpr int TM = kBM / 16, TN = kBN / 16; // outputs per thread: rows, columns
	__shared__ __align__(16) float As[kBK][kBM + kPad];
	__shared__ __align__(16) float Ws[kBK][kBN + kPad];
	const int tid = threadIdx.x;
	const int tx = tid % 16, ty = tid / 16;
	const int bm = blockIdx.y * kBM, bn = blockIdx.x * kBN;

	float acc[TM][TN];
#pragma unroll
	for (int i = 0; i < TM; ++i)
#pragma unroll
		for (int j = 0; j < TN; ++j) acc[i][j] = 0.f;

	const int lk = tid % kBK; // k within the tile this thread loads
	const int lr = tid / kBK; // first row it loads (0..15), then +16, +32, ...
	for (int k0 = 0; k0 < Kd; k0 += kBK) {
		const int kk = k0 + lk;
#pragma unroll
		for (int p = 0; p < kBM / 16; ++p) {
			const int r = lr + 16 * p;
			const int gm = bm + r;
			As[lk][r] = (gm < M && kk < Kd) ? A[(size_t)gm * Kd + kk] : 0.f;
		}
#pragma unroll
		for (int p = 0; p < kBN / 16; ++p) {
			const int r = lr + 16 * p;
			const int gn = bn + r;
			Ws[lk][r] = (gn < N && kk < Kd) ? W[(size_t)gn * Kd + kk] : 0.f;
		}
		__syncthreads();
#pragma unroll
		for (int k = 0; k < kBK; ++k) {
			float av[TM], wv[TN];
#pragma unroll
			for (int g = 0; g < TM / 4; ++g) {
				const float4 a = *reinterpret_cast<const float4 *>(&As[k][64 * g + ty * 4]);
				av[4 * g] = a.x, av[4 * g + 1] = a.y, av[4 * g + 2] = a.z, av[4 * g + 3] = a.w;
			}
#pragma unroll
			for (int g = 0; g < TN / 4; ++g) {
				const float4 w = *reinterpret_cast<const float4 *>(&Ws[k][64 * g + tx * 4]);
				wv[4 * g] = w.x, wv[4 * g + 1] = w.y, wv[4 * g + 2] = w.z, wv[4 * g + 3] = w.w;
			}
#pragma unroll
			for (int i = 0; i < TM; ++i)
#pragma unroll
				for (int j = 0; j < TN; ++j) acc[i][j] = fmaf(av[i], wv[j], acc[i][j]);
		}
		__syncthreads();
	}

#pragma unroll
	for (int i = 0; i < TM; ++i) {
		const int gm = bm + 64 * (i / 4) + ty * 4 + i % 4;
		if (gm >= M) continue;
		if (kEpi == kEpiGeGLU) {
			// Columns 2c (w0, gate) and 2c+1 (w1, value) -> output column c of N/2.
#pragma unroll
			for (int j = 0; j < TN; j += 2) {
				const int gn = bn + 64 * (j / 4) + tx * 4 + j % 4;
				if (gn >= N) continue; // N is even, so gn + 1 < N too
				const float g = acc[i][j] + bias[gn];
				const float u = acc[i][j + 1] + bias[gn + 1];
				C[(size_t)gm * (N / 2) + gn / 2] = mul_rn(gelu_tanh(g), u);
			}
		} else {
#pragma unroll
			for (int j = 0; j < TN; ++j) {
				const int gn = bn + 64 * (j / 4) + tx * 4 + j % 4;
				if (gn >= N) continue;
				float v = acc[i][j] + bias[gn];
				if (kEpi == kEpiResidual) v += residual[(size_t)gm * N + gn];
				C[(size_t)gm * N + gn] = v;
			}
		}
	}
}

template <int kEpi>
cudaError_t gemm(const float *A, const float *W, const float *bias, const float *res, float *C,
                 int M, int N, int Kd, int forced, cudaStream_t s) {
	if (gemm_tile(M, N, forced) == 128) {
		dim3 grid(ceil_div(N, 128), ceil_div(M, 128));
		gemm_kernel<kEpi, 128, 128><<<grid, kGemmThreads, 0, s>>>(A, W, bias, res, C, M, N, Kd);
	} else {
		dim3 grid(ceil_div(N, 64), ceil_div(M, 64));
		gemm_kernel<kEpi, 64, 64><<<grid, kGemmThreads, 0, s>>>(A, W, bias, res, C, M, N, Kd);
	}
	return cudaGetLastError();
}

// ---------------------------------------------------------------- attention

// One block per (image, tile of kBQ queries); the block loops over the heads
// in order, so the head mean is a deterministic in-block sum. 128 threads:
// four per query row. K and V of one head stream through shared memory in
// tiles of kBKey keys; scores and P.V use float4 shared-memory reads. Rows
// in shared memory are padded to attn_ld(hd) floats (hd rounded up to 4,
// plus 4, zero-filled) so float4 reads stay aligned and the four key rows a
// quarter-warp reads start in different banks. Thread (r, l4) scores keys
// l4 + 4u and owns output columns 16g + 4*l4 + {0..3}.
constexpr int kBQ = 32, kBKey = 32, kAttnThreads = 128;
constexpr int kPs = kBKey + 4; // row stride of the probabilities tile

__host__ __device__ __forceinline__ int attn_ld(int hd) { return ((hd + 3) & ~3) + 4; }

template <int kGroups> // column groups of 16: 4 (hd <= 64) or 8 (hd <= 128)
__global__ void __launch_bounds__(kAttnThreads)
attention_kernel(const float *__restrict__ qkv, float *__restrict__ out, int N, int H, int hd,
                 float scale, int causal, int mean) {
	UNITOK_DYNAMIC_SMEM(float, smem);
	const int ld = attn_ld(hd);
	const int hd4 = (hd + 3) & ~3;
	float *Qs = smem;
	float *Ks = Qs + kBQ * ld;
	float *Vs = Ks + kBKey * ld;
	float *Ps = Vs + kBKey * ld; // kBQ x kPs

	const int b = blockIdx.y;
	const int q0 = blockIdx.x * kBQ;
	const int r = threadIdx.x >> 2, l4 = threadIdx.x & 3;
	const int qi = q0 + r; // this thread's query index
	const int W = H * hd;
	const size_t rs = (size_t)3 * W; // qkv row stride
	const float *base = qkv + (size_t)b * N * rs;

	const int qlast = min(q0 + kBQ, N) - 1;
	const int ntiles = causal ? qlast / kBKey + 1 : ceil_div(N, kBKey);

	float acc[kGroups][4];
#pragma unroll
	for (int g = 0; g < kGroups; ++g)
#pragma unroll
		for (int t = 0; t < 4; ++t) acc[g][t] = 0.f;

	for (int h = 0; h < H; ++h) {
		__syncthreads(); // Qs of the previous head is no longer read
		for (int e = threadIdx.x; e < kBQ * hd4; e += kAttnThreads) {
			const int rr = e / hd4, i = e % hd4;
			Qs[rr * ld + i] = (q0 + rr < N && i < hd) ? base[(size_t)(q0 + rr) * rs + h * hd + i] : 0.f;
		}
		float m = -INFINITY, l = 0.f;
		float o[kGroups][4];
#pragma unroll
		for (int g = 0; g < kGroups; ++g)
#pragma unroll
			for (int t = 0; t < 4; ++t) o[g][t] = 0.f;

		for (int tile = 0; tile < ntiles; ++tile) {
			const int k0 = tile * kBKey;
			__syncthreads(); // previous K/V/P tile is no longer read
			for (int e = threadIdx.x; e < kBKey * hd4; e += kAttnThreads) {
				const int j = e / hd4, i = e % hd4;
				const bool ok = k0 + j < N && i < hd;
				const float *kr = base + (size_t)(k0 + j) * rs + W + h * hd + i;
				Ks[j * ld + i] = ok ? kr[0] : 0.f;
				Vs[j * ld + i] = ok ? kr[W] : 0.f;
			}
			__syncthreads();

			// Scores of keys j = l4 + 4u, u < 8.
			float sc[kBKey / 4];
#pragma unroll
			for (int u = 0; u < kBKey / 4; ++u) sc[u] = 0.f;
			for (int i = 0; i < hd4; i += 4) {
				const float4 q = *reinterpret_cast<const float4 *>(&Qs[r * ld + i]);
#pragma unroll
				for (int u = 0; u < kBKey / 4; ++u) {
					const float4 k = *reinterpret_cast<const float4 *>(&Ks[(l4 + 4 * u) * ld + i]);
					float s = fmaf(q.x, k.x, sc[u]);
					s = fmaf(q.y, k.y, s);
					s = fmaf(q.z, k.z, s);
					sc[u] = fmaf(q.w, k.w, s);
				}
			}
			float tmax = -INFINITY;
#pragma unroll
			for (int u = 0; u < kBKey / 4; ++u) {
				const int kj = k0 + l4 + 4 * u;
				float s = sc[u] * scale;
				if (kj >= N || (causal && kj > qi)) s = -INFINITY;
				sc[u] = s;
				tmax = fmaxf(tmax, s);
			}
			tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 1));
			tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 2));
			const float mnew = fmaxf(m, tmax);
			// A row with nothing unmasked yet keeps m = -inf and p = 0.
			const float corr = (mnew == -INFINITY) ? 1.f : expf(m - mnew);
			float psum = 0.f;
#pragma unroll
			for (int u = 0; u < kBKey / 4; ++u) {
				const float p = (sc[u] == -INFINITY) ? 0.f : expf(sc[u] - mnew);
				Ps[r * kPs + l4 + 4 * u] = p;
				psum += p;
			}
			psum += __shfl_xor_sync(0xffffffffu, psum, 1);
			psum += __shfl_xor_sync(0xffffffffu, psum, 2);
			l = l * corr + psum;
			m = mnew;
			__syncwarp(); // the row's four threads share Ps
#pragma unroll
			for (int g = 0; g < kGroups; ++g)
#pragma unroll
				for (int t = 0; t < 4; ++t) o[g][t] *= corr;
			for (int j = 0; j < kBKey; j += 4) {
				const float4 p = *reinterpret_cast<const float4 *>(&Ps[r * kPs + j]);
				const float pv[4] = {p.x, p.y, p.z, p.w};
#pragma unroll
				for (int g = 0; g < kGroups; ++g) {
					const int c0 = 16 * g + 4 * l4;
					if (c0 < hd4) {
#pragma unroll
						for (int jj = 0; jj < 4; ++jj) {
							const float4 v = *reinterpret_cast<const float4 *>(&Vs[(j + jj) * ld + c0]);
							o[g][0] = fmaf(pv[jj], v.x, o[g][0]);
							o[g][1] = fmaf(pv[jj], v.y, o[g][1]);
							o[g][2] = fmaf(pv[jj], v.z, o[g][2]);
							o[g][3] = fmaf(pv[jj], v.w, o[g][3]);
						}
					}
				}
			}
		}
		const float inv = 1.f / l;
		if (mean) {
#pragma unroll
			for (int g = 0; g < kGroups; ++g)
#pragma unroll
				for (int t = 0; t < 4; ++t) acc[g][t] += o[g][t] * inv;
		} else if (qi < N) {
			float *orow = out + ((size_t)b * N + qi) * W + h * hd;
#pragma unroll
			for (int g = 0; g < kGroups; ++g)
#pragma unroll
				for (int t = 0; t < 4; ++t) {
					const int col = 16 * g + 4 * l4 + t;
					if (col < hd) orow[col] = o[g][t] * inv;
				}
		}
	}
	if (mean && qi < N) {
		float *orow = out + ((size_t)b * N + qi) * hd;
#pragma unroll
		for (int g = 0; g < kGroups; ++g)
#pragma unroll
			for (int t = 0; t < 4; ++t) {
				const int col = 16 * g + 4 * l4 + t;
				if (col < hd) orow[col] = acc[g][t] / (float)H;
			}
	}
}

size_t attention_smem(int hd) {
	return ((size_t)(kBQ + 2 * kBKey) * attn_ld(hd) + (size_t)kBQ * kPs) * sizeof(float);
}

template <int kGroups>
cudaError_t attention(const float *qkv, float *out, int B, int N, int H, int hd, int causal, int mean,
                      cudaStream_t s) {
	const size_t smem = attention_smem(hd);
	cudaError_t e = cudaFuncSetAttribute(attention_kernel<kGroups>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
	if (e != cudaSuccess) return e;
	dim3 grid(ceil_div(N, kBQ), B);
	const float scale = (float)(1.0 / sqrt((double)hd));
	attention_kernel<kGroups><<<grid, kAttnThreads, smem, s>>>(qkv, out, N, H, hd, scale, causal, mean);
	return cudaGetLastError();
}

// ------------------------------------------------------------------ pooling

// adaptive_avg_pool1d of each row from width L to width n: output i averages
// [floor(i*L/n), ceil((i+1)*L/n)), summed in order, as the CPU engine.
__global__ void adaptive_pool_kernel(const float *__restrict__ x, float *__restrict__ y, size_t R, int L, int n) {
	const size_t total = R * n;
	for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (size_t)gridDim.x * blockDim.x) {
		const size_t row = e / n;
		const int i = (int)(e % n);
		const int s0 = (int)((long long)i * L / n), s1 = (int)(((long long)(i + 1) * L + n - 1) / n);
		float sum = 0.f;
		for (int t = s0; t < s1; ++t) sum = add_rn(sum, x[row * L + t]);
		y[e] = sum / (float)(s1 - s0);
	}
}

size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

} // namespace

int gemm_tile(int M, int N, int forced) {
	if (forced == 64 || forced == 128) return forced;
	// Wide tiles only when they still give every SM of an H200 a few blocks.
	return N >= 256 && (long long)ceil_div(M, 128) * ceil_div(N, 128) >= UNITOK_GEMM_WIDE_MIN_BLOCKS ? 128 : 64;
}

attn_proj_plan plan_attn_proj(const unitok_attn_proj_weights &w, int batch, int tokens) {
	attn_proj_plan p{};
	const size_t R = (size_t)batch * tokens;
	const size_t W = (size_t)w.heads * w.head_dim;
	const bool mean = w.in > w.out;
	const bool pooled = mean && w.head_dim != w.out;
	const size_t aw = mean ? (size_t)w.head_dim : W;
	p.rows = R;
	size_t off = 0;
	auto take = [&](size_t n) { size_t o = off; off += align64(n); return o; };
	p.h1 = take(R * w.in);
	p.h3 = take(R * w.in);
	p.qkv = take(R * 3 * W);
	p.attn = take(R * aw);
	p.pooled = pooled ? take(R * w.out) : p.attn;
	p.a2 = take(R * w.out);
	p.x1 = take(R * w.out);
	p.u = take(R * w.out);
	p.g = take(R * 2 * w.out);
	p.total_floats = off;
	return p;
}

cudaError_t launch_attn_proj_forward(const unitok_attn_proj_args &a, cudaStream_t s) {
	const unitok_attn_proj_weights &w = a.w;
	const attn_proj_plan p = plan_attn_proj(w, a.batch, a.tokens);
	float *ws = static_cast<float *>(a.workspace);
	float *h1 = ws + p.h1, *h3 = ws + p.h3, *qkv = ws + p.qkv, *att = ws + p.attn;
	float *pooled = ws + p.pooled, *a2 = ws + p.a2, *x1 = ws + p.x1, *u = ws + p.u, *g = ws + p.g;
	const int R = (int)p.rows;
	const int W = w.heads * w.head_dim;
	const bool mean = w.in > w.out;
	const bool pool = mean && w.head_dim != w.out;
	cudaError_t e;

	// norm1 and norm3 share their input, so one pass writes both.
	layernorm_kernel<<<R, kLNThreads, 0, s>>>(a.x, w.in, w.norm1.weight, w.norm1.bias, w.norm1.eps, h1,
	                                          w.norm3.weight, w.norm3.bias, w.norm3.eps, h3);
	if ((e = cudaGetLastError()) != cudaSuccess) return e;
	if ((e = gemm<kEpiBias>(h1, w.qkv_w, w.qkv_b, nullptr, qkv, R, 3 * W, w.in, a.gemm_tile, s)) != cudaSuccess) return e;
	if (w.head_dim <= 64)
		e = attention<4>(qkv, att, a.batch, a.tokens, w.heads, w.head_dim, a.causal, mean, s);
	else
		e = attention<8>(qkv, att, a.batch, a.tokens, w.heads, w.head_dim, a.causal, mean, s);
	if (e != cudaSuccess) return e;
	if (pool) {
		const size_t total = (size_t)R * w.out;
		const int blocks = (int)((total + 255) / 256 < 65535 * 8 ? (total + 255) / 256 : 65535 * 8);
		adaptive_pool_kernel<<<blocks, 256, 0, s>>>(att, pooled, (size_t)R, w.head_dim, w.out);
		if ((e = cudaGetLastError()) != cudaSuccess) return e;
	}
	const float *ain = pool ? pooled : att; // (R, out)
	if ((e = gemm<kEpiBias>(ain, w.attn_proj_w, w.attn_proj_b, nullptr, a2, R, w.out, w.out, a.gemm_tile, s)) != cudaSuccess) return e;
	if ((e = gemm<kEpiResidual>(h3, w.proj_w, w.proj_b, a2, x1, R, w.out, w.in, a.gemm_tile, s)) != cudaSuccess) return e;
	layernorm_kernel<<<R, kLNThreads, 0, s>>>(x1, w.out, w.norm2.weight, w.norm2.bias, w.norm2.eps, u,
	                                          nullptr, nullptr, 0.f, nullptr);
	if ((e = cudaGetLastError()) != cudaSuccess) return e;
	layernorm_kernel<<<R, kLNThreads, 0, s>>>(u, w.out, w.mlp_norm.weight, w.mlp_norm.bias, w.mlp_norm.eps, u,
	                                          nullptr, nullptr, 0.f, nullptr);
	if ((e = cudaGetLastError()) != cudaSuccess) return e;
	if ((e = gemm<kEpiGeGLU>(u, w.w01_w, w.w01_b, nullptr, g, R, 4 * w.out, w.out, a.gemm_tile, s)) != cudaSuccess) return e;
	return gemm<kEpiResidual>(g, w.w2_w, w.w2_b, x1, a.y, R, w.out, 2 * w.out, a.gemm_tile, s);
}

} // namespace unitok
