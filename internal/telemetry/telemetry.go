// Package telemetry reads per-GPU state (memory, utilization, SM clock,
// power, temperature, throttle reasons) from NVIDIA's management library,
// NVML, through github.com/NVIDIA/go-nvml.
//
// NVML is loaded at run time: go-nvml dlopens libnvidia-ml.so.1 on Open, so
// a binary that uses this package has no link-time dependency on the driver
// and starts on any machine. Where NVML cannot be used (no driver, no GPU, a
// build without cgo, not Linux) Open returns an error matching
// ErrNotAvailable whose text is "NVML not available: <reason>"; nothing
// panics.
//
// go-nvml needs cgo (NVIDIA/go-nvml#49), so the NVML code lives in a
// linux && cgo file; other builds, and builds with -tags nonvml, get a stub
// whose Open always reports "not available". This is the only package that
// imports go-nvml.
//
// Linking go-nvml makes the default build of a command a dynamically linked
// cgo executable (glibc's dlopen). A statically linked one cannot use NVML
// (its NVML calls are bound to address 0); Open detects that and reports
// "not available" rather than crash.
//
// NVML enumerates every GPU on the machine in NVML order (PCI bus order);
// CUDA_VISIBLE_DEVICES does not apply to it, so NVML index i need not be
// CUDA ordinal i.
package telemetry

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// ErrNotAvailable is matched (errors.Is) by every error saying that NVML
// cannot be used on this machine or in this build.
var ErrNotAvailable = errors.New("NVML not available")

// NotAvailableError says why NVML cannot be used. Its text is
// "NVML not available: <Reason>"; errors.Is(err, ErrNotAvailable) holds.
type NotAvailableError struct {
	// Reason is the cause alone, e.g. "libnvidia-ml.so.1: cannot open
	// shared object file: No such file or directory" or
	// "nvmlInit: Driver Not Loaded".
	Reason string
}

func (e *NotAvailableError) Error() string { return ErrNotAvailable.Error() + ": " + e.Reason }

// Is makes errors.Is(err, ErrNotAvailable) true.
func (e *NotAvailableError) Is(target error) bool { return target == ErrNotAvailable }

func notAvailable(format string, args ...any) error {
	return &NotAvailableError{Reason: fmt.Sprintf(format, args...)}
}

// GPU is one reading of one GPU. The JSON names are the ones printed by
// `unitok devices --json`.
type GPU struct {
	// Index is NVML's device index (0-based, PCI bus order).
	Index int    `json:"index"`
	Name  string `json:"name"`
	UUID  string `json:"uuid"`
	// Memory in bytes (nvmlDeviceGetMemoryInfo).
	MemoryUsedBytes  uint64 `json:"memory_used_bytes"`
	MemoryTotalBytes uint64 `json:"memory_total_bytes"`
	// UtilizationGPUPct is the percent of the last sample period (1/6 s to
	// 1 s depending on the product) during which a kernel was running.
	UtilizationGPUPct uint32 `json:"utilization_gpu_pct"`
	// SM clock now and the highest SM clock the GPU can run at, in MHz.
	SMClockMHz    uint32 `json:"sm_clock_mhz"`
	MaxSMClockMHz uint32 `json:"max_sm_clock_mhz"`
	// PowerW is the board's power draw in watts (NVML reports milliwatts).
	PowerW float64 `json:"power_w"`
	// TemperatureC is the GPU core temperature in degrees Celsius.
	TemperatureC uint32 `json:"temperature_c"`
	// ThrottleReasons names the bits of the clocks event (throttle) reason
	// mask, in bit order; see ThrottleReasonNames. Never nil.
	ThrottleReasons []string `json:"throttle_reasons"`
	// ThrottleMask is the raw mask the names come from.
	ThrottleMask uint64 `json:"-"`
	// Unsupported lists the JSON names of the fields that NVML reports as
	// not supported on this GPU (left zero). Empty on a full GPU, so the
	// key is then absent from the JSON.
	Unsupported []string `json:"unsupported,omitempty"`
}

// Supported reports whether field (a JSON name such as "power_w") was read.
func (g *GPU) Supported(field string) bool { return !slices.Contains(g.Unsupported, field) }

// Snapshot is one reading of every GPU on the machine.
type Snapshot struct {
	// Time is when the reading started.
	Time time.Time `json:"-"`
	// DriverVersion is the NVIDIA driver, e.g. "550.54.15".
	DriverVersion string `json:"driver_version"`
	// CUDADriverVersion is the CUDA version the driver supports, as NVML
	// encodes it: 1000*major + 10*minor (12040 is CUDA 12.4).
	CUDADriverVersion int `json:"cuda_driver_version"`
	// GPUs in NVML index order. Never nil after a successful Snapshot.
	GPUs []GPU `json:"gpus"`
}

// Report is the object `unitok devices --json` prints: NVML is "ok" or the
// reason it cannot be used (or the error a reading hit), and GPUs is []
// (never null) when there is nothing to report.
type Report struct {
	NVML              string `json:"nvml"`
	DriverVersion     string `json:"driver_version"`
	CUDADriverVersion int    `json:"cuda_driver_version"`
	GPUs              []GPU  `json:"gpus"`
}

