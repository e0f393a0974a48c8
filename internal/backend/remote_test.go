package backend

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-nb/ferry/internal/testenv"
	"github.com/ferry-nb/ferry/internal/wire"
)

func startServer(t *testing.T) *JupyterServer {
	t.Helper()
	testenv.RequireJupyterServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	s, err := StartJupyterServer(ctx, testenv.Python(), 0)
	if err != nil {
		t.Fatalf("%v (apt-get install jupyter-server)", err)
	}
	t.Cleanup(s.Stop)
	return s
}

// execute sends code and collects stream text until the reply and idle.
func execute(t *testing.T, b Backend, code string) (string, map[string]any) {
	t.Helper()
	m, err := wire.New("execute_request", "test", "t", nil, map[string]any{"code": code, "silent": false, "store_history": true, "user_expressions": map[string]any{}, "allow_stdin": false})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Send(t.Context(), wire.Shell, m); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	var reply map[string]any
	idle := false
	deadline := time.After(60 * time.Second)
	for reply == nil || !idle {
		select {
		case in := <-b.Incoming():
			if in.Msg.ParentID() != m.Header.MsgID {
				continue
			}
			switch {
			case in.Channel == wire.Shell:
				_ = in.Msg.Decode(&reply)
			case in.Msg.Header.MsgType == "stream":
				var c struct{ Text string }
				_ = in.Msg.Decode(&c)
				out.WriteString(c.Text)
			case in.Msg.Header.MsgType == "error":
				var c struct{ EName, EValue string }
				_ = in.Msg.Decode(&c)
				out.WriteString(c.EName + "\n")
			case in.Msg.Header.MsgType == "status" && strings.Contains(string(in.Msg.Content), "idle"):
				idle = true
			}
		case <-deadline:
			t.Fatalf("no reply to %q", code)
		}
	}
	return out.String(), reply
}

func TestRemoteExecuteBothProtocols(t *testing.T) {
	s := startServer(t)
	for _, legacy := range []bool{false, true} {
		r, err := NewRemote(RemoteConfig{URL: s.URL, Token: s.Token, Legacy: legacy})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		if err := r.Start(ctx); err != nil {
			t.Fatal(err)
		}
		cancel()
		want := map[bool]string{false: "connected (v1 binary protocol)", true: "connected (legacy JSON protocol)"}[legacy]
		if st := r.Status(); st.State != want || strings.Contains(st.URL, s.Token) {
			t.Errorf("status %+v, want state %q and no token", st, want)
		}
		out, reply := execute(t, r, "print(6 * 7)")
		if out != "42\n" || reply["status"] != "ok" {
			t.Errorf("legacy=%v: output %q reply %v", legacy, out, reply)
		}
		if err := r.Shutdown(context.Background()); err != nil {
			t.Error(err)
		}
		if r.Alive() {
			t.Error("alive after shutdown")
		}
	}
}

