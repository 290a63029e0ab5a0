package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/unitok/unitok"
	"github.com/unitok/unitok/api"
	"github.com/unitok/unitok/internal/npy"
)

// runLoadgen is `unitok loadgen`: single-feature-set encode requests at
// each concurrency level against a server on loopback, each level bounded
// in time and count, then the direct batched library baseline on the same
// work in this process. It prints a Markdown table.
func runLoadgen(args []string, stdout io.Writer) error {
	fs := newFlagSet("loadgen")
	var ef engineFlags
	ef.register(fs)
	addr := fs.String("addr", "http://127.0.0.1:8080", "server URL (loopback only)")
	levels := fs.String("concurrency", "1,8,64,256", "comma-separated concurrency levels")
	dur := fs.Duration("duration", 5*time.Second, "time per level")
	maxReq := fs.Int("max-requests", 20000, "requests per level at most")
	in := fs.String("in", "", "features .npy (B,N,C); one sample per request (default: random)")
	tokens := fs.Int("tokens", 256, "tokens per request (with --in: the first TOKENS of each sample)")
	pid := fs.Int("server-pid", 0, "server process, for its RSS")
	batchB := fs.Int("baseline-batch", 64, "batch size of the direct library baseline")
	pairs := fs.Int("pairs", 3, "alternating direct / server-at-64 runs for the ratio (0: none)")
	if _, err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	u, err := url.Parse(*addr)
	if err != nil {
		return fmt.Errorf("--addr: %v", err)
	}
	host := u.Hostname()
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("--addr %s: loadgen only targets loopback", *addr)
	}
	var conc []int
	for _, s := range strings.Split(*levels, ",") {
		c, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || c <= 0 || c > 4096 {
			return fmt.Errorf("--concurrency: bad level %q", s)
		}
		conc = append(conc, c)
	}
	opts, _, err := ef.options()
	if err != nil {
		return err
	}
	tok, err := ef.openTokenizer(opts)
	if err != nil {
		return err
	}
	defer tok.Close()
	C := tok.Config().InDim
	var samples [][]float32
	N := *tokens
	if *in != "" {
		a, err := npy.Open(*in)
		if err != nil {
			return inputErr(*in, err)
		}
		x, err := a.Float32()
		if err != nil || len(a.Shape) != 3 || a.Shape[2] != C {
			a.Close()
			return fmt.Errorf("--in %s: want float (B, N, %d), have %v (%v)", *in, C, a.Shape, err)
		}
		N = a.Shape[1]
		use := N
		if *tokens > 0 && *tokens < N {
			use = *tokens // the first tokens of each sample
		}
		for b := 0; b < a.Shape[0]; b++ {
			samples = append(samples, slices.Clone(x[b*N*C:b*N*C+use*C]))
		}
		N = use
		a.Close()
	} else {
		for b := 0; b < 4; b++ {
			x := make([]float32, N*C)
			for i := range x {
				x[i] = float32((i*7919+b*104729)%2001)/1000 - 1
			}
			samples = append(samples, x)
		}
	}
	bodies := make([][]byte, len(samples))
	for i, x := range samples {
		bodies[i] = api.AppendNPY(nil, []int{1, N, C}, x, nil)
	}

	before, err := directBaseline(tok, samples, N, *batchB, *dur, *maxReq)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "| concurrency | requests | ok/s | tokens/s | p50 ms | p99 ms | p99.9 ms | 429 | other errors | calls per batch | server RSS MiB |\n")
	fmt.Fprintf(stdout, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	var at64 float64
	for _, c := range conc {
		s0, n0 := batchStats(*addr)
		r := loadLevel(*addr+api.PathEncode, bodies, c, *dur, *maxReq)
		s1, n1 := batchStats(*addr)
		perBatch := "-"
		if n1 > n0 {
			perBatch = fmt.Sprintf("%.1f", (s1-s0)/(n1-n0))
		}
		okps := float64(r.ok) / r.wall.Seconds()
		if c == 64 {
			at64 = okps
		}
		fmt.Fprintf(stdout, "| %d | %d | %.1f | %.0f | %.2f | %.2f | %.2f | %d | %d | %s | %s |\n",
			c, r.sent, okps, okps*float64(N), msOf(r.pct(0.5)), msOf(r.pct(0.99)), msOf(r.pct(0.999)), r.overloaded, r.other, perBatch, rss(*pid))
		if r.firstErr != "" {
			fmt.Fprintf(os.Stderr, "loadgen: concurrency %d: first other error: %s\n", c, r.firstErr)
		}
	}
	after, err := directBaseline(tok, samples, N, *batchB, *dur, *maxReq)
	if err != nil {
		return err
	}
	direct := (before + after) / 2
	single, err := directBaseline(tok, samples, N, 1, *dur, *maxReq)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\ndirect batched library (B=%d, N=%d, in the load generator's process, measured before and after the server levels): %.1f and %.1f samples/s, mean %.1f samples/s (%.0f tokens/s)\n",
		*batchB, N, before, after, direct, direct*float64(N))
	fmt.Fprintf(stdout, "direct unbatched library (B=1, one call at a time): %.1f samples/s\n", single)
	// On a noisy machine the fairest ratio alternates the two, back to back.
	var ratios []float64
	for i := 0; i < *pairs; i++ {
		d, err := directBaseline(tok, samples, N, *batchB, *dur, *maxReq)
		if err != nil {
			return err
		}
		r := loadLevel(*addr+api.PathEncode, bodies, 64, *dur, *maxReq)
		sv := float64(r.ok) / r.wall.Seconds()
		ratios = append(ratios, sv/d)
		fmt.Fprintf(stdout, "pair %d: direct batched %.1f samples/s, then server at concurrency 64 %.1f ok/s (%d errors): %.0f%%\n", i+1, d, sv, r.overloaded+r.other, 100*sv/d)
	}
	if len(ratios) > 0 {
		slices.Sort(ratios)
		fmt.Fprintf(stdout, "median over %d alternating pairs, server at 64 / direct batched: %.0f%%\n", len(ratios), 100*ratios[len(ratios)/2])
	}
	if at64 > 0 {
		fmt.Fprintf(stdout, "server at concurrency 64 / direct batched: %.0f%%; / direct unbatched: %.0f%%\n", 100*at64/direct, 100*at64/single)
	}
	return nil
}

