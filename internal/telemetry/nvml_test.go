//go:build linux && cgo && !nonvml

package telemetry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh200"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Our copies of the reason bits must be nvml.h's.
func TestReasonBitsMatchNVML(t *testing.T) {
	for _, c := range []struct {
		ours, theirs uint64
	}{
		{ReasonGpuIdle, nvml.ClocksEventReasonGpuIdle},
		{ReasonApplicationsClocksSetting, nvml.ClocksEventReasonApplicationsClocksSetting},
		{ReasonSwPowerCap, nvml.ClocksEventReasonSwPowerCap},
		{ReasonHwSlowdown, nvml.ClocksThrottleReasonHwSlowdown},
		{ReasonSyncBoost, nvml.ClocksEventReasonSyncBoost},
		{ReasonSwThermalSlowdown, nvml.ClocksEventReasonSwThermalSlowdown},
		{ReasonHwThermalSlowdown, nvml.ClocksThrottleReasonHwThermalSlowdown},
		{ReasonHwPowerBrakeSlowdown, nvml.ClocksThrottleReasonHwPowerBrakeSlowdown},
		{ReasonDisplayClockSetting, nvml.ClocksEventReasonDisplayClockSetting},
		{ReasonBoardLimit, nvml.ClocksEventReasonBoardLimit},
		{ReasonReliability, nvml.ClocksEventReasonReliability},
	} {
		assert.Equal(t, c.theirs, c.ours)
	}
	// Every bit NVML defines has a name.
	for _, n := range ThrottleReasonNames(nvml.ClocksEventReasonAll) {
		assert.NotContains(t, n, "unknown", "mask %#x", nvml.ClocksEventReasonAll)
	}
	assert.Len(t, ThrottleReasonNames(nvml.ClocksEventReasonAll), 11)
}

// The real library on this machine. Without a driver (the CI and build
// machines) Open must fail with a clear error and not crash; with one (a GPU
// host) the reading must be sane.
func TestOpenRealNVML(t *testing.T) {
	m, err := Open()
	if err != nil {
		require.ErrorIs(t, err, ErrNotAvailable)
		assert.True(t, strings.HasPrefix(err.Error(), "NVML not available: "), err.Error())
		var na *NotAvailableError
		require.ErrorAs(t, err, &na)
		assert.NotEmpty(t, na.Reason)
		assert.NotContains(t, na.Reason, "\n")
		assert.Nil(t, m)
		t.Logf("no NVML here (the path under test): %v", err)

		// Read and the report say the same.
		s, rerr := Read()
		require.ErrorIs(t, rerr, ErrNotAvailable)
		rep := NewReport(s, rerr)
		assert.Equal(t, na.Reason, rep.NVML)
		b, jerr := json.Marshal(rep)
		require.NoError(t, jerr)
		assert.Contains(t, string(b), `"gpus":[]`)
		return
	}
	defer func() { require.NoError(t, m.Close()) }()
	s, err := m.Snapshot()
	require.NoError(t, err)
	t.Logf("NVML: driver %s, CUDA %d, %d GPU(s)", s.DriverVersion, s.CUDADriverVersion, len(s.GPUs))
	require.NotEmpty(t, s.DriverVersion)
	require.Greater(t, s.CUDADriverVersion, 1000)
	for _, g := range s.GPUs {
		t.Logf("%+v", g)
		assert.NotEmpty(t, g.Name)
		assert.True(t, strings.HasPrefix(g.UUID, "GPU-") || strings.HasPrefix(g.UUID, "MIG-"), g.UUID)
		assert.Greater(t, g.MemoryTotalBytes, uint64(0))
		assert.LessOrEqual(t, g.MemoryUsedBytes, g.MemoryTotalBytes)
		if g.Supported("sm_clock_mhz") && g.Supported("max_sm_clock_mhz") {
			assert.Greater(t, g.SMClockMHz, uint32(0))
			assert.LessOrEqual(t, g.SMClockMHz, g.MaxSMClockMHz)
		}
		assert.LessOrEqual(t, g.UtilizationGPUPct, uint32(100))
		assert.Less(t, g.TemperatureC, uint32(120))
	}
}

// A library file that does not exist: the reason is dlopen's own message.
func TestOpenLibraryMissing(t *testing.T) {
	m, err := openPath("/nonexistent/unitok/libnvidia-ml.so.1")
	require.ErrorIs(t, err, ErrNotAvailable)
	assert.Nil(t, m)
	assert.Contains(t, err.Error(), "NVML not available: /nonexistent/unitok/libnvidia-ml.so.1: cannot open shared object file")
}