func TestRemoteErrors(t *testing.T) {
	s := startServer(t)
	free, err := wire.FreePorts("127.0.0.1", 1)
	if err != nil {
		t.Fatal(err)
	}
	// A TLS listener with a self-signed certificate nobody trusts.
	tlsSrv := httptest.NewTLSServer(http.NotFoundHandler())
	defer tlsSrv.Close()
	tests := []struct {
		name string
		cfg  RemoteConfig
		want string
	}{
		{"wrong token", RemoteConfig{URL: s.URL, Token: "wrong"}, "rejected the token (HTTP 403): set FERRY_TOKEN or --token-file"},
		{"unreachable host", RemoteConfig{URL: "http://127.0.0.1:" + strconv.Itoa(free[0]), Token: s.Token}, "cannot reach remote server http://127.0.0.1:"},
		{"wrong path", RemoteConfig{URL: s.URL + "/not/jupyter", Token: s.Token}, "does not serve the Jupyter Server API (HTTP 404 at /api)"},
		{"unknown kernel", RemoteConfig{URL: s.URL, Token: s.Token, KernelName: "cobol"}, `remote server has no kernel named "cobol": pass --remote-kernel with one of `},
		{"TLS failure", RemoteConfig{URL: tlsSrv.URL, Token: s.Token}, "TLS handshake with https://127.0.0.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := NewRemote(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			err = r.Start(ctx)
			if err == nil {
				r.Shutdown(context.Background())
				t.Fatal("started")
			}
			if !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %q, want one line containing %q", err, tt.want)
			}
			if strings.Contains(err.Error(), s.Token) {
				t.Fatal("the error shows the token")
			}
		})
	}
	t.Run("token in URL refused", func(t *testing.T) {
		_, err := NewRemote(RemoteConfig{URL: s.URL + "/?token=" + s.Token})
		if err == nil || strings.Contains(err.Error(), s.Token) || !strings.Contains(err.Error(), "FERRY_TOKEN") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("insecure opt-in accepts the self-signed server", func(t *testing.T) {
		r, err := NewRemote(RemoteConfig{URL: tlsSrv.URL, Token: "x", Insecure: true})
		if err != nil {
			t.Fatal(err)
		}
		err = r.Start(context.Background())
		if err == nil || !strings.Contains(err.Error(), "HTTP 404 at /api") {
			t.Fatalf("with --remote-insecure the handshake should pass and reach /api: %v", err)
		}
	})
}

func startRemote(t *testing.T, url, token string) *Remote {
	t.Helper()
	r, err := NewRemote(RemoteConfig{URL: url, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Shutdown(context.Background()) })
	return r
}

func TestRemoteInterrupt(t *testing.T) {
	s := startServer(t)
	r := startRemote(t, s.URL, s.Token)
	done := make(chan string, 1)
	go func() {
		out, _ := execute(t, r, "import time; time.sleep(60)")
		done <- out
	}()
	time.Sleep(500 * time.Millisecond)
	t0 := time.Now()
	if err := r.Interrupt(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case out := <-done:
		if !strings.Contains(out, "KeyboardInterrupt") {
			t.Fatalf("output %q, want KeyboardInterrupt", out)
		}
		if d := time.Since(t0); d > 2*time.Second {
			t.Fatalf("interrupt took %s", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("remote sleep was not interrupted")
	}
}

func TestRemoteLargeBuffersBothWays(t *testing.T) {
	s := startServer(t)
	r := startRemote(t, s.URL, s.Token)
	execute(t, r, `def _t(comm, msg):
    @comm.on_msg
    def _r(m):
        b = m['buffers'][0]
        comm.send({'n': len(b)}, buffers=[bytes(b)])
get_ipython().kernel.comm_manager.register_target('big', _t)`)
	id := wire.NewID()
	open, _ := wire.New("comm_open", "test", "t", nil, map[string]any{"comm_id": id, "target_name": "big", "data": map[string]any{}})
	if err := r.Send(t.Context(), wire.Shell, open); err != nil {
		t.Fatal(err)
	}
	payload := make([]byte, 50<<20)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	m, _ := wire.New("comm_msg", "test", "t", nil, map[string]any{"comm_id": id, "data": map[string]any{}})
	m.Buffers = [][]byte{payload}
	if err := r.Send(t.Context(), wire.Shell, m); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(60 * time.Second)
	for {
		select {
		case in := <-r.Incoming():
			if in.Msg.Header.MsgType != "comm_msg" || in.Msg.ParentID() != m.Header.MsgID {
				continue
			}
			if len(in.Msg.Buffers) != 1 || !bytes.Equal(in.Msg.Buffers[0], payload) {
				t.Fatalf("50 MB buffer did not come back intact (%d buffers)", len(in.Msg.Buffers))
			}
			return
		case <-deadline:
			t.Fatal("no echo of the 50 MB buffer")
		}
	}
}

// cutProxy forwards TCP to target and can cut every connection at once.
type cutProxy struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			go func() { io.Copy(u, c); u.Close() }()
			go func() { io.Copy(c, u); c.Close() }()
		}
	}()
	t.Cleanup(func() { ln.Close(); p.cut() })
	return p
}

