package main

import (
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/unitok/unitok"
	"github.com/unitok/unitok/internal/telemetry"
)

// withTelemetry makes `unitok devices` see s and err for one test.
func withTelemetry(t *testing.T, s telemetry.Snapshot, err error) {
	t.Helper()
	old := readTelemetry
	readTelemetry = func() (telemetry.Snapshot, error) { return s, err }
	t.Cleanup(func() { readTelemetry = old })
}

func twoGPUs() telemetry.Snapshot {
	return telemetry.Snapshot{DriverVersion: "550.54.15", CUDADriverVersion: 12040, GPUs: []telemetry.GPU{
		{Index: 0, Name: "NVIDIA H200", UUID: "GPU-aaaa", MemoryUsedBytes: 3 << 29, MemoryTotalBytes: 141 << 30,
			UtilizationGPUPct: 97, SMClockMHz: 1755, MaxSMClockMHz: 1980, PowerW: 612.25, TemperatureC: 61,
			ThrottleReasons: []string{"sw_power_cap"}, ThrottleMask: 4},
		{Index: 1, Name: "NVIDIA H200", UUID: "GPU-bbbb", MemoryTotalBytes: 141 << 30, SMClockMHz: 345, MaxSMClockMHz: 1980,
			TemperatureC: 30, ThrottleReasons: []string{}, Unsupported: []string{"power_w"}},
	}}
}

func TestDevicesTable(t *testing.T) {
	withTelemetry(t, twoGPUs(), nil)
	r := cli("devices")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Empty(t, r.stderr)
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	require.Len(t, lines, 5, r.stdout)
	assert.Equal(t, "NVML ok: driver 550.54.15, CUDA 12.4, 2 GPU(s)", lines[0])
	assert.Equal(t, cudaEngineLine(), lines[1])
	assert.Regexp(t, `^CUDA engine: (not in this binary \(build with -tags cuda\)|built in)`, lines[1])
	assert.Equal(t, []string{"GPU", "NAME", "UUID", "MEMORY", "USED/TOTAL", "UTIL", "SM", "CLOCK/MAX", "POWER", "TEMP", "THROTTLE"}, strings.Fields(lines[2]))
	assert.Equal(t, []string{"0", "NVIDIA", "H200", "GPU-aaaa", "1.5/141.0", "GiB", "97%", "1755/1980", "MHz", "612.2", "W", "61", "C", "sw_power_cap"}, strings.Fields(lines[3]))
	assert.Equal(t, []string{"1", "NVIDIA", "H200", "GPU-bbbb", "0.0/141.0", "GiB", "0%", "345/1980", "MHz", "n/a", "30", "C", "none"}, strings.Fields(lines[4]))
	// Columns line up.
	assert.Equal(t, strings.Index(lines[2], "THROTTLE"), strings.Index(lines[3], "sw_power_cap"))
}

