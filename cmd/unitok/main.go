// Command unitok runs UniTok's tokenizer core on NumPy arrays:
//
//	unitok encode   --checkpoint CKPT --in FEATURES.npy --out CODES.npy     # (B,N,C) -> (B,N,K)
//	unitok decode   --checkpoint CKPT --in CODES.npy    --out FEATURES.npy  # (B,N,K) -> (B,N,C)
//	unitok quantize --checkpoint CKPT --in LATENTS.npy  --out CODES.npy     # (M,D)   -> (M,K)
//	unitok lookup   --checkpoint CKPT --in CODES.npy    --out LATENTS.npy   # (M,K)   -> (M,D)
//	unitok tokenize    --checkpoint CKPT --in IMG --out CODES.npy   # image -> codes (N,K); --in DIR|GLOB --out DIR
//	unitok detokenize  --checkpoint CKPT --in CODES.npy --out IMG.png|REC.npy
//	unitok reconstruct --checkpoint CKPT IN OUT.png [--side-by-side]
//	unitok embed       --checkpoint CKPT --in IMG --out EMB.npy     # CLIP image embedding (E,)
//	unitok inspect  CKPT                                # config, tensors, what is missing
//	unitok convert  IN.pth OUT.safetensors              # the whole model (--core: the core only), atomically
//	unitok bench    [--checkpoint CKPT] [--batch B] [--tokens N] [--iters I] [--op ops] [--json]
//	unitok devices  [--json [--watch D [--count N]]]    # GPUs as NVML sees them
//	unitok prep status --out DIR [--in DIR|GLOB] [--json]   # a data-prep job's merged manifests
//	unitok serve    --checkpoint CKPT [--addr 127.0.0.1:8080]   # HTTP service (see unitok serve -h)
//	unitok loadgen  --addr URL --checkpoint CKPT                # load test against a server
//
// Every failure prints one line, "unitok: <what went wrong>", to stderr and
// exits with status 1. Outputs are written atomically: a failed run leaves
// no output file and never replaces an existing one with partial data.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage: unitok <command> [flags]

commands:
  encode   --checkpoint CKPT --in FEATURES.npy --out CODES.npy     (B,N,C) or (N,C) float -> codes (B,N,K)
  decode   --checkpoint CKPT --in CODES.npy    --out FEATURES.npy  (B,N,K) or (N,K) integer -> (B,N,C) float32
  quantize --checkpoint CKPT --in LATENTS.npy  --out CODES.npy     (M,D) float -> codes (M,K)
  lookup   --checkpoint CKPT --in CODES.npy    --out LATENTS.npy   (M,K) integer -> (M,D) float32
  inspect  [--json] CKPT                                           config, tensors, what is missing
  convert  [--core] [--causal] [--heads N] IN.pth OUT.safetensors  core + image path (--core: the core only), atomically
  bench    [--checkpoint CKPT] [--batch B] [--tokens N] [--iters I] [--op quantize,encode,decode] [--json]
           --op tokenize,detokenize,embed: images/s of the image path (without --checkpoint: synthetic --model vitamin_large|vitamin_base)
  devices  [--json [--watch D [--count N]]]                        GPUs (NVML): memory, clocks, power, throttling
  preprocess --in IMG --out X.npy [--size 256] [--resize-ratio 1.125] [--max-pixels N]   image -> (3,256,256) float32 model input
  serve    --checkpoint CKPT [--addr 127.0.0.1:8080]                HTTP service with dynamic batching (serve -h)
  loadgen  --addr URL --checkpoint CKPT [--concurrency 1,8,64,256]  load test a server, with the direct baseline

