// api.cu: the extern "C" boundary of libunitok_cuda.a. Validates inputs
// before any launch, selects the device inside each call, reads CUDA errors
// in the same call that caused them, and catches every C++ exception.
#include "unitok_cuda.h"
#include "launchers.h"

#include <cuda_runtime.h>
#include <stdio.h>
#include <string.h>

#include <exception>
#include <new>

namespace {

unitok_status map_error(cudaError_t e) {
	switch (e) {
	case cudaSuccess:
		return UNITOK_OK;
	case cudaErrorMemoryAllocation:
		return UNITOK_ERR_OUT_OF_MEMORY;
	case cudaErrorNoDevice:
	case cudaErrorInsufficientDriver:
	case cudaErrorInvalidDevice:
	case cudaErrorStubLibrary:
	case cudaErrorDevicesUnavailable:
	case cudaErrorSystemDriverMismatch:
	case cudaErrorCompatNotSupportedOnDevice:
		return UNITOK_ERR_NO_DEVICE;
	default:
		return UNITOK_ERR_CUDA;
	}
}

// fail records e for the caller and clears this thread's (non-sticky) error
// state, so the next call does not report it again.
unitok_status fail(cudaError_t e, int *cuda_error) {
	if (cuda_error) *cuda_error = (int)e;
	(void)cudaGetLastError();
	return map_error(e);
}

unitok_status ok(int *cuda_error) {
	if (cuda_error) *cuda_error = 0;
	return UNITOK_OK;
}

unitok_status invalid(int *cuda_error) {
	if (cuda_error) *cuda_error = 0;
	return UNITOK_ERR_INVALID_ARG;
}

#define UNITOK_TRY(call)                                         \
	do {                                                         \
		cudaError_t e_ = (call);                                 \
		if (e_ != cudaSuccess) return fail(e_, cuda_error);      \
	} while (0)

// Runs body, turning any C++ exception into a status.
template <typename F>
unitok_status guarded(int *cuda_error, F body) {
	try {
		return body();
	} catch (const std::bad_alloc &) {
		if (cuda_error) *cuda_error = 0;
		return UNITOK_ERR_OUT_OF_MEMORY;
	} catch (...) {
		if (cuda_error) *cuda_error = 0;
		return UNITOK_ERR_INTERNAL;
	}
}

cudaStream_t stream(unitok_stream s) { return reinterpret_cast<cudaStream_t>(s); }

} // namespace

