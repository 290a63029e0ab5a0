package prep

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/unitok/unitok"
	"github.com/unitok/unitok/internal/npy"
)

// PartitionStatus is one manifest's share of a data-prep job.
type PartitionStatus struct {
	Partition string  `json:"partition"` // "I/N", or "all" for manifest.jsonl
	Manifest  string  `json:"manifest"`
	Done      int     `json:"done"`   // outputs whose last record here is a publication
	Failed    int     `json:"failed"` // shards whose last record here is a failure
	Tokens    int64   `json:"tokens"` // tokens of the done shards
	Busy      float64 `json:"busy_seconds"`
	// TokensPerSecond is Tokens over Busy, the union of the shards'
	// [finished - seconds, finished] intervals: time spent working, across
	// restarts, not counting time the partition was down or queued.
	TokensPerSecond float64 `json:"tokens_per_second"`
	LastCommit      string  `json:"last_commit,omitempty"` // RFC 3339, UTC
	Histogram       string  `json:"histogram,omitempty"`   // "used", "stale (recounted)", "missing (recounted)"
}

// FailedShard is a shard whose last outcome is a failure.
type FailedShard struct {
	Shard     string `json:"shard"`
	Partition string `json:"partition"`
	Error     string `json:"error"`
}

// StatusReport merges the manifests of an output directory.
type StatusReport struct {
	OutDir     string            `json:"out"`
	Count      int               `json:"partition_count"` // N of the partition manifests; 0 if none or mixed
	PartCounts []int             `json:"partition_counts"`
	Partitions []PartitionStatus `json:"partitions"`
	NotStarted []int             `json:"not_started"` // partitions of Count without a manifest
	Done       int               `json:"done"`        // distinct outputs published
	Failed     []FailedShard     `json:"failed"`      // not published by any run
	// Duplicates lists outputs that more than one manifest records as
	// published (a shard done twice; never the case for partitions of one N).
	Duplicates []string `json:"duplicates"`
	// Listed is the number of input shards found with StatusOptions.In (-1
	// when no inputs were given); Missing lists those neither published nor
	// failed, MissingBy counts them per owning partition of Count.
	Listed    int            `json:"listed"`
	Missing   []string       `json:"missing"`
	MissingBy map[string]int `json:"missing_by_partition,omitempty"`
	Params    []string       `json:"params"` // distinct parameter fingerprints of the published outputs
	Tokens    int64          `json:"tokens"`
	// Code statistics over every published output: merged from the
	// partitions' histograms where they cover the partition's outputs,
	// recounted from the output files otherwise (codes-out ops only).
	K          int       `json:"k,omitempty"`
	V          int       `json:"v,omitempty"`
	CodeTokens int64     `json:"code_tokens"`
	Counts     []int64   `json:"-"`
	Usage      []float64 `json:"usage,omitempty"`
	Perplexity []float64 `json:"perplexity,omitempty"`
	StatsNote  string    `json:"stats_note,omitempty"`
}

// Complete reports whether every shard is done: nothing failed, missing,
// done twice or not started.
func (s *StatusReport) Complete() bool {
	return len(s.Failed) == 0 && len(s.Missing) == 0 && len(s.Duplicates) == 0 && len(s.NotStarted) == 0 && len(s.Partitions) > 0
}

// StatusOptions configures Status.
type StatusOptions struct {
	OutDir string
	// In and Tensor, when set, list the input shards as Run does (or, when
	// there are no array shards, the .tar shards as RunTars does), so that
	// missing shards are reported too.
	In     []string
	Tensor string
}

