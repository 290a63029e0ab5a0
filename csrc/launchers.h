// launchers.h: host launchers defined in quant_kernels.cu and
// attention_kernels.cu, called from csrc/api.cu after validation. Each
// enqueues work on the caller's stream, never synchronizes, and returns the
// first CUDA error it saw (cudaSuccess otherwise).
#pragma once

#include <cuda_runtime.h>
#include "unitok_cuda.h"

namespace unitok {

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

// Largest codeword width the quantizer handles (one codeword fills the
// shared tile).
constexpr int kMaxQuantChunk = 8192;

} // namespace unitok
