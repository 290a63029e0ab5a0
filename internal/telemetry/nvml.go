//go:build linux && cgo && !nonvml

package telemetry

import (
	"debug/elf"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/dl"
	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// libraryName is what go-nvml dlopens by default.
const libraryName = "libnvidia-ml.so.1"

// Open loads libnvidia-ml.so.1 and starts an NVML session (nvmlInit). With
// no driver it returns an error matching ErrNotAvailable, e.g.
// "NVML not available: nvmlInit: Driver Not Loaded". Close the Monitor when
// done.
func Open() (*Monitor, error) { return openPath(libraryName) }

// openPath opens NVML from the named library file (tests point it at a
// file that does not exist).
func openPath(path string) (*Monitor, error) {
	// go-nvml calls NVML through symbols left unresolved at link time and
	// bound when dlopen loads the library RTLD_GLOBAL. A statically linked
	// executable has them fixed at address 0 instead: nvmlInit would jump
	// to 0 and kill the process (SIGSEGV), so refuse first.
	if static, err := isStatic("/proc/self/exe"); err == nil && static {
		return nil, notAvailable("this executable is statically linked and cannot load %s (link it dynamically)", path)
	}
	m, err := openWith(nvml.New(nvml.WithLibraryPath(path)))
	var r nvml.Return
	switch {
	case err == nil:
		return m, nil
	case errors.Is(err, nvml.ERROR_LIBRARY_NOT_FOUND):
		// go-nvml drops dlopen's message; ask the loader again for it.
		lib := dl.New(path, dl.RTLD_LAZY|dl.RTLD_GLOBAL)
		if derr := lib.Open(); derr != nil {
			return nil, notAvailable("%v", derr)
		}
		_ = lib.Close()
		return nil, notAvailable("%s: %v", path, nvml.ERROR_LIBRARY_NOT_FOUND)
	case errors.As(err, &r):
		return nil, notAvailable("nvmlInit: %v", r)
	}
	return nil, err
}

// isStatic reports whether the ELF executable at path is statically
// linked: no program interpreter and not the dynamic loader itself (which
// is what /proc/self/exe names when a program is started as
// "ld-linux-x86-64.so.2 PROGRAM").
func isStatic(path string) (bool, error) {
	f, err := elf.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false, nil
		}
	}
	if soname, err := f.DynString(elf.DT_SONAME); err == nil && len(soname) > 0 && strings.HasPrefix(soname[0], "ld-") {
		return false, nil
	}
	return true, nil
}

// openWith starts a session on lib: the real library, or one of go-nvml's
// mocks (pkg/nvml/mock) in tests. A failed nvmlInit comes back as the raw
// nvml.Return (openPath words it).
func openWith(lib nvml.Interface) (*Monitor, error) {
	if r := lib.Init(); r != nvml.SUCCESS {
		return nil, r
	}
	s := &nvmlSource{lib: lib}
	// nvmlDeviceGetCurrentClocksEventReasons replaced the throttle-reasons
	// call in driver 535; calling a symbol the library lacks would kill the
	// process, so look first.
	s.eventReasons = lib.Extensions().LookupSymbol("nvmlDeviceGetCurrentClocksEventReasons") == nil
	return &Monitor{src: s}, nil
}

type nvmlSource struct {
	lib          nvml.Interface
	eventReasons bool
}

func (s *nvmlSource) close() error {
	if r := s.lib.Shutdown(); r != nvml.SUCCESS {
		return fmt.Errorf("nvmlShutdown: %v", r)
	}
	return nil
}

