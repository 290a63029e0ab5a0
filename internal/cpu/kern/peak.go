package kern

// peakLoop is a level's FMA-throughput loop: run(n) does n iterations of
// flop floating-point operations in independent VFMADD231PS chains with no
// memory traffic. Benchmarks use it to report each kernel's fraction of
// the machine's measured peak.
type peakLoop struct {
	flop int
	run  func(n int)
}

var peaks [AVX512 + 1]peakLoop
