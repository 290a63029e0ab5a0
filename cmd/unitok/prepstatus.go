package main

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/unitok/unitok/internal/prep"
)

// runPrep implements `unitok prep status`: the merged state of a data-prep
// job's manifests (one per partition) in an output directory.
func runPrep(args []string, stdout io.Writer) error {
	if len(args) == 0 || args[0] != "status" {
		return fmt.Errorf("prep: want a subcommand: unitok prep status --out DIR [--in DIR|GLOB] [--tensor NAME] [--json]")
	}
	fs := newFlagSet("prep status")
	out := fs.String("out", "", "the job's output directory")
	in := fs.String("in", "", "the job's inputs, to report shards not done yet")
	tensor := fs.String("tensor", "", "tensor read from .safetensors shards (as given to the job)")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parseFlags(fs, args[1:], stdout)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("prep status: unexpected argument %q", pos[0])
	}
	if *out == "" {
		return fmt.Errorf("prep status: missing required flag --out")
	}
	opt := prep.StatusOptions{OutDir: *out, Tensor: *tensor}
	if *in != "" {
		opt.In = []string{*in}
	}
	rep, err := prep.Status(opt)
	if err != nil {
		return fmt.Errorf("prep status: %w", err)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		rep.Print(stdout)
	}
	if !rep.Complete() {
		var what []string
		if n := len(rep.Failed); n > 0 {
			what = append(what, plural(n, "shard")+" failed")
		}
		if n := len(rep.Missing); n > 0 {
			what = append(what, plural(n, "shard")+" missing")
		}
		if n := len(rep.NotStarted); n > 0 {
			what = append(what, plural(n, "partition")+" not started")
		}
		if n := len(rep.Duplicates); n > 0 {
			what = append(what, plural(n, "shard")+" done twice")
		}
		return fmt.Errorf("prep status: %s: not complete: %s", *out, list(what, 4))
	}
	return nil
}
