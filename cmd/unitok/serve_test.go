package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestServeFlagErrors: serve and loadgen refuse bad flags with one line
// before opening anything.
func TestServeFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"serve"}, "--checkpoint is required"},
		{[]string{"serve", "--checkpoint", "x", "--tls-cert", "c.pem"}, "--tls-cert and --tls-key go together"},
		{[]string{"serve", "--checkpoint", "x", "--auth-token-file", "/nonexistent/token"}, "--auth-token-file"},
		{[]string{"serve", "--checkpoint", "/nonexistent.safetensors"}, "/nonexistent.safetensors"},
		{[]string{"serve", "--bogus"}, "unknown flag --bogus"},
		{[]string{"loadgen", "--addr", "http://10.1.2.3:80"}, "only targets loopback"},
		{[]string{"loadgen", "--concurrency", "1,x"}, "bad level"},
	} {
		var out, errb bytes.Buffer
		if code := run(tc.args, &out, &errb); code != 1 || !strings.Contains(errb.String(), tc.want) || strings.Count(errb.String(), "\n") != 1 {
			t.Errorf("%v: exit %d, stderr %q; want one line containing %q", tc.args, code, errb.String(), tc.want)
		}
	}
}
