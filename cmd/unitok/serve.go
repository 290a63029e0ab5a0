package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"image"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/unitok/unitok"
	"github.com/unitok/unitok/api"
	"github.com/unitok/unitok/batch"
	"github.com/unitok/unitok/internal/imageio"
	"github.com/unitok/unitok/internal/telemetry"
	"github.com/unitok/unitok/server"
)

// The tokenizer serves the image routes when its checkpoint has the model.
var _ batch.ImageEngine = (*unitok.Tokenizer)(nil)

// decodeImage is the server's image decoder: internal/imageio (PIL's
// conversion rules, the pixel limit read from the header).
func decodeImage(r io.Reader, maxPixels int) (image.Image, error) {
	img, _, err := imageio.Decode(r, int64(maxPixels))
	if errors.Is(err, imageio.ErrTooLarge) {
		return nil, fmt.Errorf("%w: %v", server.ErrTooManyPixels, err)
	}
	return img, err
}

// encodePNG writes one (3, S, S) image in [-1, 1] as inference.py's save_img does.
func encodePNG(w io.Writer, x []float32, S int) error {
	img, err := imageio.FromTensor(x, 3, S, S)
	if err != nil {
		return err
	}
	return imageio.EncodePNG(w, img)
}

// gpuStats samples NVML once a second for the server's per-GPU gauges; nil
// (no GPU gauges) where NVML is not available, with the reason logged once.
func gpuStats(ctx context.Context, log *slog.Logger) func() []server.GPUStat {
	m, err := telemetry.Open()
	if err != nil {
		log.Info("no GPU gauges", "reason", err.Error())
		return nil
	}
	s := telemetry.StartSampler(ctx, m, time.Second)
	go func() { <-s.Done(); m.Close() }()
	return func() []server.GPUStat {
		snap, _ := s.Latest()
		out := make([]server.GPUStat, 0, len(snap.GPUs))
		for _, g := range snap.GPUs {
			// A field NVML does not report is negative: not exported.
			val := func(name string, v float64) float64 {
				if !g.Supported(name) {
					return -1
				}
				return v
			}
			out = append(out, server.GPUStat{
				Index: g.Index, Name: g.Name,
				UtilizationPct:  val("utilization_gpu_pct", float64(g.UtilizationGPUPct)),
				MemoryUsedBytes: val("memory_used_bytes", float64(g.MemoryUsedBytes)),
				MemoryTotal:     val("memory_total_bytes", float64(g.MemoryTotalBytes)),
				SMClockHz:       val("sm_clock_mhz", float64(g.SMClockMHz)*1e6),
				MemClockHz:      -1,
				PowerWatts:      val("power_w", g.PowerW),
				TemperatureC:    val("temperature_c", float64(g.TemperatureC)),
				ThrottleReasons: val("throttle_reasons", float64(g.ThrottleMask)),
			})
		}
		return out
	}
}

const serveUsage = `usage: unitok serve --checkpoint CKPT [--addr 127.0.0.1:8080] [flags]

  --max-batch N          items per engine batch (default 64)
  --max-tokens N         tokens (B*N, or rows) per engine batch (default 65536)
  --max-wait D           longest a call waits for company (default 2ms)
  --queue N              calls waiting for a batch before 429 (default 1024)
  --workers N            batches run at once (default 1)
  --max-body BYTES       request body limit (default 64 MiB)
  --max-images N         images per request (default 64)
  --max-pixels N         pixels per image (default 16777216)
  --request-timeout D    per request; expiry answers 504 (default 30s)
  --drain-timeout D      on SIGTERM/SIGINT, time for accepted requests to finish (default 30s)
  --drain-delay D        answer /readyz 503 this long before closing the listener (default 0)
  --auth-token-file F    require "Authorization: Bearer <token>" (token = the file's first line)
  --auth-open PATHS      comma-separated paths open without a token (default /healthz,/readyz,/metrics)
  --tls-cert F --tls-key F   serve HTTPS
  plus --device, --causal, --heads, --metric, --threads as for encode
`

