package telemetry

import (
	"context"
	"slices"
	"sync"
	"time"
)

// DefaultInterval is the sampling interval StartSampler uses for a
// non-positive one.
const DefaultInterval = time.Second

// GPUStats summarizes one GPU over the readings a Sampler has taken since
// it started or was last Reset.
type GPUStats struct {
	Index int    `json:"index"`
	UUID  string `json:"uuid"`
	// Lowest and highest SM clock seen, MHz (0 when SM clock is unsupported).
	MinSMClockMHz uint32 `json:"min_sm_clock_mhz"`
	MaxSMClockMHz uint32 `json:"max_sm_clock_mhz"`
	// Highest temperature (C), power (W) and utilization (%) seen.
	MaxTemperatureC      uint32  `json:"max_temperature_c"`
	MaxPowerW            float64 `json:"max_power_w"`
	MaxUtilizationGPUPct uint32  `json:"max_utilization_gpu_pct"`
	// ThrottleReasons is the union of the reasons seen in any reading, in
	// bit order (ThrottleReasonNames). Never nil.
	ThrottleReasons []string `json:"throttle_reasons"`
	ThrottleMask    uint64   `json:"-"`
}

// Stats is what a Sampler has seen since it started or was last Reset.
type Stats struct {
	// Samples counts readings folded in; Errors counts failed readings
	// (not folded in). LastError is the latest failure's text, or "".
	Samples   int    `json:"samples"`
	Errors    int    `json:"errors"`
	LastError string `json:"last_error,omitempty"`
	// Since is when the window began; Until is the last reading's time.
	Since time.Time `json:"-"`
	Until time.Time `json:"-"`
	// GPUs in NVML index order. Never nil.
	GPUs []GPUStats `json:"gpus"`
}

// Sampler reads a Monitor every interval in its own goroutine until its
// context is done, keeping the latest reading and, per GPU, the min/max SM
// clock, the maxima of temperature, power and utilization, and the union of
// throttle reasons. Its methods are safe for concurrent use. The Monitor
// stays the caller's: close it after the Sampler is Done.
//
// For a benchmark figure: Reset, SampleNow, run the timed section,
// SampleNow, then Stats covers at least the two end readings plus every
// periodic one in between.
type Sampler struct {
	m        *Monitor
	interval time.Duration
	done     chan struct{}

	mu      sync.Mutex
	latest  Snapshot
	lastErr error
	stats   Stats
	byIndex map[int]int // GPU index -> position in stats.GPUs
}

// StartSampler takes one reading now (so Latest has one on return), then
// starts a goroutine that reads every interval (DefaultInterval if
// interval <= 0) until ctx is done.
func StartSampler(ctx context.Context, m *Monitor, interval time.Duration) *Sampler {
	if interval <= 0 {
		interval = DefaultInterval
	}
	s := &Sampler{m: m, interval: interval, done: make(chan struct{})}
	s.resetLocked()
	s.SampleNow()
	go s.loop(ctx)
	return s
}

func (s *Sampler) loop(ctx context.Context) {
	defer close(s.done)
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			// A tick and cancellation can be ready together; do not read
			// after cancellation.
			if ctx.Err() != nil {
				return
			}
			s.SampleNow()
		}
	}
}

// Done is closed when the sampling goroutine has returned (after its
// context is done).
func (s *Sampler) Done() <-chan struct{} { return s.done }

// SampleNow takes one reading at once and folds it in, returning it.
func (s *Sampler) SampleNow() (Snapshot, error) {
	snap, err := s.m.Snapshot()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastErr = err
	if err != nil {
		s.stats.Errors++
		s.stats.LastError = err.Error()
		return snap, err
	}
	s.latest = snap
	s.fold(snap)
	return snap, nil
}

// Latest returns the latest successful reading and the error of the latest
// attempt (nil if it succeeded). Before any success the Snapshot is zero.
func (s *Sampler) Latest() (Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return cloneSnapshot(s.latest), s.lastErr
}

// Stats returns a copy of the summary of the current window.
func (s *Sampler) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.GPUs = make([]GPUStats, len(s.stats.GPUs))
	for i, g := range s.stats.GPUs {
		g.ThrottleReasons = slices.Clone(g.ThrottleReasons)
		st.GPUs[i] = g
	}
	return st
}

// Reset starts a new window: Stats forgets everything seen so far. Latest
// is kept.
func (s *Sampler) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.resetLocked()
}

func (s *Sampler) resetLocked() {
	s.stats = Stats{Since: time.Now(), GPUs: []GPUStats{}}
	s.byIndex = map[int]int{}
}

func (s *Sampler) fold(snap Snapshot) {
	s.stats.Samples++
	s.stats.Until = snap.Time
	for _, g := range snap.GPUs {
		pos, seen := s.byIndex[g.Index]
		if !seen {
			pos = len(s.stats.GPUs)
			s.byIndex[g.Index] = pos
			s.stats.GPUs = append(s.stats.GPUs, GPUStats{Index: g.Index, UUID: g.UUID, ThrottleReasons: []string{}})
		}
		st := &s.stats.GPUs[pos]
		if g.Supported("sm_clock_mhz") {
			if !seen || st.MinSMClockMHz == 0 || g.SMClockMHz < st.MinSMClockMHz {
				st.MinSMClockMHz = g.SMClockMHz
			}
			st.MaxSMClockMHz = max(st.MaxSMClockMHz, g.SMClockMHz)
		}
		st.MaxTemperatureC = max(st.MaxTemperatureC, g.TemperatureC)
		st.MaxPowerW = max(st.MaxPowerW, g.PowerW)
		st.MaxUtilizationGPUPct = max(st.MaxUtilizationGPUPct, g.UtilizationGPUPct)
		if g.ThrottleMask|st.ThrottleMask != st.ThrottleMask {
			st.ThrottleMask |= g.ThrottleMask
			st.ThrottleReasons = ThrottleReasonNames(st.ThrottleMask)
		}
	}
	if !slices.IsSortedFunc(s.stats.GPUs, func(a, b GPUStats) int { return a.Index - b.Index }) {
		slices.SortFunc(s.stats.GPUs, func(a, b GPUStats) int { return a.Index - b.Index })
		for i, g := range s.stats.GPUs {
			s.byIndex[g.Index] = i
		}
	}
}

func cloneSnapshot(s Snapshot) Snapshot {
	if s.GPUs == nil {
		return s
	}
	gs := make([]GPU, len(s.GPUs))
	for i, g := range s.GPUs {
		g.ThrottleReasons = slices.Clone(g.ThrottleReasons)
		g.Unsupported = slices.Clone(g.Unsupported)
		gs[i] = g
	}
	s.GPUs = gs
	return s
}
