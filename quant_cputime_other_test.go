//go:build !unix

package unitok

func processCPUTime() float64 { return 0 }
