// align_selftest.cc: proves that the CPU emulation catches what a GPU
// faults on, a float4 load from an address that is not 16-byte aligned.
// Built with the emulation's flags (-fsanitize=alignment); `make emu-test`
// runs it with offset 0 (must print the sum and exit 0) and offset 1 (must
// stop with UBSan's "misaligned address" report and a nonzero exit).
#include "cuda_runtime.h"

#include <stdio.h>
#include <stdlib.h>

__global__ void load4(const float *p, float *out) {
	const float4 v = *reinterpret_cast<const float4 *>(p + 4 * threadIdx.x);
	out[threadIdx.x] = v.x + v.y + v.z + v.w;
}

int main(int argc, char **argv) {
	const int off = argc > 1 ? atoi(argv[1]) : 0;
	float *buf, *out;
	if (cudaMalloc((void **)&buf, 64 * sizeof(float)) != cudaSuccess) return 2;
	if (cudaMalloc((void **)&out, 32 * sizeof(float)) != cudaSuccess) return 2;
	for (int i = 0; i < 64; ++i) buf[i] = (float)i;
	::emu::launch(load4, dim3(1), dim3(8), 0, nullptr, (const float *)(buf + off), out);
	printf("sum %g\n", (double)out[0]);
	cudaFree(buf);
	cudaFree(out);
	return 0;
}