func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func TestRemoteReconnectDeliversOutputOnce(t *testing.T) {
	s := startServer(t)
	p := newCutProxy(t, strings.TrimPrefix(s.URL, "http://"))
	r := startRemote(t, "http://"+p.ln.Addr().String(), s.Token)
	done := make(chan string, 1)
	go func() {
		out, _ := execute(t, r, "import time\nprint('before')\ntime.sleep(2)\nprint('after')")
		done <- out
	}()
	time.Sleep(700 * time.Millisecond)
	p.cut() // mid-cell
	select {
	case out := <-done:
		if out != "before\nafter\n" {
			t.Fatalf("output %q, want each line exactly once", out)
		}
	case <-time.After(40 * time.Second):
		t.Fatal("cell did not complete after the connection was cut")
	}
	if out, _ := execute(t, r, "print('next')"); out != "next\n" {
		t.Fatalf("after reconnect: %q", out)
	}
}

func TestRemoteKernelGone(t *testing.T) {
	s := startServer(t)
	r := startRemote(t, s.URL, s.Token)
	req, _ := http.NewRequest(http.MethodDelete, s.URL+"/api/kernels/"+r.Status().KernelID, nil)
	req.Header.Set("Authorization", "token "+s.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	select {
	case <-r.Died():
	case <-time.After(30 * time.Second):
		t.Fatal("a deleted kernel was not noticed")
	}
	if st := r.Status(); !strings.Contains(st.LastExit, "is gone") {
		t.Fatalf("last exit %q, want it to say the kernel is gone", st.LastExit)
	}
}

func TestHTTPErrorIsStatus(t *testing.T) {
	h := &HTTPError{Method: http.MethodDelete, Path: "/api/kernels/k1", Status: http.StatusNotFound, Message: "Kernel does not exist: k1"}
	tests := []struct {
		name  string
		err   error
		codes []int
		want  bool
	}{
		{"bare", h, []int{404}, true},
		{"wrapped once", fmt.Errorf("deleting the kernel: %w", h), []int{404}, true},
		{"wrapped twice", fmt.Errorf("shutdown: %w", fmt.Errorf("deleting: %w", h)), []int{500, 404}, true},
		{"explained", &explainedError{"remote kernel k1 is gone", h}, []int{404}, true},
		{"joined", errors.Join(errors.New("other"), h), []int{404}, true},
		{"no codes means any status", fmt.Errorf("x: %w", h), nil, true},
		{"other status", fmt.Errorf("x: %w", h), []int{500, 403}, false},
		{"wrapped with %v loses the type", fmt.Errorf("x: %v", h), []int{404}, false},
		{"the wording alone is not a status", errors.New(h.Error()), []int{404}, false},
		{"nil", nil, []int{404}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := IsStatus(tt.err, tt.codes...); got != tt.want {
				t.Fatalf("IsStatus(%v, %v) = %v, want %v", tt.err, tt.codes, got, tt.want)
			}
			var got *HTTPError
			if ok := errors.As(tt.err, &got); ok != (tt.want || tt.name == "other status") {
				t.Fatalf("errors.As = %v", ok)
			} else if ok && got != h {
				t.Fatalf("errors.As found %+v, not the original", got)
			}
		})
	}
	words := []struct {
		err  *HTTPError
		want string
	}{
		{h, "remote server answered DELETE /api/kernels/k1 with HTTP 404: Kernel does not exist: k1"},
		{&HTTPError{Method: "POST", Path: "/api/kernels", Status: 500}, "remote server answered POST /api/kernels with HTTP 500"},
	}
	for _, w := range words {
		if got := w.err.Error(); got != w.want {
			t.Errorf("Error() = %q, want %q", got, w.want)
		}
		if got := fmt.Errorf("stopping: %w", w.err).Error(); got != "stopping: "+w.want {
			t.Errorf("wrapped Error() = %q", got)
		}
	}
}

