// Package cputime reads the CPU time that benchmarks and the op table
// report beside wall time: on a shared machine, work per CPU second is what
// the cores did, steadier than work per second. Where a clock is not read
// (the other platforms) it returns 0, and callers print no rate.
package cputime