func TestDevicesJSON(t *testing.T) {
	withTelemetry(t, twoGPUs(), nil)
	r := cli("devices", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Empty(t, r.stderr)
	assert.Equal(t, 1, strings.Count(r.stdout, "\n"), "one object on one line")
	assert.JSONEq(t, `{"nvml":"ok","driver_version":"550.54.15","cuda_driver_version":12040,"gpus":[
		{"index":0,"name":"NVIDIA H200","uuid":"GPU-aaaa","memory_used_bytes":1610612736,"memory_total_bytes":151397597184,
		 "utilization_gpu_pct":97,"sm_clock_mhz":1755,"max_sm_clock_mhz":1980,"power_w":612.25,"temperature_c":61,
		 "throttle_reasons":["sw_power_cap"]},
		{"index":1,"name":"NVIDIA H200","uuid":"GPU-bbbb","memory_used_bytes":0,"memory_total_bytes":151397597184,
		 "utilization_gpu_pct":0,"sm_clock_mhz":345,"max_sm_clock_mhz":1980,"power_w":0,"temperature_c":30,
		 "throttle_reasons":[],"unsupported":["power_w"]}]}`, r.stdout)
}

func TestDevicesNoNVML(t *testing.T) {
	noNVML := &telemetry.NotAvailableError{Reason: "nvmlInit: Driver Not Loaded"}
	withTelemetry(t, telemetry.Snapshot{}, noNVML)

	r := cli("devices")
	assert.Equal(t, 1, r.code)
	assert.Empty(t, r.stdout)
	assert.Equal(t, "unitok: NVML not available: nvmlInit: Driver Not Loaded\n", r.stderr)

	r = cli("devices", "--json")
	assert.Equal(t, 1, r.code)
	assert.Equal(t, `{"nvml":"nvmlInit: Driver Not Loaded","driver_version":"","cuda_driver_version":0,"gpus":[]}`+"\n", r.stdout)
	assert.Equal(t, "unitok: NVML not available: nvmlInit: Driver Not Loaded\n", r.stderr)
}

// A reading that fails half way: what was read is shown, and the exit is 1.
func TestDevicesPartialFailure(t *testing.T) {
	s := twoGPUs()
	withTelemetry(t, s, errors.New("gpu 1: nvmlDeviceGetTemperature: GPU is lost"))
	r := cli("devices")
	assert.Equal(t, 1, r.code)
	assert.Contains(t, r.stdout, "GPU-bbbb")
	assert.Equal(t, "unitok: gpu 1: nvmlDeviceGetTemperature: GPU is lost\n", r.stderr)

	r = cli("devices", "--json")
	assert.Equal(t, 1, r.code)
	var rep telemetry.Report
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &rep))
	assert.Equal(t, "gpu 1: nvmlDeviceGetTemperature: GPU is lost", rep.NVML)
	assert.Len(t, rep.GPUs, 2)
}

func TestDevicesBadArgs(t *testing.T) {
	withTelemetry(t, twoGPUs(), nil)
	r := cli("devices", "extra")
	assert.Equal(t, 1, r.code)
	assert.Empty(t, r.stdout)
	assert.Equal(t, "unitok: devices: unexpected argument \"extra\" (devices takes only --json, --watch and --count)\n", r.stderr)
	r = cli("devices", "--jsn")
	assert.Equal(t, 1, r.code)
	assert.Equal(t, "unitok: devices: unknown flag --jsn\n", r.stderr)
	r = cli("devices", "-h")
	assert.Equal(t, 0, r.code)
	assert.Contains(t, r.stdout, "devices  [--json [--watch D [--count N]]]")
}

// The real NVML of this machine: without a driver (the build machines), exit
// 1 with the one line, never a crash; with one (a GPU host), exit 0.
func TestDevicesReal(t *testing.T) {
	r := cli("devices", "--json")
	var rep telemetry.Report
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &rep), r.stdout)
	require.NotNil(t, rep.GPUs)
	if rep.NVML != "ok" {
		t.Logf("no NVML here: %s", rep.NVML)
		assert.Equal(t, 1, r.code)
		assert.Empty(t, rep.GPUs)
		assert.Equal(t, "unitok: NVML not available: "+rep.NVML+"\n", r.stderr)
		h := cli("devices")
		assert.Equal(t, 1, h.code)
		assert.Empty(t, h.stdout)
		assert.Equal(t, r.stderr, h.stderr)
		w := cli("devices", "--json", "--watch", "10ms", "--count", "2")
		assert.Equal(t, 1, w.code)
		assert.Equal(t, 1, strings.Count(w.stdout, "\n"), "stops at once without NVML")
		assert.Contains(t, w.stdout, `"nvml":`+strconv.Quote(rep.NVML))
		return
	}
	assert.Equal(t, 0, r.code, r.stderr)
	assert.NotEmpty(t, rep.GPUs)
	t.Logf("%s", r.stdout)
	h := cli("devices")
	assert.Equal(t, 0, h.code, h.stderr)
	t.Logf("\n%s", h.stdout)
	w := cli("devices", "--json", "--watch", "10ms", "--count", "2")
	assert.Equal(t, 0, w.code, w.stderr)
	assert.Equal(t, 2, strings.Count(w.stdout, "\n"))
}