// TestRemoteAPIHTTPErrors checks that every failure status of the REST API
// is an *HTTPError, with the user-facing wording on one line and neither
// the token nor a URL's secrets in it.
func TestRemoteAPIHTTPErrors(t *testing.T) {
	const token = "tok-0123456789abcdef"
	type answer struct {
		status int
		body   string
	}
	answers := map[string]answer{
		"GET /forbidden/api":      {403, `{"message": "Forbidden", "reason": null}`},
		"GET /nojupyter/api":      {404, "404 page not found"},
		"POST /j/api/kernels":     {500, `{"message": "No such kernel named cobol", "reason": null}`},
		"DELETE /j/api/kernels/k": {500, `{"message": "No such kernel named k", "reason": null}`},
		"GET /j/api/kernels/k":    {404, `{"message": "Kernel does not exist: k", "reason": null}`},
		"GET /j/api/kernels/p":    {502, "<html>\n<body>Bad gateway for http://user:pw@proxy:3128/x?token=" + token + "\n" + token + "</body>\n</html>"},
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		a, ok := answers[req.Method+" "+req.URL.Path]
		if !ok {
			a = answer{418, "unexpected request"}
		}
		w.WriteHeader(a.status)
		io.WriteString(w, a.body)
	}))
	defer srv.Close()
	tests := []struct {
		name, base, method, path string
		status                   int
		want                     string
		message                  string // HTTPError.Message, exactly
	}{
		{"wrong token", "/forbidden", "GET", "/api", 403, "remote server " + srv.URL + "/forbidden rejected the token (HTTP 403): set FERRY_TOKEN or --token-file to the server's token", "Forbidden"},
		{"not a jupyter server", "/nojupyter", "GET", "/api", 404, srv.URL + "/nojupyter does not serve the Jupyter Server API (HTTP 404 at /api): check the URL and its base path", "404 page not found"},
		{"unknown kernelspec", "/j", "POST", "/api/kernels", 500, `remote server has no kernel named "cobol": pass --remote-kernel with one of its kernelspecs (GET /api/kernelspecs)`, "No such kernel named cobol"},
		{"NoSuchKernel text elsewhere is not a kernelspec problem", "/j", "DELETE", "/api/kernels/k", 500, "remote server answered DELETE /api/kernels/k with HTTP 500: No such kernel named k", "No such kernel named k"},
		{"kernel gone", "/j", "GET", "/api/kernels/k", 404, "remote server answered GET /api/kernels/k with HTTP 404: Kernel does not exist: k", "Kernel does not exist: k"},
		{"HTML body on one line, scrubbed", "/j", "GET", "/api/kernels/p", 502, "remote server answered GET /api/kernels/p with HTTP 502: <html> <body>Bad gateway for http://proxy:3128/x?token=REDACTED REDACTED</body> </html>", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := NewRemote(RemoteConfig{URL: srv.URL + tt.base, Token: token, KernelName: "cobol"})
			if err != nil {
				t.Fatal(err)
			}
			var body any
			if tt.method == http.MethodPost {
				body = map[string]string{"name": "cobol"}
			}
			err = r.api(context.Background(), tt.method, tt.path, body, nil)
			if err == nil {
				t.Fatal("no error")
			}
			if err.Error() != tt.want {
				t.Fatalf("error %q\nwant    %q", err, tt.want)
			}
			if strings.Contains(err.Error(), token) || strings.Contains(err.Error(), "pw@") || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %q shows a secret or spans lines", err)
			}
			if !IsStatus(err, tt.status) || IsStatus(err, tt.status+1) {
				t.Fatalf("IsStatus(err, %d) false, or true for %d", tt.status, tt.status+1)
			}
			var h *HTTPError
			if !errors.As(err, &h) || h.Method != tt.method || h.Path != tt.path || h.Status != tt.status {
				t.Fatalf("errors.As: %+v", h)
			}
			if tt.message != "" && h.Message != tt.message {
				t.Fatalf("Message %q, want %q", h.Message, tt.message)
			}
			if strings.Contains(h.Message, token) {
				t.Fatalf("Message %q holds the token", h.Message)
			}
		})
	}
}

