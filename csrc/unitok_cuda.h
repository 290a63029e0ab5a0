/* unitok_cuda.h: the plain-C API of unitok's CUDA core (libunitok_cuda.a).
 *
 * Plain C, no C++ and no CUDA headers: cgo includes it as is. Every entry
 * point returns a unitok_status and, through its last argument (may be NULL),
 * the raw cudaError_t of the CUDA call that failed (0 when none), read inside
 * the same call because the CUDA error state is per host thread. Inputs are
 * validated before any launch (UNITOK_ERR_INVALID_ARG). Nothing throws or
 * aborts across this boundary. Launching entry points are asynchronous on
 * the given stream and never synchronize.
 *
 * Layouts are row-major; device pointers are plain pointers from
 * unitok_malloc. Each call selects its device itself (cudaSetDevice), so
 * callers may move between host threads between calls.
 */
#ifndef UNITOK_CUDA_H
#define UNITOK_CUDA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum unitok_status {
	UNITOK_OK = 0,
	UNITOK_ERR_INVALID_ARG = 1,   /* a bad size, pointer or option; nothing launched */
	UNITOK_ERR_CUDA = 2,          /* a CUDA call failed; see the cuda error code */
	UNITOK_ERR_OUT_OF_MEMORY = 3, /* cudaErrorMemoryAllocation */
	UNITOK_ERR_NO_DEVICE = 4,     /* no device, no driver, or a bad ordinal */
	UNITOK_ERR_UNSUPPORTED = 5,   /* a size outside what the kernels handle */
	UNITOK_ERR_INTERNAL = 6,      /* a C++ exception caught at the boundary */
	UNITOK_ERR_MISALIGNED = 7     /* a pointer the kernels read as float4 is not 16-byte aligned; nothing launched */
} unitok_status;

/* Same type as cudaStream_t / cudaEvent_t, without the CUDA headers. */
typedef struct CUstream_st *unitok_stream;
typedef struct CUevent_st *unitok_event;

/* ---- errors (static strings, valid without a device) ---- */
const char *unitok_cuda_error_name(int cuda_code);
const char *unitok_cuda_error_string(int cuda_code);
const char *unitok_status_string(unitok_status s);

/* ---- devices ---- */
typedef struct unitok_device_info {
	char name[256];
	int ordinal;
	int major, minor;          /* compute capability */
	int multiprocessors;
	int max_shared_per_block;  /* opt-in maximum, bytes */
	size_t total_memory;       /* bytes */
	size_t free_memory;        /* bytes, at the time of the call */
	int runtime_version;       /* cudaRuntimeGetVersion */
	int driver_version;        /* cudaDriverGetVersion (0 without a driver) */
} unitok_device_info;

unitok_status unitok_device_count(int *count, int *cuda_error);
unitok_status unitok_device_get_info(int ordinal, unitok_device_info *out, int *cuda_error);
unitok_status unitok_mem_get_info(int ordinal, size_t *free_bytes, size_t *total_bytes, int *cuda_error);

/* ---- streams and events ---- */
unitok_status unitok_stream_create(int ordinal, unitok_stream *out, int *cuda_error); /* non-blocking */
unitok_status unitok_stream_destroy(int ordinal, unitok_stream s, int *cuda_error);
unitok_status unitok_stream_synchronize(int ordinal, unitok_stream s, int *cuda_error);
unitok_status unitok_event_create(int ordinal, unitok_event *out, int *cuda_error);
unitok_status unitok_event_destroy(int ordinal, unitok_event e, int *cuda_error);
unitok_status unitok_event_record(int ordinal, unitok_event e, unitok_stream s, int *cuda_error);
unitok_status unitok_event_synchronize(int ordinal, unitok_event e, int *cuda_error);
unitok_status unitok_event_elapsed_ms(unitok_event start, unitok_event end, float *ms, int *cuda_error);

/* ---- memory ---- */
unitok_status unitok_malloc(int ordinal, size_t bytes, void **out, int *cuda_error);
unitok_status unitok_free(int ordinal, void *ptr, int *cuda_error);
unitok_status unitok_host_alloc(size_t bytes, void **out, int *cuda_error); /* pinned */
unitok_status unitok_host_free(void *ptr, int *cuda_error);
/* Asynchronous copies; host pointers must be pinned (unitok_host_alloc). */
unitok_status unitok_memcpy_h2d(int ordinal, void *dst, const void *src, size_t bytes, unitok_stream s, int *cuda_error);
unitok_status unitok_memcpy_d2h(int ordinal, void *dst, const void *src, size_t bytes, unitok_stream s, int *cuda_error);
unitok_status unitok_memcpy_d2d(int ordinal, void *dst, const void *src, size_t bytes, unitok_stream s, int *cuda_error);
unitok_status unitok_memset(int ordinal, void *dst, int value, size_t bytes, unitok_stream s, int *cuda_error);

/* ---- kernel variants ----
 * Each launching call picks its kernel instance from the sizes. The choice
 * can be forced (tests, compute-sanitizer on small inputs), and the choice a
 * call would make can be asked without launching anything, so that tests
 * show which instance ran. */
