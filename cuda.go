//go:build cuda

package unitok

// The CUDA engine: thin Go types over the plain-C API in csrc/unitok_cuda.h
// (libunitok_cuda.a, built by `make cuda`). Device discovery and memory use
// the CUDA runtime (cudaGetDeviceProperties, cudaMemGetInfo), not NVML, so
// nothing beyond the static cudart and the driver is loaded.

/*
#cgo CFLAGS: -I${SRCDIR}/csrc
#cgo LDFLAGS: -L${SRCDIR}/build -lunitok_cuda -lcudart_static -lstdc++ -ldl -lrt -lpthread -lm

// The C API keeps no pointer after a call returns and never calls into Go,
// so arguments may stay on the Go stack (no heap allocation per call).
#cgo noescape unitok_device_count
#cgo nocallback unitok_device_count
#cgo noescape unitok_device_get_info
#cgo nocallback unitok_device_get_info
#cgo noescape unitok_mem_get_info
#cgo nocallback unitok_mem_get_info
#cgo noescape unitok_stream_create
#cgo nocallback unitok_stream_create
#cgo noescape unitok_stream_destroy
#cgo nocallback unitok_stream_destroy
#cgo noescape unitok_stream_synchronize
#cgo nocallback unitok_stream_synchronize
#cgo noescape unitok_event_create
#cgo nocallback unitok_event_create
#cgo noescape unitok_event_destroy
#cgo nocallback unitok_event_destroy
#cgo noescape unitok_event_record
#cgo nocallback unitok_event_record
#cgo noescape unitok_event_synchronize
#cgo nocallback unitok_event_synchronize
#cgo noescape unitok_event_elapsed_ms
#cgo nocallback unitok_event_elapsed_ms
#cgo noescape unitok_malloc
#cgo nocallback unitok_malloc
#cgo noescape unitok_free
#cgo nocallback unitok_free
#cgo noescape unitok_host_alloc
#cgo nocallback unitok_host_alloc
#cgo noescape unitok_host_free
#cgo nocallback unitok_host_free
#cgo noescape unitok_memcpy_h2d
#cgo nocallback unitok_memcpy_h2d
#cgo noescape unitok_memcpy_d2h
#cgo nocallback unitok_memcpy_d2h
#cgo noescape unitok_memset
#cgo nocallback unitok_memset
#cgo noescape unitok_quantize
#cgo nocallback unitok_quantize
#cgo noescape unitok_lookup
#cgo nocallback unitok_lookup
#cgo noescape unitok_attn_proj_workspace_size
#cgo nocallback unitok_attn_proj_workspace_size
#cgo noescape unitok_attn_proj_forward
#cgo nocallback unitok_attn_proj_forward
#cgo noescape unitok_quantize_variant
#cgo nocallback unitok_quantize_variant
#cgo noescape unitok_attn_proj_gemm_tiles
#cgo nocallback unitok_attn_proj_gemm_tiles
#include "unitok_cuda.h"
*/
import "C"

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

func init() {
	registerBackend("cuda", backendFactory{available: cudaAvailable, open: openCUDABackend})
}

// cudaCheck turns a unitok_status and raw cudaError_t into nil or an *Error
// carrying op, the CUDA error name and message, and the sentinel kind:
// ErrOutOfMemory for cudaErrorMemoryAllocation, ErrNoDevice for no device or
// no driver, ErrBadInput for arguments the C layer rejected.
func cudaCheck(op string, st C.unitok_status, code C.int) error {
	if st == C.UNITOK_OK {
		return nil
	}
	return cudaError(op, int(st), int(code))
}

// cudaError builds the *Error for a failed C call from its unitok_status
// and raw cudaError_t (Go-typed, so tests can call it).
func cudaError(op string, status, code int) error {
	e := &Error{Op: op, Status: status, CUDACode: code}
	switch C.unitok_status(status) {
	case C.UNITOK_ERR_OUT_OF_MEMORY:
		e.Kind = ErrOutOfMemory
	case C.UNITOK_ERR_NO_DEVICE:
		e.Kind = ErrNoDevice
	case C.UNITOK_ERR_INVALID_ARG, C.UNITOK_ERR_UNSUPPORTED, C.UNITOK_ERR_MISALIGNED:
		e.Kind = ErrBadInput
	}
	e.Msg = C.GoString(C.unitok_status_string(C.unitok_status(status)))
	if code != 0 {
		e.Msg += fmt.Sprintf(" (%s: %s)", C.GoString(C.unitok_cuda_error_name(C.int(code))), C.GoString(C.unitok_cuda_error_string(C.int(code))))
	}
	return e
}

