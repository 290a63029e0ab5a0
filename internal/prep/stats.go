package prep

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/unitok/unitok/internal/npy"
)

// finishStats derives usage and perplexity from the counts.
func (s *Summary) finishStats() {
	s.Usage = make([]float64, s.K)
	s.Perplexity = make([]float64, s.K)
	for k := 0; k < s.K; k++ {
		h := s.Counts[k*s.V : (k+1)*s.V]
		var total int64
		used := 0
		for _, c := range h {
			total += c
			if c > 0 {
				used++
			}
		}
		s.Usage[k] = 100 * float64(used) / float64(s.V)
		if total == 0 {
			continue
		}
		var ent float64
		for _, c := range h {
			if c > 0 {
				p := float64(c) / float64(total)
				ent -= p * math.Log(p)
			}
		}
		s.Perplexity[k] = math.Exp(ent)
	}
}

// Print writes a human-readable summary: shards, throughput, per-codebook
// usage and perplexity, and every failed shard with its reason.
func (s *Summary) Print(w io.Writer) {
	unit := "rows"
	if s.Op.batched() {
		unit = "images"
	}
	if s.Partition.Enabled() {
		fmt.Fprintf(w, "partition %s: %d of %d shards; ", s.Partition, s.Shards, s.AllShards)
	}
	fmt.Fprintf(w, "%s on %s: %d shards: %d done, %d already done, %d failed", s.Op, s.Device, s.Shards, s.Done, s.Skipped, s.Failed)
	if s.Interrupted {
		fmt.Fprint(w, " (interrupted)")
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  %d %s, %d tokens in %.2fs: %s tokens/s, %s in, %s out\n", s.Rows, unit, s.Tokens, s.Seconds,
		si(s.TokensPerSecond()), bytesStr(s.BytesIn), bytesStr(s.BytesOut))
	if len(s.Usage) > 0 && s.CodeTokens > 0 {
		fmt.Fprintf(w, "  codes over %d tokens, per codebook (K=%d, V=%d):\n", s.CodeTokens, s.K, s.V)
		fmt.Fprintf(w, "    usage %%:    %s (mean %.1f)\n", floats(s.Usage, "%.1f"), mean(s.Usage))
		fmt.Fprintf(w, "    perplexity: %s (mean %.1f)\n", floats(s.Perplexity, "%.1f"), mean(s.Perplexity))
	}
	for _, f := range s.Failures {
		fmt.Fprintf(w, "  failed: %s\n", oneLine(f.Error()))
	}
}

func oneLine(s string) string { return strings.ReplaceAll(strings.TrimSpace(s), "\n", "; ") }

func floats(v []float64, f string) string {
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = fmt.Sprintf(f, x)
	}
	return strings.Join(parts, " ")
}

func mean(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	var s float64
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

// si renders a rate with a k/M/G suffix.
func si(x float64) string {
	switch {
	case x >= 1e9:
		return fmt.Sprintf("%.2fG", x/1e9)
	case x >= 1e6:
		return fmt.Sprintf("%.2fM", x/1e6)
	case x >= 1e3:
		return fmt.Sprintf("%.1fk", x/1e3)
	}
	return fmt.Sprintf("%.0f", x)
}

func bytesStr(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// writeHistogram writes counts (K, V) as an int64 .npy, atomically.
func writeHistogram(path string, counts []int64, K, V int) error {
	w, err := npy.Create(path, "int64", []int{K, V})
	if err != nil {
		return err
	}
	b := make([]byte, 8*len(counts))
	for i, c := range counts {
		binary.LittleEndian.PutUint64(b[8*i:], uint64(c))
	}
	if _, err := w.Write(b); err != nil {
		w.Abort()
		return err
	}
	return w.Commit()
}

// progress prints a status line: \r-updated on a terminal, a plain line
// every interval otherwise. All methods are nil-safe.
type progress struct {
	w           io.Writer
	tty         bool
	op          Op
	shards      int
	totalTokens int64
	start       time.Time
	tokens      atomic.Int64
	done        atomic.Int64

	mu      sync.Mutex
	drawn   bool // a \r line is on screen
	quit    chan struct{}
	stopped sync.WaitGroup
	once    sync.Once
}

func newProgress(op Op, opt Options, shards int, tokens int64) *progress {
	if opt.Progress == nil {
		return nil
	}
	p := &progress{w: opt.Progress, op: op, shards: shards, totalTokens: tokens, start: time.Now(), quit: make(chan struct{})}
	switch {
	case opt.Terminal > 0:
		p.tty = true
	case opt.Terminal == 0:
		if f, ok := opt.Progress.(*os.File); ok {
			if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
				p.tty = true
			}
		}
	}
	every := opt.ProgressInterval
	if every <= 0 {
		every = 5 * time.Second
		if p.tty {
			every = 500 * time.Millisecond
		}
	}
	p.stopped.Add(1)
	go func() {
		defer p.stopped.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				p.draw()
			case <-p.quit:
				return
			}
		}
	}()
	return p
}

func (p *progress) add(tokens int64) {
	if p != nil {
		p.tokens.Add(tokens)
	}
}

func (p *progress) shardDone() {
	if p != nil {
		p.done.Add(1)
	}
}

func (p *progress) line() string {
	el := time.Since(p.start).Seconds()
	tok := p.tokens.Load()
	rate := 0.0
	if el > 0 {
		rate = float64(tok) / el
	}
	eta := "?"
	if rate > 0 {
		eta = (time.Duration(float64(p.totalTokens-tok)/rate*float64(time.Second)) + time.Second/2).Truncate(time.Second).String()
	}
	pct := 100.0
	if p.totalTokens > 0 {
		pct = 100 * float64(tok) / float64(p.totalTokens)
	}
	return fmt.Sprintf("%s: %d/%d shards, %s/%s tokens (%.1f%%), %s tokens/s, ETA %s",
		p.op, p.done.Load(), p.shards, si(float64(tok)), si(float64(p.totalTokens)), pct, si(rate), eta)
}

func (p *progress) draw() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty {
		fmt.Fprintf(p.w, "\r%s\x1b[K", p.line())
		p.drawn = true
		return
	}
	fmt.Fprintln(p.w, p.line())
}

// logf prints a message on its own line, keeping the status line intact.
func (p *progress) logf(format string, args ...any) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.drawn {
		fmt.Fprint(p.w, "\r\x1b[K")
		p.drawn = false
	}
	fmt.Fprintf(p.w, format+"\n", args...)
}

// stop ends the ticker and leaves the final status on its own line.
func (p *progress) stop() {
	if p == nil {
		return
	}
	p.once.Do(func() {
		close(p.quit)
		p.stopped.Wait()
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.tty {
			fmt.Fprintf(p.w, "\r%s\x1b[K\n", p.line())
		}
	})
}
