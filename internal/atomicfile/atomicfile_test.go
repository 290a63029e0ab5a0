package atomicfile

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func noTemps(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range ents {
		assert.NotContains(t, e.Name(), ".tmp-", "leftover temp file")
	}
}

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "out.bin")
	require.NoError(t, WriteFile(p, []byte("hello"), 0o640))
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	assert.Equal(t, "hello", string(b))
	st, _ := os.Stat(p)
	assert.Equal(t, os.FileMode(0o640)&^umask(), st.Mode().Perm())
	// Replace.
	require.NoError(t, WriteFile(p, []byte("bye"), 0o644))
	b, _ = os.ReadFile(p)
	assert.Equal(t, "bye", string(b))
	noTemps(t, dir)
}

func TestFailureKeepsOld(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "out.bin")
	require.NoError(t, WriteFile(p, []byte("original"), 0o644))
	boom := errors.New("boom")
	err := WriteFunc(p, 0o644, func(w io.Writer) error {
		w.Write([]byte("partial data that must never appear"))
		return boom
	})
	assert.ErrorIs(t, err, boom)
	b, _ := os.ReadFile(p)
	assert.Equal(t, "original", string(b))
	noTemps(t, dir)

	// A panic inside fn also cleans up.
	q := filepath.Join(dir, "panic.bin")
	assert.Panics(t, func() {
		WriteFunc(q, 0o644, func(w io.Writer) error { w.Write([]byte("x")); panic("oops") })
	})
	assert.NoFileExists(t, q)
	noTemps(t, dir)
}

func TestCreateCommitAbort(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "c.bin")
	f, err := Create(p, 0o644)
	require.NoError(t, err)
	assert.FileExists(t, f.TempName())
	_, err = f.Write([]byte("0123456789"))
	require.NoError(t, err)
	assert.NoFileExists(t, p, "nothing visible before Commit")
	_, err = f.WriteAt([]byte("AB"), 2)
	require.NoError(t, err)
	_, err = f.WriteAt([]byte("AB"), 9)
	assert.ErrorContains(t, err, "past the 10 bytes written")
	_, err = f.Write([]byte("!"))
	require.NoError(t, err)
	require.NoError(t, f.Commit())
	b, _ := os.ReadFile(p)
	assert.Equal(t, "01AB456789!", string(b))
	assert.ErrorIs(t, f.Commit(), os.ErrClosed)
	require.NoError(t, f.Abort(), "Abort after Commit is a no-op")
	assert.FileExists(t, p)

	g, err := Create(filepath.Join(dir, "a.bin"), 0o644)
	require.NoError(t, err)
	g.Write([]byte("x"))
	require.NoError(t, g.Abort())
	require.NoError(t, g.Abort())
	_, err = g.Write([]byte("y"))
	assert.ErrorIs(t, err, os.ErrClosed)
	assert.NoFileExists(t, filepath.Join(dir, "a.bin"))
	noTemps(t, dir)
	var nilFile *File
	assert.NoError(t, nilFile.Abort())
}

func TestCreateErrors(t *testing.T) {
	dir := t.TempDir()
	_, err := Create(dir, 0o644)
	assert.ErrorContains(t, err, "is a directory")
	_, err = Create(filepath.Join(dir, "no", "such", "dir", "x"), 0o644)
	assert.ErrorIs(t, err, os.ErrNotExist)
	_, err = Create(dir+"/", 0o644)
	assert.Error(t, err)
}
