//go:build !nonvml

package telemetry

const nonvml = false