type levelResult struct {
	sent, ok, overloaded, other int
	lat                         []time.Duration
	firstErr                    string
	wall                        time.Duration
}

func (r *levelResult) pct(p float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	return r.lat[min(len(r.lat)-1, int(p*float64(len(r.lat))))]
}

func msOf(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func loadLevel(target string, bodies [][]byte, conc int, dur time.Duration, maxReq int) *levelResult {
	tr := &http.Transport{MaxIdleConnsPerHost: conc, MaxConnsPerHost: conc}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 60 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), dur)
	defer cancel()
	var mu sync.Mutex
	res := &levelResult{}
	var wg sync.WaitGroup
	next := make(chan int, conc)
	go func() {
		defer close(next)
		for i := 0; i < maxReq; i++ {
			select {
			case next <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	start := time.Now()
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				req, _ := http.NewRequest(http.MethodPost, target, bytes.NewReader(bodies[i%len(bodies)]))
				req.Header.Set("Content-Type", api.ContentNPY)
				t0 := time.Now()
				resp, err := hc.Do(req)
				status := 0
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					status = resp.StatusCode
				}
				d := time.Since(t0)
				mu.Lock()
				res.sent++
				switch {
				case status == 200:
					res.ok++
					res.lat = append(res.lat, d)
				case status == 429:
					res.overloaded++
				default:
					res.other++
					if res.firstErr == "" {
						res.firstErr = fmt.Sprintf("status %d, error %v", status, err)
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	res.wall = time.Since(start)
	slices.Sort(res.lat)
	return res
}

// rss reads a process's resident set from /proc ("-" when unknown).
func rss(pid int) string {
	if pid <= 0 {
		return "-"
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "-"
	}
	var cur, peak string
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 {
			switch f[0] {
			case "VmRSS:":
				cur = f[1]
			case "VmHWM:":
				peak = f[1]
			}
		}
	}
	kb, err1 := strconv.Atoi(cur)
	pk, err2 := strconv.Atoi(peak)
	if errors.Join(err1, err2) != nil {
		return "-"
	}
	return fmt.Sprintf("%.0f (peak %.0f)", float64(kb)/1024, float64(pk)/1024)
}

// directBaseline runs the library directly on batches of B samples for at
// most dur (and maxReq samples) and returns samples per second.
func directBaseline(tok *unitok.Tokenizer, samples [][]float32, N, B int, dur time.Duration, maxReq int) (float64, error) {
	C := tok.Config().InDim
	x := make([]float32, 0, B*N*C)
	for b := 0; b < B; b++ {
		x = append(x, samples[b%len(samples)]...)
	}
	dst := make([]int32, B*N*tok.Config().NumCodebooks)
	start := time.Now()
	calls := 0
	for time.Since(start) < dur && calls*B < maxReq {
		if err := tok.EncodeInto(dst, x, B, N); err != nil {
			return 0, err
		}
		calls++
	}
	return float64(calls*B) / time.Since(start).Seconds(), nil
}

// batchStats reads the server's encode batch-calls histogram (sum, count)
// from /metrics; zeros when unavailable.
func batchStats(addr string) (sum, count float64) {
	resp, err := http.Get(addr + api.PathMetrics)
	if err != nil {
		return 0, 0
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) != 2 {
			continue
		}
		v, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case `unitok_batch_calls_sum{op="encode"}`:
			sum = v
		case `unitok_batch_calls_count{op="encode"}`:
			count = v
		}
	}
	return sum, count
}
