//go:build nonvml

package telemetry

const nonvml = true