// The CUDA engine line says what this build has: in a cuda build the
// runtime's device count (or why there is none).
func TestCUDAEngineLine(t *testing.T) {
	line := cudaEngineLine()
	t.Log(line)
	if !slices.Contains(unitok.Devices(), "cuda") {
		assert.Equal(t, "CUDA engine: not in this binary (build with -tags cuda)", line)
		return
	}
	require.NotNil(t, cudaDeviceCount)
	assert.Regexp(t, `^CUDA engine: built in; (the CUDA runtime sees [0-9]+ GPU\(s\)|no GPU usable: .+)$`, line)
}

// fakeMonitor replays readings; the last one repeats.
type fakeMonitor struct {
	reads  []fakeReading
	n      int
	closed bool
}

type fakeReading struct {
	s   telemetry.Snapshot
	err error
}

func (f *fakeMonitor) Snapshot() (telemetry.Snapshot, error) {
	r := f.reads[min(f.n, len(f.reads)-1)]
	f.n++
	r.s.Time = time.Now()
	return r.s, r.err
}

func (f *fakeMonitor) Close() error { f.closed = true; return nil }

func withMonitor(t *testing.T, m deviceMonitor, err error) {
	t.Helper()
	old := openTelemetry
	openTelemetry = func() (deviceMonitor, error) { return m, err }
	t.Cleanup(func() { openTelemetry = old })
}

func TestDevicesWatch(t *testing.T) {
	lost := errors.New("gpu 1: nvmlDeviceGetTemperature: GPU is lost")
	f := &fakeMonitor{reads: []fakeReading{{s: twoGPUs()}, {s: twoGPUs(), err: lost}, {s: twoGPUs()}}}
	withMonitor(t, f, nil)
	r := cli("devices", "--json", "--watch", "1ms", "--count", "3")
	assert.Equal(t, 0, r.code, r.stderr)
	assert.True(t, f.closed)
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	require.Len(t, lines, 3, r.stdout)
	var prev time.Time
	for i, l := range lines {
		var obj map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &obj), l)
		assert.ElementsMatch(t, []string{"time", "nvml", "driver_version", "cuda_driver_version", "gpus"}, keys(obj))
		ts, err := time.Parse(time.RFC3339Nano, obj["time"].(string))
		require.NoError(t, err)
		assert.True(t, ts.After(prev), "times increase")
		prev = ts
		assert.Len(t, obj["gpus"], 2)
		if i == 1 {
			assert.Equal(t, lost.Error(), obj["nvml"])
		} else {
			assert.Equal(t, "ok", obj["nvml"])
		}
	}

	// The last reading failed: exit 1.
	f = &fakeMonitor{reads: []fakeReading{{s: twoGPUs()}, {s: twoGPUs(), err: lost}}}
	withMonitor(t, f, nil)
	r = cli("devices", "--json", "--watch", "1ms", "--count", "2")
	assert.Equal(t, 1, r.code)
	assert.Equal(t, 2, strings.Count(r.stdout, "\n"))
	assert.Equal(t, "unitok: "+lost.Error()+"\n", r.stderr)

	// No NVML: one line and exit 1, at once.
	withMonitor(t, nil, &telemetry.NotAvailableError{Reason: "no driver"})
	r = cli("devices", "--json", "--watch", "1h")
	assert.Equal(t, 1, r.code)
	assert.Regexp(t, `^\{"time":"[0-9T:.Z-]+","nvml":"no driver","driver_version":"","cuda_driver_version":0,"gpus":\[\]\}\n$`, r.stdout)
	assert.Equal(t, "unitok: NVML not available: no driver\n", r.stderr)

	for _, c := range []struct {
		args []string
		msg  string
	}{
		{[]string{"--watch", "1s"}, "devices: --watch needs --json"},
		{[]string{"--json", "--count", "2"}, "devices: --count needs --watch"},
		{[]string{"--json", "--watch", "-1s"}, "devices: --watch -1s is negative"},
		{[]string{"--json", "--watch", "1s", "--count", "-1"}, "devices: --count -1 is negative"},
	} {
		r := cli(append([]string{"devices"}, c.args...)...)
		assert.Equal(t, 1, r.code, c.args)
		assert.Empty(t, r.stdout, c.args)
		assert.Equal(t, "unitok: "+c.msg+"\n", r.stderr, c.args)
	}
}

func keys(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
