package backend

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/ferry-nb/ferry/internal/wire"
)

// JupyterServer is a jupyter-server process Ferry started on loopback: the
// stand-in "cloud" of `ferry demo`, the benchmarks and the tests.
type JupyterServer struct {
	URL   string
	Token string // random; passed by environment, never on argv
	Port  int
	cmd   *exec.Cmd
	dir   string
	done  chan struct{}
	log   *tailBuffer
	// how it was started, for Restart
	python, ip    string
	prefix, extra []string
}

// StartJupyterServer starts jupyter-server with python on a free loopback
// port (or port, if non-zero) and waits until its API answers. extra are
// additional --ServerApp options.
func StartJupyterServer(ctx context.Context, python string, port int, extra ...string) (*JupyterServer, error) {
	return StartJupyterServerIn(ctx, python, "127.0.0.1", nil, port, extra...)
}

// StartJupyterServerIn is StartJupyterServer listening on ip, with the
// command run under prefix (e.g. "ip netns exec NS" for the test bed's
// cloud namespace).
func StartJupyterServerIn(ctx context.Context, python, ip string, prefix []string, port int, extra ...string) (*JupyterServer, error) {
	return startJupyterServer(ctx, python, ip, prefix, port, wire.NewID()+wire.NewID(), extra)
}

// Restart stops the server and starts a new one on the same address with
// the same token and options: to its clients, a server restarted
// mid-session (its kernels are gone).
func (s *JupyterServer) Restart(ctx context.Context) (*JupyterServer, error) {
	s.Stop()
	return startJupyterServer(ctx, s.python, s.ip, s.prefix, s.Port, s.Token, s.extra)
}

func startJupyterServer(ctx context.Context, python, ip string, prefix []string, port int, token string, extra []string) (*JupyterServer, error) {
	if port == 0 {
		ps, err := wire.FreePorts("127.0.0.1", 1)
		if err != nil {
			return nil, err
		}
		port = ps[0]
	}
	dir, err := os.MkdirTemp("", "ferry-jupyter-server-")
	if err != nil {
		return nil, err
	}
	args := []string{"-m", "jupyter_server", "--no-browser", "--ServerApp.ip=" + ip, "--ServerApp.port=" + strconv.Itoa(port),
		"--ServerApp.port_retries=0", "--ServerApp.root_dir=" + dir, "--ServerApp.open_browser=False"}
	if os.Geteuid() == 0 {
		args = append(args, "--allow-root")
	}
	args = append(args, extra...)
	argv := append(append(append([]string(nil), prefix...), python), args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	// The token goes in a 0600 config file, not the environment: the
	// server's kernels inherit its environment, and a notebook could read
	// it there. Ferry's own token is not passed on either.
	cmd.Env = ChildEnv("JUPYTER_CONFIG_DIR="+filepath.Join(dir, ".config"),
		"JUPYTER_RUNTIME_DIR="+filepath.Join(dir, ".runtime"), "JUPYTER_DATA_DIR="+filepath.Join(dir, ".data"), "PYDEVD_DISABLE_FILE_VALIDATION=1")
	// Tornado refuses WebSocket messages over 10 MiB by default; state
	// transfers are chunked below that, but users' own messages may not be.
	cfgDir := filepath.Join(dir, ".config")
	if err := os.MkdirAll(cfgDir, 0o700); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	conf := "c.ServerApp.tornado_settings = {'websocket_max_message_size': 4 * 1024 ** 3}\n" +
		"c.ServerApp.token = " + strconv.Quote(token) + "\n"
	if err := os.WriteFile(filepath.Join(cfgDir, "jupyter_server_config.py"), []byte(conf), 0o600); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	log := &tailBuffer{max: 16 << 10}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("starting jupyter-server with %s: %w (apt-get install jupyter-server)", python, err)
	}
	s := &JupyterServer{URL: "http://" + ip + ":" + strconv.Itoa(port), Token: token, Port: port, cmd: cmd, dir: dir, done: make(chan struct{}), log: log,
		python: python, ip: ip, prefix: prefix, extra: extra}
	go func() { _ = cmd.Wait(); close(s.done) }()
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/api", nil)
		req.Header.Set("Authorization", "token "+token)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s, nil
			}
		}
		select {
		case <-s.done:
			os.RemoveAll(dir)
			return nil, fmt.Errorf("jupyter-server exited at start: %s", lastLine(log.String()))
		case <-ctx.Done():
			s.Stop()
			return nil, errors.New("jupyter-server did not answer within 60s")
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
	os.RemoveAll(s.dir)
}
