package wds

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"image"
	"io"
	"math"
	"runtime"
	"strings"
	"sync"

	"github.com/unitok/unitok/internal/imageio"
	"github.com/unitok/unitok/internal/npy"
)

// TokenizeFunc turns B images into codes (B, N, K), row-major: the shape of
// (*unitok.Tokenizer).TokenizeImages. N may depend on the tokenizer's input
// size; Process takes it from the length of the result.
type TokenizeFunc func(ctx context.Context, imgs []image.Image) ([]int32, error)

// TokenizeEmbedFunc turns B images into codes (B, N, K) and embeddings
// (B, E), row-major: the shape of
// (*unitok.Tokenizer).TokenizeAndEmbedImages.
type TokenizeEmbedFunc func(ctx context.Context, imgs []image.Image) ([]int32, []float32, error)

// DecodeFunc decodes one image member; ext is its lowercased extension.
type DecodeFunc func(ext string, data []byte) (image.Image, error)

// DefaultMaxPixels is the largest image DefaultDecode accepts (100 MP),
// checked from the header before decoding.
const DefaultMaxPixels = 100_000_000

// DefaultDecode decodes as the image commands do (internal/imageio: JPEG,
// PNG, GIF, BMP, WebP, PIL's conversion rules), refusing images over
// DefaultMaxPixels from the header.
func DefaultDecode(ext string, data []byte) (image.Image, error) {
	img, _, err := imageio.Decode(bytes.NewReader(data), DefaultMaxPixels)
	return img, err
}

// DefaultImageExts are the image extensions, in order of preference when a
// sample has several.
var DefaultImageExts = []string{"jpg", "jpeg", "png", "webp"}

// Options configures Process.
type Options struct {
	Tokenize TokenizeFunc // required unless TokenizeEmbed is set
	// TokenizeEmbed, when set, replaces Tokenize: each sample also gets
	// its embedding as KEY.embed.npy, an (E,) float32 .npy, after its codes.
	TokenizeEmbed TokenizeEmbedFunc
	K             int // codebooks (required): codes of one image are (N, K)
	// V, when > 0, makes Process count codes into Result.Counts (K, V).
	V         int
	Decode    DecodeFunc // nil: DefaultDecode
	Batch     int        // images per Tokenize call (default 32)
	ImageExts []string   // nil: DefaultImageExts
	// Keep also writes each sample's image member; the other members are
	// always passed through.
	Keep     bool
	CodesExt string // default "codes.npy"
	EmbedExt string // default "embed.npy"
	Workers  int    // image decoders (default GOMAXPROCS)
}

// BadSample is a sample left out of the output, and why.
type BadSample struct {
	Key    string `json:"key"`
	Reason string `json:"reason"`
}

// Result describes one shard's pass.
type Result struct {
	Samples int         // samples read
	Written int         // samples written
	Bad     []BadSample // samples left out (no image member, undecodable image)
	Images  int         // images tokenized
	Tokens  int64       // tokens written (images x N)
	N       int         // tokens per image (0 if no image was tokenized)
	E       int         // embedding width (0 without TokenizeEmbed or images)
	Skipped int         // tar entries that are not sample members (see Reader)
	Counts  []int64     // (K, V) code counts when Options.V > 0
}

// Process streams one webdataset shard from in to out: every sample with an
// image member (the first of ImageExts it has) is written under the same
// key with its codes as KEY.codes.npy, an (N, K) uint16 .npy, after its
// other members (passed through in their order; the image member itself
// only with Keep). A sample without an image member, or whose image does
// not decode, is left out and reported in Result.Bad; the shard still
// completes. Errors reading the tar, from Tokenize, or writing are
// returned: the shard failed, and out holds a partial tar.
func Process(ctx context.Context, in io.Reader, out io.Writer, opt Options) (*Result, error) {
	if opt.Tokenize == nil && opt.TokenizeEmbed == nil || opt.K <= 0 {
		return nil, fmt.Errorf("wds: Process needs Tokenize (or TokenizeEmbed) and K")
	}
	if opt.Decode == nil {
		opt.Decode = DefaultDecode
	}
	if opt.Batch <= 0 {
		opt.Batch = 32
	}
	if opt.ImageExts == nil {
		opt.ImageExts = DefaultImageExts
	}
	if opt.CodesExt == "" {
		opt.CodesExt = "codes.npy"
	}
	if opt.EmbedExt == "" {
		opt.EmbedExt = "embed.npy"
	}
	if opt.Workers <= 0 {
		opt.Workers = runtime.GOMAXPROCS(0)
	}
	res := &Result{}
	if opt.V > 0 {
		res.Counts = make([]int64, opt.K*opt.V)
	}
	p := &processor{opt: opt, res: res, w: NewWriter(out)}
	// The reader/decoder runs one batch ahead of the tokenizer: while batch
	// i is tokenized (on the GPU), batch i+1 is read and decoded (on the
	// CPU cores).
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	batches := make(chan *decoded, 1)
	rd := NewReader(in)
	go func() {
		defer close(batches)
		var batch []*Sample
		send := func(d *decoded) bool {
			select {
			case batches <- d:
				return true
			case <-ctx.Done():
				return false
			}
		}
		for {
			if ctx.Err() != nil {
				return
			}
			s, err := rd.Next()
			if err == io.EOF {
				if len(batch) > 0 {
					send(p.decode(batch))
				}
				return
			}
			if err != nil {
				send(&decoded{err: err})
				return
			}
			batch = append(batch, s)
			if len(batch) >= opt.Batch {
				if !send(p.decode(batch)) {
					return
				}
				batch = nil
			}
		}
	}()
	var err error
	for d := range batches {
		if err != nil {
			continue // drain
		}
		if d.err != nil {
			err = d.err
		} else {
			res.Samples += len(d.batch)
			err = p.write(ctx, d)
		}
		if err != nil {
			cancel()
		}
	}
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		return res, err
	}
	res.Skipped = rd.Skipped
	return res, p.w.Close()
}

