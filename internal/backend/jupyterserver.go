package backend

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ferry-nb/ferry/internal/wire"
)

// JupyterServer is a jupyter-server process Ferry started on loopback: the
// stand-in "cloud" of `ferry demo`, the benchmarks and the tests.
type JupyterServer struct {
	URL   string
	Token string // random; passed by a config file, never on argv or in the environment
	Port  int
	cmd   *exec.Cmd
	dir   string // removed on Stop ("" when the caller owns the directories)
	done  chan struct{}
	log   *tailBuffer
	// how it was started, for Restart
	python string
	opts   ServerOptions
}

// ServerOptions say how StartJupyterServerWith starts a server. The zero
// value is StartJupyterServer's: loopback, a free port, Ferry's own
// environment, a temporary root directory removed on Stop.
type ServerOptions struct {
	IP   string // listen address; "" is 127.0.0.1
	Port int    // 0: a free port
	// Prefix runs the server under a command, e.g. "ip netns exec NS" for
	// the test bed's cloud namespace.
	Prefix []string
	// Env, when non-nil, is the server's whole environment in place of
	// Ferry's own (ChildEnv); the JUPYTER_* directories are added to it.
	Env []string
	// RootDir is the server's root_dir and working directory, and
	// JupyterDir holds its JUPYTER_CONFIG/RUNTIME/DATA directories (""
	// : RootDir). The caller makes and removes them; when RootDir is ""
	// both are one temporary directory removed on Stop.
	RootDir, JupyterDir string
	// UID and GID own the server's config when the prefix runs it as
	// another user (0: as Ferry's user); a server that is not root does
	// not need --allow-root.
	UID, GID int
	// Extra are additional --ServerApp options.
	Extra []string
}

// StartJupyterServer starts jupyter-server with python on a free loopback
// port (or port, if non-zero) and waits until its API answers. extra are
// additional --ServerApp options.
func StartJupyterServer(ctx context.Context, python string, port int, extra ...string) (*JupyterServer, error) {
	return StartJupyterServerWith(ctx, python, ServerOptions{Port: port, Extra: extra})
}

// StartJupyterServerIn is StartJupyterServer listening on ip, with the
// command run under prefix (e.g. "ip netns exec NS" for the test bed's
// cloud namespace).
func StartJupyterServerIn(ctx context.Context, python, ip string, prefix []string, port int, extra ...string) (*JupyterServer, error) {
	return StartJupyterServerWith(ctx, python, ServerOptions{IP: ip, Prefix: prefix, Port: port, Extra: extra})
}

// StartJupyterServerWith starts jupyter-server with python as opts say
// and waits until its API answers.
func StartJupyterServerWith(ctx context.Context, python string, opts ServerOptions) (*JupyterServer, error) {
	if opts.IP == "" {
		opts.IP = "127.0.0.1"
	}
	s, err := startJupyterServer(ctx, python, opts, wire.NewID()+wire.NewID())
	if errors.Is(err, errServerSilent) && opts.Port == 0 && ctx.Err() == nil {
		// Once more, on another port: a server that ran but never answered
		// its probes was seen about once in three full CI runs under load
		// (the test bed's separate cloud), and a second start answered.
		slog.Warn("jupyter-server did not answer; starting it again on another port", "err", err)
		s, err = startJupyterServer(ctx, python, opts, wire.NewID()+wire.NewID())
	}
	return s, err
}

// errServerSilent is a server that ran but never answered its API.
var errServerSilent = errors.New("jupyter-server did not answer")

// Restart stops the server and starts a new one on the same address with
// the same token and options: to its clients, a server restarted
// mid-session (its kernels are gone).
func (s *JupyterServer) Restart(ctx context.Context) (*JupyterServer, error) {
	s.Stop()
	opts := s.opts
	opts.Port = s.Port
	return startJupyterServer(ctx, s.python, opts, s.Token)
}

