package backend

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-nb/ferry/internal/testenv"
)

// TestKernelLimitIsOneLine: a server that refuses one more kernel with
// HTTP 403 (Enterprise Gateway's EG_MAX_KERNELS_PER_USER does exactly
// that; here a real jupyter-server whose kernel manager allows one) is a
// one-line error saying so and what to do, not "rejected the token" — the
// same token had just listed the kernelspecs. The first kernel keeps
// working.
func TestKernelLimitIsOneLine(t *testing.T) {
	testenv.SkipIfShort(t, "starts a jupyter-server with a kernel limit and two remote kernels")
	testenv.RequireJupyterServer(t)
	dir := t.TempDir()
	mod := `from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from tornado import web


class OneKernel(AsyncMappingKernelManager):
    async def start_kernel(self, *args, **kwargs):
        if self.list_kernel_ids():
            raise web.HTTPError(403, "A max kernels per user limit has been set to 1 and user 'root' has reached that limit")
        return await super().start_kernel(*args, **kwargs)
`
	if err := os.WriteFile(filepath.Join(dir, "onekernel.py"), []byte(mod), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	s, err := StartJupyterServerWith(ctx, testenv.Python(), ServerOptions{
		Env:   append(os.Environ(), "PYTHONPATH="+dir),
		Extra: []string{"--ServerApp.kernel_manager_class=onekernel.OneKernel"},
	})
	if err != nil {
		t.Fatalf("%v (apt-get install jupyter-server)", err)
	}
	t.Cleanup(s.Stop)
	first := startRemote(t, s.URL, s.Token)
	second, err := NewRemote(RemoteConfig{URL: s.URL, Token: s.Token, WorkDir: "second"})
	if err != nil {
		t.Fatal(err)
	}
	err = second.Start(ctx)
	if err == nil {
		second.Shutdown(context.Background())
		t.Fatal("a second kernel started past the server's limit of one")
	}
	msg := err.Error()
	for _, want := range []string{"refused to start another kernel (HTTP 403: A max kernels per user limit", "shut down one of your kernels there"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not contain %q", msg, want)
		}
	}
	if strings.Contains(msg, "token") || strings.Contains(msg, s.Token) || strings.Contains(msg, "\n") {
		t.Errorf("error %q: want one line, not about the token, without it", msg)
	}
	if !IsStatus(err, http.StatusForbidden) {
		t.Errorf("IsStatus(err, 403) = false for %v", err)
	}
	if out, _ := execute(t, first, "print(6 * 7)"); out != "42\n" {
		t.Fatalf("the first kernel printed %q after the refusal", out)
	}
}

// TestGatewayCreateEnv: against an Enterprise Gateway the create request
// carries KERNEL_USERNAME, the forwarded KERNEL_* variables, and Ferry's
// working directory and launch timeout over any forwarded ones. (A unit
// test of the request: jupyter-server ignores env, and Debian has no
// Enterprise Gateway.)
func TestGatewayCreateEnv(t *testing.T) {
	var mu sync.Mutex
	var got struct {
		Name string            `json:"name"`
		Env  map[string]string `json:"env"`
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/api":
			_, _ = w.Write([]byte(`{"version": "3.2.0"}`))
		case r.URL.Path == "/api/kernelspecs":
			_, _ = w.Write([]byte(`{"default": "python3", "kernelspecs": {"python3": {}}}`))
		case r.URL.Path == "/api/kernels" && r.Method == http.MethodPost:
			mu.Lock()
			_ = json.NewDecoder(r.Body).Decode(&got)
			mu.Unlock()
			http.Error(w, `{"message": "stop here"}`, http.StatusServiceUnavailable)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	forwarded := ForwardedKernelEnv([]string{"KERNEL_IMAGE=ghcr.io/x/gpu:1", "KERNEL_WORKING_DIR=/elsewhere", "KERNEL_=empty", "HOME=/root", "KERNEL_GPUS=2"})
	tests := []struct {
		name, user, wantUser string
	}{
		{"flag user", "alice", "alice"},
		{"local user", "", localUsername()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := NewRemote(RemoteConfig{URL: srv.URL, Token: "t", Gateway: true, WorkDir: "ferry/nb-1", StartTimeout: 90 * time.Second, Username: tt.user, KernelEnv: forwarded})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := r.Start(ctx); err == nil {
				t.Fatal("started against a server that refuses every kernel")
			}
			mu.Lock()
			defer mu.Unlock()
			want := map[string]string{"KERNEL_USERNAME": tt.wantUser, "KERNEL_IMAGE": "ghcr.io/x/gpu:1", "KERNEL_GPUS": "2",
				"KERNEL_WORKING_DIR": "ferry/nb-1", "KERNEL_LAUNCH_TIMEOUT": "90"}
			if len(got.Env) != len(want) {
				t.Errorf("env %v, want %v", got.Env, want)
			}
			for k, v := range want {
				if got.Env[k] != v {
					t.Errorf("env[%s] = %q, want %q (env %v)", k, got.Env[k], v, got.Env)
				}
			}
		})
	}
	if tests[1].wantUser == "" {
		t.Fatal("the local user's name is empty")
	}
}