// Status values of csrc/unitok_cuda.h, for tests.
const (
	statusCUDA        = int(C.UNITOK_ERR_CUDA)
	statusOutOfMemory = int(C.UNITOK_ERR_OUT_OF_MEMORY)
	statusNoDevice    = int(C.UNITOK_ERR_NO_DEVICE)
	statusMisaligned  = int(C.UNITOK_ERR_MISALIGNED)
)

// Quantizer kernel instances (unitok_quant_variant): 0 lets the library
// choose by size; tests force the others.
const (
	quantAuto    = int(C.UNITOK_QUANT_AUTO)
	quantGeneral = int(C.UNITOK_QUANT_GENERAL)
	quantD8Tok2  = int(C.UNITOK_QUANT_D8_TOK2)
	quantD8Tok4  = int(C.UNITOK_QUANT_D8_TOK4)
)

// quantLaunch is one quantizer launch over device pointers.
type quantLaunch struct {
	dev, M, K, V, d int
	z, words, bias  unsafe.Pointer // bias nil for cosine
	codes, hist     unsafe.Pointer // hist nil: no usage counts
	variant         int            // quantAuto outside tests
}

func (q *quantLaunch) args() C.unitok_quant_args {
	return C.unitok_quant_args{
		device: C.int(q.dev), M: C.int(q.M), K: C.int(q.K), V: C.int(q.V), d: C.int(q.d),
		z: (*C.float)(q.z), words: (*C.float)(q.words), bias: (*C.float)(q.bias),
		codes: (*C.int32_t)(q.codes), histogram: (*C.uint32_t)(q.hist), variant: C.int(q.variant),
	}
}

// launchQuantize enqueues q on s (unitok_quantize).
func launchQuantize(op string, q quantLaunch, s *Stream) error {
	a := q.args()
	var code C.int
	err := cudaCheck(op, C.unitok_quantize(&a, s.handle(), &code), code)
	runtime.KeepAlive(s)
	return err
}

// quantVariant is the kernel instance launchQuantize(q) runs (quantAuto
// resolved), or 0 for invalid arguments. Launches nothing.
func quantVariant(q quantLaunch) int {
	a := q.args()
	return int(C.unitok_quantize_variant(&a))
}

// projGemmTiles are the tiles (64 or 128) of the five GEMMs of projection p
// (qkv, attn_proj, proj, w0/w1, w2) for B images of N tokens, with every
// tile forced to forced when it is 64 or 128. Launches nothing.
func projGemmTiles(p *AttnProjection, B, N, forced int) ([5]int, error) {
	var t [5]C.int
	var out [5]int
	if C.unitok_attn_proj_gemm_tiles(C.int(p.In), C.int(p.Out), C.int(p.Heads), C.int(p.HeadDim), C.int(B), C.int(N), C.int(forced), &t[0]) != 5 {
		return out, badInput("cuda gemm tiles", "invalid sizes or tile %d", forced)
	}
	for i, v := range t {
		out[i] = int(v)
	}
	return out, nil
}

// ---------------------------------------------------------------- devices

// Device describes one CUDA GPU, read with cudaGetDeviceProperties
// (unitok_device_get_info).
type Device struct {
	Ordinal           int
	Name              string
	Major, Minor      int    // compute capability
	Multiprocessors   int    // SM count
	MaxSharedPerBlock int    // opt-in shared memory per block, bytes
	TotalMemory       uint64 // bytes
	RuntimeVersion    int    // CUDA runtime linked in, e.g. 11080
	DriverVersion     int    // CUDA version the driver supports, e.g. 13000
}

func (d Device) String() string {
	return fmt.Sprintf("cuda:%d %s (sm_%d%d, %d SMs, %.1f GiB)", d.Ordinal, d.Name, d.Major, d.Minor, d.Multiprocessors, float64(d.TotalMemory)/(1<<30))
}

// CUDADeviceCount is the number of visible GPUs (cudaGetDeviceCount). With
// no GPU or no driver it returns 0 and an error matching ErrNoDevice.
func CUDADeviceCount() (int, error) {
	var n, code C.int
	if err := cudaCheck("cuda device count", C.unitok_device_count(&n, &code), code); err != nil {
		return 0, err
	}
	return int(n), nil
}