// Status merges every manifest in an output directory (manifest.jsonl and
// manifest-IIIII-of-NNNNN.jsonl): shards done, failed, missing (given the
// inputs), done twice, partitions not started, per-partition throughput,
// and per-codebook usage and perplexity over the whole set. It only reads:
// it is safe while partitions are running (a record being appended is
// ignored until complete).
func Status(opt StatusOptions) (*StatusReport, error) {
	mfs, err := listManifests(opt.OutDir)
	if err != nil {
		return nil, err
	}
	rep := &StatusReport{OutDir: opt.OutDir, Listed: -1, Failed: []FailedShard{}, Duplicates: []string{},
		Missing: []string{}, NotStarted: []int{}, PartCounts: []int{}}
	if len(mfs) == 0 {
		return rep, fmt.Errorf("%s: no manifest (manifest.jsonl or manifest-*-of-*.jsonl)", opt.OutDir)
	}
	done := map[string]Record{}   // output -> record
	doneIn := map[string]string{} // output -> partition that published it
	failed := map[string]FailedShard{}
	params := map[string]bool{}
	counts := map[int]bool{}
	whole := false
	for _, mf := range mfs {
		b, err := os.ReadFile(mf.path)
		if err != nil {
			return nil, err
		}
		d := parseManifest(b)
		ps := PartitionStatus{Partition: mf.part.String(), Manifest: filepath.Base(mf.path), Done: len(d.done), Failed: len(d.failed)}
		if mf.part.Enabled() {
			counts[mf.part.Count] = true
		} else {
			whole = true
		}
		var spans [][2]float64
		var last float64
		for out, r := range d.done {
			ps.Tokens += r.Tokens
			if r.Finished > 0 {
				spans = append(spans, [2]float64{r.Finished - r.Seconds, r.Finished})
				last = max(last, r.Finished)
			}
			params[r.Params] = true
			if other, dup := doneIn[out]; dup {
				rep.Duplicates = append(rep.Duplicates, fmt.Sprintf("%s (%s and %s)", out, other, ps.Partition))
				continue
			}
			done[out], doneIn[out] = r, ps.Partition
		}
		for out, r := range d.failed {
			failed[out] = FailedShard{Shard: r.Shard, Partition: ps.Partition, Error: r.Error}
		}
		ps.Busy = unionLength(spans)
		if ps.Busy > 0 {
			ps.TokensPerSecond = float64(ps.Tokens) / ps.Busy
		}
		if last > 0 {
			ps.LastCommit = time.Unix(0, int64(last*1e9)).UTC().Format(time.RFC3339)
		}
		rep.Partitions = append(rep.Partitions, ps)
	}
	for out, f := range failed {
		if _, ok := done[out]; !ok {
			rep.Failed = append(rep.Failed, f)
		}
	}
	sort.Slice(rep.Failed, func(i, j int) bool { return rep.Failed[i].Shard < rep.Failed[j].Shard })
	sort.Strings(rep.Duplicates)
	for n := range counts {
		rep.PartCounts = append(rep.PartCounts, n)
	}
	sort.Ints(rep.PartCounts)
	if len(rep.PartCounts) == 1 && !whole {
		rep.Count = rep.PartCounts[0]
		have := map[int]bool{}
		for _, mf := range mfs {
			have[mf.part.Index] = true
		}
		for i := 0; i < rep.Count; i++ {
			if !have[i] {
				rep.NotStarted = append(rep.NotStarted, i)
			}
		}
	}
	rep.Done = len(done)
	for p := range params {
		rep.Params = append(rep.Params, p)
	}
	sort.Strings(rep.Params)
	for _, r := range done {
		rep.Tokens += r.Tokens
	}

	if len(opt.In) > 0 {
		srcs, err := findShards(opt.In, opt.Tensor, opt.OutDir)
		if err != nil {
			return nil, err
		}
		if len(srcs) == 0 { // webdataset shards (RunTars)
			if srcs, err = findTarShards(opt.In, opt.OutDir); err != nil {
				return nil, err
			}
		}
		rep.Listed = len(srcs)
		for _, s := range srcs {
			if _, ok := done[s.outRel]; ok {
				continue
			}
			if _, ok := failed[s.outRel]; ok {
				continue
			}
			rep.Missing = append(rep.Missing, s.rel)
			if rep.Count > 0 {
				if rep.MissingBy == nil {
					rep.MissingBy = map[string]int{}
				}
				rep.MissingBy[Partition{Index: Owner(s.rel, rep.Count), Count: rep.Count}.String()]++
			}
		}
	}
	rep.stats(opt.OutDir, mfs, done)
	return rep, nil
}

// unionLength is the total length of the union of intervals.
func unionLength(spans [][2]float64) float64 {
	sort.Slice(spans, func(i, j int) bool { return spans[i][0] < spans[j][0] })
	var total, lo, hi float64
	open := false
	for _, s := range spans {
		if !open || s[0] > hi {
			if open {
				total += hi - lo
			}
			lo, hi, open = s[0], s[1], true
			continue
		}
		hi = max(hi, s[1])
	}
	if open {
		total += hi - lo
	}
	return total
}