func (s *nvmlSource) snapshot() (Snapshot, error) {
	snap := Snapshot{Time: time.Now(), GPUs: []GPU{}}
	var errs []error
	var r nvml.Return
	if snap.DriverVersion, r = s.lib.SystemGetDriverVersion(); r != nvml.SUCCESS {
		errs = append(errs, fmt.Errorf("nvmlSystemGetDriverVersion: %v", r))
	}
	if snap.CUDADriverVersion, r = s.lib.SystemGetCudaDriverVersion(); r != nvml.SUCCESS {
		errs = append(errs, fmt.Errorf("nvmlSystemGetCudaDriverVersion: %v", r))
	}
	n, r := s.lib.DeviceGetCount()
	if r != nvml.SUCCESS {
		errs = append(errs, fmt.Errorf("nvmlDeviceGetCount: %v", r))
		return snap, errors.Join(errs...)
	}
	for i := 0; i < n; i++ {
		g, err := s.readGPU(i)
		snap.GPUs = append(snap.GPUs, g)
		if err != nil {
			errs = append(errs, err)
		}
	}
	return snap, errors.Join(errs...)
}

// gpuReader collects one GPU's fields: NOT_SUPPORTED marks the field
// unsupported, any other failure is kept as the GPU's first error.
type gpuReader struct {
	g   *GPU
	err error
}

func (q *gpuReader) ok(field, call string, r nvml.Return) bool {
	switch r {
	case nvml.SUCCESS:
		return true
	case nvml.ERROR_NOT_SUPPORTED:
		q.g.Unsupported = append(q.g.Unsupported, field)
	default:
		if q.err == nil {
			q.err = fmt.Errorf("gpu %d: %s: %v", q.g.Index, call, r)
		}
	}
	return false
}

func (s *nvmlSource) readGPU(i int) (GPU, error) {
	g := GPU{Index: i, ThrottleReasons: []string{}}
	q := &gpuReader{g: &g}
	d, r := s.lib.DeviceGetHandleByIndex(i)
	if r != nvml.SUCCESS {
		return g, fmt.Errorf("gpu %d: nvmlDeviceGetHandleByIndex: %v", i, r)
	}
	if v, r := d.GetName(); q.ok("name", "nvmlDeviceGetName", r) {
		g.Name = v
	}
	if v, r := d.GetUUID(); q.ok("uuid", "nvmlDeviceGetUUID", r) {
		g.UUID = v
	}
	if v, r := d.GetMemoryInfo(); q.ok("memory_used_bytes", "nvmlDeviceGetMemoryInfo", r) {
		g.MemoryUsedBytes, g.MemoryTotalBytes = v.Used, v.Total
	}
	if v, r := d.GetUtilizationRates(); q.ok("utilization_gpu_pct", "nvmlDeviceGetUtilizationRates", r) {
		g.UtilizationGPUPct = v.Gpu
	}
	if v, r := d.GetClockInfo(nvml.CLOCK_SM); q.ok("sm_clock_mhz", "nvmlDeviceGetClockInfo(SM)", r) {
		g.SMClockMHz = v
	}
	if v, r := d.GetMaxClockInfo(nvml.CLOCK_SM); q.ok("max_sm_clock_mhz", "nvmlDeviceGetMaxClockInfo(SM)", r) {
		g.MaxSMClockMHz = v
	}
	if v, r := d.GetPowerUsage(); q.ok("power_w", "nvmlDeviceGetPowerUsage", r) {
		g.PowerW = float64(v) / 1000
	}
	if v, r := d.GetTemperature(nvml.TEMPERATURE_GPU); q.ok("temperature_c", "nvmlDeviceGetTemperature", r) {
		g.TemperatureC = v
	}
	var mask uint64
	if s.eventReasons {
		mask, r = d.GetCurrentClocksEventReasons()
		if q.ok("throttle_reasons", "nvmlDeviceGetCurrentClocksEventReasons", r) {
			g.ThrottleMask, g.ThrottleReasons = mask, ThrottleReasonNames(mask)
		}
	} else {
		mask, r = d.GetCurrentClocksThrottleReasons()
		if q.ok("throttle_reasons", "nvmlDeviceGetCurrentClocksThrottleReasons", r) {
			g.ThrottleMask, g.ThrottleReasons = mask, ThrottleReasonNames(mask)
		}
	}
	return g, q.err
}
