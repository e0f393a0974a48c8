package backend

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ferry-nb/ferry/internal/wire"
)

const python = "/usr/bin/python3"

func startServer(t *testing.T) *JupyterServer {
	t.Helper()
	if _, err := os.Stat(python); err != nil {
		t.Fatalf("%s missing: run 'bash scripts/setup.sh'", python)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	s, err := StartJupyterServer(ctx, python, 0)
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
	if err := b.Send(wire.Shell, m); err != nil {
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
