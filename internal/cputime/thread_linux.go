package cputime

import (
	"time"

	"golang.org/x/sys/unix"
)

// Thread is the calling OS thread's CPU time (the caller locks its
// goroutine to the thread): a single-core rate per CPU second is what the
// core did, not how often the scheduler ran it.
func Thread() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}
