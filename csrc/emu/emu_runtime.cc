// emu_runtime.cc: the host half of the CPU emulation (see cuda_runtime.h
// here). Device memory is host memory; every asynchronous call completes
// before it returns. Test harness only.
#include "cuda_runtime.h"

#include <stdlib.h>

struct CUstream_st {
	int unused;
};
struct CUevent_st {
	int unused;
};

const char *cudaGetErrorName(cudaError_t e) {
	switch (e) {
	case cudaSuccess: return "cudaSuccess";
	case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
	case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
	case cudaErrorNoDevice: return "cudaErrorNoDevice";
	case cudaErrorInsufficientDriver: return "cudaErrorInsufficientDriver";
	case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
	case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
	default: return "cudaErrorUnknown";
	}
}
const char *cudaGetErrorString(cudaError_t e) {
	switch (e) {
	case cudaSuccess: return "no error";
	case cudaErrorMemoryAllocation: return "out of memory";
	case cudaErrorNoDevice: return "no CUDA-capable device is detected";
	case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
	default: return "emulated CUDA error";
	}
}
cudaError_t cudaGetLastError() {
	cudaError_t e = emu::last_error;
	emu::last_error = cudaSuccess;
	return e;
}
cudaError_t cudaGetDeviceCount(int *n) { *n = 1; return cudaSuccess; }
cudaError_t cudaRuntimeGetVersion(int *v) { *v = 11080; return cudaSuccess; }
cudaError_t cudaDriverGetVersion(int *v) { *v = 0; return cudaSuccess; }
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int dev) {
	if (dev != 0) return cudaErrorInvalidDevice;
	memset(p, 0, sizeof(*p));
	strcpy(p->name, "CPU emulation of a CUDA device");
	p->major = 9;
	p->multiProcessorCount = 1;
	p->sharedMemPerBlockOptin = 227 * 1024;
	p->totalGlobalMem = (size_t)16 << 30;
	return cudaSuccess;
}
cudaError_t cudaSetDevice(int dev) { return dev == 0 ? cudaSuccess : cudaErrorInvalidDevice; }
cudaError_t cudaMemGetInfo(size_t *f, size_t *t) { *f = *t = (size_t)16 << 30; return cudaSuccess; }
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned) { *s = new CUstream_st(); return cudaSuccess; }
cudaError_t cudaStreamDestroy(cudaStream_t s) { delete s; return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaEventCreate(cudaEvent_t *e) { *e = new CUevent_st(); return cudaSuccess; }
cudaError_t cudaEventDestroy(cudaEvent_t e) { delete e; return cudaSuccess; }
cudaError_t cudaEventRecord(cudaEvent_t, cudaStream_t) { return cudaSuccess; }
cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t, cudaEvent_t) { *ms = 0; return cudaSuccess; }
cudaError_t cudaMalloc(void **p, size_t n) {
	// Poisoned like fresh device memory, so reads of unwritten data show.
	*p = malloc(n);
	if (!*p) return cudaErrorMemoryAllocation;
	memset(*p, 0xFF, n);
	return cudaSuccess;
}
cudaError_t cudaFree(void *p) { free(p); return cudaSuccess; }
cudaError_t cudaHostAlloc(void **p, size_t n, unsigned) {
	*p = malloc(n);
	return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
cudaError_t cudaFreeHost(void *p) { free(p); return cudaSuccess; }
cudaError_t cudaMemcpyAsync(void *d, const void *s, size_t n, cudaMemcpyKind, cudaStream_t) {
	memmove(d, s, n);
	return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void *d, int v, size_t n, cudaStream_t) {
	memset(d, v, n);
	return cudaSuccess;
}
