// Package wds reads and writes webdataset shards: POSIX tar files whose
// members are grouped into samples by key, as the `webdataset` Python
// package (and UniTok's training data) lays them out.
//
// Naming follows webdataset's base_plus_ext: a member "dir/img001.seg.png"
// has key "dir/img001" (the path up to the first dot of the base name) and
// extension "seg.png" (everything after it). Consecutive members with the
// same key form one sample, in their tar order. Like webdataset, the reader
// skips entries that are not regular files, names without a dot in the base
// name, and metadata entries ("__*__" names); a repeated extension within a
// sample (compared lowercased, as webdataset does) is an error.
//
// Both directions stream: the reader holds one sample at a time, the writer
// writes each sample as it is given, so a shard of any size passes through
// in bounded memory. Written tars are deterministic (fixed modification
// time, owner and mode), so the same samples always give the same bytes.
package wds

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"path"
	"regexp"
	"strings"
	"time"
)

// Member is one file of a sample.
type Member struct {
	// Ext is the name after the key and its dot ("jpg", "seg.png",
	// "codes.npy"), as stored (case kept).
	Ext  string
	Data []byte
}

// Sample is the members sharing one key, in tar order.
type Sample struct {
	Key     string
	Members []Member
}

// Get returns the first member whose extension equals ext (ASCII case
// insensitive, as webdataset lowercases extensions).
func (s *Sample) Get(ext string) (Member, bool) {
	for _, m := range s.Members {
		if strings.EqualFold(m.Ext, ext) {
			return m, true
		}
	}
	return Member{}, false
}

// SplitName splits a member name into key and extension as webdataset's
// base_plus_ext does; ok is false when the base name has no dot.
func SplitName(name string) (key, ext string, ok bool) {
	dir, base := path.Split(name)
	i := strings.IndexByte(base, '.')
	if i <= 0 {
		// webdataset's regexp needs at least one character before the dot.
		return "", "", false
	}
	return dir + base[:i], base[i+1:], true
}

// metaRE is webdataset's skip_meta: names starting with "__...__".
var metaRE = regexp.MustCompile(`^__[^/]*__($|/)`)

// isMeta reports whether webdataset skips the member name as metadata: a
// top-level "__*__" name, or one matching skip_meta.
func isMeta(name string) bool {
	return !strings.Contains(name, "/") && strings.HasPrefix(name, "__") && strings.HasSuffix(name, "__") || metaRE.MatchString(name)
}

// DefaultMaxMember bounds one member's size (a guard against a corrupt
// header asking for terabytes).
const DefaultMaxMember = 1 << 30

// Reader reads samples from a tar stream.
type Reader struct {
	tr *tar.Reader
	// MaxMember is the largest member read (default DefaultMaxMember).
	MaxMember int64
	// Skipped counts entries skipped (not regular files, no extension,
	// metadata), for reports.
	Skipped int

	next *pending // the first member of the next sample, read ahead
	err  error    // sticky error (io.EOF at the end)
}

type pending struct {
	name, key string
	m         Member
}

// NewReader reads samples from the tar stream r (uncompressed; wrap a
// gzip.Reader for .tar.gz).
func NewReader(r io.Reader) *Reader {
	return &Reader{tr: tar.NewReader(r), MaxMember: DefaultMaxMember}
}

// member reads the next member that belongs to some sample.
func (r *Reader) member() (*pending, error) {
	for {
		h, err := r.tr.Next()
		if err != nil {
			if err == io.EOF {
				return nil, io.EOF
			}
			return nil, fmt.Errorf("wds: %w", err)
		}
		if h.Typeflag != tar.TypeReg && h.Typeflag != tar.TypeRegA {
			r.Skipped++
			continue
		}
		name := h.Name
		if isMeta(name) {
			r.Skipped++
			continue
		}
		key, ext, ok := SplitName(name)
		if !ok {
			r.Skipped++
			continue
		}
		if h.Size < 0 || h.Size > r.MaxMember {
			return nil, fmt.Errorf("wds: member %s is %d bytes (limit %d)", name, h.Size, r.MaxMember)
		}
		data := make([]byte, h.Size)
		if _, err := io.ReadFull(r.tr, data); err != nil {
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				return nil, fmt.Errorf("wds: member %s: truncated tar", name)
			}
			return nil, fmt.Errorf("wds: member %s: %w", name, err)
		}
		return &pending{name: name, key: key, m: Member{Ext: ext, Data: data}}, nil
	}
}

