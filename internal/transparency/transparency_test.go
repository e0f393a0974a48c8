package transparency

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ferry-nb/ferry/internal/analysis"
	"github.com/ferry-nb/ferry/internal/backend"
	"github.com/ferry-nb/ferry/internal/client"
	"github.com/ferry-nb/ferry/internal/kernel"
	"github.com/ferry-nb/ferry/internal/location"
	"github.com/ferry-nb/ferry/internal/notebook"
	"github.com/ferry-nb/ferry/internal/testbed"
	"github.com/ferry-nb/ferry/internal/testenv"
	"github.com/ferry-nb/ferry/internal/trace"
)

// server is the jupyter-server standing in for the cloud; each run gets
// its own kernel on it. As root (CI) it is another machine in every way
// Ferry cannot see through (testbed.StartSeparateServer: its own network
// and mount namespaces, user, HOME, working directory, /tmp and an emptied
// environment), so no case can pass because both kernels share a disk.
var (
	server   *backend.JupyterServer
	separate *testbed.Separate
)

func TestMain(m *testing.M) {
	if err := testenv.CheckJupyterServer(); err != nil {
		fmt.Fprintf(os.Stderr, "transparency tests: %v\n", err)
		os.Exit(1)
	}
	flag.Parse()
	if testing.Short() {
		// Every test here skips under -short (testenv.SkipIfShort), so no
		// server is started; a test that runs under -short must not use it.
		os.Exit(m.Run())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	sep, err := testbed.StartSeparateServer(ctx, testenv.Python(), testbed.SeparateOptions{})
	if err == nil {
		separate, server = sep, sep.JupyterServer
	} else if errors.Is(err, testbed.ErrNotSeparate) {
		fmt.Fprintf(os.Stderr, "transparency tests: LOUD NOTE: the cloud shares this machine's disk and environment (%v); the machine cases skip\n", err)
		server, err = backend.StartJupyterServer(ctx, testenv.Python(), 0)
	}
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "transparency tests need jupyter-server: %v (apt-get install jupyter-server)\n", err)
		os.Exit(1)
	}
	code := m.Run()
	if separate != nil {
		separate.Close()
	} else {
		server.Stop()
	}
	os.Exit(code)
}

// Notebook builds the nbformat notebook of a case.
func (c Case) Notebook() *notebook.Notebook { return notebook.FromCode(c.Cells...) }

// comparable reduces outputs to what a user sees: stream text, result and
// display text, error name and value (tracebacks differ in file names).
func comparable(nb *notebook.Notebook) []string {
	var out []string
	for i, c := range nb.Cells {
		outs, _ := c["outputs"].([]any)
		for _, o := range outs {
			m, _ := o.(client.Output)
			if m == nil {
				m, _ = o.(map[string]any)
			}
			switch m["output_type"] {
			case "stream":
				var text string
				switch t := m["text"].(type) {
				case []string:
					text = strings.Join(t, "")
				case []any:
					for _, x := range t {
						text += fmt.Sprint(x)
					}
				case string:
					text = t
				}
				text = withoutFerryNotes(text)
				if text == "" {
					continue
				}
				out = append(out, fmt.Sprintf("%d %s: %s", i, m["name"], text))
			case "execute_result", "display_data":
				if md, _ := m["metadata"].(map[string]any); md[kernel.DisplayMarker] != nil {
					continue // Ferry's own display (a long move's progress), as "Ferry: " lines
				}
				d, _ := m["data"].(map[string]any)
				out = append(out, fmt.Sprintf("%d %s: %v", i, m["output_type"], d["text/plain"]))
			case "error":
				out = append(out, fmt.Sprintf("%d error: %s: %s", i, m["ename"], m["evalue"]))
			}
		}
	}
	return out
}

// run executes a case under policy with a second local kernel standing in
// for the remote one, and returns the comparable outputs and the stats.
func run(t *testing.T, c Case, policy string, seed int64, viaServer bool) ([]string, int) {
	t.Helper()
	return runIn(t, t.TempDir(), c.Name, c.Notebook(), policy, seed, viaServer)
}

// runIn runs nb with the laptop kernel in dir (the notebook's folder) and
// the cloud's kernel on the test's jupyter-server (viaServer) or a second
// local kernel, and returns its outputs and how many cells ran remotely.
func runIn(t *testing.T, dir, name string, nb *notebook.Notebook, policy string, seed int64, viaServer bool) ([]string, int) {
	t.Helper()
	srv := server
	if !viaServer {
		srv = nil
	}
	remoteCells := runWith(t, runOpts{dir: dir, name: name, nb: nb, policy: policy, seed: seed, server: srv})
	return comparable(nb), remoteCells
}

// runOpts say how runWith runs a notebook.
type runOpts struct {
	dir, name string
	nb        *notebook.Notebook
	policy    string
	seed      int64
	// server is the cloud; nil stands a second local kernel in for it.
	server     *backend.JupyterServer
	forwardEnv []string
	// clouds, if set, replace server: one cloud per location, each on its
	// own server (several clouds); clouds is the settings per cloud.
	clouds   map[location.Location]*backend.JupyterServer
	settings map[location.Location]kernel.CloudSettings
	onChunk  func(src, dst location.Location, chunk int)
	trace    *trace.Writer
}

// runWith runs o.nb (its outputs land in it) and returns how many cells
// ran remotely.
func runWith(t *testing.T, o runOpts) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	sess := startSession(ctx, t, o)
	defer sess.Close(context.Background())
	if _, err := notebook.Run(ctx, o.nb, sess, notebook.RunOptions{AllowErrors: true}); err != nil {
		t.Fatalf("%s under %s: %v", o.name, o.policy, err)
	}
	_, remoteCells, _, _ := sess.Kernel.Stats.Snapshot()
	return remoteCells
}