images (PNG, JPEG, GIF, BMP, WebP; preprocessed as UniTok's inference.py; --max-pixels N refuses larger images):
  tokenize    --checkpoint CKPT --in IMG --out CODES.npy          image -> codes (N,K); --in DIR|GLOB --out DIR: every image
  detokenize  --checkpoint CKPT --in CODES.npy --out IMG.png|REC.npy   (N,K) or (B,N,K) codes -> image(s) (B>1: IMG-000.png ...) or float32 (3,S,S)/(B,3,S,S) in [-1,1]
  reconstruct --checkpoint CKPT IN OUT.png [--side-by-side] [--codes CODES.npy]   image -> codes -> image, prints the PSNR
  embed       --checkpoint CKPT --in IMG --out EMB.npy            CLIP image embedding (E,) float32, L2-normalized

data prep (encode/decode/quantize/lookup over many shards): --in DIR|GLOB|FILE --out DIR
  --tensor NAME  --batch N  --inflight N (default 2)  --histogram FILE.npy  --verify  --progress-interval D
  --partition I/N|off   do only partition I of N (default: from JOB_COMPLETION_INDEX and
                        UNITOK_PARTITIONS, or SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT)
  outputs mirror the input tree under --out, with manifest.jsonl (manifest-IIIII-of-NNNNN.jsonl
  per partition); rerun the same command to resume
  webdataset shards (.tar in --in, encode only): one .tar out per shard, each sample's codes as
                        KEY.codes.npy (N,K) uint16 beside its other members; --keep keeps the image,
                        --embed adds KEY.embed.npy (the CLIP image embedding, same encoder pass)
  prep status --out DIR [--in DIR|GLOB] [--json]   merge the manifests: done, failed, missing,
                        throughput per partition, code usage and perplexity over the whole set

common flags:
  --device cpu|cuda|cuda:N   engine (default: cuda when built with it and a GPU is present, else cpu)
  --causal[=true|false]      override the checkpoint's attention mode
  --heads N                  override the checkpoint's number of attention heads
  --metric cosine|l2         quantizer metric (default cosine)
  --layout bnk|bkn           code axis order: (B,N,K) (default) or UniTok's (B,K,N)
  --codes-dtype uint16|int32|int64   dtype of written codes (default uint16)
  --threads N                CPU engine parallelism (default: all cores)
`

// run is the whole program; main only wires it to the process. It returns
// the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	if err := dispatch(args, stdout, stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "unitok: "+oneLine(err.Error()))
		return 1
	}
	return 0
}

func dispatch(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New("no command given (want encode, decode, quantize, lookup, tokenize, detokenize, reconstruct, embed, preprocess, inspect, convert, bench, devices, prep, serve or loadgen; see unitok help)")
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "encode", "decode", "quantize", "lookup":
		return runOp(cmd, rest, stdout, stderr)
	case "inspect":
		return runInspect(rest, stdout)
	case "convert":
		return runConvert(rest, stdout, stderr)
	case "bench":
		return runBench(rest, stdout)
	case "devices":
		return runDevices(rest, stdout)
	case "preprocess":
		return runPreprocess(rest, stdout, stderr)
	case "prep":
		return runPrep(rest, stdout)
	case "serve":
		return runServe(rest, stdout, stderr)
	case "loadgen":
		return runLoadgen(rest, stdout)
	case "tokenize":
		return runTokenize(rest, stdout, stderr)
	case "detokenize":
		return runDetokenize(rest, stdout, stderr)
	case "reconstruct":
		return runReconstruct(rest, stdout, stderr)
	case "embed":
		return runEmbed(rest, stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return flag.ErrHelp
	}
	return fmt.Errorf("unknown command %q (want encode, decode, quantize, lookup, tokenize, detokenize, reconstruct, embed, preprocess, inspect, convert, bench, devices, prep, serve or loadgen)", cmd)
}

// oneLine folds a multi-line message into one line.
func oneLine(s string) string {
	s = strings.TrimSpace(s)
	s = strings.ReplaceAll(s, "\r", "")
	return strings.ReplaceAll(s, "\n", "; ")
}

// newFlagSet returns a silent flag set: parse errors come back as values
// and are printed by run as one line.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// parseFlags parses args, allowing positional arguments between flags
// (flag stops at the first one), and returns the positionals. -h prints the
// usage to stdout and returns flag.ErrHelp.
func parseFlags(fs *flag.FlagSet, args []string, stdout io.Writer) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				if stdout != nil {
					fmt.Fprint(stdout, usage)
				}
				return nil, err
			}
			return nil, fmt.Errorf("%s: %v", fs.Name(), flagErr(err))
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if len(pos) > 0 && args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// flagErr rewrites the flag package's messages to name the flag with the
// double dash users type.
func flagErr(err error) string {
	s := err.Error()
	s = strings.Replace(s, "flag provided but not defined: -", "unknown flag --", 1)
	s = strings.Replace(s, "flag needs an argument: -", "flag needs a value: --", 1)
	if strings.HasPrefix(s, "invalid value ") || strings.HasPrefix(s, "invalid boolean value ") {
		s = strings.Replace(s, " for flag -", " for flag --", 1)
		s = strings.Replace(s, " for -", " for --", 1)
	}
	return s
}

// pathErr names the file in an error unless the error already does.
func pathErr(path string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) || strings.Contains(err.Error(), path) {
		return err
	}
	return fmt.Errorf("%s: %w", path, err)
}
