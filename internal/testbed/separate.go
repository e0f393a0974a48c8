package testbed

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ferry-nb/ferry/internal/backend"
)

// The separate cloud is a jupyter-server that shares nothing with the
// laptop that Ferry could lean on without noticing: a test that passes
// because both kernels read the same file, or the cloud inherited the
// laptop's environment, would pass on no real cloud. So the server runs
//
//   - in its own network namespace (only reachable over the veth pair),
//   - in a private mount namespace where /tmp, /var/tmp and /dev/shm are
//     its own and the laptop's working trees (/work, /root, $HOME, the
//     working directory and its repository, TMPDIR) are empty tmpfs,
//     while Debian's /usr (python and its packages) stays visible,
//   - as its own unprivileged user (CloudUser) with its own HOME and
//     working directory (the server's root_dir), both fresh per server,
//   - with an environment of its own: PATH, HOME, USER, LOGNAME, LANG,
//     TZ=UTC and the JUPYTER_* directories in its home, nothing of the
//     laptop's (no FERRY_*, no token),
//   - optionally with packages of its own (SeparateOptions.PythonPath),
//     for version-skew tests.
//
// It still shares the kernel, the PID space (/proc lists the laptop's
// processes, though as another user it cannot read their environment or
// files) and the CPU.

// CloudUser is the unprivileged user the separate cloud runs as; it is
// created (a system user without a login) when missing.
const CloudUser = "ferrycloud"

// cloudBase holds one directory per separate cloud (home, root dir, /tmp,
// packages). 0711: a cloud can reach its own directory but cannot list
// the others'.
const cloudBase = "/var/lib/ferry-cloud"

// ErrNotSeparate is returned when this machine cannot give the cloud a
// machine of its own (not root, or a tool is missing).
var ErrNotSeparate = errors.New("the cloud cannot be separated from the laptop here")

// SeparateOptions change what the separate cloud sees.
type SeparateOptions struct {
	// PythonPath, if set, is a directory copied onto the cloud's disk at
	// start and put first on its PYTHONPATH: a package there shadows the
	// system's at the cloud only (a module raising ImportError hides one).
	PythonPath string
	// Hide are more host directories to make invisible to the cloud.
	Hide []string
	// Extra are additional --ServerApp options.
	Extra []string
}

// Separate is a jupyter-server on a machine of its own (as far as Ferry
// can tell). The embedded server gives URL, Token, Kernels, DeleteKernel
// and Log; use Separate's Restart and Close, not the server's.
type Separate struct {
	*backend.JupyterServer
	UID, GID int
	// Home and RootDir are the cloud user's HOME and the server's
	// root_dir (also its working directory): host paths, the same inside.
	Home, RootDir string
	// Tmp is, on the host, the directory the cloud sees as /tmp.
	Tmp string
	// Hidden are the host directories the cloud sees as empty.
	Hidden []string
	// NS is the network namespace the server runs in.
	NS string
	// Notes say what is separated and what could not be.
	Notes []string

	dir   string   // cloudBase/<id>, removed on Close
	owned *Testbed // the namespace StartSeparateServer made, removed on Close
}

// CheckSeparate says whether StartSeparateServer can work here, as an
// error wrapping ErrNotSeparate with what is missing. It creates
// CloudUser when it is missing.
func CheckSeparate() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: namespaces, mounts and another user need root", ErrNotSeparate)
	}
	for _, tool := range []string{"ip", "unshare", "setpriv", "mount", "env", "useradd"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%w: %s is missing (apt-get install iproute2 util-linux mount passwd coreutils)", ErrNotSeparate, tool)
		}
	}
	if _, _, err := cloudUser(); err != nil {
		return fmt.Errorf("%w: %v", ErrNotSeparate, err)
	}
	return nil
}