// CUDADevice returns the properties of GPU ordinal.
func CUDADevice(ordinal int) (Device, error) {
	if err := cudaAvailable(ordinal); err != nil {
		return Device{}, err
	}
	var info C.unitok_device_info
	var code C.int
	if err := cudaCheck("cuda device info", C.unitok_device_get_info(C.int(ordinal), &info, &code), code); err != nil {
		return Device{}, err
	}
	return Device{
		Ordinal:           ordinal,
		Name:              C.GoString(&info.name[0]),
		Major:             int(info.major),
		Minor:             int(info.minor),
		Multiprocessors:   int(info.multiprocessors),
		MaxSharedPerBlock: int(info.max_shared_per_block),
		TotalMemory:       uint64(info.total_memory),
		RuntimeVersion:    int(info.runtime_version),
		DriverVersion:     int(info.driver_version),
	}, nil
}

// CUDADevices lists every visible GPU.
func CUDADevices() ([]Device, error) {
	n, err := CUDADeviceCount()
	if err != nil {
		return nil, err
	}
	out := make([]Device, 0, n)
	for i := 0; i < n; i++ {
		d, err := CUDADevice(i)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}

// MemInfo reports the device's free and total memory in bytes
// (cudaMemGetInfo).
func (d Device) MemInfo() (free, total uint64, err error) {
	var f, t C.size_t
	var code C.int
	if err := cudaCheck("cuda mem info", C.unitok_mem_get_info(C.int(d.Ordinal), &f, &t, &code), code); err != nil {
		return 0, 0, err
	}
	return uint64(f), uint64(t), nil
}

// cudaAvailable reports whether GPU ordinal exists: nil, or an error
// matching ErrNoDevice that says why (no driver, no device, bad ordinal).
func cudaAvailable(ordinal int) error {
	n, err := CUDADeviceCount()
	if err != nil {
		return err
	}
	if ordinal < 0 || ordinal >= n {
		return &Error{Op: "device", Msg: fmt.Sprintf("cuda:%d requested but %d CUDA device(s) are visible", ordinal, n), Kind: ErrNoDevice}
	}
	return nil
}

// ---------------------------------------------------------------- streams

// Stream is a non-blocking CUDA stream on one device
// (cudaStreamCreateWithFlags, through unitok_stream_create).
type Stream struct {
	dev     int
	s       C.unitok_stream
	closed  atomic.Bool
	cleanup runtime.Cleanup
}

type streamHandle struct {
	dev int
	s   C.unitok_stream
}

// NewStream creates a stream on GPU dev.
func NewStream(dev int) (*Stream, error) {
	var s C.unitok_stream
	var code C.int
	if err := cudaCheck("cuda stream create", C.unitok_stream_create(C.int(dev), &s, &code), code); err != nil {
		return nil, err
	}
	st := &Stream{dev: dev, s: s}
	st.cleanup = runtime.AddCleanup(st, func(h streamHandle) {
		var code C.int
		C.unitok_stream_destroy(C.int(h.dev), h.s, &code)
	}, streamHandle{dev, s})
	return st, nil
}

// handle is the C stream; nil (the legacy default stream) for a nil Stream.
func (s *Stream) handle() C.unitok_stream {
	if s == nil {
		return nil
	}
	return s.s
}

func (s *Stream) device() int {
	if s == nil {
		return 0
	}
	return s.dev
}

// Synchronize waits until all work queued on s has finished
// (cudaStreamSynchronize); errors of that work surface here.
func (s *Stream) Synchronize() error {
	if s != nil && s.closed.Load() {
		return &Error{Op: "cuda stream synchronize", Msg: "stream is closed", Kind: ErrClosed}
	}
	var code C.int
	err := cudaCheck("cuda stream synchronize", C.unitok_stream_synchronize(C.int(s.device()), s.handle(), &code), code)
	runtime.KeepAlive(s)
	return err
}

// Close destroys the stream. Idempotent and nil-safe.
func (s *Stream) Close() error {
	if s == nil || !s.closed.CompareAndSwap(false, true) {
		return nil
	}
	s.cleanup.Stop()
	var code C.int
	err := cudaCheck("cuda stream destroy", C.unitok_stream_destroy(C.int(s.dev), s.s, &code), code)
	s.s = nil
	return err
}

// Event is a CUDA event for timing and ordering (cudaEventCreate).
type Event struct {
	dev     int
	e       C.unitok_event
	closed  atomic.Bool
	cleanup runtime.Cleanup
}

type eventHandle struct {
	dev int
	e   C.unitok_event
}

// NewEvent creates an event on GPU dev.
func NewEvent(dev int) (*Event, error) {
	var e C.unitok_event
	var code C.int
	if err := cudaCheck("cuda event create", C.unitok_event_create(C.int(dev), &e, &code), code); err != nil {
		return nil, err
	}
	ev := &Event{dev: dev, e: e}
	ev.cleanup = runtime.AddCleanup(ev, func(h eventHandle) {
		var code C.int
		C.unitok_event_destroy(C.int(h.dev), h.e, &code)
	}, eventHandle{dev, e})
	return ev, nil
}

// Record enqueues the event on s (cudaEventRecord); asynchronous.
func (e *Event) Record(s *Stream) error {
	if e == nil || e.closed.Load() {
		return badInput("cuda event record", "event is nil or closed")
	}
	var code C.int
	err := cudaCheck("cuda event record", C.unitok_event_record(C.int(e.dev), e.e, s.handle(), &code), code)
	runtime.KeepAlive(e)
	runtime.KeepAlive(s)
	return err
}

// Synchronize waits for the event (cudaEventSynchronize).
func (e *Event) Synchronize() error {
	if e == nil || e.closed.Load() {
		return badInput("cuda event synchronize", "event is nil or closed")
	}
	var code C.int
	err := cudaCheck("cuda event synchronize", C.unitok_event_synchronize(C.int(e.dev), e.e, &code), code)
	runtime.KeepAlive(e)
	return err
}

// Since is the GPU time between start and e, both recorded and completed
// (cudaEventElapsedTime, about 0.5 us resolution).
func (e *Event) Since(start *Event) (time.Duration, error) {
	if e == nil || start == nil || e.closed.Load() || start.closed.Load() {
		return 0, badInput("cuda event elapsed", "event is nil or closed")
	}
	var ms C.float
	var code C.int
	err := cudaCheck("cuda event elapsed", C.unitok_event_elapsed_ms(start.e, e.e, &ms, &code), code)
	runtime.KeepAlive(e)
	runtime.KeepAlive(start)
	return time.Duration(float64(ms) * float64(time.Millisecond)), err
}

// Close destroys the event. Idempotent and nil-safe.
func (e *Event) Close() error {
	if e == nil || !e.closed.CompareAndSwap(false, true) {
		return nil
	}
	e.cleanup.Stop()
	var code C.int
	err := cudaCheck("cuda event destroy", C.unitok_event_destroy(C.int(e.dev), e.e, &code), code)
	e.e = nil
	return err
}

// ---------------------------------------------------------------- backend

// Rows per projection chunk: a whole number of images, enough rows for the
// GEMMs to fill an H200, with a workspace of about 200 MB at C = 1024.
const cudaChunkRows = 8192

// Rows per quantize/lookup chunk.
const cudaQuantChunkRows = 1 << 18

// cudaBackend runs a Model on one GPU. Weights live in one device
// allocation; each of options.streams slots holds a stream, a workspace and
// pinned staging buffers, so that concurrent calls run concurrently and a
// call in steady state allocates nothing.
type cudaBackend struct {
	dev     Device
	m       *Model
	metric  Metric
	causal  bool
	weights *DeviceBuffer
	enc     C.unitok_attn_proj_weights // quant_proj, device pointers into weights
	dec     C.unitok_attn_proj_weights // post_quant_proj
	words   *C.float                   // quantizer codewords (K, V, d): normalized (cosine) or raw (L2)
	bias    *C.float                   // (K, V) -|e|^2/2 for L2, nil for cosine
	norm    *C.float                   // normalized codewords (K, V, d), what Lookup returns

	// Test knobs: a forced quantizer instance (quantAuto: by size) and GEMM
	// tile (0: by size; 64 or 128), so that small inputs reach every kernel
	// instance the real sizes run (compute-sanitizer, the CPU emulation).
	quantVariant int
	gemmTile     int

	slots  chan *cudaSlot
	all    []*cudaSlot
	done   chan struct{}
	closed atomic.Bool
	once   sync.Once
	cerr   error
}

var _ backend = (*cudaBackend)(nil)

// cudaSlot is one stream with its buffers; a call holds it exclusively.
type cudaSlot struct {
	stream *Stream
	ws     *DeviceBuffer // projection workspace
	in     *DeviceBuffer // features / latents going in
	lat    *DeviceBuffer // latents between projection and quantizer
	codes  *DeviceBuffer
	out    *DeviceBuffer // features coming out
	hist   *DeviceBuffer // usage histogram (quantizeHistogram only)
	hin    *HostBuffer   // pinned staging in
	hout   *HostBuffer   // pinned staging out
}

func (s *cudaSlot) close() error {
	var first error
	for _, c := range []interface{ Close() error }{s.stream, s.ws, s.in, s.lat, s.codes, s.out, s.hist, s.hin, s.hout} {
		if err := c.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

func openCUDABackend(m *Model, o *options, ordinal int) (backend, error) {
	dev, err := CUDADevice(ordinal)
	if err != nil {
		return nil, err
	}
	for _, p := range []*AttnProjection{&m.QuantProj, &m.PostQuantProj} {
		if p.HeadDim > C.UNITOK_MAX_HEAD_DIM {
			return nil, &Error{Op: "cuda", Msg: fmt.Sprintf("head dim %d exceeds the CUDA attention kernel's limit of %d; use --device cpu", p.HeadDim, C.UNITOK_MAX_HEAD_DIM), Kind: ErrBadInput}
		}
	}
	b := &cudaBackend{dev: dev, m: m, metric: o.metric, causal: m.Causal, done: make(chan struct{})}
	fail := func(err error) (backend, error) {
		for _, s := range b.all {
			s.close()
		}
		b.weights.Close()
		return nil, err
	}
	n := o.streams
	if n <= 0 {
		n = 2
	}
	b.slots = make(chan *cudaSlot, n)
	for i := 0; i < n; i++ {
		st, err := NewStream(ordinal)
		if err != nil {
			return fail(err)
		}
		b.all = append(b.all, &cudaSlot{stream: st})
	}
	if err := b.upload(b.all[0].stream); err != nil {
		return fail(err)
	}
	for _, s := range b.all {
		b.slots <- s
	}
	return b, nil
}

// upload packs every weight the engine needs into one device allocation,
// each tensor aligned to 256 bytes, through one pinned staging buffer.
func (b *cudaBackend) upload(st *Stream) error {
	m := b.m
	var blobs [][]float32
	var offs []int
	total := 0
	add := func(v []float32) int {
		i := len(blobs)
		blobs = append(blobs, v)
		offs = append(offs, total)
		total += (len(v)*4 + 255) &^ 255
		return i
	}
	type projIdx struct {
		ln                                                 [8]int
		qkvW, qkvB, apW, apB, pW, pB, w01W, w01B, w2W, w2B int
	}
	addProj := func(p *AttnProjection) projIdx {
		var x projIdx
		for i, ln := range []*LayerNorm{&p.Norm1, &p.Norm2, &p.Norm3, &p.MLPNorm} {
			x.ln[2*i] = add(ln.Weight)
			x.ln[2*i+1] = add(ln.Bias)
		}
		x.qkvW, x.qkvB = add(p.QKV.Weight), add(p.QKV.Bias)
		x.apW, x.apB = add(p.AttnProj.Weight), add(p.AttnProj.Bias)
		x.pW, x.pB = add(p.Proj.Weight), add(p.Proj.Bias)
		// GeGLU: rows of w0 and w1 interleaved, so one GEMM tile holds each
		// gate column next to its value column.
		O, I := p.W0.Out, p.W0.In
		w01 := make([]float32, 2*O*I)
		b01 := make([]float32, 2*O)
		for r := 0; r < O; r++ {
			copy(w01[(2*r)*I:(2*r+1)*I], p.W0.Weight[r*I:(r+1)*I])
			copy(w01[(2*r+1)*I:(2*r+2)*I], p.W1.Weight[r*I:(r+1)*I])
			b01[2*r], b01[2*r+1] = p.W0.Bias[r], p.W1.Bias[r]
		}
		x.w01W, x.w01B = add(w01), add(b01)
		x.w2W, x.w2B = add(p.W2.Weight), add(p.W2.Bias)
		return x
	}
	ei, di := addProj(&m.QuantProj), addProj(&m.PostQuantProj)
	words, bias := quantTables(m, b.metric)
	cat := func(parts [][]float32) []float32 {
		var out []float32
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	normIdx := add(cat(m.NormCodebooks))
	wordsIdx, biasIdx := normIdx, -1
	if b.metric == L2 {
		wordsIdx = add(cat(words))
		biasIdx = add(cat(bias))
	}

	stage, err := AllocHost(total)
	if err != nil {
		return err
	}
	defer stage.Close()
	host := stage.Float32s()
	for i, v := range blobs {
		copy(host[offs[i]/4:], v)
	}
	if b.weights, err = AllocDevice(b.dev.Ordinal, total); err != nil {
		return err
	}
	if err := CopyToDevice(b.weights, 0, stage, 0, total, st); err != nil {
		return err
	}
	if err := st.Synchronize(); err != nil {
		return err
	}
	ptr := func(i int) *C.float { return b.weights.floatsAt(offs[i]) }
	fill := func(p *AttnProjection, x projIdx) C.unitok_attn_proj_weights {
		ln := func(i int, eps float32) C.unitok_layernorm {
			return C.unitok_layernorm{weight: ptr(x.ln[2*i]), bias: ptr(x.ln[2*i+1]), eps: C.float(eps)}
		}
		return C.unitok_attn_proj_weights{
			in: C.int(p.In), out: C.int(p.Out), heads: C.int(p.Heads), head_dim: C.int(p.HeadDim),
			norm1: ln(0, p.Norm1.Eps), norm2: ln(1, p.Norm2.Eps), norm3: ln(2, p.Norm3.Eps), mlp_norm: ln(3, p.MLPNorm.Eps),
			qkv_w: ptr(x.qkvW), qkv_b: ptr(x.qkvB),
			attn_proj_w: ptr(x.apW), attn_proj_b: ptr(x.apB),
			proj_w: ptr(x.pW), proj_b: ptr(x.pB),
			w01_w: ptr(x.w01W), w01_b: ptr(x.w01B),
			w2_w: ptr(x.w2W), w2_b: ptr(x.w2B),
		}
	}
	b.enc, b.dec = fill(&m.QuantProj, ei), fill(&m.PostQuantProj, di)
	b.norm, b.words = ptr(normIdx), ptr(wordsIdx)
	if biasIdx >= 0 {
		b.bias = ptr(biasIdx)
	}
	return nil
}

func (b *cudaBackend) Name() string { return fmt.Sprintf("cuda:%d", b.dev.Ordinal) }

// Device describes the GPU this backend runs on.
func (b *cudaBackend) Device() Device { return b.dev }

// acquire takes a free slot, waiting while all are busy.
func (b *cudaBackend) acquire(op string) (*cudaSlot, error) {
	select {
	case s := <-b.slots:
		if b.closed.Load() {
			b.slots <- s
			return nil, closedErr(op)
		}
		return s, nil
	case <-b.done:
		return nil, closedErr(op)
	}
}

func (b *cudaBackend) release(s *cudaSlot) { b.slots <- s }

// Close waits for calls in flight, then frees every stream and buffer.
func (b *cudaBackend) Close() error {
	b.once.Do(func() {
		b.closed.Store(true)
		close(b.done)
		for range b.all {
			s := <-b.slots
			if err := s.close(); err != nil && b.cerr == nil {
				b.cerr = err
			}
		}
		if err := b.weights.Close(); err != nil && b.cerr == nil {
			b.cerr = err
		}
	})
	return b.cerr
}

// projWorkspace sizes s for nb images of N tokens through projection w.
func (b *cudaBackend) projWorkspace(s *cudaSlot, w *C.unitok_attn_proj_weights, nb, N int) (int, error) {
	// A copy: cgo checks the whole Go object an argument points into, and w
	// points into the backend, which holds Go pointers.
	wc := *w
	n := int(C.unitok_attn_proj_workspace_size(&wc, C.int(nb), C.int(N)))
	if n == 0 {
		return 0, &Error{Op: "cuda", Msg: "invalid projection sizes", Kind: ErrBadInput}
	}
	return n, growDevice(&s.ws, b.dev.Ordinal, n)
}

// project enqueues projection w on s: in (rows, w.in) -> out (rows, w.out).
func (b *cudaBackend) project(op string, s *cudaSlot, w *C.unitok_attn_proj_weights, in, out *DeviceBuffer, nb, N int) error {
	wsBytes, err := b.projWorkspace(s, w, nb, N)
	if err != nil {
		return err
	}
	causal := 0
	if b.causal {
		causal = 1
	}
	args := C.unitok_attn_proj_args{
		device: C.int(b.dev.Ordinal), w: *w, batch: C.int(nb), tokens: C.int(N), causal: C.int(causal),
		x: in.floatsAt(0), y: out.floatsAt(0), workspace: s.ws.Ptr(), workspace_bytes: C.size_t(wsBytes),
		gemm_tile: C.int(b.gemmTile),
	}
	var code C.int
	err = cudaCheck(op, C.unitok_attn_proj_forward(&args, s.stream.handle(), &code), code)
	runtime.KeepAlive(s)
	runtime.KeepAlive(in)
	runtime.KeepAlive(out)
	return err
}

// quantize enqueues the quantizer on s: s.lat (M, D) -> s.codes (M, K),
// accumulating usage counts into hist when it is not nil.
func (b *cudaBackend) quantize(op string, s *cudaSlot, M int, hist *DeviceBuffer) error {
	err := launchQuantize(op, b.quantLaunch(s, M, hist), s.stream)
	runtime.KeepAlive(s)
	runtime.KeepAlive(hist)
	runtime.KeepAlive(b.weights)
	return err
}

// quantLaunch describes the quantizer launch on s.lat's first M rows.
func (b *cudaBackend) quantLaunch(s *cudaSlot, M int, hist *DeviceBuffer) quantLaunch {
	c := b.m.Config
	return quantLaunch{
		dev: b.dev.Ordinal, M: M, K: c.NumCodebooks, V: c.CodebookSize, d: c.ChunkDim(),
		z: s.lat.Ptr(), words: unsafe.Pointer(b.words), bias: unsafe.Pointer(b.bias),
		codes: s.codes.Ptr(), hist: hist.Ptr(), variant: b.quantVariant,
	}
}

// lookup enqueues the lookup on s: s.codes (M, K) -> s.lat (M, D).
func (b *cudaBackend) lookup(op string, s *cudaSlot, M int) error {
	c := b.m.Config
	a := C.unitok_lookup_args{
		device: C.int(b.dev.Ordinal), M: C.int(M), K: C.int(c.NumCodebooks), V: C.int(c.CodebookSize), d: C.int(c.ChunkDim()),
		codes: (*C.int32_t)(s.codes.Ptr()), words: b.norm, latents: s.lat.floatsAt(0),
	}
	var code C.int
	err := cudaCheck(op, C.unitok_lookup(&a, s.stream.handle(), &code), code)
	runtime.KeepAlive(s)
	runtime.KeepAlive(b.weights)
	return err
}

// stage copies src into the slot's pinned input buffer and enqueues its
// upload into *dst (grown as needed).
func (b *cudaBackend) stageIn(s *cudaSlot, dst **DeviceBuffer, src unsafe.Pointer, bytes int) error {
	if err := growHost(&s.hin, bytes); err != nil {
		return err
	}
	if err := growDevice(dst, b.dev.Ordinal, bytes); err != nil {
		return err
	}
	copy(s.hin.Bytes()[:bytes], unsafe.Slice((*byte)(src), bytes))
	return CopyToDevice(*dst, 0, s.hin, 0, bytes, s.stream)
}

// finish enqueues the download of bytes from src, waits for the stream and
// copies the result into dst.
func (b *cudaBackend) finish(s *cudaSlot, dst unsafe.Pointer, src *DeviceBuffer, bytes int) error {
	if err := growHost(&s.hout, bytes); err != nil {
		return err
	}
	if err := CopyToHost(s.hout, 0, src, 0, bytes, s.stream); err != nil {
		return err
	}
	if err := s.stream.Synchronize(); err != nil {
		return err
	}
	copy(unsafe.Slice((*byte)(dst), bytes), s.hout.Bytes()[:bytes])
	return nil
}

// run acquires a slot and calls fn for each chunk [r0, r1) of rows, where a
// chunk is a whole number of images of N tokens (N = 1 for per-row ops).
func (b *cudaBackend) run(op string, rows, N, chunkRows int, fn func(s *cudaSlot, r0, r1 int) error) error {
	s, err := b.acquire(op)
	if err != nil {
		return err
	}
	defer b.release(s)
	step := max(1, chunkRows/N) * N
	for r0 := 0; r0 < rows; r0 += step {
		if err := fn(s, r0, min(r0+step, rows)); err != nil {
			// Leave the stream idle before the slot is reused.
			s.stream.Synchronize()
			return err
		}
	}
	return nil
}

func f32ptr(v []float32, i int) unsafe.Pointer { return unsafe.Pointer(&v[i]) }
func i32ptr(v []int32, i int) unsafe.Pointer   { return unsafe.Pointer(&v[i]) }

func (b *cudaBackend) QuantProj(dst, x []float32, B, N int) error {
	return b.projOnly("quant_proj", &b.enc, dst, x, B, N)
}

func (b *cudaBackend) PostQuantProj(dst, z []float32, B, N int) error {
	return b.projOnly("post_quant_proj", &b.dec, dst, z, B, N)
}

func (b *cudaBackend) projOnly(op string, w *C.unitok_attn_proj_weights, dst, x []float32, B, N int) error {
	in, out := int(w.in), int(w.out)
	return b.run(op, B*N, N, cudaChunkRows, func(s *cudaSlot, r0, r1 int) error {
		R := r1 - r0
		if err := b.stageIn(s, &s.in, f32ptr(x, r0*in), R*in*4); err != nil {
			return err
		}
		if err := growDevice(&s.out, b.dev.Ordinal, R*out*4); err != nil {
			return err
		}
		if err := b.project(op, s, w, s.in, s.out, R/N, N); err != nil {
			return err
		}
		return b.finish(s, f32ptr(dst, r0*out), s.out, R*out*4)
	})
}

func (b *cudaBackend) Quantize(dst []int32, z []float32, M int) error {
	return b.quantizeRows("quantize", dst, nil, z, M)
}

// quantizeRows is Quantize, also returning the per-codebook usage counts
// (K, V) in hist when hist is not nil.
func (b *cudaBackend) quantizeRows(op string, dst []int32, hist []uint32, z []float32, M int) error {
	c := b.m.Config
	D, K := c.LatentDim, c.NumCodebooks
	return b.run(op, M, 1, cudaQuantChunkRows, func(s *cudaSlot, r0, r1 int) error {
		R := r1 - r0
		if err := b.stageIn(s, &s.lat, f32ptr(z, r0*D), R*D*4); err != nil {
			return err
		}
		if err := growDevice(&s.codes, b.dev.Ordinal, R*K*4); err != nil {
			return err
		}
		var h *DeviceBuffer
		if hist != nil {
			n := K * c.CodebookSize * 4
			if err := growDevice(&s.hist, b.dev.Ordinal, n); err != nil {
				return err
			}
			if r0 == 0 {
				if err := Memset(s.hist, 0, 0, n, s.stream); err != nil {
					return err
				}
			}
			h = s.hist
		}
		if err := b.quantize(op, s, R, h); err != nil {
			return err
		}
		if err := b.finish(s, i32ptr(dst, r0*K), s.codes, R*K*4); err != nil {
			return err
		}
		if hist != nil && r1 == M {
			return b.finish(s, unsafe.Pointer(&hist[0]), s.hist, K*c.CodebookSize*4)
		}
		return nil
	})
}

func (b *cudaBackend) Lookup(dst []float32, codes []int32, M int) error {
	c := b.m.Config
	D, K := c.LatentDim, c.NumCodebooks
	return b.run("lookup", M, 1, cudaQuantChunkRows, func(s *cudaSlot, r0, r1 int) error {
		R := r1 - r0
		if err := b.stageIn(s, &s.codes, i32ptr(codes, r0*K), R*K*4); err != nil {
			return err
		}
		if err := growDevice(&s.lat, b.dev.Ordinal, R*D*4); err != nil {
			return err
		}
		if err := b.lookup("lookup", s, R); err != nil {
			return err
		}
		return b.finish(s, f32ptr(dst, r0*D), s.lat, R*D*4)
	})
}

func (b *cudaBackend) Encode(dst []int32, x []float32, B, N int) error {
	c := b.m.Config
	C_, D, K := c.InDim, c.LatentDim, c.NumCodebooks
	return b.run("encode", B*N, N, cudaChunkRows, func(s *cudaSlot, r0, r1 int) error {
		R := r1 - r0
		if err := b.stageIn(s, &s.in, f32ptr(x, r0*C_), R*C_*4); err != nil {
			return err
		}
		if err := growDevice(&s.lat, b.dev.Ordinal, R*D*4); err != nil {
			return err
		}
		if err := growDevice(&s.codes, b.dev.Ordinal, R*K*4); err != nil {
			return err
		}
		if err := b.project("encode", s, &b.enc, s.in, s.lat, R/N, N); err != nil {
			return err
		}
		if err := b.quantize("encode", s, R, nil); err != nil {
			return err
		}
		return b.finish(s, i32ptr(dst, r0*K), s.codes, R*K*4)
	})
}

func (b *cudaBackend) Decode(dst []float32, codes []int32, B, N int) error {
	c := b.m.Config
	C_, D, K := c.InDim, c.LatentDim, c.NumCodebooks
	return b.run("decode", B*N, N, cudaChunkRows, func(s *cudaSlot, r0, r1 int) error {
		R := r1 - r0
		if err := b.stageIn(s, &s.codes, i32ptr(codes, r0*K), R*K*4); err != nil {
			return err
		}
		if err := growDevice(&s.lat, b.dev.Ordinal, R*D*4); err != nil {
			return err
		}
		if err := growDevice(&s.out, b.dev.Ordinal, R*C_*4); err != nil {
			return err
		}
		if err := b.lookup("decode", s, R); err != nil {
			return err
		}
		if err := b.project("decode", s, &b.dec, s.lat, s.out, R/N, N); err != nil {
			return err
		}
		return b.finish(s, f32ptr(dst, r0*C_), s.out, R*C_*4)
	})
}