// NewReport builds the report of a reading: s and err as Snapshot (or Read)
// returned them.
func NewReport(s Snapshot, err error) Report {
	r := Report{NVML: "ok", DriverVersion: s.DriverVersion, CUDADriverVersion: s.CUDADriverVersion, GPUs: s.GPUs}
	if err != nil {
		var na *NotAvailableError
		if errors.As(err, &na) {
			r.NVML = na.Reason
		} else {
			r.NVML = err.Error()
		}
	}
	if r.GPUs == nil {
		r.GPUs = []GPU{}
	}
	return r
}

// Throttle (clocks event) reason bits, as in nvml.h
// (nvmlClocksEventReason*). They are repeated here so that decoding works
// in builds without NVML; a cgo test checks them against go-nvml.
const (
	ReasonGpuIdle                   uint64 = 0x1
	ReasonApplicationsClocksSetting uint64 = 0x2
	ReasonSwPowerCap                uint64 = 0x4
	ReasonHwSlowdown                uint64 = 0x8
	ReasonSyncBoost                 uint64 = 0x10
	ReasonSwThermalSlowdown         uint64 = 0x20
	ReasonHwThermalSlowdown         uint64 = 0x40
	ReasonHwPowerBrakeSlowdown      uint64 = 0x80
	ReasonDisplayClockSetting       uint64 = 0x100
	ReasonBoardLimit                uint64 = 0x200
	ReasonReliability               uint64 = 0x400
)

var reasonNames = []struct {
	bit  uint64
	name string
}{
	{ReasonGpuIdle, "gpu_idle"},
	{ReasonApplicationsClocksSetting, "applications_clocks_setting"},
	{ReasonSwPowerCap, "sw_power_cap"},
	{ReasonHwSlowdown, "hw_slowdown"},
	{ReasonSyncBoost, "sync_boost"},
	{ReasonSwThermalSlowdown, "sw_thermal_slowdown"},
	{ReasonHwThermalSlowdown, "hw_thermal_slowdown"},
	{ReasonHwPowerBrakeSlowdown, "hw_power_brake_slowdown"},
	{ReasonDisplayClockSetting, "display_clock_setting"},
	{ReasonBoardLimit, "board_limit"},
	{ReasonReliability, "reliability"},
}

// ThrottleReasonNames decodes a clocks event (throttle) reason mask into
// names in bit order: gpu_idle, applications_clocks_setting, sw_power_cap,
// hw_slowdown, sync_boost, sw_thermal_slowdown, hw_thermal_slowdown,
// hw_power_brake_slowdown, display_clock_setting, board_limit,
// reliability; a bit this list does not know becomes "unknown_0x<bit>".
// An empty mask gives an empty, non-nil slice. "gpu_idle" is not a
// slowdown: an idle GPU drops its clocks.
func ThrottleReasonNames(mask uint64) []string {
	out := []string{}
	for _, r := range reasonNames {
		if mask&r.bit != 0 {
			out = append(out, r.name)
			mask &^= r.bit
		}
	}
	for b := uint(0); b < 64 && mask != 0; b++ {
		if mask&(1<<b) != 0 {
			out = append(out, fmt.Sprintf("unknown_0x%x", uint64(1)<<b))
			mask &^= 1 << b
		}
	}
	return out
}

// source is what a Monitor reads from: NVML in linux && cgo builds, a fake
// in tests.
type source interface {
	snapshot() (Snapshot, error)
	close() error
}

// Monitor is an open NVML session. Its methods are safe for concurrent use;
// readings are serialized.
type Monitor struct {
	mu  sync.Mutex
	src source // nil once closed
}

// errClosed is returned by Snapshot after Close.
var errClosed = errors.New("telemetry: monitor is closed")

// Snapshot reads every GPU. On a failed query (a GPU fallen off the bus,
// for one) it returns what it could read together with an error naming
// the GPU and the query; fields NVML does not support on a GPU are left
// zero and listed in GPU.Unsupported, which is not an error.
func (m *Monitor) Snapshot() (Snapshot, error) {
	if m == nil {
		return Snapshot{}, errClosed
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.src == nil {
		return Snapshot{}, errClosed
	}
	return m.src.snapshot()
}

// Close ends the NVML session (nvmlShutdown). It is idempotent and nil-safe.
func (m *Monitor) Close() error {
	if m == nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.src == nil {
		return nil
	}
	err := m.src.close()
	m.src = nil
	return err
}

// Read opens NVML, takes one Snapshot and closes it: for a one-off report
// such as `unitok devices`. Code that reads repeatedly keeps a Monitor.
func Read() (Snapshot, error) {
	m, err := Open()
	if err != nil {
		return Snapshot{}, err
	}
	s, err := m.Snapshot()
	if cerr := m.Close(); err == nil && cerr != nil {
		err = cerr
	}
	return s, err
}
