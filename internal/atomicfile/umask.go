package atomicfile

import (
	"os"
	"strconv"
	"strings"
	"sync"
)

var (
	umaskOnce sync.Once
	umaskVal  os.FileMode = 0o022
)

// umask reads the process umask from /proc/self/status (Linux 4.7+), since
// the only portable way to read it (setting it) races with other goroutines
// creating files. Elsewhere it assumes the common 022.
func umask() os.FileMode {
	umaskOnce.Do(func() {
		b, err := os.ReadFile("/proc/self/status")
		if err != nil {
			return
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "Umask:"); ok {
				if m, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32); err == nil {
					umaskVal = os.FileMode(m) & os.ModePerm
				}
				return
			}
		}
	})
	return umaskVal
}