// TestDeleteKernelStatuses: 404 means already gone, 500 is retried (the
// server is restarting the kernel), anything else is returned at once.
func TestDeleteKernelStatuses(t *testing.T) {
	tests := []struct {
		name      string
		statuses  []int // the server's answers, in turn; the last repeats
		wantErr   int   // 0: no error, else the status IsStatus must find
		wantCalls int
	}{
		{"gone", []int{404}, 0, 1},
		{"deleted", []int{204}, 0, 1},
		{"restarting, then deleted", []int{500, 500, 204}, 0, 3},
		{"restarting, then gone", []int{500, 404}, 0, 2},
		{"wrong token is not retried", []int{403}, 403, 1},
		{"bad request is not retried", []int{400}, 400, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			calls := 0
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
				mu.Lock()
				st := tt.statuses[min(calls, len(tt.statuses)-1)]
				calls++
				mu.Unlock()
				if req.Method != http.MethodDelete || req.URL.Path != "/api/kernels/k1" {
					st = 418
				}
				w.WriteHeader(st)
			}))
			defer srv.Close()
			r, err := NewRemote(RemoteConfig{URL: srv.URL, Token: "t"})
			if err != nil {
				t.Fatal(err)
			}
			err = r.deleteKernel(context.Background(), "k1")
			switch {
			case tt.wantErr == 0 && err != nil:
				t.Fatalf("deleteKernel: %v", err)
			case tt.wantErr != 0 && !IsStatus(err, tt.wantErr):
				t.Fatalf("deleteKernel: %v, want HTTP %d", err, tt.wantErr)
			}
			mu.Lock()
			defer mu.Unlock()
			if calls != tt.wantCalls {
				t.Fatalf("%d DELETE requests, want %d", calls, tt.wantCalls)
			}
		})
	}
}

// TestDeleteDeletedKernel deletes a kernel twice on a real jupyter-server:
// the second time both clients see an *HTTPError with status 404, and
// deleteKernel counts the kernel as gone.
func TestDeleteDeletedKernel(t *testing.T) {
	s := startServer(t)
	r, err := NewRemote(RemoteConfig{URL: s.URL, Token: s.Token})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var k struct {
		ID string `json:"id"`
	}
	if err := r.api(ctx, http.MethodPost, "/api/kernels", map[string]string{"name": "python3"}, &k); err != nil || k.ID == "" {
		t.Fatalf("creating a kernel: %v (id %q)", err, k.ID)
	}
	if err := s.DeleteKernel(ctx, k.ID); err != nil {
		t.Fatalf("first delete: %v", err)
	}
	path := "/api/kernels/" + k.ID
	tests := []struct {
		name   string
		delete func() error
	}{
		{"JupyterServer.DeleteKernel", func() error { return s.DeleteKernel(ctx, k.ID) }},
		{"Remote.api", func() error { return r.api(ctx, http.MethodDelete, path, nil, nil) }},
		{"wrapped", func() error {
			if err := s.DeleteKernel(ctx, k.ID); err != nil {
				return fmt.Errorf("cleaning up: %w", err)
			}
			return nil
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.delete()
			if !IsStatus(err, http.StatusNotFound) || IsStatus(err, http.StatusInternalServerError) {
				t.Fatalf("second delete: %v, want HTTP 404 only", err)
			}
			var h *HTTPError
			if !errors.As(err, &h) || h.Method != http.MethodDelete || h.Path != path || !strings.Contains(h.Message, k.ID) {
				t.Fatalf("HTTPError %+v, want DELETE %s with the server's message naming the kernel", h, path)
			}
			if strings.Contains(err.Error(), s.Token) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %q shows the token or spans lines", err)
			}
		})
	}
	t0 := time.Now()
	if err := r.deleteKernel(ctx, k.ID); err != nil {
		t.Fatalf("deleteKernel of a deleted kernel: %v, want it counted as gone", err)
	}
	if d := time.Since(t0); d > 5*time.Second {
		t.Fatalf("deleteKernel took %s: a 404 should not be retried", d)
	}
	ids, err := s.Kernels(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(ids, k.ID) {
		t.Fatalf("kernel %s still listed: %v", k.ID, ids)
	}
}