var paramRE = regexp.MustCompile(`(?:^| )(op|K|V|layout)=(\S+)`)

// stats merges the code statistics: each partition's histogram where its
// code count equals the tokens of the outputs that partition owns, the
// output files recounted otherwise (encode and quantize write codes;
// decode and lookup outputs are not codes, so their statistics come from
// histograms only).
func (s *StatusReport) stats(dir string, mfs []manifestFile, done map[string]Record) {
	if len(s.Params) == 0 {
		return
	}
	if len(s.Params) > 1 {
		s.StatsNote = fmt.Sprintf("no code statistics: the outputs were made with %d different parameter sets", len(s.Params))
		return
	}
	kv := map[string]string{}
	for _, m := range paramRE.FindAllStringSubmatch(s.Params[0], -1) {
		if _, ok := kv[m[1]]; !ok { // the first occurrence: later ones may be inside model=...
			kv[m[1]] = m[2]
		}
	}
	K, _ := strconv.Atoi(kv["K"])
	V, _ := strconv.Atoi(kv["V"])
	if K <= 0 || V <= 0 {
		return
	}
	layout := unitok.TokenMajor
	if kv["layout"] == "bkn" {
		layout = unitok.CodebookMajor
	}
	codesOut := kv["op"] == "encode" || kv["op"] == "quantize" || kv["op"] == "tokenize-images"
	tars := kv["op"] == "tokenize-images"
	s.K, s.V, s.Counts = K, V, make([]int64, K*V)

	// The outputs each partition of Count owns (all of them in one group
	// when there is no single partition count).
	groups := map[int][]Record{}
	for _, r := range done {
		g := 0
		if s.Count > 0 {
			g = Owner(r.Shard, s.Count)
		}
		groups[g] = append(groups[g], r)
	}
	var used, recounted, failedCount int
	for g, recs := range groups {
		var want int64
		for _, r := range recs {
			want += r.Tokens
		}
		status := "missing"
		if s.Count > 0 {
			h, err := readHistogram(filepath.Join(dir, histogramName(Partition{Index: g, Count: s.Count})), K, V)
			if err == nil {
				var got int64
				for _, c := range h[:V] {
					got += c
				}
				if got == want {
					for i, c := range h {
						s.Counts[i] += c
					}
					s.CodeTokens += want
					used++
					s.setHistogram(Partition{Index: g, Count: s.Count}, "used")
					continue
				}
				status = "stale"
			}
		}
		if !codesOut {
			s.setHistogram(Partition{Index: g, Count: s.Count}, status)
			failedCount += len(recs)
			continue
		}
		s.setHistogram(Partition{Index: g, Count: s.Count}, status+" (recounted)")
		for _, r := range recs {
			p := filepath.Join(dir, filepath.FromSlash(r.Output))
			var n int64
			var err error
			if tars {
				n, err = countTarCodes(s.Counts, p, K, V)
			} else {
				n, err = countCodesFile(s.Counts, p, "", layout, K, V)
			}
			if err != nil {
				failedCount++
				continue
			}
			s.CodeTokens += n
			recounted++
		}
	}
	sum := Summary{K: K, V: V, Counts: s.Counts}
	sum.finishStats()
	s.Usage, s.Perplexity = sum.Usage, sum.Perplexity
	switch {
	case failedCount > 0:
		s.StatsNote = fmt.Sprintf("statistics leave out %d outputs (no usable histogram, and the outputs are not codes or unreadable)", failedCount)
	case recounted > 0:
		s.StatsNote = fmt.Sprintf("from %d partition histograms and %d recounted outputs", used, recounted)
	default:
		s.StatsNote = fmt.Sprintf("from %d partition histograms", used)
	}
}

func (s *StatusReport) setHistogram(p Partition, v string) {
	if s.Count == 0 {
		return
	}
	for i := range s.Partitions {
		if s.Partitions[i].Partition == p.String() {
			s.Partitions[i].Histogram = v
		}
	}
}

