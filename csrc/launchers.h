// launchers.h: host launchers defined in quant_kernels.cu and
// attention_kernels.cu, called from csrc/api.cu after validation. Each
// enqueues work on the caller's stream, never synchronizes, and returns the
// first CUDA error it saw (cudaSuccess otherwise).
#pragma once

#include <cuda_runtime.h>
#include "unitok_cuda.h"

namespace unitok {

// The quantizer instance a call runs: a.variant when set (callers have
// checked it), else chosen by size.
int quant_variant(const unitok_quant_args &a);
cudaError_t launch_quantize(const unitok_quant_args &a, cudaStream_t s);
cudaError_t launch_lookup(const unitok_lookup_args &a, cudaStream_t s);

// Workspace layout of the AttnProjection forward.
struct attn_proj_plan {
	size_t rows;                 // B*N
	size_t h1, h3, qkv, attn, pooled, a2, x1, u, g; // offsets in floats
	size_t total_floats;
};
attn_proj_plan plan_attn_proj(const unitok_attn_proj_weights &w, int batch, int tokens);
cudaError_t launch_attn_proj_forward(const unitok_attn_proj_args &a, cudaStream_t s);
// The tile (64 or 128) of a GEMM with M rows and N outputs; forced = 0
// chooses by size, 64 or 128 forces that tile.
int gemm_tile(int M, int N, int forced);

// Largest codeword width the quantizer handles (one codeword fills the
// shared tile).
constexpr int kMaxQuantChunk = 8192;

} // namespace unitok
