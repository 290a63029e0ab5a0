//go:build unix

package kern

import "syscall"

// processCPUTime is the user+system CPU time of this process in seconds:
// under a loaded machine, work per CPU-second is steadier than per
// wall-second.
func processCPUTime() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}
