package main

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/unitok/unitok"
)

type inspectTensor struct {
	Name  string `json:"name"`
	DType string `json:"dtype"`
	Shape []int  `json:"shape"`
}

type inspectReport struct {
	Path        string            `json:"path"`
	Format      string            `json:"format"`
	Config      *inspectConfig    `json:"config,omitempty"`
	ConfigError string            `json:"config_error,omitempty"`
	Metadata    map[string]string `json:"metadata"`
	Tensors     []inspectTensor   `json:"tensors"`
	Missing     []string          `json:"missing"`
	Misshapen   []string          `json:"misshapen"`
	Ignored     map[string]int    `json:"ignored"`
	Complete    bool              `json:"complete"`
	Image       *unitok.ImageInfo `json:"image,omitempty"`
}

type inspectConfig struct {
	InDim        int    `json:"in_dim"`
	LatentDim    int    `json:"latent_dim"`
	NumCodebooks int    `json:"num_codebooks"`
	CodebookSize int    `json:"codebook_size"`
	ChunkDim     int    `json:"chunk_dim"`
	NumHeads     int    `json:"num_heads"`
	HeadsKnown   bool   `json:"num_heads_in_checkpoint"`
	HeadsSource  string `json:"num_heads_source"`
	Causal       bool   `json:"causal"`
}

// runInspect prints a checkpoint's config, core tensors, missing tensors
// and ignored groups. An incomplete checkpoint is reported in full on
// stdout and then fails with one line on stderr.
func runInspect(args []string, stdout io.Writer) error {
	fs := newFlagSet("inspect")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parseFlags(fs, args, stdout)
	if err != nil {
		return err
	}
	switch {
	case len(pos) == 0:
		return fmt.Errorf("inspect: missing checkpoint argument (unitok inspect CKPT)")
	case len(pos) > 1:
		return fmt.Errorf("inspect: unexpected argument %q", pos[1])
	}
	path := pos[0]
	ci, err := unitok.InspectCheckpoint(path)
	if err != nil {
		return pathErr(path, err)
	}
	rep := inspectReport{
		Path: ci.Path, Format: ci.Format, ConfigError: ci.ConfigError, Metadata: ci.Metadata,
		Missing: nonNil(ci.Missing), Misshapen: nonNil(ci.Misshapen), Ignored: ci.Ignored,
	}
	if rep.Metadata == nil {
		rep.Metadata = map[string]string{}
	}
	if rep.Ignored == nil {
		rep.Ignored = map[string]int{}
	}
	if ci.ConfigError == "" {
		c := ci.Config
		rep.Config = &inspectConfig{c.InDim, c.LatentDim, c.NumCodebooks, c.CodebookSize, c.ChunkDim(), c.NumHeads, ci.HeadsKnown, ci.HeadsSource, c.Causal}
	}
	rep.Tensors = []inspectTensor{}
	for _, t := range ci.Tensors {
		rep.Tensors = append(rep.Tensors, inspectTensor{t.Name, string(t.DType), t.Shape})
	}
	rep.Complete = ci.ConfigError == "" && len(ci.Missing) == 0 && len(ci.Misshapen) == 0
	if img, err := unitok.InspectImage(path); err == nil {
		rep.Image = img
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		printInspect(stdout, &rep, ci.SortedIgnoredGroups())
	}
	switch {
	case ci.ConfigError != "":
		return fmt.Errorf("%s: cannot infer the config: %s", path, ci.ConfigError)
	case len(ci.Missing) > 0:
		return fmt.Errorf("%s: incomplete checkpoint: %s missing (%s)", path, plural(len(ci.Missing), "required tensor"), list(ci.Missing, 3))
	case len(ci.Misshapen) > 0:
		return fmt.Errorf("%s: %s with the wrong shape (%s)", path, plural(len(ci.Misshapen), "tensor"), list(ci.Misshapen, 2))
	}
	return nil
}