// h200 is go-nvml's simulated DGX H200 (8 GPUs), with the dynamic
// queries the mock leaves unset answered per GPU i by distinct values:
// used memory (i+1) GiB, utilization 10i %, SM clock 1000+10i MHz of max
// 1980, power 100.5+i W, temperature 30+i C, and throttle reasons
// depending on i.
func h200(t *testing.T) *server.Server {
	t.Helper()
	s := dgxh200.New()
	require.Len(t, s.Devices, 8)
	for i, dev := range s.Devices {
		d := dev.(*server.Device)
		d.MemoryInfo.Used = uint64(i+1) << 30
		d.GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) {
			return nvml.Utilization{Gpu: uint32(10 * i), Memory: 99}, nvml.SUCCESS
		}
		d.GetClockInfoFunc = func(c nvml.ClockType) (uint32, nvml.Return) {
			if c != nvml.CLOCK_SM {
				return 7, nvml.SUCCESS // a wrong clock domain shows
			}
			return uint32(1000 + 10*i), nvml.SUCCESS
		}
		d.GetMaxClockInfoFunc = func(c nvml.ClockType) (uint32, nvml.Return) {
			if c != nvml.CLOCK_SM {
				return 8, nvml.SUCCESS
			}
			return 1980, nvml.SUCCESS
		}
		d.GetPowerUsageFunc = func() (uint32, nvml.Return) { return uint32(100500 + 1000*i), nvml.SUCCESS }
		d.GetTemperatureFunc = func(s nvml.TemperatureSensors) (uint32, nvml.Return) {
			if s != nvml.TEMPERATURE_GPU {
				return 999, nvml.SUCCESS
			}
			return uint32(30 + i), nvml.SUCCESS
		}
		d.GetCurrentClocksEventReasonsFunc = func() (uint64, nvml.Return) {
			switch i {
			case 0:
				return nvml.ClocksEventReasonGpuIdle, nvml.SUCCESS
			case 1:
				return nvml.ClocksEventReasonSwPowerCap | nvml.ClocksThrottleReasonHwThermalSlowdown, nvml.SUCCESS
			}
			return 0, nvml.SUCCESS
		}
	}
	return s
}

func TestMockH200Snapshot(t *testing.T) {
	srv := h200(t)
	m, err := openWith(srv)
	require.NoError(t, err)
	s, err := m.Snapshot()
	require.NoError(t, err)
	assert.Equal(t, "550.54.15", s.DriverVersion)
	assert.Equal(t, 12040, s.CUDADriverVersion)
	assert.WithinDuration(t, time.Now(), s.Time, time.Minute)
	require.Len(t, s.GPUs, 8)
	for i, g := range s.GPUs {
		want := GPU{
			Index:             i,
			Name:              "NVIDIA H200 141GB HBM3e",
			UUID:              srv.Devices[i].(*server.Device).UUID,
			MemoryUsedBytes:   uint64(i+1) << 30,
			MemoryTotalBytes:  144384 << 20,
			UtilizationGPUPct: uint32(10 * i),
			SMClockMHz:        uint32(1000 + 10*i),
			MaxSMClockMHz:     1980,
			PowerW:            100.5 + float64(i),
			TemperatureC:      uint32(30 + i),
			ThrottleReasons:   []string{},
		}
		switch i {
		case 0:
			want.ThrottleReasons, want.ThrottleMask = []string{"gpu_idle"}, 1
		case 1:
			want.ThrottleReasons, want.ThrottleMask = []string{"sw_power_cap", "hw_thermal_slowdown"}, 0x44
		}
		assert.Equal(t, want, g, "gpu %d", i)
	}
	assert.NotEqual(t, s.GPUs[0].UUID, s.GPUs[1].UUID)

	// The JSON of the report has exactly the agreed keys and values.
	b, err := json.Marshal(NewReport(s, nil))
	require.NoError(t, err)
	var obj map[string]any
	require.NoError(t, json.Unmarshal(b, &obj))
	assert.ElementsMatch(t, []string{"nvml", "driver_version", "cuda_driver_version", "gpus"}, keys(obj))
	assert.Equal(t, "ok", obj["nvml"])
	assert.Equal(t, "550.54.15", obj["driver_version"])
	assert.Equal(t, 12040.0, obj["cuda_driver_version"])
	gpus := obj["gpus"].([]any)
	require.Len(t, gpus, 8)
	g1 := gpus[1].(map[string]any)
	assert.ElementsMatch(t, []string{"index", "name", "uuid", "memory_used_bytes", "memory_total_bytes",
		"utilization_gpu_pct", "sm_clock_mhz", "max_sm_clock_mhz", "power_w", "temperature_c", "throttle_reasons"}, keys(g1))
	assert.Equal(t, map[string]any{
		"index": 1.0, "name": "NVIDIA H200 141GB HBM3e", "uuid": s.GPUs[1].UUID,
		"memory_used_bytes": float64(2 << 30), "memory_total_bytes": float64(144384 << 20),
		"utilization_gpu_pct": 10.0, "sm_clock_mhz": 1010.0, "max_sm_clock_mhz": 1980.0,
		"power_w": 101.5, "temperature_c": 31.0,
		"throttle_reasons": []any{"sw_power_cap", "hw_thermal_slowdown"},
	}, g1)
	// No reasons is [], not null.
	assert.Contains(t, string(b), `"throttle_reasons":[]`)
	assert.NotContains(t, string(b), "null")

	var shut atomic.Int32
	srv.ShutdownFunc = func() nvml.Return { shut.Add(1); return nvml.SUCCESS }
	require.NoError(t, m.Close())
	require.NoError(t, m.Close())
	assert.Equal(t, int32(1), shut.Load(), "Close shuts NVML down once")
	_, err = m.Snapshot()
	assert.Error(t, err)
}

