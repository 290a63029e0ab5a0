package telemetry

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestThrottleReasonNames(t *testing.T) {
	assert.Equal(t, []string{}, ThrottleReasonNames(0))
	assert.Equal(t, []string{"gpu_idle"}, ThrottleReasonNames(1))
	assert.Equal(t, []string{"sw_power_cap", "hw_slowdown", "hw_thermal_slowdown"}, ThrottleReasonNames(0x4|0x8|0x40))
	assert.Equal(t, []string{"reliability", "unknown_0x800", "unknown_0x8000000000000000"}, ThrottleReasonNames(0x400|0x800|1<<63))
	all := ThrottleReasonNames(0x7ff)
	assert.Equal(t, []string{"gpu_idle", "applications_clocks_setting", "sw_power_cap", "hw_slowdown", "sync_boost",
		"sw_thermal_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown", "display_clock_setting",
		"board_limit", "reliability"}, all)
}

func TestNotAvailableError(t *testing.T) {
	err := notAvailable("nvmlInit: %s", "Driver Not Loaded")
	assert.Equal(t, "NVML not available: nvmlInit: Driver Not Loaded", err.Error())
	assert.ErrorIs(t, err, ErrNotAvailable)
	wrapped := errors.Join(errors.New("x"), err)
	assert.ErrorIs(t, wrapped, ErrNotAvailable)
	assert.NotErrorIs(t, errors.New("NVML not available: look-alike"), ErrNotAvailable)
}

func TestReportJSON(t *testing.T) {
	// No NVML: the reason alone, and "gpus":[].
	b, err := json.Marshal(NewReport(Snapshot{}, notAvailable("no driver")))
	require.NoError(t, err)
	assert.JSONEq(t, `{"nvml":"no driver","driver_version":"","cuda_driver_version":0,"gpus":[]}`, string(b))

	// A failed reading: its text.
	b, err = json.Marshal(NewReport(Snapshot{DriverVersion: "1.2"}, errors.New("gpu 0: boom")))
	require.NoError(t, err)
	assert.JSONEq(t, `{"nvml":"gpu 0: boom","driver_version":"1.2","cuda_driver_version":0,"gpus":[]}`, string(b))

	s := Snapshot{Time: time.Now(), DriverVersion: "550.54.15", CUDADriverVersion: 12040, GPUs: []GPU{{
		Index: 0, Name: "G", UUID: "GPU-1", MemoryUsedBytes: 1, MemoryTotalBytes: 2, UtilizationGPUPct: 3,
		SMClockMHz: 4, MaxSMClockMHz: 5, PowerW: 6.5, TemperatureC: 7, ThrottleReasons: []string{"gpu_idle"}, ThrottleMask: 1,
	}}}
	b, err = json.Marshal(NewReport(s, nil))
	require.NoError(t, err)
	assert.Equal(t, `{"nvml":"ok","driver_version":"550.54.15","cuda_driver_version":12040,"gpus":[`+
		`{"index":0,"name":"G","uuid":"GPU-1","memory_used_bytes":1,"memory_total_bytes":2,"utilization_gpu_pct":3,`+
		`"sm_clock_mhz":4,"max_sm_clock_mhz":5,"power_w":6.5,"temperature_c":7,"throttle_reasons":["gpu_idle"]}]}`, string(b))
}

// fakeSource replays scripted readings; the last one repeats.
type fakeSource struct {
	mu     sync.Mutex
	reads  []fakeRead
	n      int
	closed int
	errC   error
}

type fakeRead struct {
	s   Snapshot
	err error
}

func (f *fakeSource) snapshot() (Snapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.reads[min(f.n, len(f.reads)-1)]
	f.n++
	r.s.Time = time.Now()
	return r.s, r.err
}

func (f *fakeSource) close() error { f.closed++; return f.errC }

func (f *fakeSource) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}

func gpu(i int, clock uint32, temp uint32, power float64, mask uint64) GPU {
	return GPU{Index: i, UUID: "GPU-" + string(rune('a'+i)), SMClockMHz: clock, MaxSMClockMHz: 1980, TemperatureC: temp,
		PowerW: power, ThrottleMask: mask, ThrottleReasons: ThrottleReasonNames(mask)}
}

func TestMonitorClose(t *testing.T) {
	var nilM *Monitor
	assert.NoError(t, nilM.Close())
	_, err := nilM.Snapshot()
	assert.Error(t, err)

	f := &fakeSource{reads: []fakeRead{{s: Snapshot{GPUs: []GPU{}}}}, errC: errors.New("shutdown failed")}
	m := &Monitor{src: f}
	_, err = m.Snapshot()
	require.NoError(t, err)
	assert.EqualError(t, m.Close(), "shutdown failed")
	assert.NoError(t, m.Close())
	assert.Equal(t, 1, f.closed)
	_, err = m.Snapshot()
	assert.ErrorIs(t, err, errClosed)
}

