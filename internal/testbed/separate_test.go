package testbed

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-nb/ferry/internal/backend"
	"github.com/ferry-nb/ferry/internal/testenv"
	"github.com/ferry-nb/ferry/internal/wire"
)

// runCell executes code on b and returns its stream output; an error
// reply fails the test.
func runCell(t *testing.T, b backend.Backend, code string) string {
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
			case in.Msg.Header.MsgType == "status" && strings.Contains(string(in.Msg.Content), "idle"):
				idle = true
			}
		case <-deadline:
			t.Fatalf("no reply to %q", code)
		}
	}
	if reply["status"] != "ok" {
		t.Fatalf("cell failed: %v\n%s", reply, out.String())
	}
	return out.String()
}

// mountNS is the mount namespace of pid ("" if it is gone).
func mountNS(pid int) string {
	s, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid))
	return s
}

// TestSeparateCloud checks that the separate cloud shares nothing with
// this process that a notebook could notice: files, /tmp, user, HOME,
// working directory, environment; that Debian's packages are there and
// PythonPath shadows them at the cloud only; that Restart keeps address
// and token; and that Close leaves nothing behind.
func TestSeparateCloud(t *testing.T) {
	testenv.RequireRoot(t, "the separate cloud's namespaces, mounts and user")
	testenv.RequireJupyterServer(t)
	testenv.SkipIfShort(t, "a jupyter-server and a kernel on a separate cloud, 15 s")
	// Set before the server starts: it must not reach the cloud.
	t.Setenv("FERRY_PROBE_SECRET", "x")
	id := newID()
	// Readable by anyone, so only the mounts can keep the cloud from it.
	laptopDir := t.TempDir()
	for _, d := range []string{laptopDir, filepath.Dir(laptopDir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	laptopFile := filepath.Join(laptopDir, "laptop-probe")
	workFile := filepath.Join("/work", ".ferry-probe-"+id)
	for _, f := range []string{laptopFile, workFile} {
		if err := os.WriteFile(f, []byte("laptop"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { os.Remove(workFile) })
	pp := filepath.Join(t.TempDir(), "pythonpath")
	if err := os.MkdirAll(filepath.Join(pp, "ferryskewprobe"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pp, "ferryskewprobe", "__init__.py"), []byte("__version__ = \"9.9\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	s, err := StartSeparateServer(ctx, testenv.Python(), SeparateOptions{PythonPath: pp})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			s.Close()
		}
	}()
	for _, n := range s.Notes {
		t.Log(n)
	}
	ns, dir := s.NS, s.dir
	pids := nsPids(ns)
	if len(pids) == 0 {
		t.Fatalf("no process in the cloud's namespace %s", ns)
	}
	cloudMnt := mountNS(pids[0])
	if cloudMnt == "" || cloudMnt == mountNS(os.Getpid()) {
		t.Fatalf("the cloud's server has mount namespace %q, this process %q", cloudMnt, mountNS(os.Getpid()))
	}

	r, err := backend.NewRemote(backend.RemoteConfig{URL: s.URL, Token: s.Token})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(ctx); err != nil {
		t.Fatalf("%v\nserver log:\n%s", err, s.Log())
	}
	cloudTmp := "ferry-cloud-probe-" + id
	out := runCell(t, r, fmt.Sprintf(`import os, json
open("/tmp/%s", "w").write("cloud")
r = {"laptop_tmp": os.path.exists(%q), "work": os.path.exists(%q), "uid": os.getuid(), "home": os.environ.get("HOME"),
     "cwd": os.getcwd(), "secret": os.environ.get("FERRY_PROBE_SECRET"), "ferry": [k for k in os.environ if k.startswith("FERRY_")],
     "tz": os.environ.get("TZ"), "path": os.environ.get("PATH"), "token": [k for k, v in os.environ.items() if %q in v]}
try:
    import numpy
    r["numpy"] = numpy.__version__
except Exception as e:
    r["numpy"] = "error: %%r" %% e
try:
    import ferryskewprobe
    r["skew"] = ferryskewprobe.__version__
except ImportError:
    r["skew"] = None
print(json.dumps(r))`, cloudTmp, laptopFile, workFile, s.Token))
	var got struct {
		LaptopTmp           bool `json:"laptop_tmp"`
		Work                bool
		UID                 int
		Home, Cwd, TZ, Path string
		Secret              *string
		Ferry, Token        []string
		Numpy               string
		Skew                *string
	}
	t.Logf("the cloud kernel sees: %s", strings.TrimSpace(out))
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("the probe cell printed %q: %v", out, err)
	}
	u, err := user.Lookup(CloudUser)
	if err != nil {
		t.Fatal(err)
	}
	cloudUID, _ := strconv.Atoi(u.Uid)
	hostHome, _ := os.UserHomeDir()
	hostCwd, _ := os.Getwd()
	_, hostSeesCloudTmp := os.Stat(filepath.Join("/tmp", cloudTmp))
	hostSkew := exec.Command(testenv.Python(), "-c", "import ferryskewprobe")
	hostSkew.Env = []string{"PATH=/usr/bin:/bin"}
	hostSkewErr := hostSkew.Run()
	for _, c := range []struct {
		name string
		ok   bool
		got  any
	}{
		{"a file in the test's TempDir is invisible to the cloud", !got.LaptopTmp, got.LaptopTmp},
		{"a file in /work is invisible to the cloud", !got.Work, got.Work},
		{"a file the cloud writes to /tmp is not in the host's /tmp", os.IsNotExist(hostSeesCloudTmp), hostSeesCloudTmp},
		{"the cloud's uid is " + CloudUser + "'s, not the host's", got.UID == cloudUID && got.UID != os.Getuid(), got.UID},
		{"the cloud's HOME is its own", got.Home == s.Home && got.Home != hostHome, got.Home},
		{"the cloud's cwd is its own, under the server's root dir", strings.HasPrefix(got.Cwd, s.RootDir) && got.Cwd != hostCwd, got.Cwd},
		{"an env var of the test process does not reach the cloud", got.Secret == nil, got.Secret},
		{"no FERRY_* variable reaches the cloud", len(got.Ferry) == 0, got.Ferry},
		{"the token is in no variable of the cloud", len(got.Token) == 0, got.Token},
		{"TZ is UTC", got.TZ == "UTC", got.TZ},
		{"PATH is the cloud's own", got.Path == "/usr/local/bin:/usr/bin:/bin", got.Path},
		{"Debian's numpy imports in the cloud", got.Numpy != "" && !strings.HasPrefix(got.Numpy, "error"), got.Numpy},
		{"PythonPath's ferryskewprobe 9.9 imports in the cloud", got.Skew != nil && *got.Skew == "9.9", got.Skew},
		{"ferryskewprobe does not import on the host", hostSkewErr != nil, hostSkewErr},
	} {
		if !c.ok {
			t.Errorf("%s: got %v", c.name, c.got)
		}
	}
	if err := r.Shutdown(ctx); err != nil {
		t.Error(err)
	}

	// Restart: same address and token, an empty server, the same disk.
	url, token := s.URL, s.Token
	if err := s.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if s.URL != url || s.Token != token {
		t.Errorf("after Restart the server is at %s (token changed: %v), was %s", s.URL, s.Token != token, url)
	}
	if ids, err := s.Kernels(ctx); err != nil || len(ids) != 0 {
		t.Errorf("after Restart: kernels %v, %v", ids, err)
	}
	if _, err := os.Stat(filepath.Join(s.Tmp, cloudTmp)); err != nil {
		t.Errorf("the cloud's /tmp did not survive its server's restart: %v", err)
	}

	s.Close()
	closed = true
	if out, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(out), ns) {
		t.Errorf("namespace %s left behind", ns)
	}
	if m, _ := os.ReadFile("/proc/mounts"); strings.Contains(string(m), ns) || strings.Contains(string(m), dir) {
		t.Errorf("mounts of the cloud left in /proc/mounts:\n%s", m)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the cloud's directory %s left behind: %v", dir, err)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/ns/mnt")
	for _, p := range procs {
		if l, _ := os.Readlink(p); l == cloudMnt {
			t.Errorf("a process is left in the cloud's mount namespace: %s", p)
		}
	}
}

// TestHideListKeepsTheSystem: hiding the laptop's trees never hides what
// the cloud needs to run, and says so.
func TestHideListKeepsTheSystem(t *testing.T) {
	hidden, notes, err := hideList("/usr/bin/python3", []string{"/", "/usr", "/var", cloudBase, "/tmp/x"})
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hidden {
		for _, need := range []string{"/usr", "/var/lib", cloudBase, "/etc"} {
			if within(need, h) {
				t.Errorf("%s hidden: the cloud needs %s", h, need)
			}
		}
		if within(h, "/tmp") {
			t.Errorf("%s hidden: /tmp is replaced whole", h)
		}
	}
	if len(notes) < 3 {
		t.Errorf("notes %q: want one for each of /, /usr, /var, %s", notes, cloudBase)
	}
	if _, _, err := hideList(filepath.Join(os.TempDir(), "venv", "bin", "python"), nil); err == nil {
		t.Error("a python under a hidden directory was accepted")
	}
}

// TestStartCloudIsSeparate: the test bed's cloud (ferry testbed, the
// benchmarks) is the separate one when root, behind the proxy.
func TestStartCloudIsSeparate(t *testing.T) {
	testenv.RequireRoot(t, "the test bed's namespaces, mounts and user")
	testenv.RequireJupyterServer(t)
	tb, err := Up(Config{RTT: 2 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Down()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cloud, err := tb.StartCloud(ctx, testenv.Python())
	if err != nil {
		t.Fatal(err)
	}
	defer cloud.Close()
	if cloud.Separate == nil || cloud.Server != cloud.Separate.JupyterServer {
		t.Fatalf("the test bed's cloud is not separate: %q", tb.Notes)
	}
	if st, err := os.Stat(cloud.Separate.Home); err != nil || int(st.Sys().(*syscall.Stat_t).Uid) != cloud.Separate.UID {
		t.Errorf("the cloud's home %s is not its user's: %v", cloud.Separate.Home, err)
	}
	// Through the proxy, as the laptop reaches it.
	r, err := backend.NewRemote(backend.RemoteConfig{URL: cloud.URL(), Token: cloud.Server.Token})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(ctx); err != nil {
		t.Fatalf("%v\nserver log:\n%s", err, cloud.Server.Log())
	}
	if out := runCell(t, r, "import os; print(os.environ['USER'])"); out != CloudUser+"\n" {
		t.Errorf("the cloud kernel runs as %q, want %s", out, CloudUser)
	}
	_ = r.Shutdown(ctx)
	dir := cloud.Separate.dir
	cloud.Close()
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the cloud's directory %s left behind: %v", dir, err)
	}
}
