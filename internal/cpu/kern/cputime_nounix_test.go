//go:build !unix

package kern

func processCPUTime() float64 { return 0 }
