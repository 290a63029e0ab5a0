package pth

import (
	"bytes"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"unsafe"

	"github.com/unitok/unitok/internal/mmapfile"
)

// viewSpec holds every dtype the readers convert, and views that cannot be
// served in place (an offset view, a transposed view).
func viewSpec() ckptSpec {
	shared := f32bytes(seq(24, 1))
	return ckptSpec{args: unitokArgs(), tensors: append(smallCore(),
		tspec{name: "encoder.f32", data: f32bytes(seq(1000, -0.001)), shape: []int64{10, 100}},
		tspec{name: "encoder.off", key: "s", data: shared, shape: []int64{4, 2}, offset: 8},
		tspec{name: "encoder.t", key: "s", data: shared, shape: []int64{3, 2}, stride: []int64{1, 3}, noWrite: true},
		tspec{name: "encoder.bf", class: "BFloat16Storage", data: bf16bytes(seq(37, 1.5)), shape: []int64{37}},
		tspec{name: "encoder.f16", class: "HalfStorage", data: f16bytes([]uint16{0x0001, 0x8400, 0x7bff, 0xfc00, 0x3c00}), shape: []int64{5}},
		tspec{name: "encoder.f64", class: "DoubleStorage", data: binary.LittleEndian.AppendUint64(nil, math.Float64bits(-0.25)), shape: []int64{1}},
		tspec{name: "encoder.empty", data: f32bytes(nil), shape: []int64{0, 3}},
	)}
}

func writeTemp(t *testing.T, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "c.pth")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func sameBits(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}

// inside reports whether v lies in the memory of b.
func inside(v []float32, b []byte) bool {
	if len(v) == 0 || len(b) == 0 {
		return false
	}
	p, lo := uintptr(unsafe.Pointer(&v[0])), uintptr(unsafe.Pointer(&b[0]))
	return p >= lo && p+4*uintptr(len(v)) <= lo+uintptr(len(b))
}

// TestViewsEqualCopies: for every float dtype and layout, ViewFloat32 gives
// exactly ReadFloat32's values (bit for bit), and aliases the mapping for
// exactly the contiguous F32 tensors of a little-endian stored archive.
func TestViewsEqualCopies(t *testing.T) {
	for _, c := range []struct {
		name         string
		big, deflate bool
		wantViews    bool
	}{
		{name: "stored", wantViews: true},
		{name: "big-endian", big: true},
		{name: "deflate", deflate: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			spec := viewSpec()
			spec.bigEndian, spec.deflate = c.big, c.deflate
			f, err := Open(writeTemp(t, spec.zip(t)))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if f.mapped != mmapfile.Supported {
				t.Fatalf("mapped = %v on a platform where mapping is supported = %v", f.mapped, mmapfile.Supported)
			}
			views := 0
			for _, ti := range f.AllTensors() {
				if ti.DType == "I64" {
					continue
				}
				want, err := f.ReadFloat32(ti.Name)
				if err != nil {
					t.Fatal(err)
				}
				got, aliased, err := f.ViewFloat32(ti.Name)
				if err != nil {
					t.Fatal(err)
				}
				if !sameBits(got, want) {
					t.Errorf("%s: view %v, copy %v", ti.Name, got, want)
				}
				// Only a contiguous F32 storage read in place may alias; the
				// offset view is contiguous too (elements 9..16 of storage s).
				canAlias := ti.DType == "F32" && ti.Name != "encoder.t" && ti.Name != "encoder.empty" && len(want) > 0
				if aliased && !canAlias {
					t.Errorf("%s (%s) is aliased", ti.Name, ti.DType)
				}
				if aliased != (canAlias && c.wantViews && mmapfile.Supported) {
					t.Errorf("%s: aliased = %v", ti.Name, aliased)
				}
				if aliased {
					views++
					if !inside(got, f.data) {
						t.Errorf("%s: aliased view is not inside the mapping", ti.Name)
					}
				} else if len(got) > 0 && inside(got, f.data) {
					t.Errorf("%s: a copy points into the mapping", ti.Name)
				}
				f.Release(ti.Name) // views stay valid after Release
				if !sameBits(got, want) {
					t.Errorf("%s: view changed after Release", ti.Name)
				}
			}
			if c.wantViews && mmapfile.Supported && views < 5 {
				t.Errorf("only %d views", views)
			}
		})
	}
}

// TestViewAlignment: an F32 entry whose data is not 4-byte aligned in the
// file is copied, not viewed, with the same values. The storage entry's
// offset is moved by the length of the archive name.
func TestViewAlignment(t *testing.T) {
	if !mmapfile.Supported {
		t.Skip("no mapping on this platform")
	}
	seen := map[bool]bool{}
	for n := 1; n <= 4; n++ {
		spec := viewSpec()
		spec.archive = strings.Repeat("a", n)
		f, err := Open(writeTemp(t, spec.zip(t)))
		if err != nil {
			t.Fatal(err)
		}
		want, err := f.ReadFloat32("encoder.f32")
		if err != nil {
			t.Fatal(err)
		}
		got, aliased, err := f.ViewFloat32("encoder.f32")
		if err != nil {
			t.Fatal(err)
		}
		off, _ := f.entries[f.byName["encoder.f32"].Storage.Key].DataOffset()
		if aliased != (off%4 == 0) || !sameBits(got, want) {
			t.Errorf("archive %q: data at offset %d: aliased %v, equal %v", spec.archive, off, aliased, sameBits(got, want))
		}
		seen[aliased] = true
		f.Close()
	}
	if !seen[true] || !seen[false] {
		t.Errorf("cases cover aliased %v only", seen)
	}
}

