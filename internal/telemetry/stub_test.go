//go:build !(linux && cgo) || nonvml

package telemetry

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Without cgo there is no NVML: Open and Read say why, and do not crash.
func TestStubNotAvailable(t *testing.T) {
	m, err := Open()
	assert.Nil(t, m)
	require.ErrorIs(t, err, ErrNotAvailable)
	assert.Regexp(t, `^NVML not available: (this binary was built without cgo|NVML telemetry is supported on Linux only|this binary was built with -tags nonvml)`, err.Error())
	_, err = Read()
	require.ErrorIs(t, err, ErrNotAvailable)
}