func startJupyterServer(ctx context.Context, python string, opts ServerOptions, token string) (*JupyterServer, error) {
	ip, port := opts.IP, opts.Port
	if port == 0 {
		ps, err := wire.FreePorts("127.0.0.1", 1)
		if err != nil {
			return nil, err
		}
		port = ps[0]
	}
	root, jdir, owned := opts.RootDir, opts.JupyterDir, ""
	if root == "" {
		dir, err := os.MkdirTemp("", "ferry-jupyter-server-")
		if err != nil {
			return nil, err
		}
		root, jdir, owned = dir, dir, dir
	} else if jdir == "" {
		jdir = root
	}
	cleanup := func() {
		if owned != "" {
			os.RemoveAll(owned)
		}
	}
	args := []string{"-m", "jupyter_server", "--no-browser", "--ServerApp.ip=" + ip, "--ServerApp.port=" + strconv.Itoa(port),
		"--ServerApp.port_retries=0", "--ServerApp.root_dir=" + root, "--ServerApp.open_browser=False"}
	if os.Geteuid() == 0 && opts.UID == 0 {
		args = append(args, "--allow-root")
	}
	args = append(args, opts.Extra...)
	argv := append(append(append([]string(nil), opts.Prefix...), python), args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = root
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	// The token goes in a 0600 config file, not the environment: the
	// server's kernels inherit its environment, and a notebook could read
	// it there. Ferry's own token is not passed on either.
	cfgDir := filepath.Join(jdir, ".config")
	jupyterEnv := []string{"JUPYTER_CONFIG_DIR=" + cfgDir,
		"JUPYTER_RUNTIME_DIR=" + filepath.Join(jdir, ".runtime"), "JUPYTER_DATA_DIR=" + filepath.Join(jdir, ".data"), "PYDEVD_DISABLE_FILE_VALIDATION=1"}
	if opts.Env != nil {
		cmd.Env = append(append([]string{}, opts.Env...), jupyterEnv...)
	} else {
		cmd.Env = ChildEnv(jupyterEnv...)
	}
	if err := os.MkdirAll(cfgDir, 0o700); err != nil {
		cleanup()
		return nil, err
	}
	// Tornado refuses WebSocket messages over 10 MiB by default; state
	// transfers are chunked below that, but users' own messages may not be.
	conf := "c.ServerApp.tornado_settings = {'websocket_max_message_size': 4 * 1024 ** 3}\n" +
		"c.ServerApp.token = " + strconv.Quote(token) + "\n"
	cfgFile := filepath.Join(cfgDir, "jupyter_server_config.py")
	if err := os.WriteFile(cfgFile, []byte(conf), 0o600); err != nil {
		cleanup()
		return nil, err
	}
	if opts.UID != 0 || opts.GID != 0 {
		// Readable by the server's user alone: still 0600, now its own.
		for _, p := range []string{cfgDir, cfgFile} {
			if err := os.Chown(p, opts.UID, opts.GID); err != nil {
				cleanup()
				return nil, fmt.Errorf("handing the server's config to uid %d: %w", opts.UID, err)
			}
		}
	}
	log := &tailBuffer{max: 16 << 10}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		cleanup()
		return nil, fmt.Errorf("starting jupyter-server with %s: %w (apt-get install jupyter-server)", python, err)
	}
	s := &JupyterServer{URL: "http://" + ip + ":" + strconv.Itoa(port), Token: token, Port: port, cmd: cmd, dir: owned, done: make(chan struct{}), log: log,
		python: python, opts: opts}
	go func() { _ = cmd.Wait(); close(s.done) }()
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	last := "none answered"
	for {
		// Each probe bounded on its own: one whose SYN was lost (a
		// namespace's link still coming up) waited out TCP's backoff, and
		// with it the whole start (seen under a loaded CI: "did not answer
		// within 60s" from a server that answered a moment later).
		actx, acancel := context.WithTimeout(ctx, 3*time.Second)
		req, _ := http.NewRequestWithContext(actx, http.MethodGet, s.URL+"/api", nil)
		req.Header.Set("Authorization", "token "+token)
		resp, err := http.DefaultClient.Do(req)
		acancel()
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s, nil
			}
			last = "HTTP " + resp.Status
		} else {
			last = err.Error()
		}
		select {
		case <-s.done:
			cleanup()
			return nil, fmt.Errorf("jupyter-server exited at start: %s", strings.ReplaceAll(lastLine(log.String()), token, "<token>"))
		case <-ctx.Done():
			logLine := strings.ReplaceAll(lastLine(log.String()), token, "<token>")
			s.Stop()
			return nil, fmt.Errorf("%w within 90s (last probe: %s; its log's last line: %s)", errServerSilent, strings.ReplaceAll(last, token, "<token>"), logLine)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func lastLine(s string) string {
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == ' ') {
		s = s[:len(s)-1]
	}
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '\n' {
			return s[i+1:]
		}
	}
	return s
}

// Dir is the server's root directory (its kernels' paths are relative to
// it); its .data subdirectory is the server's JUPYTER_DATA_DIR, where
// kernelspecs written under kernels/NAME are found.
func (s *JupyterServer) Dir() string { return s.dir }

// Log returns the tail of the server's output (it holds no token: the
// token came in a config file and the server only logs a masked URL).
func (s *JupyterServer) Log() string { return s.log.String() }

// Kernels lists the ids of the kernels running on the server.
func (s *JupyterServer) Kernels(ctx context.Context) ([]string, error) {
	resp, err := s.call(ctx, http.MethodGet, "/api/kernels")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var ks []struct {
		ID string `json:"id"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&ks); err != nil {
		return nil, fmt.Errorf("listing the server's kernels: %w", err)
	}
	ids := make([]string, 0, len(ks))
	for _, k := range ks {
		ids = append(ids, k.ID)
	}
	return ids, nil
}

// DeleteKernel deletes a kernel on the server; for one that does not
// exist (any more) the error satisfies IsStatus(err, http.StatusNotFound).
func (s *JupyterServer) DeleteKernel(ctx context.Context, id string) error {
	resp, err := s.call(ctx, http.MethodDelete, "/api/kernels/"+id)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// call does one request; a failure status comes back as an *HTTPError.
func (s *JupyterServer) call(ctx context.Context, method, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, s.URL+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "token "+s.Token)
	req.Close = true // no idle connection (and its goroutines) stays behind
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		resp.Body.Close()
		return nil, &HTTPError{Method: method, Path: path, Status: resp.StatusCode, Message: scrub(serverMessage(data), s.Token)}
	}
	return resp, nil
}

// Done is closed when the server process has exited.
func (s *JupyterServer) Done() <-chan struct{} { return s.done }

// Stop stops the server (SIGTERM, then SIGKILL) and removes its files.
func (s *JupyterServer) Stop() {
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL) // kernels it started
	if s.dir != "" {
		os.RemoveAll(s.dir)
	}
}