func keys(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// A driver older than 535 has no nvmlDeviceGetCurrentClocksEventReasons:
// the throttle-reasons call is used instead, and the new one is never
// called (the mock panics if it were).
func TestMockOldDriverThrottleReasons(t *testing.T) {
	srv := h200(t)
	srv.LookupSymbolFunc = func(sym string) error {
		if sym == "nvmlDeviceGetCurrentClocksEventReasons" {
			return errors.New("undefined symbol")
		}
		return nil
	}
	for _, dev := range srv.Devices {
		d := dev.(*server.Device)
		d.GetCurrentClocksEventReasonsFunc = nil
		d.GetCurrentClocksThrottleReasonsFunc = func() (uint64, nvml.Return) {
			return nvml.ClocksThrottleReasonHwSlowdown | 0x10000, nvml.SUCCESS
		}
	}
	m, err := openWith(srv)
	require.NoError(t, err)
	defer m.Close()
	s, err := m.Snapshot()
	require.NoError(t, err)
	for _, g := range s.GPUs {
		assert.Equal(t, []string{"hw_slowdown", "unknown_0x10000"}, g.ThrottleReasons)
	}
}

// NOT_SUPPORTED leaves the field zero and names it; any other failure is an
// error naming the GPU and the call, with the other GPUs still read.
func TestMockQueryFailures(t *testing.T) {
	srv := h200(t)
	srv.Devices[2].(*server.Device).GetPowerUsageFunc = func() (uint32, nvml.Return) { return 5, nvml.ERROR_NOT_SUPPORTED }
	srv.Devices[5].(*server.Device).GetTemperatureFunc = func(nvml.TemperatureSensors) (uint32, nvml.Return) {
		return 0, nvml.ERROR_GPU_IS_LOST
	}
	m, err := openWith(srv)
	require.NoError(t, err)
	defer m.Close()
	s, err := m.Snapshot()
	require.Error(t, err)
	assert.Equal(t, fmt.Sprintf("gpu 5: nvmlDeviceGetTemperature: %v", nvml.ERROR_GPU_IS_LOST), err.Error())
	assert.NotErrorIs(t, err, ErrNotAvailable)
	require.Len(t, s.GPUs, 8)
	assert.Equal(t, []string{"power_w"}, s.GPUs[2].Unsupported)
	assert.Zero(t, s.GPUs[2].PowerW)
	assert.False(t, s.GPUs[2].Supported("power_w"))
	assert.True(t, s.GPUs[2].Supported("temperature_c"))
	assert.Equal(t, 32, int(s.GPUs[2].TemperatureC))
	assert.Equal(t, 105.5, s.GPUs[5].PowerW)
	assert.Zero(t, s.GPUs[5].TemperatureC)
	assert.Equal(t, 37, int(s.GPUs[7].TemperatureC))

	rep := NewReport(s, err)
	assert.Equal(t, err.Error(), rep.NVML)
	b, jerr := json.Marshal(rep.GPUs[2])
	require.NoError(t, jerr)
	assert.Contains(t, string(b), `"unsupported":["power_w"]`)
}

func TestMockInitFails(t *testing.T) {
	srv := h200(t)
	srv.InitFunc = func() nvml.Return { return nvml.ERROR_DRIVER_NOT_LOADED }
	m, err := openWith(srv)
	assert.Nil(t, m)
	assert.ErrorIs(t, err, nvml.ERROR_DRIVER_NOT_LOADED)
}

// The sampler over the simulated H200s while their clocks, power and
// throttling change: min/max and the union follow, Reset starts over.
func TestMockSampler(t *testing.T) {
	srv := h200(t)
	var step atomic.Int32 // what reading the GPUs are at
	clocks := []uint32{1980, 1500, 1755}
	d0 := srv.Devices[0].(*server.Device)
	d0.GetClockInfoFunc = func(nvml.ClockType) (uint32, nvml.Return) { return clocks[step.Load()%3], nvml.SUCCESS }
	d0.GetPowerUsageFunc = func() (uint32, nvml.Return) { return 300000 + 100000*uint32(step.Load()%3), nvml.SUCCESS }
	d0.GetCurrentClocksEventReasonsFunc = func() (uint64, nvml.Return) {
		if step.Load() == 1 {
			return nvml.ClocksEventReasonSwPowerCap, nvml.SUCCESS
		}
		if step.Load() == 2 {
			return nvml.ClocksThrottleReasonHwSlowdown, nvml.SUCCESS
		}
		return 0, nvml.SUCCESS
	}
	m, err := openWith(srv)
	require.NoError(t, err)
	defer m.Close()
	ctx, cancel := context.WithCancel(context.Background())
	smp := StartSampler(ctx, m, time.Hour) // only explicit readings
	defer func() { cancel(); <-smp.Done() }()
	for i := int32(1); i < 3; i++ {
		step.Store(i)
		_, err := smp.SampleNow()
		require.NoError(t, err)
	}
	st := smp.Stats()
	assert.Equal(t, 3, st.Samples)
	require.Len(t, st.GPUs, 8)
	g := st.GPUs[0]
	assert.Equal(t, uint32(1500), g.MinSMClockMHz)
	assert.Equal(t, uint32(1980), g.MaxSMClockMHz)
	assert.Equal(t, 500.0, g.MaxPowerW)
	assert.Equal(t, []string{"sw_power_cap", "hw_slowdown"}, g.ThrottleReasons)
	assert.Equal(t, srv.Devices[0].(*server.Device).UUID, g.UUID)
	assert.Equal(t, GPUStats{Index: 7, UUID: srv.Devices[7].(*server.Device).UUID, MinSMClockMHz: 1070, MaxSMClockMHz: 1070,
		MaxTemperatureC: 37, MaxPowerW: 107.5, MaxUtilizationGPUPct: 70, ThrottleReasons: []string{}}, st.GPUs[7])

	latest, err := smp.Latest()
	require.NoError(t, err)
	assert.Equal(t, uint32(1755), latest.GPUs[0].SMClockMHz)

	smp.Reset()
	step.Store(0)
	smp.SampleNow()
	g = smp.Stats().GPUs[0]
	assert.Equal(t, uint32(1980), g.MinSMClockMHz)
	assert.Equal(t, []string{}, g.ThrottleReasons)
	assert.False(t, slices.Contains(g.ThrottleReasons, "hw_slowdown"))
}

// A statically linked executable would jump to address 0 in nvmlInit; it
// must be recognized (and the dynamic loader, which /proc/self/exe names
// when a program is started through it, must not be mistaken for one).
func TestIsStatic(t *testing.T) {
	st, err := isStatic("/proc/self/exe")
	require.NoError(t, err)
	assert.False(t, st, "this test binary is dynamic")
	if ld, err := filepath.EvalSymlinks("/lib64/ld-linux-x86-64.so.2"); err == nil {
		st, err := isStatic(ld)
		require.NoError(t, err)
		assert.False(t, st, "the dynamic loader")
	}
	_, err = isStatic("/nonexistent")
	assert.Error(t, err)

	cc, err := exec.LookPath("gcc")
	if err != nil {
		t.Skipf("no gcc to build a static executable: %v", err)
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "m.c")
	require.NoError(t, os.WriteFile(src, []byte("int main(void){return 0;}\n"), 0o644))
	for _, c := range []struct {
		flags  []string
		static bool
	}{{nil, false}, {[]string{"-static"}, true}, {[]string{"-static-pie"}, true}} {
		out := filepath.Join(dir, fmt.Sprintf("m%d", len(c.flags)))
		if b, err := exec.Command(cc, append(c.flags, "-o", out, src)...).CombinedOutput(); err != nil {
			t.Logf("gcc %v: %v %s (skipped)", c.flags, err, b)
			continue
		}
		out2 := out + strings.Join(c.flags, "")
		require.NoError(t, os.Rename(out, out2))
		st, err := isStatic(out2)
		require.NoError(t, err)
		assert.Equal(t, c.static, st, "gcc %v", c.flags)
	}
}
