//go:build !purego

package kern

import "golang.org/x/sys/cpu"

// detect is the highest level this CPU and OS support (x/sys/cpu checks
// that the OS saves the vector registers).
func detect() Level {
	switch {
	case cpu.X86.HasAVX512F:
		return AVX512
	case cpu.X86.HasAVX2 && cpu.X86.HasFMA:
		return AVX2
	}
	return Generic
}
