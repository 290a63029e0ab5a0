// Package atomicfile writes files so that a reader never sees a half-written
// file under the final name: data goes to a temporary file in the same
// directory, which is synced, renamed over the final name, and the directory
// synced. On any error (or Abort) the temporary file is removed and the
// final name is untouched.
package atomicfile

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
)

// File is a pending atomic write. Write to it, then Commit to publish it
// under the final name, or Abort to discard it. Writes are buffered.
type File struct {
	path string // final name
	f    *os.File
	w    *bufio.Writer
	err  error // first write error, sticky
	done bool
}

// Create starts an atomic write of path with the given permission bits
// (subject to the umask, like os.Create). The temporary file lives beside
// path, so the final rename never crosses file systems.
func Create(path string, perm os.FileMode) (*File, error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	if base == "" {
		return nil, fmt.Errorf("atomicfile: %q names a directory, not a file", path)
	}
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		return nil, fmt.Errorf("atomicfile: %s is a directory", path)
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return nil, err
	}
	// CreateTemp uses 0600; apply the caller's permission minus the umask.
	if err := f.Chmod(perm &^ umask()); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, err
	}
	return &File{path: path, f: f, w: bufio.NewWriterSize(f, 1<<20)}, nil
}

// Name returns the final path.
func (a *File) Name() string { return a.path }

// TempName returns the temporary file's path (for tests and diagnostics).
func (a *File) TempName() string { return a.f.Name() }

// Write appends p. After the first error every later Write (and Commit)
// returns that error.
func (a *File) Write(p []byte) (int, error) {
	if a.done {
		return 0, os.ErrClosed
	}
	if a.err != nil {
		return 0, a.err
	}
	n, err := a.w.Write(p)
	if err != nil {
		a.err = err
	}
	return n, err
}

// WriteAt flushes buffered data and writes p at offset off of the temporary
// file, without moving the append position: for headers that are only known
// at the end (a row count). Writing past the current end is an error.
func (a *File) WriteAt(p []byte, off int64) (int, error) {
	if a.done {
		return 0, os.ErrClosed
	}
	if a.err != nil {
		return 0, a.err
	}
	if err := a.w.Flush(); err != nil {
		a.err = err
		return 0, err
	}
	st, err := a.f.Stat()
	if err != nil {
		return 0, err
	}
	if off < 0 || off+int64(len(p)) > st.Size() {
		return 0, fmt.Errorf("atomicfile: WriteAt [%d, %d) past the %d bytes written", off, off+int64(len(p)), st.Size())
	}
	n, err := a.f.WriteAt(p, off)
	if err != nil {
		a.err = err
	}
	return n, err
}

// Commit flushes, syncs and renames the temporary file to the final name,
// then syncs the directory. On failure the temporary file is removed and
// the final name keeps whatever it held before.
func (a *File) Commit() error {
	if a.done {
		return os.ErrClosed
	}
	a.done = true
	err := a.err
	if err == nil {
		err = a.w.Flush()
	}
	if err == nil {
		err = a.f.Sync()
	}
	if cerr := a.f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(a.f.Name(), a.path)
	}
	if err != nil {
		os.Remove(a.f.Name())
		return err
	}
	return syncDir(filepath.Dir(a.path))
}

// Abort discards the pending write. It is idempotent and safe after Commit
// (then it does nothing).
func (a *File) Abort() error {
	if a == nil || a.done {
		return nil
	}
	a.done = true
	a.f.Close()
	return os.Remove(a.f.Name())
}

// WriteFile atomically replaces path with data.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	return WriteFunc(path, perm, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// WriteFunc atomically replaces path with whatever fn writes. If fn returns
// an error (or panics) nothing is published.
func WriteFunc(path string, perm os.FileMode, fn func(w io.Writer) error) (err error) {
	a, err := Create(path, perm)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			a.Abort()
		}
	}()
	done := false
	defer func() {
		if !done {
			a.Abort() // fn panicked
		}
	}()
	if err = fn(a); err != nil {
		done = true
		return err
	}
	done = true
	return a.Commit()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	// Some file systems refuse fsync on directories (EINVAL); the rename has
	// happened, so report only real I/O errors.
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, os.ErrInvalid) {
		return err
	}
	return nil
}
