//go:build linux

package unitok

import (
	"context"
	"math/rand/v2"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/unitok/unitok/internal/cputime"
)

// procStatus returns VmRSS, VmHWM, RssAnon and RssFile of this process in MiB.
func procStatus(t *testing.T) map[string]int {
	b, err := os.ReadFile("/proc/self/status")
	require.NoError(t, err)
	out := map[string]int{}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch k {
		case "VmRSS", "VmHWM", "RssAnon", "RssFile":
			var kb int
			for _, c := range strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")) {
				kb = kb*10 + int(c-'0')
			}
			out[k] = kb >> 10
		}
	}
	return out
}

// TestLoadRSS reports the memory of loading the image path of the
// checkpoint UNITOK_RSS_CKPT and of one tokenize and one detokenize
// (docs/notes/mmap.md): VmHWM (peak RSS), VmRSS split into anonymous and
// file-backed pages, and the Go heap, after each stage. A measurement, not a
// check; opt in with UNITOK_RSS_CKPT=/path/to/checkpoint.
func TestLoadRSS(t *testing.T) {
	path := os.Getenv("UNITOK_RSS_CKPT")
	if path == "" {
		t.Skip("set UNITOK_RSS_CKPT=/path/to/checkpoint to measure the image path's memory")
	}
	cpu0 := cputime.Process()
	report := func(stage string, d time.Duration) {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		s := procStatus(t)
		cpu := cputime.Process()
		t.Logf("%-22s %6.2fs wall %6.2fs cpu  peak RSS %5d MiB  RSS %5d MiB (anon %5d, file %5d)  heap in use %5d MiB",
			stage, d.Seconds(), (cpu - cpu0).Seconds(), s["VmHWM"], s["VmRSS"], s["RssAnon"], s["RssFile"], ms.HeapInuse>>20)
		cpu0 = cpu
	}
	report("start", 0)
	t0 := time.Now()
	tok, err := Open(path, WithDevice("cpu"))
	require.NoError(t, err)
	defer tok.Close()
	require.NoError(t, tok.ImageModel())
	report("image model loaded", time.Since(t0))
	runtime.GC()
	report("after GC", 0)
	cpu0 = cputime.Process()
	S := tok.ImageSize()
	rng := rand.New(rand.NewPCG(1, 2))
	x := make([]float32, 3*S*S)
	for i := range x {
		x[i] = float32(rng.Float64()*2 - 1)
	}
	t0 = time.Now()
	codes, err := tok.TokenizePixels(context.Background(), x, 1)
	require.NoError(t, err)
	report("tokenize", time.Since(t0))
	t0 = time.Now()
	_, err = tok.Detokenize(context.Background(), codes, 1)
	require.NoError(t, err)
	report("detokenize", time.Since(t0))
	runtime.GC()
	cpu0 = cputime.Process()
	report("live after GC", 0)
}
