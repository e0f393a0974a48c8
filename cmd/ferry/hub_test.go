package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-nb/ferry/internal/backend"
	"github.com/ferry-nb/ferry/internal/client"
	"github.com/ferry-nb/ferry/internal/notebook"
	"github.com/ferry-nb/ferry/internal/testenv"
)

// One real JupyterHub for this package's hub tests, started by the first
// and stopped by TestMain; each test is its own hub user, so they do not
// share servers.
var (
	hubOnce sync.Once
	hubErr  error
	theHub  *backend.JupyterHub
)

func testHub(t *testing.T) *backend.JupyterHub {
	t.Helper()
	testenv.SkipIfShort(t, "a real JupyterHub with configurable-http-proxy spawning jupyter-servers, ~40 s for the TestHub tests")
	testenv.RequireJupyterHub(t)
	hubOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		theHub, hubErr = backend.StartJupyterHub(ctx, testenv.Python(), backend.HubOptions{})
	})
	if hubErr != nil {
		t.Fatal(hubErr)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the hub's log:\n%s", theHub.Log())
		}
	})
	return theHub
}

func stopTestHub() {
	if theHub != nil {
		theHub.Stop()
	}
}

func hubUser(t *testing.T, h *backend.JupyterHub, name string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tok, err := h.AddUser(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// A session with --remote naming a JupyterHub whose user's server is
// stopped: the first cloud cell starts it (the spawn's progress shows in
// the cell), cells and state move between the laptop and the server. Then
// the hub stops (culls) the server while the cloud holds a value of its
// own: Ferry's died path applies (values already home stay, the lost one
// is rebuilt), and the next cloud cell starts the server again through
// the hub.
func TestHubSession(t *testing.T) {
	h := testHub(t)
	tok := hubUser(t, h, "ann")
	t.Setenv("FERRY_TOKEN", tok)
	k := startKernel(t, "--remote", h.URL)

	k.exec(t, "x = 5", client.ExecOptions{})
	t0 := time.Now()
	r := k.exec(t, "%%ferry remote\nimport os\ny = x + 1\nprint(os.environ.get('JUPYTERHUB_USER'), y)", client.ExecOptions{})
	t.Logf("first cloud cell (server spawned) took %s; it showed:\n%s", time.Since(t0).Round(time.Millisecond), r.Text())
	if r.Stream("stdout") != "ann 6\n" {
		t.Fatalf("the first cloud cell printed %q, want it on ann's hub server", r.Text())
	}
	if e := r.Stream("stderr"); !strings.Contains(e, "Ferry: JupyterHub: starting your server") || !strings.Contains(e, "Ferry: the cloud kernel started in") {
		t.Errorf("the first cloud cell does not show the spawn's progress:\n%s", e)
	}
	if got := k.exec(t, "%%ferry local\nprint(y)", client.ExecOptions{}).Stream("stdout"); got != "6\n" {
		t.Fatalf("y read on the laptop: %q", got)
	}
	st := k.exec(t, "%ferry status", client.ExecOptions{}).Text()
	if !strings.Contains(st, h.URL+"/user/ann") || strings.Contains(st, tok) {
		t.Errorf("%%ferry status does not name ann's server, or shows the token:\n%s", st)
	}
	k.exec(t, "%%ferry remote\nz = y * 10", client.ExecOptions{})

	// The hub's culler stops the idle server; z lived only there.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := h.StopServer(ctx, "ann"); err != nil {
		t.Fatal(err)
	}
	t1 := time.Now()
	r = k.exec(t, "%%ferry remote\nprint(x, y, z)", client.ExecOptions{})
	t.Logf("the cloud cell after the cull (server spawned again) took %s; it showed:\n%s", time.Since(t1).Round(time.Millisecond), r.Text())
	if !strings.HasSuffix(r.Stream("stdout"), "5 6 60\n") || r.Status != "ok" {
		t.Fatalf("after the cull the cloud cell gave %s %q, want x and y from home and z rebuilt", r.Status, r.Text())
	}
	if e := r.Stream("stderr"); !strings.Contains(e, "Ferry: JupyterHub: starting your server") {
		t.Errorf("the server's second spawn is not shown:\n%s", r.Text())
	}
	if up, err := h.ServerRunning(ctx, "ann"); err != nil || !up {
		t.Errorf("ann's server after the cloud cell: running %v, %v", up, err)
	}
}

// A wrong token: the cloud cell fails with one line naming the problem
// and the fix, without the token; the laptop side goes on.
func TestHubWrongToken(t *testing.T) {
	h := testHub(t)
	const bad = "not-a-hub-token-5f2c9e"
	t.Setenv("FERRY_TOKEN", bad)
	k := startKernel(t, "--remote", h.URL)
	r := k.exec(t, "%%ferry remote\nprint(1)", client.ExecOptions{})
	if r.Status != "error" {
		t.Fatalf("a cloud cell with a wrong hub token: %s %q", r.Status, r.Text())
	}
	msg := r.EValue
	t.Logf("the cell's error: %s: %s", r.EName, msg)
	if strings.Contains(r.Text()+k.stderr.String(), bad) {
		t.Error("the token shows in the cell's output or Ferry's log")
	}
	if !strings.Contains(msg, "rejected the token") || !strings.Contains(msg, "FERRY_TOKEN") || !strings.Contains(msg, h.URL+"/hub/token") {
		t.Errorf("the error %q does not name the problem and the fix", msg)
	}
	if got := k.exec(t, "print(2)", client.ExecOptions{}).Stream("stdout"); got != "2\n" {
		t.Errorf("the laptop after the failed cloud cell: %q", got)
	}
}

// ferry run with a hub, the token in a file and a named server: the
// pinned cell runs on that server, which the hub shows as running.
func TestHubRunNamedServer(t *testing.T) {
	h := testHub(t)
	tok := hubUser(t, h, "bob")
	dir := t.TempDir()
	tf := filepath.Join(dir, "hub.token")
	if err := os.WriteFile(tf, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	nb := writeNotebook(t, dir, "hub.ipynb", []string{
		"a = 20",
		"%%ferry remote\nimport os\nprint(os.environ.get('JUPYTERHUB_SERVER_NAME'), a + 1)",
	})
	out, sum := filepath.Join(dir, "out.ipynb"), filepath.Join(dir, "summary.json")
	t0 := time.Now()
	code, stderr := ferryCmd(t, quietEnv(), "run", nb, "-o", out, "--summary", sum, "--python", testenv.Python(),
		"--remote", h.URL, "--token-file", tf, "--hub-server", "gpu", "--hub-options", `{"note": "ferry test"}`)
	t.Logf("ferry run took %s", time.Since(t0).Round(time.Millisecond))
	if code != 0 {
		t.Fatalf("ferry run against the hub: exit %d\n%s", code, stderr)
	}
	if strings.Contains(stderr, tok) {
		t.Fatal("the token shows in ferry run's output")
	}
	got, err := notebook.Read(out)
	if err != nil {
		t.Fatal(err)
	}
	outs, _ := got.Cells[1]["outputs"].([]any)
	var text strings.Builder
	for _, o := range outs {
		if m, ok := o.(map[string]any); ok && m["name"] == "stdout" {
			text.WriteString(toJSON(m["text"]))
		}
	}
	if !strings.Contains(text.String(), "gpu 21") {
		t.Errorf("the pinned cell's outputs %s, want it on bob's server \"gpu\"", toJSON(outs))
	}
	var s summary
	if b, err := os.ReadFile(sum); err != nil || json.Unmarshal(b, &s) != nil || s.CellsRemote != 1 {
		t.Errorf("summary %+v (%v): want one remote cell", s, err)
	}
}

// ferry install writes the hub flags into the kernelspec, never the token.
func TestHubInstallFlags(t *testing.T) {
	testenv.RequirePython(t)
	prefix := t.TempDir()
	t.Setenv("FERRY_TOKEN", "secret-hub-token-1234")
	code, stderr := ferryCmd(t, os.Environ(), "install", "--prefix", prefix, "--python", testenv.Python(),
		"--remote", "https://hub.example.org", "--hub-server", "gpu", "--hub-profile", "a100", "--hub-options", `{"image": "pytorch"}`)
	if code != 0 {
		t.Fatalf("ferry install: exit %d\n%s", code, stderr)
	}
	b, err := os.ReadFile(filepath.Join(prefix, "share", "jupyter", "kernels", "ferry", "kernel.json"))
	if err != nil {
		t.Fatal(err)
	}
	argv := string(b)
	for _, want := range []string{`"--hub-server",`, `"gpu"`, `"--hub-profile",`, `"a100"`, `"--hub-options",`, `pytorch`} {
		if !strings.Contains(argv, want) {
			t.Errorf("kernel.json lacks %s:\n%s", want, b)
		}
	}
	if strings.Contains(argv, "secret-hub-token") {
		t.Error("the token is in kernel.json")
	}
	if code, stderr := ferryCmd(t, os.Environ(), "install", "--prefix", prefix, "--python", testenv.Python(), "--hub-options", "[1]", "--remote", "https://hub.example.org"); code == 0 || !strings.Contains(stderr, "not a JSON object") {
		t.Errorf("ferry install with --hub-options [1]: exit %d\n%s", code, stderr)
	}
}

// --cloud-idle with a hub: Ferry lets the idle cloud kernel go, its
// values written home; then the hub culls the server it ran on (as its
// idle culler would, the server being idle now); the next cloud cell
// starts the server again through the hub, and a new kernel on it gets
// what it reads from home. No value is lost or rebuilt.
func TestHubIdleReleaseThenCull(t *testing.T) {
	h := testHub(t)
	tok := hubUser(t, h, "dee")
	t.Setenv("FERRY_TOKEN", tok)
	k := startKernel(t, "--remote", h.URL, "--cloud-idle", "1s")
	k.exec(t, "x = 5", client.ExecOptions{})
	if r := k.exec(t, "%%ferry remote\ny = x + 1\nprint(y)", client.ExecOptions{}); r.Stream("stdout") != "6\n" {
		t.Fatalf("the first cloud cell: %s %q", r.Status, r.Text())
	}
	// Released once the idle time passed the measured start (the spawn
	// included): poll %ferry status, bounded.
	deadline := time.Now().Add(90 * time.Second)
	for {
		st := k.exec(t, "%ferry status", client.ExecOptions{}).Text()
		if strings.Contains(st, "released after idle time") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the idle cloud kernel was not released in 90 s:\n%s", st)
		}
		time.Sleep(500 * time.Millisecond) // a user glancing at the status, not a synchronisation
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := h.StopServer(ctx, "dee"); err != nil {
		t.Fatal(err)
	}
	r := k.exec(t, "%%ferry remote\nprint(x + y)", client.ExecOptions{})
	t.Logf("the cloud cell after the release and the cull showed:\n%s", r.Text())
	if !strings.HasSuffix(r.Stream("stdout"), "11\n") {
		t.Fatalf("the cloud cell after the release and the cull: %s %q", r.Status, r.Text())
	}
	e := r.Stream("stderr")
	if !strings.Contains(e, "Ferry: JupyterHub: starting your server") || !strings.Contains(e, "was released after") || strings.Contains(e, "rebuil") {
		t.Errorf("want the spawn and the release's one line, no rebuild:\n%s", e)
	}
}
