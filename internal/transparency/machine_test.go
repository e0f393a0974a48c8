package transparency

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/ferry-nb/ferry/internal/notebook"
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