// readHistogram reads a (K, V) int64 histogram.
func readHistogram(path string, K, V int) ([]int64, error) {
	a, err := npy.Open(path)
	if err != nil {
		return nil, err
	}
	defer a.Close()
	if a.DType != npy.Int64 || len(a.Shape) != 2 || a.Shape[0] != K || a.Shape[1] != V {
		return nil, fmt.Errorf("%s: not a (%d, %d) int64 histogram", path, K, V)
	}
	raw := a.Bytes()
	out := make([]int64, K*V)
	for i := range out {
		out[i] = int64(binary.LittleEndian.Uint64(raw[8*i:]))
	}
	return out, nil
}

// Print writes the report for people.
func (s *StatusReport) Print(w io.Writer) {
	switch {
	case s.Count > 0:
		fmt.Fprintf(w, "%s: %d partitions, %d with a manifest", s.OutDir, s.Count, s.Count-len(s.NotStarted))
	case len(s.PartCounts) > 1:
		fmt.Fprintf(w, "%s: manifests from several partition counts %v", s.OutDir, s.PartCounts)
	default:
		fmt.Fprintf(w, "%s: %d manifests", s.OutDir, len(s.Partitions))
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  shards: %d done, %d failed", s.Done, len(s.Failed))
	if s.Listed >= 0 {
		fmt.Fprintf(w, ", %d missing (of %d listed)", len(s.Missing), s.Listed)
	}
	if len(s.Duplicates) > 0 {
		fmt.Fprintf(w, ", %d done twice", len(s.Duplicates))
	}
	fmt.Fprintf(w, "; %d tokens\n", s.Tokens)
	fmt.Fprintf(w, "  %-12s %6s %6s %12s %9s %10s  %s\n", "partition", "done", "failed", "tokens", "busy", "tokens/s", "last commit")
	for _, p := range s.Partitions {
		fmt.Fprintf(w, "  %-12s %6d %6d %12d %8.1fs %10s  %s\n", p.Partition, p.Done, p.Failed, p.Tokens, p.Busy, si(p.TokensPerSecond), p.LastCommit)
	}
	if len(s.NotStarted) > 0 {
		fmt.Fprintf(w, "  not started (no manifest): %s\n", intList(s.NotStarted, 20))
	}
	for _, f := range s.Failed {
		fmt.Fprintf(w, "  failed: %s (%s): %s\n", f.Shard, f.Partition, oneLine(f.Error))
	}
	if len(s.Missing) > 0 {
		fmt.Fprintf(w, "  missing: %s\n", strList(s.Missing, 10))
		if len(s.MissingBy) > 0 {
			keys := make([]string, 0, len(s.MissingBy))
			for k := range s.MissingBy {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			parts := make([]string, len(keys))
			for i, k := range keys {
				parts[i] = fmt.Sprintf("%s: %d", k, s.MissingBy[k])
			}
			fmt.Fprintf(w, "  missing by partition: %s\n", strList(parts, 20))
		}
	}
	for _, d := range s.Duplicates {
		fmt.Fprintf(w, "  done twice: %s\n", d)
	}
	if len(s.Params) > 1 {
		fmt.Fprintf(w, "  WARNING: outputs made with %d different parameter sets (model, op, dtype):\n", len(s.Params))
		for _, p := range s.Params {
			fmt.Fprintf(w, "    %s\n", p)
		}
	}
	if s.CodeTokens > 0 {
		fmt.Fprintf(w, "  codes over %d tokens, per codebook (K=%d, V=%d), %s:\n", s.CodeTokens, s.K, s.V, s.StatsNote)
		fmt.Fprintf(w, "    usage %%:    %s (mean %.1f)\n", floats(s.Usage, "%.1f"), mean(s.Usage))
		fmt.Fprintf(w, "    perplexity: %s (mean %.1f)\n", floats(s.Perplexity, "%.1f"), mean(s.Perplexity))
	} else if s.StatsNote != "" {
		fmt.Fprintf(w, "  %s\n", s.StatsNote)
	}
}

func intList(v []int, n int) string {
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = strconv.Itoa(x)
	}
	return strList(parts, n)
}

func strList(v []string, n int) string {
	if len(v) <= n {
		return strings.Join(v, ", ")
	}
	return strings.Join(v[:n], ", ") + fmt.Sprintf(", and %d more", len(v)-n)
}
