//go:build unix

package unitok

import "syscall"

// processCPUSeconds is the user+system CPU time of the process, so a
// benchmark on a shared machine can report CPU seconds per item next to its
// (load-dependent) wall time.
func processCPUSeconds() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}
