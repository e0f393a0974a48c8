package backend

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
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
