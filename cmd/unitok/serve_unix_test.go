//go:build unix

package main

import (
	"bufio"
	"context"
	"io"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/unitok/unitok"
	"github.com/unitok/unitok/api"
)

// TestServeLifecycle: `unitok serve` on an ephemeral loopback port answers
// the API, then on SIGTERM drains and returns status 0.
func TestServeLifecycle(t *testing.T) {
	pr, pw := io.Pipe()
	done := make(chan int, 1)
	go func() {
		done <- run([]string{"serve", "--checkpoint", "../../testdata/sample/model.safetensors", "--device", "cpu",
			"--addr", "127.0.0.1:0", "--drain-timeout", "10s"}, io.Discard, pw)
		pw.Close()
	}()
	sc := bufio.NewScanner(pr)
	var addr string
	for sc.Scan() {
		if _, rest, ok := strings.Cut(sc.Text(), "msg=serving addr="); ok {
			addr, _, _ = strings.Cut(rest, " ")
			break
		}
	}
	if addr == "" {
		t.Fatalf("no serving line; exit %d", <-done)
	}
	go io.Copy(io.Discard, pr)
	base := "http://" + addr
	cl := api.NewClient(base)
	ctx := context.Background()
	var info *api.Info
	var err error
	for i := 0; i < 100; i++ { // Serve starts just after the log line
		if info, err = cl.Info(ctx); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil || info.Model.InDim != 256 || info.Device != "cpu" {
		t.Fatalf("info: %+v %v", info, err)
	}
	x := make([]float32, 4*256)
	for i := range x {
		x[i] = float32(i%17) / 17
	}
	tok, err := unitok.Open("../../testdata/sample/model.safetensors", unitok.WithDevice("cpu"))
	if err != nil {
		t.Fatal(err)
	}
	defer tok.Close()
	want, _ := tok.Encode(x, 1, 4)
	got, err := cl.Encode(ctx, x, 1, 4)
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("encode over HTTP: %v; equal %v", err, slices.Equal(got, want))
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit status %d after SIGTERM, want 0", code)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not exit after SIGTERM")
	}
}