// selfSignedCert makes a certificate for 127.0.0.1 valid from notBefore to
// notAfter, and writes it as PEM for --remote-ca.
func selfSignedCert(t *testing.T, notBefore, notAfter time.Time) (tls.Certificate, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ferry test"},
		NotBefore: notBefore, NotAfter: notAfter, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, file
}

// TestRemoteTLSErrors: each kind of failed handshake is told apart by the
// error's type and gets the TLS advice, not "cannot reach".
func TestRemoteTLSErrors(t *testing.T) {
	api := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "{}") })
	quiet := log.New(io.Discard, "", 0) // the servers log each failed handshake
	selfSigned := httptest.NewUnstartedServer(api)
	selfSigned.Config.ErrorLog = quiet
	selfSigned.StartTLS()
	defer selfSigned.Close()
	trustedCA := filepath.Join(t.TempDir(), "httptest.pem")
	if err := os.WriteFile(trustedCA, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: selfSigned.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, expiredCA := selfSignedCert(t, time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour))
	expired := httptest.NewUnstartedServer(api)
	expired.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	expired.Config.ErrorLog = quiet
	expired.StartTLS()
	defer expired.Close()
	wantsClientCert := httptest.NewUnstartedServer(api)
	wantsClientCert.TLS = &tls.Config{ClientAuth: tls.RequireAnyClientCert}
	wantsClientCert.Config.ErrorLog = quiet
	wantsClientCert.StartTLS()
	defer wantsClientCert.Close()
	notTLS, err := net.Listen("tcp", "127.0.0.1:0") // greets like an SSH server
	if err != nil {
		t.Fatal(err)
	}
	defer notTLS.Close()
	go func() {
		for {
			c, err := notTLS.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "SSH-2.0-OpenSSH_9.6\r\n")
			c.Close()
		}
	}()
	port := func(s *httptest.Server) string { return ":" + strconv.Itoa(s.Listener.Addr().(*net.TCPAddr).Port) }

	const advice = "(pass --remote-ca FILE, or --remote-insecure for a self-signed test server)"
	tests := []struct {
		name string
		cfg  RemoteConfig
		is   func(error) bool // the error's type
	}{
		{"self-signed, not trusted", RemoteConfig{URL: selfSigned.URL}, func(err error) bool {
			var v *tls.CertificateVerificationError
			var u x509.UnknownAuthorityError
			return errors.As(err, &v) && errors.As(err, &u)
		}},
		{"trusted, wrong host name", RemoteConfig{URL: "https://localhost" + port(selfSigned), CAFile: trustedCA}, func(err error) bool {
			var h x509.HostnameError
			return errors.As(err, &h)
		}},
		{"trusted, expired", RemoteConfig{URL: expired.URL, CAFile: expiredCA}, func(err error) bool {
			var c x509.CertificateInvalidError
			return errors.As(err, &c) && c.Reason == x509.Expired
		}},
		{"https to a server that does not speak TLS", RemoteConfig{URL: "https://" + notTLS.Addr().String()}, func(err error) bool {
			var rec tls.RecordHeaderError
			return errors.As(err, &rec)
		}},
		{"server wants a client certificate", RemoteConfig{URL: wantsClientCert.URL, Insecure: true}, func(err error) bool {
			var op *net.OpError
			return errors.As(err, &op) && op.Op == "remote error"
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Token = "secret-token"
			r, err := NewRemote(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			err = r.Start(ctx)
			if err == nil {
				r.Shutdown(context.Background())
				t.Fatal("started")
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "TLS handshake with "+redact(tt.cfg.URL)+" failed: ") || !strings.HasSuffix(msg, advice) || strings.Contains(msg, "\n") {
				t.Fatalf("error %q, want the one-line TLS advice", msg)
			}
			if !tt.is(err) {
				t.Fatalf("error %q does not carry the expected TLS error type (%T)", msg, errors.Unwrap(err))
			}
			if IsStatus(err) || strings.Contains(msg, "secret-token") {
				t.Fatalf("error %q is an HTTP status or shows the token", msg)
			}
		})
	}
	t.Run("https to a plain HTTP server", func(t *testing.T) {
		plain := httptest.NewServer(api)
		defer plain.Close()
		u := "https://" + strings.TrimPrefix(plain.URL, "http://")
		r, err := NewRemote(RemoteConfig{URL: u})
		if err != nil {
			t.Fatal(err)
		}
		err = r.api(context.Background(), http.MethodGet, "/api", nil, nil)
		if !errors.Is(err, http.ErrSchemeMismatch) || !strings.HasPrefix(err.Error(), "remote server "+u+" answered in plain HTTP, not HTTPS: ") {
			t.Fatalf("error %v, want the plain-HTTP advice", err)
		}
	})
	t.Run("trusted CA reaches the API", func(t *testing.T) {
		r, err := NewRemote(RemoteConfig{URL: selfSigned.URL, CAFile: trustedCA})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.api(context.Background(), http.MethodGet, "/api", nil, nil); err != nil {
			t.Fatalf("with the server's CA trusted: %v", err)
		}
	})
}

