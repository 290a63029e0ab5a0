package mmapfile

import (
	"fmt"
	"io"
	"os"
)

// Load returns the whole content of the regular file at path: read into
// memory when it is smaller than threshold bytes (or mapping is not
// supported), else mapped read-only. When mapped is true the caller must
// Unmap data once done with it.
func Load(path string, threshold int64) (data []byte, mapped bool, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, false, err
	}
	if !st.Mode().IsRegular() {
		return nil, false, fmt.Errorf("%s is not a regular file", path)
	}
	size := st.Size()
	if size < threshold || !Supported {
		b, err := io.ReadAll(f)
		return b, false, err
	}
	if int64(int(size)) != size {
		return nil, false, fmt.Errorf("%s: file too large to map", path)
	}
	m, err := Map(f, int(size))
	if err != nil {
		return nil, false, fmt.Errorf("mmap %s: %w", path, err)
	}
	return m, true, nil
}
