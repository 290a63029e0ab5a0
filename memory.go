//go:build cuda

package unitok

/*
#include "unitok_cuda.h"
*/
import "C"

import (
	"runtime"
	"sync/atomic"
	"unsafe"
)

// DeviceBuffer is a block of device memory on one GPU (cudaMalloc, through
// unitok_malloc). Its address is a device pointer: never dereference it
// from Go. Close frees it; a buffer dropped without Close is freed by a
// cleanup when it becomes unreachable.
type DeviceBuffer struct {
	dev     int
	ptr     unsafe.Pointer
	bytes   int
	closed  atomic.Bool
	cleanup runtime.Cleanup
}

type deviceAlloc struct {
	dev int
	ptr unsafe.Pointer
}

// AllocDevice allocates bytes of device memory on GPU ordinal dev
// (unitok_malloc). Out of memory is reported as ErrOutOfMemory.
func AllocDevice(dev, bytes int) (*DeviceBuffer, error) {
	if bytes <= 0 {
		return nil, badInput("cuda malloc", "size must be positive, got %d", bytes)
	}
	var p unsafe.Pointer
	var code C.int
	if err := cudaCheck("cuda malloc", C.unitok_malloc(C.int(dev), C.size_t(bytes), &p, &code), code); err != nil {
		return nil, err
	}
	b := &DeviceBuffer{dev: dev, ptr: p, bytes: bytes}
	b.cleanup = runtime.AddCleanup(b, func(a deviceAlloc) {
		var code C.int
		C.unitok_free(C.int(a.dev), a.ptr, &code)
	}, deviceAlloc{dev, p})
	return b, nil
}

// Ptr is the device address (nil after Close).
func (b *DeviceBuffer) Ptr() unsafe.Pointer {
	if b == nil || b.closed.Load() {
		return nil
	}
	return b.ptr
}

// Len is the size in bytes (0 for a nil buffer).
func (b *DeviceBuffer) Len() int {
	if b == nil {
		return 0
	}
	return b.bytes
}

// Device is the GPU ordinal the buffer lives on.
func (b *DeviceBuffer) Device() int { return b.dev }

// Close frees the memory (unitok_free). Idempotent and nil-safe. The caller
// must make sure no queued work still uses the buffer (synchronize first).
func (b *DeviceBuffer) Close() error {
	if b == nil || !b.closed.CompareAndSwap(false, true) {
		return nil
	}
	b.cleanup.Stop()
	var code C.int
	err := cudaCheck("cuda free", C.unitok_free(C.int(b.dev), b.ptr, &code), code)
	b.ptr = nil
	return err
}

// at returns the device address off bytes into the buffer, as a C float*.
func (b *DeviceBuffer) floatsAt(off int) *C.float {
	return (*C.float)(unsafe.Add(b.ptr, off))
}

// HostBuffer is page-locked (pinned) host memory allocated by CUDA
// (cudaHostAlloc, through unitok_host_alloc), the only host memory the
// asynchronous copies use: C never holds a Go pointer. Its contents are
// visible from Go through Bytes, Float32s and Int32s.
type HostBuffer struct {
	ptr     unsafe.Pointer
	bytes   int
	closed  atomic.Bool
	cleanup runtime.Cleanup
}

// AllocHost allocates bytes of pinned host memory.
func AllocHost(bytes int) (*HostBuffer, error) {
	if bytes <= 0 {
		return nil, badInput("cuda host alloc", "size must be positive, got %d", bytes)
	}
	var p unsafe.Pointer
	var code C.int
	if err := cudaCheck("cuda host alloc", C.unitok_host_alloc(C.size_t(bytes), &p, &code), code); err != nil {
		return nil, err
	}
	h := &HostBuffer{ptr: p, bytes: bytes}
	h.cleanup = runtime.AddCleanup(h, func(p unsafe.Pointer) {
		var code C.int
		C.unitok_host_free(p, &code)
	}, p)
	return h, nil
}

// Len is the size in bytes (0 for a nil buffer).
func (h *HostBuffer) Len() int {
	if h == nil {
		return 0
	}
	return h.bytes
}

// Bytes views the whole buffer; the view is invalid after Close.
func (h *HostBuffer) Bytes() []byte {
	if h == nil || h.closed.Load() {
		return nil
	}
	return unsafe.Slice((*byte)(h.ptr), h.bytes)
}

// Float32s views the buffer as float32s; invalid after Close.
func (h *HostBuffer) Float32s() []float32 {
	if h == nil || h.closed.Load() {
		return nil
	}
	return unsafe.Slice((*float32)(h.ptr), h.bytes/4)
}