// TestNetErrorByType: netError decides by the error's type, not its text.
func TestNetErrorByType(t *testing.T) {
	r, err := NewRemote(RemoteConfig{URL: "https://cloud.example:8888"})
	if err != nil {
		t.Fatal(err)
	}
	const (
		tlsFailed   = "TLS handshake with https://cloud.example:8888 failed: "
		unreachable = "cannot reach remote server https://cloud.example:8888: "
	)
	wrap := func(e error) error { return &url.Error{Op: "Get", URL: "https://cloud.example:8888/api", Err: e} }
	tests := []struct {
		name string
		err  error
		want string // the message's start
	}{
		{"unknown authority", wrap(&tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}), tlsFailed},
		{"bare unknown authority", wrap(x509.UnknownAuthorityError{}), tlsFailed},
		{"host name", wrap(x509.HostnameError{Certificate: &x509.Certificate{}, Host: "cloud.example"}), tlsFailed},
		{"invalid certificate", wrap(x509.CertificateInvalidError{Cert: &x509.Certificate{}, Reason: x509.Expired}), tlsFailed},
		{"record header", wrap(tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}), tlsFailed},
		{"alert from the server", wrap(&net.OpError{Op: "remote error", Err: errors.New("alert")}), tlsFailed},
		{"connection refused", wrap(&net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}), unreachable},
		{"plain HTTP answer", wrap(http.ErrSchemeMismatch), "remote server https://cloud.example:8888 answered in plain HTTP, not HTTPS: "},
		{"TLS-looking text only", wrap(errors.New("tls: x509: looks like TLS but is not")), unreachable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := r.netError(tt.err)
			if !strings.HasPrefix(got.Error(), tt.want) {
				t.Fatalf("netError = %q, want prefix %q", got, tt.want)
			}
			if inner := errors.Unwrap(tt.err); !errors.Is(got, inner) {
				t.Fatalf("netError lost the cause %v", inner)
			}
		})
	}
}
