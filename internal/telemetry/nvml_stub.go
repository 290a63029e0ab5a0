//go:build !(linux && cgo)

package telemetry

import "runtime"

// Open reports that NVML is not available: go-nvml needs cgo on Linux
// (NVIDIA/go-nvml#49), and this binary has neither or not both.
func Open() (*Monitor, error) {
	if runtime.GOOS != "linux" {
		return nil, notAvailable("NVML telemetry is supported on Linux only (this is %s)", runtime.GOOS)
	}
	return nil, notAvailable("this binary was built without cgo (CGO_ENABLED=0); go-nvml needs cgo")
}