// runServe is `unitok serve`: it returns after a clean drain (exit 0).
func runServe(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("serve")
	var ef engineFlags
	ef.register(fs)
	addr := fs.String("addr", "127.0.0.1:8080", "listen address (loopback by default)")
	maxBatch := fs.Int("max-batch", 64, "")
	maxTokens := fs.Int("max-tokens", 65536, "")
	maxWait := fs.Duration("max-wait", 2*time.Millisecond, "")
	queue := fs.Int("queue", 1024, "")
	workers := fs.Int("workers", 1, "")
	maxBody := fs.Int64("max-body", 64<<20, "")
	maxImages := fs.Int("max-images", 64, "")
	maxPixels := fs.Int("max-pixels", 4096*4096, "")
	reqTimeout := fs.Duration("request-timeout", 30*time.Second, "")
	drainTimeout := fs.Duration("drain-timeout", 30*time.Second, "")
	drainDelay := fs.Duration("drain-delay", 0, "")
	tokenFile := fs.String("auth-token-file", "", "")
	open := fs.String("auth-open", "/healthz,/readyz,/metrics", "")
	cert := fs.String("tls-cert", "", "")
	key := fs.String("tls-key", "", "")
	if pos, err := parseFlags(fs, args, nil); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, serveUsage)
		}
		return err
	} else if len(pos) > 0 {
		return fmt.Errorf("serve: unexpected argument %q", pos[0])
	}
	if ef.checkpoint == "" {
		return errors.New("serve: --checkpoint is required")
	}
	if (*cert == "") != (*key == "") {
		return errors.New("serve: --tls-cert and --tls-key go together")
	}
	var token string
	if *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			return fmt.Errorf("--auth-token-file: %v", err)
		}
		token = strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0])
		if token == "" {
			return fmt.Errorf("--auth-token-file %s: empty token", *tokenFile)
		}
	}
	opts, _, err := ef.options()
	if err != nil {
		return err
	}
	tok, err := ef.openTokenizer(opts)
	if err != nil {
		return err
	}
	defer tok.Close()

	openPaths := []string{}
	for _, p := range strings.Split(*open, ",") {
		if p = strings.TrimSpace(p); p != "" {
			openPaths = append(openPaths, p)
		}
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	gpuCtx, stopGPU := context.WithCancel(context.Background())
	defer stopGPU()
	srv, err := server.New(server.Config{
		Engine:         tok,
		DecodeImage:    decodeImage,
		EncodePNG:      encodePNG,
		GPUStats:       gpuStats(gpuCtx, log),
		Batch:          batch.Options{MaxBatch: *maxBatch, MaxTokens: *maxTokens, MaxWait: *maxWait, QueueSize: *queue, Workers: *workers},
		Checkpoint:     ef.checkpoint,
		ProcessMetrics: true,
		AuthToken:      token,
		OpenPaths:      openPaths,
		MaxBodyBytes:   *maxBody,
		MaxImages:      *maxImages,
		MaxPixels:      *maxPixels,
		RequestTimeout: *reqTimeout,
		DrainDelay:     *drainDelay,
		Logger:         log,
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		srv.Close(context.Background())
		return fmt.Errorf("--addr: %v", err)
	}
	if h, _, _ := net.SplitHostPort(ln.Addr().String()); !net.ParseIP(h).IsLoopback() {
		log.Warn("listening beyond loopback", "addr", ln.Addr().String(), "auth", token != "", "tls", *cert != "")
	}
	log.Info("serving", "addr", ln.Addr().String(), "device", tok.Device(), "checkpoint", ef.checkpoint,
		"routes", strings.Join([]string{api.PathEncode, api.PathDecode, api.PathQuantize, api.PathLookup}, ","))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return srv.Serve(ctx, ln, *drainTimeout, *cert, *key)
}
