package kern

import (
	"math"
	"math/rand/v2"
	"testing"
)

// Tile on every level against float64, every row count, k from 0 up, with
// padded strides; columns outside the tile are left alone.
func TestTileMatchesFloat64(t *testing.T) {
	forEachLevel(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(9, 9))
		for rows := 1; rows <= TileRows; rows++ {
			for _, k := range []int{0, 1, 7, 64, 257} {
				for _, cols := range []int{16, 48} {
					lda, ldb, ldc := k+3, cols+5, cols+7
					a := randNormals(rng, rows*lda)
					b := randNormals(rng, max(k, 1)*ldb)
					c := make([]float32, rows*ldc)
					for i := range c {
						c[i] = 42
					}
					Tile(c, ldc, a, lda, b, ldb, rows, k, cols)
					for i := 0; i < rows; i++ {
						for j := 0; j < ldc; j++ {
							got := c[i*ldc+j]
							if j >= cols {
								if got != 42 {
									t.Fatalf("rows %d k %d: wrote column %d past %d", rows, k, j, cols)
								}
								continue
							}
							var want, mag float64
							for s := 0; s < k; s++ {
								p := float64(a[i*lda+s]) * float64(b[s*ldb+j])
								want += p
								mag += math.Abs(p)
							}
							if math.Abs(float64(got)-want) > 1e-6*mag { // float32 sums of up to 257 terms
								t.Fatalf("rows %d k %d cols %d: c[%d,%d] = %g, want %g", rows, k, cols, i, j, got, want)
							}
						}
					}
				}
			}
		}
	})
}
