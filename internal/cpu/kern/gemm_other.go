//go:build !amd64 || purego

package kern

func kernelTable() [AVX512 + 1]microKernel {
	return [AVX512 + 1]microKernel{Generic: genericKernel}
}