// TestTorchSaveViews: torch.save aligns every storage (to 64 bytes), so
// every F32 core tensor of a real checkpoint is served as a view.
func TestTorchSaveViews(t *testing.T) {
	if !mmapfile.Supported {
		t.Skip("no mapping on this platform")
	}
	for _, name := range []string{"small_fp32.pth", "small_fp32_torch2.pth"} {
		f, err := Open(fixture(t, name))
		if err != nil {
			t.Fatal(err)
		}
		for _, ti := range f.AllTensors() {
			if ti.DType != "F32" || ti.Elems() == 0 {
				continue
			}
			want, err := f.ReadFloat32(ti.Name)
			if err != nil {
				t.Fatal(err)
			}
			got, aliased, err := f.ViewFloat32(ti.Name)
			if err != nil {
				t.Fatal(err)
			}
			off, _ := f.entries[f.byName[ti.Name].Storage.Key].DataOffset()
			if !aliased || off%64 != 0 || !sameBits(got, want) {
				t.Errorf("%s %s: aliased %v, data offset %d, equal %v", name, ti.Name, aliased, off, sameBits(got, want))
			}
		}
		f.Close()
	}
}

// TestViewCorrupted: a flipped byte in a mapped storage fails the view with
// the CRC error, on one line; a truncated file does not open.
func TestViewCorrupted(t *testing.T) {
	spec := viewSpec()
	good := spec.zip(t)
	data := f32bytes(seq(1000, -0.001))
	i := bytes.Index(good, data)
	if i < 0 {
		t.Fatal("storage bytes not found")
	}
	bad := append([]byte(nil), good...)
	bad[i+100] ^= 0x10
	f, err := Open(writeTemp(t, bad))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, read := range []func() error{
		func() error { _, _, err := f.ViewFloat32("encoder.f32"); return err },
		func() error { _, err := f.ReadFloat32("encoder.f32"); return err },
	} {
		err := read()
		if err == nil || !strings.Contains(err.Error(), "CRC-32 mismatch") || !strings.Contains(err.Error(), "encoder.f32") || strings.Contains(err.Error(), "\n") {
			t.Errorf("corrupted storage: %v", err)
		}
	}
	for _, n := range []int{len(good) / 2, i + 50, len(good) - 30} {
		_, err := Open(writeTemp(t, good[:n]))
		if err == nil || strings.Contains(err.Error(), "\n") {
			t.Errorf("truncated to %d of %d bytes: %v", n, len(good), err)
		}
	}
}

// TestCloseUnmaps: Close releases the mapping (and later reads say the file
// is closed).
func TestCloseUnmaps(t *testing.T) {
	if !mmapfile.Supported {
		t.Skip("no mapping on this platform")
	}
	p := writeTemp(t, viewSpec().zip(t))
	f, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, aliased, err := f.ViewFloat32("encoder.f32"); err != nil || !aliased {
		t.Fatalf("view: %v, aliased %v", err, aliased)
	}
	mappedBefore := mapsMention(t, p)
	if runtime.GOOS == "linux" && !mappedBefore {
		t.Fatalf("%s is not in /proc/self/maps while open", p)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if f.data != nil || f.mapped {
		t.Error("Close kept the mapping")
	}
	if mappedBefore && mapsMention(t, p) {
		t.Errorf("%s is still mapped after Close", p)
	}
	if _, _, err := f.ViewFloat32("encoder.f32"); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("view after Close: %v", err)
	}
	f.Release("encoder.f32") // a no-op, not a crash
	if err := f.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// mapsMention reports whether /proc/self/maps lists path (false where
// there is no /proc).
func mapsMention(t *testing.T, path string) bool {
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return false
	}
	return bytes.Contains(b, []byte(path))
}

func TestConcurrentViews(t *testing.T) {
	f, err := Open(writeTemp(t, viewSpec().zip(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := map[string][]float32{}
	for _, ti := range f.AllTensors() {
		if ti.DType != "I64" {
			if want[ti.Name], err = f.ReadFloat32(ti.Name); err != nil {
				t.Fatal(err)
			}
		}
	}
	var wg sync.WaitGroup
	errs := make(chan string, 64)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				for name, w := range want {
					v, _, err := f.ViewFloat32(name)
					if err != nil || !sameBits(v, w) {
						errs <- name
						return
					}
					f.Release(name)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for name := range errs {
		t.Errorf("concurrent view of %s differs", name)
	}
}