func TestSamplerFold(t *testing.T) {
	unsupportedClock := gpu(1, 0, 50, 10, 0)
	unsupportedClock.Unsupported = []string{"sm_clock_mhz"}
	f := &fakeSource{reads: []fakeRead{
		{s: Snapshot{GPUs: []GPU{gpu(0, 1980, 40, 300, 0), unsupportedClock}}},
		{s: Snapshot{GPUs: []GPU{gpu(0, 1400, 70, 650.5, ReasonSwPowerCap), unsupportedClock}}},
		{err: errors.New("gpu 0: lost")},
		{s: Snapshot{GPUs: []GPU{gpu(0, 1700, 60, 500, ReasonHwSlowdown|ReasonSwPowerCap), unsupportedClock}}},
	}}
	m := &Monitor{src: f}
	ctx, cancel := context.WithCancel(context.Background())
	s := StartSampler(ctx, m, time.Hour)
	for range 3 {
		s.SampleNow()
	}
	st := s.Stats()
	assert.Equal(t, 3, st.Samples)
	assert.Equal(t, 1, st.Errors)
	assert.Equal(t, "gpu 0: lost", st.LastError)
	require.Len(t, st.GPUs, 2)
	assert.Equal(t, GPUStats{Index: 0, UUID: "GPU-a", MinSMClockMHz: 1400, MaxSMClockMHz: 1980, MaxTemperatureC: 70,
		MaxPowerW: 650.5, ThrottleReasons: []string{"sw_power_cap", "hw_slowdown"}, ThrottleMask: 0xc}, st.GPUs[0])
	// Unsupported clock: no 0 MHz minimum invented.
	assert.Equal(t, GPUStats{Index: 1, UUID: "GPU-b", MaxTemperatureC: 50, MaxPowerW: 10, ThrottleReasons: []string{}}, st.GPUs[1])

	// The copy is the caller's.
	st.GPUs[0].ThrottleReasons[0] = "changed"
	assert.Equal(t, "sw_power_cap", s.Stats().GPUs[0].ThrottleReasons[0])

	latest, err := s.Latest()
	require.NoError(t, err)
	assert.Equal(t, uint32(1700), latest.GPUs[0].SMClockMHz)

	s.Reset()
	st = s.Stats()
	assert.Equal(t, 0, st.Samples)
	assert.Equal(t, []GPUStats{}, st.GPUs)
	cancel()
	select {
	case <-s.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("sampler goroutine did not stop after cancel")
	}
}

// Latest keeps the last good reading and reports the latest failure.
func TestSamplerLatestError(t *testing.T) {
	f := &fakeSource{reads: []fakeRead{
		{s: Snapshot{DriverVersion: "good", GPUs: []GPU{gpu(0, 1980, 40, 300, 0)}}},
		{err: errors.New("gpu 0: lost")},
	}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := StartSampler(ctx, &Monitor{src: f}, time.Hour)
	snap, err := s.Latest()
	require.NoError(t, err)
	assert.Equal(t, "good", snap.DriverVersion)
	_, err = s.SampleNow()
	require.Error(t, err)
	snap, err = s.Latest()
	assert.EqualError(t, err, "gpu 0: lost")
	assert.Equal(t, "good", snap.DriverVersion)
}

// The goroutine reads on its own every interval and stops with its context.
func TestSamplerPeriodic(t *testing.T) {
	f := &fakeSource{reads: []fakeRead{{s: Snapshot{GPUs: []GPU{gpu(0, 1980, 40, 300, 0)}}}}}
	ctx, cancel := context.WithCancel(context.Background())
	s := StartSampler(ctx, &Monitor{src: f}, time.Millisecond)
	deadline := time.Now().Add(10 * time.Second)
	for s.Stats().Samples < 5 {
		require.True(t, time.Now().Before(deadline), "only %d samples", s.Stats().Samples)
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-s.Done()
	n := f.count()
	time.Sleep(20 * time.Millisecond)
	assert.Equal(t, n, f.count(), "no reading after Done")
}

func TestSamplerDefaultInterval(t *testing.T) {
	f := &fakeSource{reads: []fakeRead{{s: Snapshot{GPUs: []GPU{}}}}}
	ctx, cancel := context.WithCancel(context.Background())
	s := StartSampler(ctx, &Monitor{src: f}, 0)
	assert.Equal(t, DefaultInterval, s.interval)
	assert.Equal(t, 1, s.Stats().Samples, "StartSampler reads once before returning")
	cancel()
	<-s.Done()
}
