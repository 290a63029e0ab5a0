package kern

import (
	"fmt"
	"os"
	"strings"
)

//go:generate go run ./_asm

// Level is an instruction-set level of the kernels.
type Level int

const (
	// Generic is the pure-Go path, on every platform.
	Generic Level = iota
	// AVX2 is the ymm path (AVX2 + FMA), amd64.
	AVX2
	// AVX512 is the zmm path (AVX-512 F), amd64.
	AVX512
)

func (l Level) String() string {
	switch l {
	case Generic:
		return "generic"
	case AVX2:
		return "avx2"
	case AVX512:
		return "avx512"
	}
	return fmt.Sprintf("Level(%d)", int(l))
}

// level is the path every kernel takes; decided once at start-up from the
// CPU (detect, per platform) and the UNITOK_CPU_KERNEL environment variable
// (generic, avx2 or avx512: at most what the CPU has), changed only by
// SetLevel.
var level = initLevel()

// EnvLevel names the environment variable that caps the kernel level.
const EnvLevel = "UNITOK_CPU_KERNEL"

func initLevel() Level {
	best := detect()
	if v := strings.TrimSpace(os.Getenv(EnvLevel)); v != "" {
		for l := Generic; l <= best; l++ {
			if strings.EqualFold(v, l.String()) {
				return l
			}
		}
		fmt.Fprintf(os.Stderr, "unitok: %s=%q is not one of this CPU's kernel levels %v; using %v\n", EnvLevel, v, Supported(), best)
	}
	return best
}

// Current returns the kernel level in use.
func Current() Level { return level }

// Supported lists the levels this CPU can run, lowest first.
func Supported() []Level {
	var ls []Level
	for l := Generic; l <= detect(); l++ {
		ls = append(ls, l)
	}
	return ls
}

// SetLevel switches every kernel to level l and returns the previous level.
// It is for tests and benchmarks that compare paths: it must not run
// concurrently with kernels. It panics if the CPU lacks l.
func SetLevel(l Level) Level {
	if l < Generic || l > detect() {
		panic(fmt.Sprintf("kern.SetLevel(%v): this CPU supports %v", l, Supported()))
	}
	prev := level
	level = l
	return prev
}
