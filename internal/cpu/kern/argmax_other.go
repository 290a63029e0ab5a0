//go:build !amd64

package kern

// Only amd64 has assembly kernels; elsewhere the pure-Go path runs.
func bestArgmaxPath() int32 { return pathGeneric }

func (c *Codebook) argmaxAVX2(dst []int32, ldd int, z []float32, ldz int, n int) {
	c.argmaxGeneric(dst, ldd, z, ldz, n)
}

func (c *Codebook) argmaxAVX512(dst []int32, ldd int, z []float32, ldz int, n int) {
	c.argmaxGeneric(dst, ldd, z, ldz, n)
}
