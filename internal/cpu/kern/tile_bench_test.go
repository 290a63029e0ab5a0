package kern

import (
	"fmt"
	"testing"
)

// BenchmarkTile: one 6-row tile, B of k x cols (attention's score product
// at k=64, cols=256; its value product at k=256, cols=64), one thread.
func BenchmarkTile(b *testing.B) {
	for _, sh := range [][2]int{{64, 256}, {256, 64}, {64, 64}} {
		k, cols := sh[0], sh[1]
		b.Run(fmt.Sprintf("k%d_cols%d", k, cols), func(b *testing.B) {
			a, bb, c := make([]float32, TileRows*k), make([]float32, k*cols), make([]float32, TileRows*cols)
			for i := range bb {
				bb[i] = float32(i%5) - 2
			}
			for i := 0; i < b.N; i++ {
				Tile(c, cols, a, k, bb, cols, TileRows, k, cols)
			}
			b.ReportMetric(float64(b.N)*2*TileRows*float64(k*cols)/1e9/b.Elapsed().Seconds(), "GFLOP/s")
		})
	}
}
