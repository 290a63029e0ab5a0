package prep

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// NotifyContext returns a context cancelled by the first SIGINT or SIGTERM,
// with the signal as its cause (context.Cause). After that first signal the
// default handling is restored, so a second Ctrl-C kills the process at
// once; that too is safe, since outputs are published atomically and the
// manifest is appended only after. Call stop to release the signal handler.
//
// A CLI runs Run under this context: on the signal, Run abandons the shards
// in flight (removing their temporaries), keeps the manifest consistent and
// returns, and a later run resumes.
func NotifyContext(parent context.Context) (ctx context.Context, stop context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(parent)
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	quit := make(chan struct{})
	go func() {
		select {
		case s := <-ch:
			signal.Stop(ch)
			cancel(fmt.Errorf("interrupted by %v", s))
		case <-quit:
		}
	}()
	var once sync.Once
	return ctx, func() {
		once.Do(func() {
			signal.Stop(ch)
			close(quit)
			cancel(context.Canceled)
		})
	}
}