extern "C" {

const char *unitok_cuda_error_name(int code) { return cudaGetErrorName((cudaError_t)code); }
const char *unitok_cuda_error_string(int code) { return cudaGetErrorString((cudaError_t)code); }

const char *unitok_status_string(unitok_status s) {
	switch (s) {
	case UNITOK_OK: return "ok";
	case UNITOK_ERR_INVALID_ARG: return "invalid argument";
	case UNITOK_ERR_CUDA: return "CUDA error";
	case UNITOK_ERR_OUT_OF_MEMORY: return "out of device memory";
	case UNITOK_ERR_NO_DEVICE: return "no CUDA device";
	case UNITOK_ERR_UNSUPPORTED: return "unsupported size";
	case UNITOK_ERR_INTERNAL: return "internal error";
	case UNITOK_ERR_MISALIGNED: return "pointer not 16-byte aligned";
	}
	return "unknown status";
}

unitok_status unitok_device_count(int *count, int *cuda_error) {
	if (!count) return invalid(cuda_error);
	return guarded(cuda_error, [&] {
		*count = 0;
		int n = 0;
		cudaError_t e = cudaGetDeviceCount(&n);
		if (e != cudaSuccess) return fail(e, cuda_error);
		if (n == 0) return fail(cudaErrorNoDevice, cuda_error);
		*count = n;
		return ok(cuda_error);
	});
}

unitok_status unitok_device_get_info(int ordinal, unitok_device_info *out, int *cuda_error) {
	if (!out || ordinal < 0) return invalid(cuda_error);
	return guarded(cuda_error, [&] {
		memset(out, 0, sizeof(*out));
		out->ordinal = ordinal;
		cudaRuntimeGetVersion(&out->runtime_version);
		cudaDriverGetVersion(&out->driver_version);
		cudaDeviceProp p;
		UNITOK_TRY(cudaGetDeviceProperties(&p, ordinal));
		snprintf(out->name, sizeof(out->name), "%s", p.name);
		out->major = p.major;
		out->minor = p.minor;
		out->multiprocessors = p.multiProcessorCount;
		out->max_shared_per_block = (int)p.sharedMemPerBlockOptin;
		out->total_memory = p.totalGlobalMem;
		UNITOK_TRY(cudaSetDevice(ordinal));
		size_t fr = 0, tot = 0;
		UNITOK_TRY(cudaMemGetInfo(&fr, &tot));
		out->free_memory = fr;
		return ok(cuda_error);
	});
}

unitok_status unitok_mem_get_info(int ordinal, size_t *free_bytes, size_t *total_bytes, int *cuda_error) {
	if (!free_bytes || !total_bytes || ordinal < 0) return invalid(cuda_error);
	return guarded(cuda_error, [&] {
		UNITOK_TRY(cudaSetDevice(ordinal));
		UNITOK_TRY(cudaMemGetInfo(free_bytes, total_bytes));
		return ok(cuda_error);
	});
}

unitok_status unitok_stream_create(int ordinal, unitok_stream *out, int *cuda_error) {
	if (!out || ordinal < 0) return invalid(cuda_error);
	return guarded(cuda_error, [&] {
		UNITOK_TRY(cudaSetDevice(ordinal));
		cudaStream_t s;
		UNITOK_TRY(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
		*out = reinterpret_cast<unitok_stream>(s);
		return ok(cuda_error);
	});
}

unitok_status unitok_stream_destroy(int ordinal, unitok_stream s, int *cuda_error) {
	if (!s) return ok(cuda_error);
	return guarded(cuda_error, [&] {
		UNITOK_TRY(cudaSetDevice(ordinal));
		UNITOK_TRY(cudaStreamDestroy(stream(s)));
		return ok(cuda_error);
	});
}

unitok_status unitok_stream_synchronize(int ordinal, unitok_stream s, int *cuda_error) {
	return guarded(cuda_error, [&] {
		UNITOK_TRY(cudaSetDevice(ordinal));
		UNITOK_TRY(cudaStreamSynchronize(stream(s)));
		return ok(cuda_error);
	});
}

unitok_status unitok_event_create(int ordinal, unitok_event *out, int *cuda_error) {
	if (!out || ordinal < 0) return invalid(cuda_error);
	return guarded(cuda_error, [&] {
		UNITOK_TRY(cudaSetDevice(ordinal));
		cudaEvent_t e;
		UNITOK_TRY(cudaEventCreate(&e));
		*out = reinterpret_cast<unitok_event>(e);
		return ok(cuda_error);
	});
}

unitok_status unitok_event_destroy(int ordinal, unitok_event e, int *cuda_error) {
	if (!e) return ok(cuda_error);
	return guarded(cuda_error, [&] {
		UNITOK_TRY(cudaSetDevice(ordinal));
		UNITOK_TRY(cudaEventDestroy(reinterpret_cast<cudaEvent_t>(e)));
		return ok(cuda_error);
	});
}

unitok_status unitok_event_record(int ordinal, unitok_event e, unitok_stream s, int *cuda_error) {
	if (!e) return invalid(cuda_error);
	return guarded(cuda_error, [&] {
		UNITOK_TRY(cudaSetDevice(ordinal));
		UNITOK_TRY(cudaEventRecord(reinterpret_cast<cudaEvent_t>(e), stream(s)));
		return ok(cuda_error);
	});
}

unitok_status unitok_event_synchronize(int ordinal, unitok_event e, int *cuda_error) {
	if (!e) return invalid(cuda_error);
	return guarded(cuda_error, [&] {
		UNITOK_TRY(cudaSetDevice(ordinal));
		UNITOK_TRY(cudaEventSynchronize(reinterpret_cast<cudaEvent_t>(e)));
		return ok(cuda_error);
	});
}

unitok_status unitok_event_elapsed_ms(unitok_event start, unitok_event end, float *ms, int *cuda_error) {
	if (!start || !end || !ms) return invalid(cuda_error);
	return guarded(cuda_error, [&] {
		UNITOK_TRY(cudaEventElapsedTime(ms, reinterpret_cast<cudaEvent_t>(start), reinterpret_cast<cudaEvent_t>(end)));
		return ok(cuda_error);
	});
}

unitok_status unitok_malloc(int ordinal, size_t bytes, void **out, int *cuda_error) {
	if (!out || ordinal < 0 || bytes == 0) return invalid(cuda_error);
	return guarded(cuda_error, [&] {
		*out = nullptr;
		UNITOK_TRY(cudaSetDevice(ordinal));
		UNITOK_TRY(cudaMalloc(out, bytes));
		return ok(cuda_error);
	});
}

unitok_status unitok_free(int ordinal, void *ptr, int *cuda_error) {
	if (!ptr) return ok(cuda_error);
	return guarded(cuda_error, [&] {
		UNITOK_TRY(cudaSetDevice(ordinal));
		UNITOK_TRY(cudaFree(ptr));
		return ok(cuda_error);
	});
}

unitok_status unitok_host_alloc(size_t bytes, void **out, int *cuda_error) {
	if (!out || bytes == 0) return invalid(cuda_error);
	return guarded(cuda_error, [&] {
		*out = nullptr;
		UNITOK_TRY(cudaHostAlloc(out, bytes, cudaHostAllocPortable));
		return ok(cuda_error);
	});
}

unitok_status unitok_host_free(void *ptr, int *cuda_error) {
	if (!ptr) return ok(cuda_error);
	return guarded(cuda_error, [&] {
		UNITOK_TRY(cudaFreeHost(ptr));
		return ok(cuda_error);
	});
}

static unitok_status copy(int ordinal, void *dst, const void *src, size_t bytes, cudaMemcpyKind kind,
                          unitok_stream s, int *cuda_error) {
	if (bytes == 0) return ok(cuda_error);
	if (!dst || !src) return invalid(cuda_error);
	return guarded(cuda_error, [&] {
		UNITOK_TRY(cudaSetDevice(ordinal));
		UNITOK_TRY(cudaMemcpyAsync(dst, src, bytes, kind, stream(s)));
		return ok(cuda_error);
	});
}

unitok_status unitok_memcpy_h2d(int ordinal, void *dst, const void *src, size_t bytes, unitok_stream s, int *cuda_error) {
	return copy(ordinal, dst, src, bytes, cudaMemcpyHostToDevice, s, cuda_error);
}
unitok_status unitok_memcpy_d2h(int ordinal, void *dst, const void *src, size_t bytes, unitok_stream s, int *cuda_error) {
	return copy(ordinal, dst, src, bytes, cudaMemcpyDeviceToHost, s, cuda_error);
}
unitok_status unitok_memcpy_d2d(int ordinal, void *dst, const void *src, size_t bytes, unitok_stream s, int *cuda_error) {
	return copy(ordinal, dst, src, bytes, cudaMemcpyDeviceToDevice, s, cuda_error);
}

unitok_status unitok_memset(int ordinal, void *dst, int value, size_t bytes, unitok_stream s, int *cuda_error) {
	if (bytes == 0) return ok(cuda_error);
	if (!dst) return invalid(cuda_error);
	return guarded(cuda_error, [&] {
		UNITOK_TRY(cudaSetDevice(ordinal));
		UNITOK_TRY(cudaMemsetAsync(dst, value, bytes, stream(s)));
		return ok(cuda_error);
	});
}

// quant_ok: the arguments are valid and any forced variant fits d.
static bool quant_ok(const unitok_quant_args *a) {
	if (!a || a->device < 0 || a->M <= 0 || a->K <= 0 || a->V <= 0 || a->d <= 0 || !a->z || !a->words || !a->codes)
		return false;
	switch (a->variant) {
	case UNITOK_QUANT_AUTO:
	case UNITOK_QUANT_GENERAL:
		return true;
	case UNITOK_QUANT_D8_TOK2:
	case UNITOK_QUANT_D8_TOK4:
		return a->d == 8;
	}
	return false;
}

static bool aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

int unitok_quantize_variant(const unitok_quant_args *a) {
	if (!quant_ok(a)) return 0;
	return unitok::quant_variant(*a);
}

unitok_status unitok_quantize(const unitok_quant_args *a, unitok_stream s, int *cuda_error) {
	if (!quant_ok(a)) return invalid(cuda_error);
	if (a->K > 65535 || a->d > unitok::kMaxQuantChunk) {
		if (cuda_error) *cuda_error = 0;
		return UNITOK_ERR_UNSUPPORTED;
	}
	const int variant = unitok::quant_variant(*a);
	if ((variant == UNITOK_QUANT_D8_TOK2 || variant == UNITOK_QUANT_D8_TOK4) && !aligned16(a->words)) {
		if (cuda_error) *cuda_error = 0;
		return UNITOK_ERR_MISALIGNED; // the d = 8 kernels read codewords as float4
	}
	return guarded(cuda_error, [&] {
		UNITOK_TRY(cudaSetDevice(a->device));
		UNITOK_TRY(unitok::launch_quantize(*a, stream(s)));
		return ok(cuda_error);
	});
}

unitok_status unitok_lookup(const unitok_lookup_args *a, unitok_stream s, int *cuda_error) {
	if (!a || a->device < 0 || a->M <= 0 || a->K <= 0 || a->V <= 0 || a->d <= 0 || !a->codes || !a->words || !a->latents)
		return invalid(cuda_error);
	return guarded(cuda_error, [&] {
		UNITOK_TRY(cudaSetDevice(a->device));
		UNITOK_TRY(unitok::launch_lookup(*a, stream(s)));
		return ok(cuda_error);
	});
}

static bool valid_weights(const unitok_attn_proj_weights *w) {
	if (!w || w->in <= 0 || w->out <= 0 || w->heads <= 0 || w->head_dim <= 0) return false;
	const int wide = w->in > w->out ? w->in : w->out;
	if (w->heads * w->head_dim != wide) return false;
	const unitok_layernorm *lns[4] = {&w->norm1, &w->norm2, &w->norm3, &w->mlp_norm};
	for (const unitok_layernorm *ln : lns)
		if (!ln->weight || !ln->bias || !(ln->eps >= 0)) return false;
	return w->qkv_w && w->qkv_b && w->attn_proj_w && w->attn_proj_b && w->proj_w && w->proj_b && w->w01_w &&
	       w->w01_b && w->w2_w && w->w2_b;
}

// Rows a forward may take at once: the GEMM grid's y dimension is rows/64.
static const long long kMaxRows = 65535LL * 64;

static bool valid_tile(int t) { return t == 0 || t == 64 || t == 128; }

int unitok_attn_proj_gemm_tiles(int in, int out, int heads, int head_dim, int batch, int tokens, int gemm_tile,
                                int tiles[5]) {
	if (in <= 0 || out <= 0 || heads <= 0 || head_dim <= 0 || batch <= 0 || tokens <= 0 || !tiles ||
	    !valid_tile(gemm_tile))
		return 0;
	const long long R = (long long)batch * tokens;
	const long long W = (long long)heads * head_dim;
	if (R > kMaxRows || W != (in > out ? in : out)) return 0;
	// The forward's GEMMs in order, (rows, outputs) as launch_attn_proj_forward.
	const long long n[5] = {3 * W, out, out, 4LL * out, out};
	for (int i = 0; i < 5; ++i) tiles[i] = unitok::gemm_tile((int)R, (int)n[i], gemm_tile);
	return 5;
}

size_t unitok_attn_proj_workspace_size(const unitok_attn_proj_weights *w, int batch, int tokens) {
	if (!valid_weights(w) || batch <= 0 || tokens <= 0) return 0;
	return unitok::plan_attn_proj(*w, batch, tokens).total_floats * sizeof(float);
}

unitok_status unitok_attn_proj_forward(const unitok_attn_proj_args *a, unitok_stream s, int *cuda_error) {
	if (!a || a->device < 0 || !valid_weights(&a->w) || a->batch <= 0 || a->tokens <= 0 || !a->x || !a->y ||
	    !a->workspace || a->x == a->y || !valid_tile(a->gemm_tile))
		return invalid(cuda_error);
	if (a->workspace_bytes < unitok_attn_proj_workspace_size(&a->w, a->batch, a->tokens)) return invalid(cuda_error);
	if (a->w.head_dim > UNITOK_MAX_HEAD_DIM || a->batch > 65535 || (long long)a->batch * a->tokens > kMaxRows) {
		if (cuda_error) *cuda_error = 0;
		return UNITOK_ERR_UNSUPPORTED;
	}
	return guarded(cuda_error, [&] {
		UNITOK_TRY(cudaSetDevice(a->device));
		UNITOK_TRY(unitok::launch_attn_proj_forward(*a, stream(s)));
		return ok(cuda_error);
	});
}

} // extern "C"