// cloudUser looks CloudUser up, creating it when missing.
func cloudUser() (uid, gid int, err error) {
	u, err := user.Lookup(CloudUser)
	if err != nil {
		out, aerr := exec.Command("useradd", "--system", "--user-group", "--no-create-home",
			"--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", CloudUser).CombinedOutput()
		// Another test binary may have created it meanwhile: look again.
		if u, err = user.Lookup(CloudUser); err != nil {
			return 0, 0, fmt.Errorf("no user %s and useradd failed: %v: %s (run: bash scripts/setup.sh)", CloudUser, aerr, strings.TrimSpace(string(out)))
		}
		slog.Info("testbed: created the cloud's user", "user", CloudUser)
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	if uid == 0 {
		return 0, 0, fmt.Errorf("user %s is root; the cloud must run unprivileged", CloudUser)
	}
	return uid, gid, nil
}

// StartSeparateServer starts a jupyter-server on a machine of its own:
// its own network namespace (a veth pair, no rate limit, no added
// latency), mount namespace, user, HOME, working directory and
// environment. URL is reachable from this process directly. Close
// removes all of it. Without root it fails with ErrNotSeparate; it never
// falls back to a server that shares the laptop's disk.
//
// From a TestMain:
//
//	s, err := testbed.StartSeparateServer(ctx, testenv.Python(), testbed.SeparateOptions{})
//	if errors.Is(err, testbed.ErrNotSeparate) { /* say so loudly; skip or use backend.StartJupyterServer */ }
//	server = s.JupyterServer // URL, Token, Kernels, DeleteKernel, Log
//	code := m.Run()
//	s.Close()
//
// A suite that restarts the server calls s.Restart and reads
// s.JupyterServer again (the embedded server's own Restart works too,
// same namespaces and user, but leaves s holding the stopped one).
func StartSeparateServer(ctx context.Context, python string, opts SeparateOptions) (*Separate, error) {
	if err := CheckSeparate(); err != nil {
		return nil, err
	}
	tb := &Testbed{id: newID()}
	if err := tb.network(); err != nil {
		tb.Down()
		return nil, fmt.Errorf("%w: the cloud's network namespace: %v", ErrNotSeparate, err)
	}
	s, err := startSeparate(ctx, python, tb.NS, tb.NSIP, opts)
	if err != nil {
		tb.Down()
		return nil, err
	}
	s.owned = tb
	return s, nil
}

func newID() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// startSeparate starts the server in the existing network namespace ns,
// listening on ip. The caller has run CheckSeparate.
func startSeparate(ctx context.Context, python, ns, ip string, opts SeparateOptions) (_ *Separate, err error) {
	uid, gid, err := cloudUser()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotSeparate, err)
	}
	if err := os.MkdirAll(cloudBase, 0o711); err != nil {
		return nil, fmt.Errorf("making %s for the cloud's disk: %w", cloudBase, err)
	}
	if err := os.Chmod(cloudBase, 0o711); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(cloudBase, "")
	if err != nil {
		return nil, fmt.Errorf("making the cloud's directory: %w", err)
	}
	s := &Separate{UID: uid, GID: gid, NS: ns, dir: dir,
		Home: filepath.Join(dir, "home"), RootDir: filepath.Join(dir, "work"), Tmp: filepath.Join(dir, "tmp")}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	for _, d := range []string{s.Home, s.RootDir, s.Tmp} {
		if err := os.Mkdir(d, 0o700); err != nil {
			return nil, err
		}
	}
	for _, d := range []string{s.Home, s.RootDir} {
		if err := os.Chown(d, uid, gid); err != nil {
			return nil, err
		}
	}
	if err := os.Chmod(s.Tmp, 0o777|os.ModeSticky); err != nil {
		return nil, err
	}
	env := []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + s.Home, "USER=" + CloudUser, "LOGNAME=" + CloudUser,
		"LANG=C.UTF-8", "TZ=UTC"}
	if opts.PythonPath != "" {
		// A copy, not a bind mount: the packages are on the cloud's disk,
		// as they would be on another machine, and the test's directory
		// (in its /tmp) stays invisible.
		site := filepath.Join(dir, "site")
		if err := os.CopyFS(site, os.DirFS(opts.PythonPath)); err != nil {
			return nil, fmt.Errorf("copying the cloud's packages from %s: %w", opts.PythonPath, err)
		}
		env = append(env, "PYTHONPATH="+site)
		s.Notes = append(s.Notes, "cloud: packages from "+opts.PythonPath+" first on its PYTHONPATH")
	}
	hidden, notes, err := hideList(python, opts.Hide)
	if err != nil {
		return nil, err
	}
	s.Hidden = hidden
	s.Notes = append(s.Notes, notes...)
	s.Notes = append(s.Notes, fmt.Sprintf("cloud: user %s (uid %d), home %s, root dir %s, own /tmp /var/tmp /dev/shm, environment emptied; hidden: %s",
		CloudUser, uid, s.Home, s.RootDir, strings.Join(hidden, " ")))
	srv, err := backend.StartJupyterServerWith(ctx, python, backend.ServerOptions{IP: ip,
		Prefix: separatePrefix(ns, s.Tmp, hidden, uid, gid), Env: env,
		RootDir: s.RootDir, JupyterDir: s.Home, UID: uid, GID: gid, Extra: opts.Extra})
	if err != nil {
		killNS(ns)
		return nil, fmt.Errorf("starting the separate cloud's jupyter-server: %w", err)
	}
	s.JupyterServer = srv
	return s, nil
}

// separatePrefix is the command the server runs under: into the network
// namespace, a private mount namespace, the mounts, then the cloud's user.
// The server's own argv follows as "$@". Everything it runs as is the same
// process (exec, no fork), so the server's process group is still the one
// backend.JupyterServer stops.
func separatePrefix(ns, tmp string, hidden []string, uid, gid int) []string {
	var b strings.Builder
	b.WriteString("set -e\n")
	fmt.Fprintf(&b, "mount --bind %s /tmp\n", shq(tmp))
	b.WriteString("mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm\n")
	b.WriteString("if [ -d /var/tmp ]; then mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /var/tmp; fi\n")
	for _, h := range hidden {
		fmt.Fprintf(&b, "mount -t tmpfs -o ro,mode=755,size=4k tmpfs %s\n", shq(h))
	}
	// env -u: the shell exports PWD and OLDPWD; the rest of the
	// environment is exactly what the server was given.
	fmt.Fprintf(&b, "exec setpriv --reuid=%d --regid=%d --clear-groups --inh-caps=-all --bounding-set=-all --no-new-privs -- env -u PWD -u OLDPWD \"$@\"\n", uid, gid)
	return []string{"ip", "netns", "exec", ns, "unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", b.String(), "ferry-cloud"}
}

