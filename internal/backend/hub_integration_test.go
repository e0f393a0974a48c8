package backend

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-nb/ferry/internal/testenv"
)

// startHub starts a real JupyterHub (Debian's jupyterhub and
// configurable-http-proxy) for the test, serving HTTPS with a self-signed
// certificate for 127.0.0.1, or fails naming the install. It returns the
// hub and the CA file (--remote-ca) that trusts it.
func startHub(t *testing.T) (*JupyterHub, string) {
	t.Helper()
	testenv.SkipIfShort(t, "a real JupyterHub, its proxy and spawned jupyter-servers, ~20 s")
	testenv.RequireJupyterHub(t)
	cert, _ := selfSignedCert(t, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "hub.pem"), filepath.Join(dir, "hub.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	h, err := StartJupyterHub(ctx, testenv.Python(), HubOptions{CertFile: certFile, KeyFile: keyFile})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the hub's log:\n%s", h.Log())
		}
		h.Stop()
	})
	return h, certFile
}

// The backend against a real hub over TLS (--remote-ca): a stopped
// server is started (its progress reported), the kernel runs on it, a
// server the hub stops (culls) is noticed at once, a wrong token is one
// line naming the fix, an untrusted certificate gets the TLS advice, and
// a plain Jupyter Server is left alone.
func TestHubBackend(t *testing.T) {
	h, ca := startHub(t)
	if !strings.HasPrefix(h.URL, "https://") {
		t.Fatalf("the hub is at %s, want HTTPS", h.URL)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 150*time.Second)
	defer cancel()

	t.Run("StoppedServerIsStarted", func(t *testing.T) {
		tok, err := h.AddUser(ctx, "ann")
		if err != nil {
			t.Fatal(err)
		}
		if up, err := h.ServerRunning(ctx, "ann"); err != nil || up {
			t.Fatalf("ann's server running before the test: %v %v", up, err)
		}
		hub := &Hub{URL: h.URL, Token: tok, CAFile: ca}
		var mu sync.Mutex
		var said []string
		r, err := NewRemote(RemoteConfig{URL: h.URL, Token: tok, CAFile: ca, WorkDir: "ferry/t", Resolve: func(ctx context.Context, progress func(string)) (string, error) {
			return hub.Resolve(ctx, func(m string) {
				mu.Lock()
				said = append(said, m)
				mu.Unlock()
				progress(m)
			})
		}})
		if err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		if err := r.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Logf("server spawned and kernel started in %s; progress %q", time.Since(t0).Round(time.Millisecond), said)
		mu.Lock()
		if len(said) < 2 || !strings.Contains(strings.Join(said, "\n"), "ready") {
			t.Errorf("progress %q: want the request and the hub's events up to ready", said)
		}
		mu.Unlock()
		if st := r.Status(); !strings.HasSuffix(st.URL, "/user/ann") || st.StartTook < time.Since(t0)/2 {
			t.Errorf("status URL %q, start took %s (the spawn is part of it)", st.URL, st.StartTook)
		}
		if out, _ := execute(t, r, "print(6 * 7)"); out != "42\n" {
			t.Fatalf("cell on the hub's server printed %q", out)
		}

		// The hub culls the server: its 424 for the kernel makes the
		// death known at once, not after the reconnect's 20 s. (Starting
		// it again through the hub is TestHubSession's, in cmd/ferry.)
		died := r.Died()
		if err := h.StopServer(ctx, "ann"); err != nil {
			t.Fatal(err)
		}
		culled := time.Now()
		select {
		case <-died:
			t.Logf("the cull was noticed in %s: %s", time.Since(culled).Round(time.Millisecond), r.Status().LastExit)
		case <-time.After(15 * time.Second):
			t.Fatal("the kernel on the culled server was not noticed as dead within 15 s")
		}
		// Shutting down deletes a kernel the hub already took with its
		// server (424): no error, and it is no longer metered.
		if err := r.Shutdown(ctx); err != nil {
			t.Errorf("shutdown after the cull: %v", err)
		}
		if a, b := r.Status().UpSeconds, r.Status().UpSeconds; a != b {
			t.Errorf("the culled kernel is still metered (%.3f s, then %.3f s)", a, b)
		}
	})

	t.Run("WrongToken", func(t *testing.T) {
		const bad = "0123456789abcdef-not-a-token"
		r, err := NewRemote(RemoteConfig{URL: h.URL, Token: bad, CAFile: ca, Resolve: (&Hub{URL: h.URL, Token: bad, CAFile: ca}).Resolve})
		if err != nil {
			t.Fatal(err)
		}
		err = r.Start(ctx)
		if err == nil {
			t.Fatal("a wrong token started a server")
		}
		msg := err.Error()
		t.Logf("error: %s", msg)
		if strings.Contains(msg, bad) || strings.Contains(msg, "\n") || !strings.Contains(msg, "rejected the token") ||
			!strings.Contains(msg, "FERRY_TOKEN") || !strings.Contains(msg, h.URL+"/hub/token") || !IsStatus(err, http.StatusForbidden, http.StatusUnauthorized) {
			t.Fatalf("wrong-token error %q: want one line naming the problem and the fix, typed, without the token", msg)
		}
	})

	t.Run("UntrustedCertificate", func(t *testing.T) {
		// Without --remote-ca the hub's certificate is not trusted: the
		// TLS advice, not "cannot reach" and not "not a hub".
		tok, err := h.AddUser(ctx, "cy")
		if err != nil {
			t.Fatal(err)
		}
		r, err := NewRemote(RemoteConfig{URL: h.URL, Token: tok, Resolve: (&Hub{URL: h.URL, Token: tok}).Resolve})
		if err != nil {
			t.Fatal(err)
		}
		err = r.Start(ctx)
		if err == nil || !strings.Contains(err.Error(), "--remote-ca") || !isTLSError(err) {
			t.Fatalf("an untrusted hub certificate: %v", err)
		}
	})

	t.Run("NotAHub", func(t *testing.T) {
		// A plain Jupyter Server is used as it is.
		s := startServer(t)
		hub := &Hub{URL: s.URL, Token: s.Token}
		u, err := hub.Resolve(ctx, nil)
		if err != nil || u != s.URL {
			t.Fatalf("Resolve of a plain server = %q, %v", u, err)
		}
		if errors.Is(err, ErrHubSpawn) {
			t.Fatal(err)
		}
	})
}
