package prep

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/unitok/unitok/internal/wds"
)

// Record is one manifest line: a shard whose output was published. The
// manifest is JSON lines, appended and fsynced after each output's rename,
// so every record names a complete file.
type Record struct {
	Shard   string  `json:"shard"`   // input path relative to its root
	Output  string  `json:"output"`  // output path relative to the output directory
	Rows    int     `json:"rows"`    // leading dimension of the output (images or rows)
	Tokens  int64   `json:"tokens"`  // tokens in the shard
	Bytes   int64   `json:"bytes"`   // size of the output file
	SHA256  string  `json:"sha256"`  // hex SHA-256 of the whole output file
	Seconds float64 `json:"seconds"` // wall time from the shard's first read to its commit
	Params  string  `json:"params"`  // op, dtype, layout, config and weights fingerprint
	// Partition is "I/N" for a partitioned run (see Partition), else empty.
	Partition string `json:"partition,omitempty"`
	// Finished is the commit time (Unix seconds): with Seconds it places
	// the shard's work in time, for throughput across runs and machines.
	Finished float64 `json:"finished,omitempty"`
	// Error, when set, records a shard that failed (Output is where it
	// would have gone; SHA256 and Bytes are empty): a later record for the
	// same output supersedes it, and a rerun retries the shard.
	Error string `json:"error,omitempty"`
	// Bad lists the samples of a webdataset shard left out of its output
	// (RunTars): key and reason.
	Bad []wds.BadSample `json:"bad,omitempty"`
}

// manifestData is a parsed manifest: the last outcome per output.
type manifestData struct {
	done   map[string]Record // last outcome a published output
	failed map[string]Record // last outcome a failure
	bad    int               // lines that are not records (a torn tail)
}

func parseManifest(b []byte) manifestData {
	m := manifestData{done: map[string]Record{}, failed: map[string]Record{}}
	for line := range bytes.Lines(b) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		var r Record
		if err := json.Unmarshal(line, &r); err != nil || r.Output == "" {
			m.bad++
			continue
		}
		switch {
		case r.Error != "":
			delete(m.done, r.Output)
			m.failed[r.Output] = r
		case r.SHA256 != "":
			delete(m.failed, r.Output)
			m.done[r.Output] = r
		default:
			m.bad++
		}
	}
	return m
}

// manifest is the append side of the manifest file.
type manifest struct {
	path string
	f    *os.File
}

// readManifest returns the published-output records of path by output name
// (the last record wins; failure records are not returned). A line that is not valid JSON (a torn last line after a
// crash) is ignored, and a torn tail is cut off so that appends start on a
// fresh line. A missing file is an empty manifest.
func readManifest(path string) (map[string]Record, int, error) {
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return map[string]Record{}, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	m := parseManifest(b)
	if n := len(b); n > 0 && b[n-1] != '\n' {
		if err := os.Truncate(path, int64(bytes.LastIndexByte(b, '\n')+1)); err != nil {
			return nil, 0, fmt.Errorf("cutting the torn last line of %s: %w", path, err)
		}
	}
	return m.done, m.bad, nil
}

func openManifest(path string) (*manifest, error) {
	_, statErr := os.Stat(path)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if os.IsNotExist(statErr) {
		// Make the new name durable before any record relies on it.
		if d, err := os.Open(filepath.Dir(path)); err == nil {
			d.Sync()
			d.Close()
		}
	}
	return &manifest{path: path, f: f}, nil
}

// append writes one record as a single write and fsyncs it.
func (m *manifest) append(r Record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if _, err := m.f.Write(b); err != nil {
		return fmt.Errorf("manifest %s: %w", m.path, err)
	}
	if err := m.f.Sync(); err != nil {
		return fmt.Errorf("manifest %s: %w", m.path, err)
	}
	return nil
}

func (m *manifest) close() error {
	if m == nil || m.f == nil {
		return nil
	}
	err := m.f.Close()
	m.f = nil
	return err
}

// fileSHA256 hashes a whole file.
func fileSHA256(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, bufio.NewReaderSize(f, 1<<20))
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// removeStaleTemps deletes atomicfile temporaries (".NAME.tmp-*") that a
// killed run left beside the outputs it was writing; only names of
// expected outputs are touched.
func removeStaleTemps(outDir string, outputs map[string]bool) (int, error) {
	n := 0
	err := filepath.WalkDir(outDir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) {
				return nil
			}
			return err
		}
		if d.IsDir() || len(d.Name()) < 2 || d.Name()[0] != '.' {
			return nil
		}
		name := d.Name()[1:]
		i := bytes.LastIndex([]byte(name), []byte(".tmp-"))
		if i <= 0 {
			return nil
		}
		final := filepath.Join(filepath.Dir(p), name[:i])
		if outputs[final] {
			if err := os.Remove(p); err == nil {
				n++
			}
		}
		return nil
	})
	return n, err
}