// shq quotes s for sh.
func shq(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// hideList is the host directories the cloud must not see: the laptop's
// working trees. Directories the cloud needs (/usr and the system, its own
// directory, python's) are never hidden; one that holds them is left
// visible with a note.
func hideList(python string, extra []string) (hidden, notes []string, err error) {
	cands := []string{"/work", "/root", os.Getenv("HOME"), os.TempDir()}
	if wd, err := os.Getwd(); err == nil {
		cands = append(cands, wd, repoRoot(wd))
	}
	if exe, err := os.Executable(); err == nil {
		cands = append(cands, filepath.Dir(exe))
	}
	cands = append(cands, extra...)
	needed := []string{"/usr", "/etc", "/bin", "/sbin", "/lib", "/lib64", "/dev", "/proc", "/sys", "/run", "/var/lib", cloudBase}
	// /tmp, /var/tmp and /dev/shm are replaced whole; what is beneath them
	// is gone already.
	replaced := []string{"/tmp", "/var/tmp", "/dev/shm"}
	for _, c := range cands {
		if c == "" {
			continue
		}
		p, err := filepath.EvalSymlinks(c)
		if err != nil {
			continue
		}
		if st, err := os.Stat(p); err != nil || !st.IsDir() {
			continue
		}
		if slices.ContainsFunc(replaced, func(r string) bool { return within(p, r) }) {
			continue
		}
		if i := slices.IndexFunc(needed, func(n string) bool { return within(n, p) }); i >= 0 {
			notes = append(notes, fmt.Sprintf("cloud: %s is NOT hidden from the cloud: it holds %s, which the cloud needs", p, needed[i]))
			continue
		}
		hidden = append(hidden, p)
	}
	slices.Sort(hidden)
	hidden = slices.Compact(hidden)
	// A directory beneath another hidden one is gone with it.
	var top []string
	for _, h := range hidden {
		if len(top) == 0 || !within(h, top[len(top)-1]) {
			top = append(top, h)
		}
	}
	for _, py := range []string{python} {
		real, err := filepath.EvalSymlinks(py)
		if err != nil {
			real = py
		}
		for _, h := range append(slices.Clone(top), replaced...) {
			if within(py, h) || within(real, h) {
				return nil, nil, fmt.Errorf("python %s lies in %s, which the separate cloud cannot see: use Debian's /usr/bin/python3 (FERRY_PYTHON)", py, h)
			}
		}
	}
	return top, notes, nil
}

// within reports whether p is dir or beneath it.
func within(p, dir string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// repoRoot is the nearest directory at or above dir holding .git or
// go.mod ("" if none).
func repoRoot(dir string) string {
	for d := dir; ; d = filepath.Dir(d) {
		for _, m := range []string{".git", "go.mod"} {
			if _, err := os.Stat(filepath.Join(d, m)); err == nil {
				return d
			}
		}
		if d == filepath.Dir(d) {
			return ""
		}
	}
}

// Restart stops the server and starts it again on the same address with
// the same token, user, directories and mounts: to its clients, a server
// restarted mid-session (its kernels are gone, its disk is not).
func (s *Separate) Restart(ctx context.Context) error {
	srv, err := s.JupyterServer.Restart(ctx)
	if err != nil {
		return fmt.Errorf("restarting the separate cloud's jupyter-server: %w", err)
	}
	s.JupyterServer = srv
	return nil
}

// Close stops the server, ends whatever is left in its network namespace
// (its private mounts go with the last process), and removes its
// directories and the namespace it made. Safe to call twice.
func (s *Separate) Close() {
	if s.dir == "" {
		return
	}
	s.JupyterServer.Stop()
	killNS(s.NS)
	if s.owned != nil {
		s.owned.Down()
	}
	if err := os.RemoveAll(s.dir); err != nil {
		slog.Warn("testbed: the cloud's directory stays behind", "dir", s.dir, "err", err)
	}
	s.dir = ""
}

// nsPids lists the processes in network namespace ns.
func nsPids(ns string) []int {
	out, _ := exec.Command("ip", "netns", "pids", ns).Output()
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// killNS kills every process left in ns (kernels the server did not shut
// down) and waits, at most 10 s, until they are gone.
func killNS(ns string) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		pids := nsPids(ns)
		if len(pids) == 0 {
			return
		}
		if time.Now().After(deadline) {
			slog.Warn("testbed: processes stay in the cloud's namespace", "ns", ns, "pids", pids)
			return
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(50 * time.Millisecond) // polling for exits, bounded by deadline
	}
}

// HostIP is the laptop's address as the cloud's namespace reaches it, for
// services a test runs on the laptop ("" if the namespace is not this
// Separate's own).
func (s *Separate) HostIP() string {
	if s.owned == nil {
		return ""
	}
	return s.owned.HostIP
}
