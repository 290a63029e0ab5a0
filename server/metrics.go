package server

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/unitok/unitok/batch"
)

// GPUStat is one GPU's telemetry at scrape time. Fields that a device does
// not report are negative and are not exported.
// `unitok serve` fills them from internal/telemetry (NVML).
type GPUStat struct {
	Index           int
	Name            string
	UtilizationPct  float64 // 0..100
	MemoryUsedBytes float64
	MemoryTotal     float64 // bytes
	SMClockHz       float64
	MemClockHz      float64
	PowerWatts      float64
	TemperatureC    float64
	ThrottleReasons float64 // NVML's bit mask
}

type metrics struct {
	requests    *prometheus.CounterVec
	latency     *prometheus.HistogramVec
	inflight    prometheus.Gauge
	batchSize   *prometheus.HistogramVec
	batchCalls  *prometheus.HistogramVec
	batchWait   *prometheus.HistogramVec
	batchRun    *prometheus.HistogramVec
	tokens      prometheus.Counter
	images      prometheus.Counter
	errors      *prometheus.CounterVec
	queueDepth  prometheus.GaugeFunc
	batchActive prometheus.GaugeFunc
}

func newMetrics(reg prometheus.Registerer, b func() *batch.Batcher, gpus func() []GPUStat) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "unitok_http_requests_total", Help: "HTTP requests by route and status code.",
		}, []string{"route", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "unitok_http_request_duration_seconds", Help: "HTTP request latency by route.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18),
		}, []string{"route"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "unitok_http_inflight_requests", Help: "HTTP requests being served.",
		}),
		batchSize: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "unitok_batch_items", Help: "Items (samples, rows or images) per engine batch.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 12),
		}, []string{"op"}),
		batchCalls: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "unitok_batch_calls", Help: "Caller requests coalesced per engine batch.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 11),
		}, []string{"op"}),
		batchWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "unitok_batch_wait_seconds", Help: "Queue wait of the oldest call of each batch.",
			Buckets: prometheus.ExponentialBuckets(0.00005, 2, 16),
		}, []string{"op"}),
		batchRun: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "unitok_batch_run_seconds", Help: "Engine time per batch.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}, []string{"op"}),
		tokens: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "unitok_tokens_total", Help: "Tokens (feature rows) processed; rate() gives tokens per second.",
		}),
		images: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "unitok_images_total", Help: "Images processed; rate() gives images per second.",
		}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "unitok_errors_total", Help: "Error responses by kind.",
		}, []string{"kind"}),
	}
	m.queueDepth = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "unitok_queue_depth", Help: "Calls waiting for a batch.",
	}, func() float64 { return float64(b().QueueDepth()) })
	m.batchActive = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "unitok_batch_inflight_calls", Help: "Calls whose batch is running.",
	}, func() float64 { return float64(b().InFlight()) })
	cs := []prometheus.Collector{m.requests, m.latency, m.inflight, m.batchSize, m.batchCalls, m.batchWait,
		m.batchRun, m.tokens, m.images, m.errors, m.queueDepth, m.batchActive}
	if gpus != nil {
		cs = append(cs, &gpuCollector{stats: gpus})
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) observeBatch(bi batch.BatchInfo) {
	m.batchSize.WithLabelValues(bi.Op).Observe(float64(bi.Items))
	m.batchCalls.WithLabelValues(bi.Op).Observe(float64(bi.Requests))
	m.batchWait.WithLabelValues(bi.Op).Observe(bi.Wait.Seconds())
	m.batchRun.WithLabelValues(bi.Op).Observe(bi.Run.Seconds())
}

func (m *metrics) observeRequest(route string, code int, d time.Duration) {
	m.requests.WithLabelValues(route, strconv.Itoa(code)).Inc()
	m.latency.WithLabelValues(route).Observe(d.Seconds())
}

var gpuDescs = struct {
	util, memUsed, memTotal, sm, mem, power, temp, throttle *prometheus.Desc
}{
	util:     prometheus.NewDesc("unitok_gpu_utilization_percent", "GPU utilization.", []string{"gpu", "name"}, nil),
	memUsed:  prometheus.NewDesc("unitok_gpu_memory_used_bytes", "GPU memory in use.", []string{"gpu", "name"}, nil),
	memTotal: prometheus.NewDesc("unitok_gpu_memory_total_bytes", "GPU memory.", []string{"gpu", "name"}, nil),
	sm:       prometheus.NewDesc("unitok_gpu_sm_clock_hertz", "SM clock.", []string{"gpu", "name"}, nil),
	mem:      prometheus.NewDesc("unitok_gpu_memory_clock_hertz", "Memory clock.", []string{"gpu", "name"}, nil),
	power:    prometheus.NewDesc("unitok_gpu_power_watts", "Power draw.", []string{"gpu", "name"}, nil),
	temp:     prometheus.NewDesc("unitok_gpu_temperature_celsius", "GPU temperature.", []string{"gpu", "name"}, nil),
	throttle: prometheus.NewDesc("unitok_gpu_throttle_reasons", "NVML clock throttle reason bit mask.", []string{"gpu", "name"}, nil),
}

// gpuCollector asks the telemetry hook for per-GPU values at each scrape.
type gpuCollector struct{ stats func() []GPUStat }

func (c *gpuCollector) Describe(ch chan<- *prometheus.Desc) {
	d := gpuDescs
	for _, x := range []*prometheus.Desc{d.util, d.memUsed, d.memTotal, d.sm, d.mem, d.power, d.temp, d.throttle} {
		ch <- x
	}
}

func (c *gpuCollector) Collect(ch chan<- prometheus.Metric) {
	d := gpuDescs
	for _, g := range c.stats() {
		idx := strconv.Itoa(g.Index)
		for _, p := range []struct {
			desc *prometheus.Desc
			v    float64
		}{{d.util, g.UtilizationPct}, {d.memUsed, g.MemoryUsedBytes}, {d.memTotal, g.MemoryTotal},
			{d.sm, g.SMClockHz}, {d.mem, g.MemClockHz}, {d.power, g.PowerWatts}, {d.temp, g.TemperatureC},
			{d.throttle, g.ThrottleReasons}} {
			if p.v >= 0 {
				ch <- prometheus.MustNewConstMetric(p.desc, prometheus.GaugeValue, p.v, idx, g.Name)
			}
		}
	}
}