// startSession starts Ferry as runWith runs it: the laptop kernel in
// o.dir, the cloud on o.server (or a second local kernel). The caller
// closes it.
func startSession(ctx context.Context, t *testing.T, o runOpts) *client.Session {
	t.Helper()
	var remote backend.Backend
	if o.server != nil {
		// A working directory of its own per run, as Ferry gives each
		// notebook folder one.
		r, err := backend.NewRemote(backend.RemoteConfig{URL: o.server.URL, Token: o.server.Token, WorkDir: backend.DefaultWorkDir(o.dir)})
		if err != nil {
			t.Fatal(err)
		}
		remote = r
	} else if o.clouds == nil {
		standIn := backend.NewStandIn(testenv.Python())
		standIn.Dir = o.dir
		remote = standIn
	}
	an := analysis.New(testenv.Python())
	t.Cleanup(an.Close)
	local := backend.NewLocal(testenv.Python())
	local.Dir = o.dir
	backends := map[location.Location]backend.Backend{"local": local, "remote": remote}
	if o.clouds != nil {
		delete(backends, "remote")
		for loc, srv := range o.clouds {
			r, err := backend.NewRemote(backend.RemoteConfig{Loc: loc, URL: srv.URL, Token: srv.Token, WorkDir: backend.DefaultWorkDir(o.dir)})
			if err != nil {
				t.Fatal(err)
			}
			backends[loc] = r
		}
	}
	sess, err := client.StartFerry(ctx, kernel.Config{
		Backends: backends,
		Policy:   o.policy, Seed: o.seed, Analyzer: an, Root: o.dir, ForwardEnv: o.forwardEnv,
		Clouds: o.settings, OnChunk: o.onChunk, Trace: o.trace,
	})
	if err != nil {
		t.Fatalf("%s under %s: %v", o.name, o.policy, err)
	}
	return sess
}

// withoutFerryNotes drops Ferry's own lines ("Ferry: recomputed x …", a
// kernel start): they say what Ferry did, and are not the notebook's.
// TestComparableDropsFerrysOwn: Ferry's words in a cell (stream lines
// starting "Ferry: ", its displays marked in their metadata) are not part
// of what placement must leave unchanged; everything else is.
func TestComparableDropsFerrysOwn(t *testing.T) {
	nb := &notebook.Notebook{Cells: []notebook.Cell{{"outputs": []any{
		client.Output{"output_type": "stream", "name": "stderr", "text": "Ferry: rebuilding x on the laptop …\nreal warning\n"},
		client.Output{"output_type": "display_data", "data": map[string]any{"text/plain": "Ferry: moved x (1.0 GiB) to the cloud in 75 s"},
			"metadata": map[string]any{kernel.DisplayMarker: map[string]any{"progress": true}}},
		map[string]any{"output_type": "display_data", "data": map[string]any{"text/plain": "<Figure>"}, "metadata": map[string]any{}},
	}}}}
	got := comparable(nb)
	want := []string{"0 stderr: real warning\n", "0 display_data: <Figure>"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("comparable = %q, want %q", got, want)
	}
}

func withoutFerryNotes(text string) string {
	if !strings.Contains(text, "Ferry: ") {
		return text
	}
	var keep []string
	for _, l := range strings.SplitAfter(text, "\n") {
		if !strings.HasPrefix(l, "Ferry: ") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "")
}

func TestTransparency(t *testing.T) {
	testenv.SkipIfShort(t, "30 notebooks under 9 placements, real kernels and a jupyter-server, 6-10 min")
	testenv.RequireJupyterServer(t)
	// A case whose library is missing would fail the same way everywhere
	// and pass, checking nothing.
	testenv.RequirePython(t, "numpy", "pandas", "matplotlib", "sympy")
	// Each placement runs with a second local ipykernel as the remote, and
	// with a kernel on a real jupyter-server (over its WebSocket).
	type placement struct {
		policy    string
		seed      int64
		viaServer bool
	}
	var placements []placement
	for _, srv := range []bool{false, true} {
		placements = append(placements, placement{"pingpong", 0, srv}, placement{"random", 1, srv}, placement{"random", 2, srv}, placement{"random", 3, srv})
	}
	for _, c := range Cases {
		t.Run(c.Name, func(t *testing.T) {
			t.Parallel()
			want, _ := run(t, c, "local", 0, false)
			if len(want) == 0 {
				t.Fatalf("the all-local run printed nothing; the case checks nothing")
			}
			remoteCells := 0
			for _, p := range placements {
				got, n := run(t, c, p.policy, p.seed, p.viaServer)
				remoteCells += n
				if MustMove[c.Name] && p.policy == "pingpong" && n != len(c.Cells)/2 {
					t.Errorf("pingpong (remote via jupyter-server: %v): %d of %d cells ran in the cloud, want %d: a value did not travel", p.viaServer, n, len(c.Cells), len(c.Cells)/2)
				}
				if strings.Join(got, "\n") != strings.Join(want, "\n") {
					t.Errorf("%s seed %d (remote via jupyter-server: %v): outputs differ from all-local\n--- local\n%s\n--- %s\n%s", p.policy, p.seed, p.viaServer, strings.Join(want, "\n"), p.policy, strings.Join(got, "\n"))
				}
			}
			if remoteCells == 0 {
				t.Errorf("no cell ran remotely under any placement; the case tests no migration")
			}
		})
	}
}