typedef enum unitok_quant_variant {
	UNITOK_QUANT_AUTO = 0,    /* chosen by size (the production choice) */
	UNITOK_QUANT_GENERAL = 1, /* any d: one token per thread, d-wide dot products */
	UNITOK_QUANT_D8_TOK2 = 2, /* d = 8 only: two tokens per thread */
	UNITOK_QUANT_D8_TOK4 = 4  /* d = 8 only: four tokens per thread */
} unitok_quant_variant;

/* ---- quantizer ----
 * codes[m, k] = argmax_j ( bias[k, j] + z[m, k*d : (k+1)*d] . words[k, j, :] )
 * with ties to the lowest j. Cosine: words are the L2-normalized codewords,
 * bias NULL (0). L2: words are the raw codewords, bias = -|e|^2/2. The dot
 * product is float32 FMA chains (exact float32 arithmetic, rounded
 * differently from the CPU engine, so codes are compared wherever the top-two
 * margin exceeds float32 noise). No score ever reaches device memory. */
typedef struct unitok_quant_args {
	int device;
	int M;             /* rows (tokens) */
	int K;             /* codebooks */
	int V;             /* codewords per codebook */
	int d;             /* chunk width; D = K*d */
	const float *z;    /* (M, K*d) */
	const float *words;/* (K, V, d) */
	const float *bias; /* (K, V) or NULL */
	int32_t *codes;    /* (M, K) out */
	uint32_t *histogram; /* (K, V) usage counts, accumulated (atomicAdd); NULL = off */
	int variant;       /* unitok_quant_variant; 0 (AUTO) outside tests */
} unitok_quant_args;

/* The d = 8 kernels read words as float4: words must then be 16-byte
 * aligned (UNITOK_ERR_MISALIGNED otherwise); unitok_malloc's are. */
unitok_status unitok_quantize(const unitok_quant_args *a, unitok_stream s, int *cuda_error);

/* The variant unitok_quantize(a) runs (AUTO resolved), or 0 when a is
 * invalid or forces a d = 8 variant with d != 8. Launches nothing. */
int unitok_quantize_variant(const unitok_quant_args *a);

/* latents[m, k*d + i] = words[k, codes[m, k], i]; a code outside [0, V)
 * writes NaN for its chunk. */
typedef struct unitok_lookup_args {
	int device;
	int M, K, V, d;
	const int32_t *codes; /* (M, K) */
	const float *words;   /* (K, V, d) */
	float *latents;       /* (M, K*d) out */
} unitok_lookup_args;

unitok_status unitok_lookup(const unitok_lookup_args *a, unitok_stream s, int *cuda_error);

/* ---- AttnProjection forward ----
 * x (B, N, in) -> y (B, N, out), UniTok's AttnProjection in float32 (see
 * DESIGN.md section 1). All pointers are device pointers. */
typedef struct unitok_layernorm {
	const float *weight, *bias; /* (width) */
	float eps;
} unitok_layernorm;

typedef struct unitok_attn_proj_weights {
	int in, out, heads, head_dim;
	unitok_layernorm norm1, norm2, norm3, mlp_norm;
	const float *qkv_w, *qkv_b;             /* (3*H*hd, in), (3*H*hd) */
	const float *attn_proj_w, *attn_proj_b; /* (out, out), (out) */
	const float *proj_w, *proj_b;           /* (out, in), (out) */
	const float *w01_w, *w01_b;             /* (4*out, out): rows w0[0], w1[0], w0[1], w1[1], ... */
	const float *w2_w, *w2_b;               /* (out, 2*out), (out) */
} unitok_attn_proj_weights;

typedef struct unitok_attn_proj_args {
	int device;
	unitok_attn_proj_weights w;
	int batch, tokens; /* B, N */
	int causal;        /* nonzero: key j attends only to queries i >= j */
	const float *x;    /* (B, N, in) */
	float *y;          /* (B, N, out); must not alias x */
	void *workspace;   /* at least unitok_attn_proj_workspace_size bytes */
	size_t workspace_bytes;
	int gemm_tile;     /* 0: each GEMM's tile chosen by size; 64 or 128: every GEMM uses that tile (tests) */
} unitok_attn_proj_args;

/* Bytes of workspace the forward needs for B images of N tokens (0 when the
 * sizes are invalid). */
size_t unitok_attn_proj_workspace_size(const unitok_attn_proj_weights *w, int batch, int tokens);
unitok_status unitok_attn_proj_forward(const unitok_attn_proj_args *a, unitok_stream s, int *cuda_error);

/* The GEMM tiles (64 or 128) the forward's five GEMMs run with, in order
 * (qkv, attn_proj, proj, w0/w1, w2), for a projection of widths in -> out
 * with heads x head_dim, B x N tokens and a gemm_tile setting as in
 * unitok_attn_proj_args. Returns 5, or 0 when the sizes or gemm_tile are
 * invalid. Launches nothing. */
int unitok_attn_proj_gemm_tiles(int in, int out, int heads, int head_dim, int batch, int tokens, int gemm_tile,
                                int tiles[5]);

/* Largest head dimension the attention kernel supports. */
#define UNITOK_MAX_HEAD_DIM 128

#ifdef __cplusplus
}
#endif
#endif /* UNITOK_CUDA_H */
