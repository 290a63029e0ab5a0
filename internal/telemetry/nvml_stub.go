//go:build !(linux && cgo) || nonvml

package telemetry

import "runtime"

// Open reports that NVML is not available: go-nvml needs cgo on Linux
// (NVIDIA/go-nvml#49), and this binary lacks one of them or was built with
// -tags nonvml (which keeps go-nvml out, e.g. for a static binary).
func Open() (*Monitor, error) {
	if nonvml {
		return nil, notAvailable("this binary was built with -tags nonvml")
	}
	if runtime.GOOS != "linux" {
		return nil, notAvailable("NVML telemetry is supported on Linux only (this is %s)", runtime.GOOS)
	}
	return nil, notAvailable("this binary was built without cgo (CGO_ENABLED=0); go-nvml needs cgo")
}
