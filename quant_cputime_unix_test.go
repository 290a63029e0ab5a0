//go:build unix

package unitok

import "syscall"

// processCPUTime is the user+system CPU time of this process in seconds;
// on a shared machine, work per CPU-second is steadier than per second.
func processCPUTime() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}
