package transparency

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-nb/ferry/internal/client"
	"github.com/ferry-nb/ferry/internal/notebook"
	"github.com/ferry-nb/ferry/internal/testbed"
	"github.com/ferry-nb/ferry/internal/testenv"
)

// counter is an HTTP service on the test bed's network that counts the
// requests it gets and answers each with the count so far: a side effect
// both machines can reach.
type counter struct {
	n   atomic.Int64
	srv *http.Server
	url string
}

func startCounter(t *testing.T) *counter {
	t.Helper()
	host := "127.0.0.1"
	if separate != nil {
		host = separate.HostIP() // the laptop, as the cloud's namespace reaches it
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatalf("counting service: %v", err)
	}
	c := &counter{url: "http://" + ln.Addr().String() + "/hit"}
	c.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, c.n.Add(1))
	})}
	go func() { _ = c.srv.Serve(ln) }()
	t.Cleanup(func() { _ = c.srv.Close() })
	return c
}

// machineRun runs c once in a fresh notebook folder holding c.Files and
// returns its outputs, the cells that ran remotely and the counter's
// count.
func machineRun(t *testing.T, c MachineCase, policy string, seed int64) ([]string, int, int64) {
	t.Helper()
	dir := t.TempDir()
	for rel, body := range c.Files {
		p := filepath.Join(dir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cnt := startCounter(t)
	cells := make([]string, len(c.Cells))
	for i, code := range c.Cells {
		cells[i] = strings.ReplaceAll(code, "{COUNTER}", cnt.url)
	}
	got, remote := runIn(t, dir, c.Name, notebook.FromCode(cells...), policy, seed, policy != "local")
	return got, remote, cnt.n.Load()
}

// TestMachine runs the notebooks that depend on the machine (files next to
// the notebook, the working directory, environment variables, process
// settings, side effects) against a cloud that is another machine, under
// pingpong, random and all-remote placement: outputs equal all-local, and
// a cell with a side effect runs exactly as often as the user ran it.
func TestMachine(t *testing.T) {
	testenv.SkipIfShort(t, "9 notebooks under 5 placements against a separate-machine cloud, about 2-4 min")
	testenv.RequireJupyterServer(t)
	if separate == nil {
		t.Skip("LOUD SKIP: the cloud is not another machine here (needs root for namespaces and a user); these cases would prove nothing on a shared disk")
	}
	type placement struct {
		policy string
		seed   int64
	}
	placements := []placement{{"pingpong", 0}, {"random", 3}, {"random", 4}, {"remote", 0}}
	for _, c := range MachineCases {
		t.Run(c.Name, func(t *testing.T) {
			t.Parallel()
			want, _, n := machineRun(t, c, "local", 0)
			if len(want) == 0 {
				t.Fatalf("the all-local run printed nothing; the case checks nothing")
			}
			for _, e := range c.Expect {
				if !strings.Contains(strings.Join(want, "\n"), e) {
					t.Fatalf("the all-local run lacks %q; the case does not check what it means to:\n%s", e, strings.Join(want, "\n"))
				}
			}
			if int(n) != c.Counted {
				t.Fatalf("all-local: the counting service got %d requests, the case says %d", n, c.Counted)
			}
			for _, p := range placements {
				got, remote, n := machineRun(t, c, p.policy, p.seed)
				if strings.Join(got, "\n") != strings.Join(want, "\n") {
					t.Errorf("%s seed %d: outputs differ from all-local\n--- local\n%s\n--- %s\n%s", p.policy, p.seed, strings.Join(want, "\n"), p.policy, strings.Join(got, "\n"))
				}
				if int(n) != c.Counted {
					t.Errorf("%s seed %d: the counting service got %d requests, the user's cells made %d: a cell with a side effect was re-run behind the user's back", p.policy, p.seed, n, c.Counted)
				}
				if remote == 0 && p.policy != "random" {
					t.Errorf("%s seed %d: no cell ran in the cloud; the placement tests nothing", p.policy, p.seed)
				}
			}
		})
	}
}

// streamOf is the text cell i of nb wrote to stream name.
func streamOf(nb *notebook.Notebook, i int, name string) string {
	var b strings.Builder
	outs, _ := nb.Cells[i]["outputs"].([]any)
	for _, o := range outs {
		m, _ := o.(client.Output)
		if m == nil {
			m, _ = o.(map[string]any)
		}
		if m["output_type"] != "stream" || m["name"] != name {
			continue
		}
		switch t := m["text"].(type) {
		case []string:
			b.WriteString(strings.Join(t, ""))
		case string:
			b.WriteString(t)
		}
	}
	return b.String()
}

// skewModule writes a module skewmod of version v into a new folder; its
// Model warns when unpickled if warn is set.
func skewModule(t *testing.T, v string, warn bool) string {
	t.Helper()
	dir := t.TempDir()
	src := "import warnings\n__version__ = " + strconv.Quote(v) + "\n\nclass Model:\n    def __init__(self, value):\n        self.value = value\n"
	if warn {
		src += "\n    def __setstate__(self, st):\n        warnings.warn('Model unpickled by skewmod ' + __version__)\n        self.__dict__.update(st)\n"
	}
	if err := os.WriteFile(filepath.Join(dir, "skewmod.py"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestVersionSkew: a value whose module the cloud lacks, or has at another
// version, is not sent; the cell runs where the value is, with a one-line
// reason, and its output equals all-local's. With the same version there,
// the value moves and the warnings its loading raised reach the cell.
func TestVersionSkew(t *testing.T) {
	testenv.SkipIfShort(t, "three separate clouds with different package sets, about 1 min")
	if separate == nil {
		t.Skip("LOUD SKIP: the cloud is not another machine here (needs root); a package set of its own cannot be given")
	}
	lib := skewModule(t, "1.0", true)
	cells := []string{
		"import sys\nsys.path.insert(0, " + strconv.Quote(lib) + ")\nimport skewmod\nm = skewmod.Model(3)",
		"print(m.value)",
		"m.value += 1",
		"print(m.value, skewmod.__version__)",
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, c := range []struct {
		name  string
		cloud string // skewmod's version at the cloud, "" for none
		// want is in the stderr of cell 1 (planned for the cloud).
		want string
		ran  bool // cell 1 ran in the cloud
	}{
		{"missing at the cloud", "", "m needs skewmod, which the remote kernel does not have", false},
		{"another version at the cloud", "2.0", "m was made with skewmod 1.0; the remote kernel has skewmod 2.0", false},
		{"same version, load warnings shown", "1.0", "the remote kernel said while loading m: UserWarning: Model unpickled by skewmod 1.0", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := separate.JupyterServer
			if c.cloud != "" {
				sep, err := testbed.StartSeparateServer(ctx, testenv.Python(), testbed.SeparateOptions{PythonPath: skewModule(t, c.cloud, true)})
				if err != nil {
					t.Fatal(err)
				}
				defer sep.Close()
				srv = sep.JupyterServer
			}
			dir := t.TempDir()
			local := notebook.FromCode(cells...)
			runWith(t, runOpts{dir: dir, name: c.name, nb: local, policy: "local", server: srv})
			nb := notebook.FromCode(cells...)
			runWith(t, runOpts{dir: t.TempDir(), name: c.name, nb: nb, policy: "pingpong", server: srv})
			if got, want := strings.Join(comparable(nb), "\n"), strings.Join(comparable(local), "\n"); got != want {
				t.Errorf("outputs differ from all-local\n--- local\n%s\n--- pingpong\n%s", want, got)
			}
			if e := streamOf(nb, 1, "stderr"); !strings.Contains(e, c.want) {
				t.Errorf("cell 1's stderr %q lacks %q", e, c.want)
			}
			if c.ran != !strings.Contains(streamOf(nb, 1, "stderr"), "running it at local") {
				t.Errorf("cell 1 ran in the cloud: %v, want %v (stderr %q)", !c.ran, c.ran, streamOf(nb, 1, "stderr"))
			}
			// A certain failure is not tried again: later cloud cells
			// reading m stay on the laptop without another attempt.
			if e := streamOf(nb, 3, "stderr"); strings.Contains(e, "could not move") {
				t.Errorf("cell 3 tried the refused move again: %q", e)
			}
		})
	}
}

// TestForwardEnv: the laptop's environment is not copied to the cloud. A
// cloud cell reading a variable only the laptop has sees it unset and is
// told which flag sends it; with --forward-env it sees the laptop's value.
func TestForwardEnv(t *testing.T) {
	testenv.SkipIfShort(t, "two runs against a separate-machine cloud")
	if separate == nil {
		t.Skip("LOUD SKIP: the cloud is not another machine here (needs root)")
	}
	t.Setenv("PROBE_LAPTOP_ONLY", "from-the-laptop")
	cells := []string{"%%ferry remote\nimport os\nprint(os.environ.get('PROBE_LAPTOP_ONLY'))"}
	nb := notebook.FromCode(cells...)
	runWith(t, runOpts{dir: t.TempDir(), name: "env", nb: nb, policy: "local", server: separate.JupyterServer})
	if out, e := streamOf(nb, 0, "stdout"), streamOf(nb, 0, "stderr"); out != "None\n" || !strings.Contains(e, "PROBE_LAPTOP_ONLY is set on the laptop but not in the remote kernel") || !strings.Contains(e, "--forward-env PROBE_LAPTOP_ONLY") {
		t.Fatalf("without --forward-env: stdout %q, stderr %q", out, e)
	}
	nb = notebook.FromCode(cells...)
	runWith(t, runOpts{dir: t.TempDir(), name: "env", nb: nb, policy: "local", server: separate.JupyterServer, forwardEnv: []string{"PROBE_LAPTOP_ONLY"}})
	if out, e := streamOf(nb, 0, "stdout"), streamOf(nb, 0, "stderr"); out != "from-the-laptop\n" || strings.Contains(e, "forward-env") {
		t.Fatalf("with --forward-env: stdout %q, stderr %q", out, e)
	}
}

// TestLaptopEditBetweenCells: a file the user changes on the laptop
// between two cloud cells (an editor, a download) is brought again; the
// cloud never reads its stale copy. One removed there is removed in the
// cloud too.
func TestLaptopEditBetweenCells(t *testing.T) {
	testenv.SkipIfShort(t, "a separate-machine cloud")
	if separate == nil {
		t.Skip("LOUD SKIP: the cloud is not another machine here (needs root)")
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "data.csv")
	if err := os.WriteFile(p, []byte("v1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sess := startSession(ctx, t, runOpts{dir: dir, name: "edit", policy: "local", server: separate.JupyterServer})
	defer sess.Close(context.Background())
	cell := "%%ferry remote\nimport os\nprint(open('data.csv').read().strip() if os.path.exists('data.csv') else 'no data.csv')"
	exec := func() string {
		r, err := sess.Execute(ctx, cell, client.ExecOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return r.Stream("stdout")
	}
	if got := exec(); got != "v1\n" {
		t.Fatalf("first read in the cloud: %q", got)
	}
	if err := os.WriteFile(p, []byte("v2, longer\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := exec(); got != "v2, longer\n" {
		t.Fatalf("after the laptop's copy changed, the cloud read %q", got)
	}
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	if got := exec(); got != "no data.csv\n" {
		t.Fatalf("after the laptop's copy was removed, the cloud read %q", got)
	}
}
