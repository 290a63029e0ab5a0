//go:build unix

package prep

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// lockDir takes the run's advisory locks in dir, so that two runs never
// work on the same outputs (each would remove the other's temporaries). A
// whole-set run holds dir/.prep.lock exclusively. A partition holds
// dir/.prep.lock shared (so partitions run side by side, but not beside a
// whole-set run) and its own dir/.prep-IIIII-of-NNNNN.lock exclusively (so a
// partition runs once at a time). The kernel drops the locks when the
// process dies, kill -9 included.
func lockDir(dir string, p Partition) (unlock func(), err error) {
	how := unix.LOCK_EX
	if p.Enabled() {
		how = unix.LOCK_SH
	}
	f, err := flock(filepath.Join(dir, ".prep.lock"), how)
	if err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			if p.Enabled() {
				return nil, fmt.Errorf("%s is in use by a run over the whole set", dir)
			}
			return nil, fmt.Errorf("%s is in use by another run", dir)
		}
		return nil, fmt.Errorf("locking %s: %w", dir, err)
	}
	if !p.Enabled() {
		return func() { f.Close() }, nil
	}
	g, err := flock(filepath.Join(dir, ".prep"+p.suffix()+".lock"), unix.LOCK_EX)
	if err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("partition %s of %s is in use by another run", p, dir)
		}
		return nil, fmt.Errorf("locking %s: %w", dir, err)
	}
	return func() { g.Close(); f.Close() }, nil
}

func flock(path string, how int) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}
