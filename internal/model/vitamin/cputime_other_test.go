//go:build !unix

package vitamin

// processCPU is not measured here (0): the op table's threads column reads 0.
func processCPU() float64 { return 0 }
