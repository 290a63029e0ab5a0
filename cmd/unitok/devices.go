package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/unitok/unitok"
	"github.com/unitok/unitok/internal/telemetry"
)

// readTelemetry takes one NVML reading and openTelemetry opens NVML for
// many; tests replace them.
var (
	readTelemetry = telemetry.Read
	openTelemetry = func() (deviceMonitor, error) {
		m, err := telemetry.Open()
		if err != nil {
			return nil, err // not a typed nil in the interface
		}
		return m, nil
	}
)

// deviceMonitor is what --watch reads: a *telemetry.Monitor.
type deviceMonitor interface {
	Snapshot() (telemetry.Snapshot, error)
	Close() error
}

// cudaDeviceCount is the CUDA runtime's device count; set only in cuda
// builds (devices_cuda.go).
var cudaDeviceCount func() (int, error)

// runDevices prints the GPUs NVML sees: a table, or with --json one object
// {"nvml","driver_version","cuda_driver_version","gpus":[...]}. Without
// NVML the table mode prints only the error and --json prints the object
// with "nvml" holding the reason and "gpus":[]; both then exit 1.
//
// --json --watch D prints one such object per line every D, each with a
// "time" key added (RFC 3339, UTC), until killed or --count objects are
// out: a log to run beside a benchmark. A failed reading is printed like
// any other and watching goes on; the exit status is 1 if the last one
// failed. Without NVML it stops after the first line.
func runDevices(args []string, stdout io.Writer) error {
	fs := newFlagSet("devices")
	asJSON := fs.Bool("json", false, "print one JSON object")
	watch := fs.Duration("watch", 0, "with --json: print a reading every interval")
	count := fs.Int("count", 0, "with --watch: stop after this many readings (0: until killed)")
	pos, err := parseFlags(fs, args, stdout)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("devices: unexpected argument %q (devices takes only --json, --watch and --count)", pos[0])
	}
	switch {
	case *watch < 0:
		return fmt.Errorf("devices: --watch %v is negative", *watch)
	case *watch > 0 && !*asJSON:
		return errors.New("devices: --watch needs --json")
	case *count < 0:
		return fmt.Errorf("devices: --count %d is negative", *count)
	case *count > 0 && *watch == 0:
		return errors.New("devices: --count needs --watch")
	}
	if *watch > 0 {
		return watchDevices(stdout, *watch, *count)
	}
	snap, err := readTelemetry()
	if *asJSON {
		b, jerr := json.Marshal(telemetry.NewReport(snap, err))
		if jerr != nil {
			return jerr
		}
		if _, werr := fmt.Fprintf(stdout, "%s\n", b); werr != nil {
			return werr
		}
		return err
	}
	if errors.Is(err, telemetry.ErrNotAvailable) {
		return err
	}
	printDevices(stdout, snap)
	return err
}

// timedReport is one line of --watch: the report and when it was read.
type timedReport struct {
	Time string `json:"time"`
	telemetry.Report
}

func watchDevices(w io.Writer, every time.Duration, count int) error {
	m, err := openTelemetry()
	if err != nil {
		b, jerr := json.Marshal(timedReport{time.Now().UTC().Format(time.RFC3339Nano), telemetry.NewReport(telemetry.Snapshot{}, err)})
		if jerr != nil {
			return jerr
		}
		fmt.Fprintf(w, "%s\n", b)
		return err
	}
	defer m.Close()
	t := time.NewTicker(every)
	defer t.Stop()
	for i := 0; ; i++ {
		snap, err := m.Snapshot()
		if snap.Time.IsZero() {
			snap.Time = time.Now()
		}
		b, jerr := json.Marshal(timedReport{snap.Time.UTC().Format(time.RFC3339Nano), telemetry.NewReport(snap, err)})
		if jerr != nil {
			return jerr
		}
		if _, werr := fmt.Fprintf(w, "%s\n", b); werr != nil {
			return werr
		}
		if count > 0 && i+1 == count {
			return err
		}
		<-t.C
	}
}

func printDevices(w io.Writer, s telemetry.Snapshot) {
	cuda := s.CUDADriverVersion
	fmt.Fprintf(w, "NVML ok: driver %s, CUDA %d.%d, %d GPU(s)\n", s.DriverVersion, cuda/1000, cuda%1000/10, len(s.GPUs))
	fmt.Fprintln(w, cudaEngineLine())
	if len(s.GPUs) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "GPU\tNAME\tUUID\tMEMORY USED/TOTAL\tUTIL\tSM CLOCK/MAX\tPOWER\tTEMP\tTHROTTLE")
	for _, g := range s.GPUs {
		na := func(field, v string) string {
			if !g.Supported(field) {
				return "n/a"
			}
			return v
		}
		throttle := strings.Join(g.ThrottleReasons, ",")
		if throttle == "" {
			throttle = "none"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s/%s MHz\t%s\t%s\t%s\n", g.Index, g.Name, g.UUID,
			na("memory_used_bytes", fmt.Sprintf("%.1f/%.1f GiB", gib(g.MemoryUsedBytes), gib(g.MemoryTotalBytes))),
			na("utilization_gpu_pct", fmt.Sprintf("%d%%", g.UtilizationGPUPct)),
			na("sm_clock_mhz", fmt.Sprint(g.SMClockMHz)), na("max_sm_clock_mhz", fmt.Sprint(g.MaxSMClockMHz)),
			na("power_w", fmt.Sprintf("%.1f W", g.PowerW)),
			na("temperature_c", fmt.Sprintf("%d C", g.TemperatureC)),
			na("throttle_reasons", throttle))
	}
	tw.Flush()
}

func gib(b uint64) float64 { return float64(b) / (1 << 30) }

// cudaEngineLine says whether this binary has the CUDA engine and, if so,
// how many GPUs the CUDA runtime sees.
func cudaEngineLine() string {
	if !slices.Contains(unitok.Devices(), "cuda") {
		return "CUDA engine: not in this binary (build with -tags cuda)"
	}
	if cudaDeviceCount == nil {
		return "CUDA engine: built in"
	}
	n, err := cudaDeviceCount()
	if err != nil {
		return "CUDA engine: built in; no GPU usable: " + oneLine(err.Error())
	}
	return fmt.Sprintf("CUDA engine: built in; the CUDA runtime sees %d GPU(s)", n)
}
