package pth

import (
	"archive/zip"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// fixturePickles returns data.pkl of every committed torch fixture, for
// seeding the fuzzers with what torch.save really writes.
func fixturePickles(f *testing.F) (pickles, zips [][]byte) {
	paths, _ := filepath.Glob(filepath.Join("..", "..", "testdata", "pth", "*.pth"))
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if len(b) < 16<<10 {
			zips = append(zips, b)
		}
		zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			continue
		}
		for _, zf := range zr.File {
			if filepath.Base(zf.Name) == "data.pkl" {
				rc, err := zf.Open()
				if err != nil {
					continue
				}
				d, _ := io.ReadAll(rc)
				rc.Close()
				pickles = append(pickles, d)
			}
		}
	}
	return pickles, zips
}

func FuzzUnpickle(f *testing.F) {
	pickles, _ := fixturePickles(f)
	for _, p := range pickles {
		f.Add(p)
	}
	f.Add(ckptSpec{args: unitokArgs(), tensors: smallCore()}.pickle())
	f.Add(ckptSpec{layout: "bare", tensors: smallCore()[:2]}.pickle())
	f.Add(newPK().global("os", "system").str("x").op(opTuple1, opReduce, opStop).Bytes())
	f.Add([]byte{opProto, 4, opFrame, 0, 0, 0, 0, 0, 0, 0, 0, opEmptyList, opMemoize, opBinGet, 0, opAppend, opStop})
	f.Fuzz(func(t *testing.T, data []byte) {
		storages := 0
		v, err := Unpickle(data, func(pid any) (any, error) {
			storages++
			return &Storage{Type: "FloatStorage", DType: "F32", Key: "k", Numel: 64}, nil
		})
		if err == nil {
			_ = render(v, 0)
			_, _, _ = findStateDict(v)
		}
	})
}

func FuzzOpenZip(f *testing.F) {
	_, zips := fixturePickles(f)
	for _, z := range zips {
		f.Add(z)
	}
	f.Add(ckptSpec{args: unitokArgs(), tensors: smallCore()[:4]}.zip(f))
	f.Add(ckptSpec{layout: "bare", tensors: smallCore()[2:4], deflate: true}.zip(f))
	f.Add(ckptSpec{tensors: []tspec{{name: "quantizer.t", data: f32bytes(seq(6, 1)), shape: []int64{3, 2}, stride: []int64{1, 3}}}, bigEndian: true}.zip(f))
	f.Fuzz(func(t *testing.T, data []byte) {
		pf, err := OpenReaderAt(bytes.NewReader(data), int64(len(data)), Options{})
		if err != nil {
			return
		}
		defer pf.Close()
		_ = pf.Metadata()
		_ = pf.Ignored()
		for _, ti := range pf.AllTensors() {
			b, info, err := pf.ReadRaw(ti.Name)
			if err == nil && int64(len(b)) != int64(info.Elems())*elemSize(string(info.DType)) {
				t.Fatalf("%s: %d bytes for %v", ti.Name, len(b), info)
			}
			_, _ = pf.ReadFloat32(ti.Name)
		}
	})
}

// FuzzCheckpointPickle wraps a fuzzed data.pkl in a valid archive with a
// few storages, so the fuzzer reaches state-dict discovery, views and reads
// instead of stopping at zip checksums.
func FuzzCheckpointPickle(f *testing.F) {
	pickles, _ := fixturePickles(f)
	for _, p := range pickles {
		f.Add(p)
	}
	f.Add(ckptSpec{args: unitokArgs(), tensors: smallCore()}.pickle())
	f.Add(ckptSpec{tensors: []tspec{{name: "quantizer.t", data: f32bytes(seq(6, 1)), shape: []int64{3, 2}, stride: []int64{1, 3}}}}.pickle())
	storages := map[string][]byte{"archive/byteorder": []byte("little")}
	for i, n := range []int{32, 4, 6, 6, 12, 4, 2, 2} {
		storages["archive/data/"+string(rune('0'+i))] = make([]byte, 8*n)
	}
	f.Fuzz(func(t *testing.T, pkl []byte) {
		entries := map[string][]byte{"archive/data.pkl": pkl}
		for k, v := range storages {
			entries[k] = v
		}
		z := zipOf(t, entries)
		pf, err := OpenReaderAt(bytes.NewReader(z), int64(len(z)), Options{})
		if err != nil {
			return
		}
		defer pf.Close()
		_ = pf.Metadata()
		for _, ti := range pf.AllTensors() {
			b, info, err := pf.ReadRaw(ti.Name)
			if err == nil && int64(len(b)) != int64(info.Elems())*elemSize(string(info.DType)) {
				t.Fatalf("%s: %d bytes for %v", ti.Name, len(b), info)
			}
			_, _ = pf.ReadFloat32(ti.Name)
		}
	})
}