// Int32s views the buffer as int32s; invalid after Close.
func (h *HostBuffer) Int32s() []int32 {
	if h == nil || h.closed.Load() {
		return nil
	}
	return unsafe.Slice((*int32)(h.ptr), h.bytes/4)
}

// Close frees the memory (unitok_host_free). Idempotent and nil-safe.
func (h *HostBuffer) Close() error {
	if h == nil || !h.closed.CompareAndSwap(false, true) {
		return nil
	}
	h.cleanup.Stop()
	var code C.int
	err := cudaCheck("cuda host free", C.unitok_host_free(h.ptr, &code), code)
	h.ptr = nil
	return err
}

// CopyToDevice enqueues a copy of n bytes from h[hoff:] to d[doff:] on s
// (unitok_memcpy_h2d). Asynchronous: h must stay untouched until s is
// synchronized.
func CopyToDevice(d *DeviceBuffer, doff int, h *HostBuffer, hoff, n int, s *Stream) error {
	if err := checkCopy(d, doff, h, hoff, n); err != nil {
		return err
	}
	var code C.int
	err := cudaCheck("cuda memcpy h2d", C.unitok_memcpy_h2d(C.int(d.dev), unsafe.Add(d.ptr, doff), unsafe.Add(h.ptr, hoff), C.size_t(n), s.handle(), &code), code)
	runtime.KeepAlive(d)
	runtime.KeepAlive(h)
	runtime.KeepAlive(s)
	return err
}

// CopyToHost enqueues a copy of n bytes from d[doff:] to h[hoff:] on s
// (unitok_memcpy_d2h). Asynchronous: read h only after s is synchronized.
func CopyToHost(h *HostBuffer, hoff int, d *DeviceBuffer, doff, n int, s *Stream) error {
	if err := checkCopy(d, doff, h, hoff, n); err != nil {
		return err
	}
	var code C.int
	err := cudaCheck("cuda memcpy d2h", C.unitok_memcpy_d2h(C.int(d.dev), unsafe.Add(h.ptr, hoff), unsafe.Add(d.ptr, doff), C.size_t(n), s.handle(), &code), code)
	runtime.KeepAlive(d)
	runtime.KeepAlive(h)
	runtime.KeepAlive(s)
	return err
}

// Memset enqueues a fill of n bytes of d[off:] with the byte value v on s.
func Memset(d *DeviceBuffer, off int, v byte, n int, s *Stream) error {
	if d == nil || d.closed.Load() || off < 0 || n < 0 || off+n > d.bytes {
		return badInput("cuda memset", "range [%d, %d) outside a buffer of %d bytes", off, off+n, d.Len())
	}
	var code C.int
	err := cudaCheck("cuda memset", C.unitok_memset(C.int(d.dev), unsafe.Add(d.ptr, off), C.int(v), C.size_t(n), s.handle(), &code), code)
	runtime.KeepAlive(d)
	runtime.KeepAlive(s)
	return err
}

func checkCopy(d *DeviceBuffer, doff int, h *HostBuffer, hoff, n int) error {
	switch {
	case d == nil || d.closed.Load():
		return badInput("cuda memcpy", "device buffer is nil or closed")
	case h == nil || h.closed.Load():
		return badInput("cuda memcpy", "host buffer is nil or closed")
	case n < 0 || doff < 0 || hoff < 0 || doff+n > d.bytes || hoff+n > h.bytes:
		return badInput("cuda memcpy", "copy of %d bytes at device offset %d / host offset %d exceeds buffers of %d / %d bytes", n, doff, hoff, d.bytes, h.bytes)
	}
	return nil
}

// growDevice makes *b hold at least bytes, reallocating (without keeping
// the contents) only when it is too small, so steady-state calls allocate
// nothing.
func growDevice(b **DeviceBuffer, dev, bytes int) error {
	if *b != nil && (*b).bytes >= bytes {
		return nil
	}
	if err := (*b).Close(); err != nil {
		return err
	}
	*b = nil
	nb, err := AllocDevice(dev, max(bytes, 256))
	if err != nil {
		return err
	}
	*b = nb
	return nil
}

// growHost is growDevice for pinned host memory.
func growHost(h **HostBuffer, bytes int) error {
	if *h != nil && (*h).bytes >= bytes {
		return nil
	}
	if err := (*h).Close(); err != nil {
		return err
	}
	*h = nil
	nh, err := AllocHost(max(bytes, 256))
	if err != nil {
		return err
	}
	*h = nh
	return nil
}