// Next returns the next sample, or io.EOF after the last one.
func (r *Reader) Next() (*Sample, error) {
	if r.err != nil {
		return nil, r.err
	}
	first := r.next
	r.next = nil
	if first == nil {
		p, err := r.member()
		if err != nil {
			r.err = err
			return nil, err
		}
		first = p
	}
	s := &Sample{Key: first.key, Members: []Member{first.m}}
	seen := map[string]bool{strings.ToLower(first.m.Ext): true}
	for {
		p, err := r.member()
		if err == io.EOF {
			r.err = io.EOF
			return s, nil
		}
		if err != nil {
			r.err = err
			return nil, err
		}
		if p.key != s.Key {
			r.next = p
			return s, nil
		}
		lx := strings.ToLower(p.m.Ext)
		if seen[lx] {
			r.err = fmt.Errorf("wds: %s: duplicate extension %q in sample %s", p.name, p.m.Ext, s.Key)
			return nil, r.err
		}
		seen[lx] = true
		s.Members = append(s.Members, p.m)
	}
}

// Writer writes samples to a tar stream.
type Writer struct {
	tw *tar.Writer
	// ModTime, Mode are written in every header (defaults: the Unix epoch
	// and 0o444, as webdataset's TarWriter with mtime=0).
	ModTime time.Time
	Mode    int64
	last    string
	n       int
}

// NewWriter writes samples to w. Close finishes the archive.
func NewWriter(w io.Writer) *Writer {
	return &Writer{tw: tar.NewWriter(w), ModTime: time.Unix(0, 0), Mode: 0o444}
}

// ErrBadSample is returned (wrapped) for a sample the writer refuses.
var ErrBadSample = errors.New("wds: bad sample")

// Write appends a sample's members, in order, as KEY.EXT. The key must
// read back as itself (no dot in its base name, not empty, not a
// metadata name), extensions must be non-empty and distinct (ignoring
// case), and the key must differ from the previous sample's (or the two
// would read back as one).
func (w *Writer) Write(s *Sample) error {
	if s.Key == "" || strings.ContainsRune(path.Base(s.Key), '.') || strings.HasSuffix(s.Key, "/") {
		return fmt.Errorf("%w: key %q does not read back as a webdataset key", ErrBadSample, s.Key)
	}
	if w.n > 0 && s.Key == w.last {
		return fmt.Errorf("%w: key %q repeats the previous sample's", ErrBadSample, s.Key)
	}
	if len(s.Members) == 0 {
		return fmt.Errorf("%w: sample %s has no members", ErrBadSample, s.Key)
	}
	seen := map[string]bool{}
	for _, m := range s.Members {
		lx := strings.ToLower(m.Ext)
		if m.Ext == "" || strings.ContainsRune(m.Ext, '/') || seen[lx] {
			return fmt.Errorf("%w: sample %s: extension %q is empty, has a slash or repeats", ErrBadSample, s.Key, m.Ext)
		}
		if isMeta(s.Key + "." + m.Ext) {
			return fmt.Errorf("%w: %s.%s would be skipped as webdataset metadata", ErrBadSample, s.Key, m.Ext)
		}
		seen[lx] = true
	}
	for _, m := range s.Members {
		h := &tar.Header{
			Typeflag: tar.TypeReg,
			Name:     s.Key + "." + m.Ext,
			Size:     int64(len(m.Data)),
			Mode:     w.Mode,
			ModTime:  w.ModTime,
			Format:   tar.FormatUnknown, // USTAR when the name fits, else PAX
		}
		if err := w.tw.WriteHeader(h); err != nil {
			return fmt.Errorf("wds: %s: %w", h.Name, err)
		}
		if _, err := w.tw.Write(m.Data); err != nil {
			return fmt.Errorf("wds: %s: %w", h.Name, err)
		}
	}
	w.last = s.Key
	w.n++
	return nil
}

// Samples is the number of samples written.
func (w *Writer) Samples() int { return w.n }

// Close writes the tar trailer (it does not close the underlying writer).
func (w *Writer) Close() error { return w.tw.Close() }
