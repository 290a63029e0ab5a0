//go:build !unix

package unitok

func processCPUSeconds() float64 { return 0 }
