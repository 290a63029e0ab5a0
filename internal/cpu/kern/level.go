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

// usable is the highest level this CPU supports whose GEMM also passes
// selfCheck: a kernel that computes wrong results on some CPU is dropped
// (with a warning) rather than trusted. TestSelfCheck fails when it drops one.
var usable = func() Level {
	l := detect()
	for ; l > Generic && !selfCheck(l); l-- {
		fmt.Fprintf(os.Stderr, "unitok: the %v GEMM kernel failed its start-up check on this CPU; using a lower level\n", l)
	}
	return l
}()

// selfCheck runs level l's GEMM on a small problem with small-integer
// operands (every sum exact in float32) that covers full and edge tiles,
// two k-blocks, bias and accumulate, and compares it with exact results.
func selfCheck(l Level) bool {
	const R, I, O = 13, 300, 40
	a, w, bias := make([]float32, R*I), make([]float32, O*I), make([]float32, O)
	for i := range a {
		a[i] = float32(i*7%5 - 2)
	}
	for i := range w {
		w[i] = float32(i*3%7 - 3)
	}
	for i := range bias {
		bias[i] = float32(i%3 - 1)
	}
	dst := make([]float32, R*O)
	for i := range dst {
		dst[i] = float32(i % 4)
	}
	gemm(kernels[l], dst, O, operand{a: a, lda: I}, R, Pack(w, O, I), bias, true, 1)
	for r := 0; r < R; r++ {
		for o := 0; o < O; o++ {
			want := float32((r*O+o)%4) + bias[o]
			for k := 0; k < I; k++ {
				want += a[r*I+k] * w[o*I+k]
			}
			if dst[r*O+o] != want {
				return false
			}
		}
	}
	return true
}

func initLevel() Level {
	best := usable
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
	for l := Generic; l <= usable; l++ {
		ls = append(ls, l)
	}
	return ls
}

// SetLevel switches every kernel to level l and returns the previous level.
// It is for tests and benchmarks that compare paths: it must not run
// concurrently with kernels. It panics if the CPU lacks l.
func SetLevel(l Level) Level {
	if l < Generic || l > usable {
		panic(fmt.Sprintf("kern.SetLevel(%v): this CPU supports %v", l, Supported()))
	}
	prev := level
	level = l
	return prev
}