func printInspect(w io.Writer, r *inspectReport, groups []string) {
	fmt.Fprintf(w, "checkpoint  %s (%s)\n", r.Path, r.Format)
	if c := r.Config; c != nil {
		heads := c.HeadsSource
		if !c.HeadsKnown {
			heads = "not recorded; " + heads
		}
		attn := "full"
		if c.Causal {
			attn = "causal"
		}
		fmt.Fprintf(w, "config      C=%d D=%d K=%d V=%d (d=%d, vocab %d) H=%d (%s) attention=%s\n",
			c.InDim, c.LatentDim, c.NumCodebooks, c.CodebookSize, c.ChunkDim, c.NumCodebooks*c.CodebookSize, c.NumHeads, heads, attn)
	} else {
		fmt.Fprintf(w, "config      unknown: %s\n", r.ConfigError)
	}
	if len(r.Metadata) > 0 {
		keys := make([]string, 0, len(r.Metadata))
		for k := range r.Metadata {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var kv []string
		for _, k := range keys {
			kv = append(kv, k+"="+r.Metadata[k])
		}
		fmt.Fprintf(w, "metadata    %s\n", strings.Join(kv, " "))
	}
	fmt.Fprintf(w, "core tensors (%d):\n", len(r.Tensors))
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	for _, t := range r.Tensors {
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", t.Name, t.DType, shapeStr(t.Shape))
	}
	tw.Flush()
	if len(r.Missing) == 0 {
		fmt.Fprintln(w, "missing: none")
	} else {
		fmt.Fprintf(w, "missing (%d):\n", len(r.Missing))
		for _, m := range r.Missing {
			fmt.Fprintf(w, "  %s\n", m)
		}
	}
	if len(r.Misshapen) > 0 {
		fmt.Fprintf(w, "wrong shape (%d):\n", len(r.Misshapen))
		for _, m := range r.Misshapen {
			fmt.Fprintf(w, "  %s\n", m)
		}
	}
	total := 0
	var parts []string
	for _, g := range groups {
		total += r.Ignored[g]
		parts = append(parts, fmt.Sprintf("%s %d", g, r.Ignored[g]))
	}
	if total == 0 {
		fmt.Fprintln(w, "ignored non-core tensors: none")
	} else {
		fmt.Fprintf(w, "ignored non-core tensors: %d (%s)\n", total, strings.Join(parts, ", "))
	}
	printImage(w, r.Image)
}

// printImage describes the image path (ViTamin encoder, decoder, CLIP head).
func printImage(w io.Writer, im *unitok.ImageInfo) {
	if im == nil {
		return
	}
	if im.Error != "" {
		fmt.Fprintf(w, "image path  none: %s\n", im.Error)
		return
	}
	a := im.Arch
	fmt.Fprintf(w, "image path  %s %dx%d -> %d tokens; encoder: stem %d, MbConv stages %v x %v, %d ViT blocks (C=%d, %d heads, MLP %d) [%.1fM]\n",
		a.Model, a.ImageSize, a.ImageSize, a.Tokens, a.StemWidth, a.StageWidths, a.StageDepths, a.Depth, a.Width, a.Heads, a.MLPHidden, float64(im.Params["encoder"])/1e6)
	if a.DecoderDepth > 0 {
		fmt.Fprintf(w, "            decoder: %d ViT blocks, up_conv widths %v x %v [%.1fM]\n", a.DecoderDepth, a.DecoderWidths, a.DecoderDepths, float64(im.Params["decoder"])/1e6)
	}
	if a.EmbedDim > 0 {
		fmt.Fprintf(w, "            CLIP head: fc_norm, projection %d -> %d [%.1fM]\n", a.Width, a.EmbedDim, float64(im.Params["head"])/1e6)
	}
	if len(im.Missing) == 0 && len(im.Misshapen) == 0 {
		fmt.Fprintln(w, "            image tensors: all present")
		return
	}
	for _, m := range im.Missing {
		fmt.Fprintf(w, "            missing: %s\n", m)
	}
	for _, m := range im.Misshapen {
		fmt.Fprintf(w, "            wrong shape: %s\n", m)
	}
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func list(s []string, n int) string {
	if len(s) <= n {
		return strings.Join(s, ", ")
	}
	return strings.Join(s[:n], ", ") + fmt.Sprintf(", and %d more", len(s)-n)
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}
