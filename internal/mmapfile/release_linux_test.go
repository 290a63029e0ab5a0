//go:build linux

package mmapfile

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// mappingRSS returns the resident kB of the mapping of path, from
// /proc/self/smaps.
func mappingRSS(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Skip("no /proc/self/smaps")
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	in, total, found := false, 0, false
	for sc.Scan() {
		line := sc.Text()
		if fields := strings.Fields(line); len(fields) >= 5 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":") {
			in = strings.HasSuffix(line, path)
			found = found || in
			continue
		}
		if in && strings.HasPrefix(line, "Rss:") {
			kb, _ := strconv.Atoi(strings.Fields(line)[1])
			total += kb
		}
	}
	if !found {
		t.Fatalf("%s is not mapped", path)
	}
	return total
}

// TestRelease: Release drops a mapping's resident pages (the range widened
// to whole pages) and the content reads back unchanged.
func TestRelease(t *testing.T) {
	const size = 4<<20 + 123
	want := make([]byte, size)
	for i := range want {
		want[i] = byte(i*7 + i>>12)
	}
	p := filepath.Join(t.TempDir(), "m.bin")
	if err := os.WriteFile(p, want, 0o644); err != nil {
		t.Fatal(err)
	}
	m, mapped, err := Load(p, 0)
	if err != nil || !mapped {
		t.Fatalf("Load: mapped %v, %v", mapped, err)
	}
	defer Unmap(m)
	if !bytes.Equal(m, want) { // touches every page
		t.Fatal("mapping differs from the file")
	}
	before := mappingRSS(t, p)
	if before < 4000 {
		t.Fatalf("resident %d kB after reading 4 MiB", before)
	}
	// An unaligned middle range first: at least its pages go (the kernel
	// may drop more: a file page cache in large folios is mapped by whole
	// 2 MiB entries, which a partial release unmaps whole).
	Release(m, 1<<20+5, 1<<20)
	if mid := mappingRSS(t, p); mid > before-1000 {
		t.Errorf("resident %d kB after releasing 1 MiB of %d kB", mid, before)
	}
	if !bytes.Equal(m, want) {
		t.Fatal("content changed after a partial Release")
	}
	Release(m, 0, len(m))
	if rss := mappingRSS(t, p); rss > 64 {
		t.Errorf("resident %d kB after releasing everything", rss)
	}
	if !bytes.Equal(m, want) {
		t.Error("content changed after Release")
	}
	Release(m, -1, 10) // out of range: ignored
	Release(m, len(m), 10)
	Release(m, 0, 0)
}
