package kern

// TileRows is the most rows one Tile call computes, TileCols the unit of
// its columns.
const TileRows, TileCols = 6, 16

// tileFns are a level's assembly tiles, indexed by rows (1..TileRows);
// nil on Generic.
var tileFns [AVX512 + 1]*[TileRows + 1]func(k int, a *float32, lda int, b *float32, ldb int, c *float32, ldc int, nc int)

// TileFast reports whether Tile runs an assembly kernel at the current
// level (else it is a plain Go loop, and kern.Gemm is the faster way).
func TileFast() bool { return tileFns[level] != nil }

// Tile computes C = A B for rows <= TileRows rows and cols (a multiple of
// TileCols) columns over k:
//
//	c[i*ldc+j] = sum_{t<k} a[i*lda+t] * b[t*ldb+j]
//
// summed in order of t (the assembly fuses each step). Nothing is packed:
// A, B and C are row-major with their own row strides, for small products
// whose operands already sit in cache (attention's per-query-tile score
// and value products). k == 0 writes zeros.
func Tile(c []float32, ldc int, a []float32, lda int, b []float32, ldb int, rows, k, cols int) {
	if rows <= 0 || cols <= 0 {
		return
	}
	if rows > TileRows || cols%TileCols != 0 {
		panic("kern.Tile: more than TileRows rows or columns not a multiple of TileCols")
	}
	_ = c[(rows-1)*ldc+cols-1]
	if k > 0 {
		_ = a[(rows-1)*lda+k-1]
		_ = b[(k-1)*ldb+cols-1]
	}
	if f := tileFns[level]; f != nil {
		var ap, bp *float32
		if k > 0 {
			ap, bp = &a[0], &b[0]
		}
		f[rows](k, ap, lda, bp, ldb, &c[0], ldc, cols/TileCols)
		return
	}
	for i := 0; i < rows; i++ {
		ci := c[i*ldc : i*ldc+cols]
		clear(ci)
		for t := 0; t < k; t++ {
			av := a[i*lda+t]
			for j, bv := range b[t*ldb : t*ldb+cols] {
				ci[j] += av * bv
			}
		}
	}
}