type processor struct {
	opt Options
	res *Result
	w   *Writer
}

// decoded is a batch of samples with their decoded images.
type decoded struct {
	batch []*Sample
	idx   []int // image member per sample, -1 if none
	imgs  []image.Image
	errs  []error // why a sample is bad
	err   error   // reading the tar failed
}

// imageMember returns the index of a sample's image member, or -1.
func (p *processor) imageMember(s *Sample) int {
	for _, ext := range p.opt.ImageExts {
		for i, m := range s.Members {
			if strings.EqualFold(m.Ext, ext) {
				return i
			}
		}
	}
	return -1
}

// decode decodes a batch's images in parallel.
func (p *processor) decode(batch []*Sample) *decoded {
	idx := make([]int, len(batch))
	imgs := make([]image.Image, len(batch))
	errs := make([]error, len(batch))
	work := make(chan int)
	var wg sync.WaitGroup
	for range min(p.opt.Workers, len(batch)) {
		wg.Go(func() {
			for i := range work {
				s := batch[i]
				j := p.imageMember(s)
				idx[i] = j
				if j < 0 {
					errs[i] = fmt.Errorf("no image member (want .%s)", strings.Join(p.opt.ImageExts, ", ."))
					continue
				}
				m := s.Members[j]
				img, err := p.opt.Decode(strings.ToLower(m.Ext), m.Data)
				if err == nil && img == nil {
					err = fmt.Errorf("decoder returned no image")
				}
				if err != nil {
					errs[i] = fmt.Errorf("%s: cannot decode: %v", m.Ext, err)
					continue
				}
				imgs[i] = img
			}
		})
	}
	for i := range batch {
		work <- i
	}
	close(work)
	wg.Wait()
	return &decoded{batch: batch, idx: idx, imgs: imgs, errs: errs}
}

// write tokenizes a decoded batch in one call and writes its samples in
// order.
func (p *processor) write(ctx context.Context, d *decoded) error {
	batch, idx, imgs, errs := d.batch, d.idx, d.imgs, d.errs
	var good []image.Image
	for i, s := range batch {
		if errs[i] != nil {
			p.res.Bad = append(p.res.Bad, BadSample{Key: s.Key, Reason: errs[i].Error()})
			continue
		}
		good = append(good, imgs[i])
	}
	if len(good) == 0 {
		return nil
	}
	var codes []int32
	var embs []float32
	var err error
	if p.opt.TokenizeEmbed != nil {
		codes, embs, err = p.opt.TokenizeEmbed(ctx, good)
	} else {
		codes, err = p.opt.Tokenize(ctx, good)
	}
	if err != nil {
		return fmt.Errorf("wds: tokenize: %w", err)
	}
	var ehdr []byte
	E := 0
	if p.opt.TokenizeEmbed != nil {
		if len(embs) == 0 || len(embs)%len(good) != 0 {
			return fmt.Errorf("wds: tokenize returned %d embedding values for %d images, want B*E", len(embs), len(good))
		}
		E = len(embs) / len(good)
		if p.res.E != 0 && p.res.E != E {
			return fmt.Errorf("wds: tokenize returned embeddings of width %d, earlier %d", E, p.res.E)
		}
		p.res.E = E
		if ehdr, err = npy.EncodeHeader(npy.Float32, []int{E}); err != nil {
			return err
		}
	}
	K := p.opt.K
	if len(codes) == 0 || len(codes)%(len(good)*K) != 0 {
		return fmt.Errorf("wds: tokenize returned %d codes for %d images and K=%d, want B*N*K", len(codes), len(good), K)
	}
	N := len(codes) / (len(good) * K)
	if p.res.N != 0 && p.res.N != N {
		return fmt.Errorf("wds: tokenize returned %d tokens per image, earlier %d", N, p.res.N)
	}
	p.res.N = N
	hdr, err := npy.EncodeHeader(npy.Uint16, []int{N, K})
	if err != nil {
		return err
	}
	g := 0
	for i, s := range batch {
		if errs[i] != nil {
			continue
		}
		c := codes[g*N*K : (g+1)*N*K]
		g++
		buf := make([]byte, len(hdr)+2*len(c))
		copy(buf, hdr)
		for t, v := range c {
			if v < 0 || v > 65535 || p.opt.V > 0 && int(v) >= p.opt.V {
				return fmt.Errorf("wds: sample %s: code %d out of range", s.Key, v)
			}
			binary.LittleEndian.PutUint16(buf[len(hdr)+2*t:], uint16(v))
			if p.res.Counts != nil {
				p.res.Counts[(t%K)*p.opt.V+int(v)]++
			}
		}
		o := &Sample{Key: s.Key}
		for j, m := range s.Members {
			if j != idx[i] || p.opt.Keep {
				o.Members = append(o.Members, m)
			}
		}
		o.Members = append(o.Members, Member{Ext: p.opt.CodesExt, Data: buf})
		if ehdr != nil {
			e := embs[(g-1)*E : g*E]
			eb := make([]byte, len(ehdr)+4*E)
			copy(eb, ehdr)
			for j, v := range e {
				binary.LittleEndian.PutUint32(eb[len(ehdr)+4*j:], math.Float32bits(v))
			}
			o.Members = append(o.Members, Member{Ext: p.opt.EmbedExt, Data: eb})
		}
		if err := p.w.Write(o); err != nil {
			return err
		}
		p.res.Written++
		p.res.Images++
		p.res.Tokens += int64(N)
	}
	return nil
}
