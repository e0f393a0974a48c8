package backend

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ferry-nb/ferry/internal/wire"
)

// JupyterHubFix is what to install when StartJupyterHub cannot run.
const JupyterHubFix = "apt-get install jupyterhub node-configurable-http-proxy (or run: bash scripts/setup.sh)"

// JupyterHub is a real JupyterHub (Debian's jupyterhub, with
// configurable-http-proxy) Ferry started on loopback for the tests of
// --remote HUB: DummyAuthenticator, and a SimpleLocalProcessSpawner that
// runs each user's server as jupyterhub-singleuser on jupyter_server with
// the given interpreter. It is administered through a service token that
// never leaves this struct; users and their tokens are made with AddUser.
type JupyterHub struct {
	URL string // the proxy's public URL, what --remote names

	admin  string // the ferry-test service's token (admin scopes)
	client *http.Client
	cmd    *exec.Cmd
	dir    string
	done   chan struct{}
	log    *tailBuffer
}

// HubOptions say how StartJupyterHub starts a hub; the zero value is
// plain HTTP.
type HubOptions struct {
	// CertFile and KeyFile (PEM) make the proxy serve HTTPS with them
	// (JupyterHub's ssl_cert and ssl_key); CertFile is also the CA the
	// harness's own requests trust, so it is a self-signed certificate
	// for 127.0.0.1, as --remote-ca takes.
	CertFile, KeyFile string
}

// StartJupyterHub starts a hub whose users' servers run python's
// jupyter_server, on free loopback ports, and waits (bounded by ctx and
// 60 s) until its API answers through the proxy.
func StartJupyterHub(ctx context.Context, python string, opts HubOptions) (*JupyterHub, error) {
	for _, bin := range []string{"jupyterhub", "configurable-http-proxy"} {
		if _, err := exec.LookPath(bin); err != nil {
			return nil, fmt.Errorf("no %s on PATH: %s", bin, JupyterHubFix)
		}
	}
	ports, err := wire.FreePorts("127.0.0.1", 3)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "ferry-jupyterhub-")
	if err != nil {
		return nil, err
	}
	admin := wire.NewID() + wire.NewID()
	q := strconv.Quote
	args := []string{"--allow-root"}
	if os.Geteuid() != 0 {
		args = nil
	}
	argList, _ := json.Marshal(args)
	// The singleuser server's own config (a larger WebSocket message
	// limit, as StartJupyterServer sets) comes from its JUPYTER_CONFIG_DIR.
	suConf := filepath.Join(dir, "singleuser-config")
	if err := os.MkdirAll(suConf, 0o700); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(suConf, "jupyter_server_config.py"),
		[]byte("c.ServerApp.tornado_settings = {'websocket_max_message_size': 4 * 1024 ** 3}\n"), 0o600); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	scheme, client := "http", &http.Client{Transport: &http.Transport{}}
	var tlsConf []string
	if opts.CertFile != "" {
		pemData, err := os.ReadFile(opts.CertFile)
		if err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemData) {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("%s holds no PEM certificate", opts.CertFile)
		}
		scheme = "https"
		client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
		tlsConf = []string{"c.JupyterHub.ssl_cert = " + q(opts.CertFile), "c.JupyterHub.ssl_key = " + q(opts.KeyFile)}
	}
	conf := strings.Join(append([]string{
		"c = get_config()",
		"c.JupyterHub.bind_url = " + q(scheme+"://127.0.0.1:"+strconv.Itoa(ports[0])),
		"c.JupyterHub.hub_bind_url = " + q("http://127.0.0.1:"+strconv.Itoa(ports[1])),
		"c.ConfigurableHTTPProxy.api_url = " + q("http://127.0.0.1:"+strconv.Itoa(ports[2])),
		"c.ConfigurableHTTPProxy.auth_token = " + q(wire.NewID()+wire.NewID()),
		"c.ConfigurableHTTPProxy.pid_file = " + q(filepath.Join(dir, "proxy.pid")),
		"c.JupyterHub.pid_file = " + q(filepath.Join(dir, "hub.pid")),
		"c.JupyterHub.db_url = " + q("sqlite:///"+filepath.Join(dir, "hub.sqlite")),
		"c.JupyterHub.cookie_secret_file = " + q(filepath.Join(dir, "cookie_secret")),
		"c.JupyterHub.cleanup_servers = True",
		"c.JupyterHub.allow_named_servers = True",
		"c.JupyterHub.authenticator_class = 'dummy'",
		"c.JupyterHub.spawner_class = 'simple'",
		"c.SimpleLocalProcessSpawner.home_dir_template = " + q(filepath.Join(dir, "home", "{username}")),
		"c.Spawner.cmd = [" + q(python) + ", '-m', 'jupyterhub.singleuser']",
		"c.Spawner.args = " + string(argList),
		"c.Spawner.environment = {'JUPYTERHUB_SINGLEUSER_APP': 'jupyter_server.serverapp.ServerApp', 'JUPYTER_CONFIG_DIR': " + q(suConf) + ", 'PYDEVD_DISABLE_FILE_VALIDATION': '1'}",
		"c.Spawner.start_timeout = 90",
		"c.Spawner.http_timeout = 90",
		"c.JupyterHub.services = [{'name': 'ferry-test', 'api_token': " + q(admin) + "}]",
		"c.JupyterHub.load_roles = [{'name': 'admin', 'services': ['ferry-test']}]",
	}, append(tlsConf, "")...), "\n")
	cfgFile := filepath.Join(dir, "jupyterhub_config.py")
	if err := os.WriteFile(cfgFile, []byte(conf), 0o600); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	cmd := exec.Command("jupyterhub", "-f", cfgFile)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Env = ChildEnv("PYDEVD_DISABLE_FILE_VALIDATION=1", nodePath())
	log := &tailBuffer{max: 32 << 10}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("starting jupyterhub: %w (%s)", err, JupyterHubFix)
	}
	h := &JupyterHub{URL: scheme + "://127.0.0.1:" + strconv.Itoa(ports[0]), admin: admin, client: client, cmd: cmd, dir: dir, done: make(chan struct{}), log: log}
	go func() { _ = cmd.Wait(); close(h.done) }()
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	last := "none answered"
	for {
		pctx, pcancel := context.WithTimeout(wctx, 3*time.Second)
		err := h.call(pctx, http.MethodGet, "/hub/api/users", nil, nil)
		pcancel()
		if err == nil {
			return h, nil
		}
		last = err.Error()
		select {
		case <-h.done:
			os.RemoveAll(dir)
			return nil, fmt.Errorf("jupyterhub exited at start: %s (%s); its log ends:\n%s", lastLine(log.String()), JupyterHubFix, tail(log.String(), 2000))
		case <-wctx.Done():
			logLine := lastLine(log.String())
			h.Stop()
			return nil, fmt.Errorf("jupyterhub did not answer within 60 s (last probe: %s; its log's last line: %s)", last, logLine)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// nodePath is the NODE_PATH under which configurable-http-proxy finds its
// modules: Debian's node-* packages sit in /usr/share/nodejs, which
// Debian's nodejs searches but a NodeSource nodejs (as on this project's
// CI image) does not ("Cannot find module 'commander'").
func nodePath() string {
	dirs := []string{"/usr/share/nodejs", "/usr/lib/nodejs"}
	if p := os.Getenv("NODE_PATH"); p != "" {
		dirs = append([]string{p}, dirs...)
	}
	return "NODE_PATH=" + strings.Join(dirs, ":")
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// call does one admin request on the hub's REST API; out may be nil.
func (h *JupyterHub) call(ctx context.Context, method, p string, body, out any) error {
	req, err := newJSONRequest(ctx, method, h.URL+p, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "token "+h.admin)
	req.Close = true
	resp, err := h.client.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, p, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode >= 300 {
		return &HTTPError{Method: method, Path: p, Status: resp.StatusCode, Message: scrub(serverMessage(data), h.admin)}
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

// AddUser creates user name (a user that exists is fine) and returns a
// new API token of theirs, with the user's own scopes (it starts, stops
// and opens their servers).
func (h *JupyterHub) AddUser(ctx context.Context, name string) (string, error) {
	p := "/hub/api/users/" + url.PathEscape(name)
	if err := h.call(ctx, http.MethodPost, p, nil, nil); err != nil && !IsStatus(err, http.StatusConflict) {
		return "", fmt.Errorf("creating hub user %s: %w", name, err)
	}
	var tok struct {
		Token string `json:"token"`
	}
	if err := h.call(ctx, http.MethodPost, p+"/tokens", map[string]any{"note": "ferry test", "expires_in": 3600}, &tok); err != nil {
		return "", fmt.Errorf("creating a token for hub user %s: %w", name, err)
	}
	if tok.Token == "" {
		return "", errors.New("the hub created a token without its value")
	}
	return tok.Token, nil
}

// ServerRunning reports whether user name's default server is ready.
func (h *JupyterHub) ServerRunning(ctx context.Context, name string) (bool, error) {
	var u hubUser
	if err := h.call(ctx, http.MethodGet, "/hub/api/users/"+url.PathEscape(name), nil, &u); err != nil {
		return false, err
	}
	s, ok := u.Servers[""]
	return ok && s.Ready, nil
}

// StopServer stops user name's default server, as jupyterhub-idle-culler
// does (DELETE /hub/api/users/NAME/server), and waits, bounded by ctx,
// until the hub says it is stopped.
func (h *JupyterHub) StopServer(ctx context.Context, name string) error {
	if err := h.call(ctx, http.MethodDelete, "/hub/api/users/"+url.PathEscape(name)+"/server", nil, nil); err != nil {
		return err
	}
	for {
		var u hubUser
		if err := h.call(ctx, http.MethodGet, "/hub/api/users/"+url.PathEscape(name), nil, &u); err != nil {
			return err
		}
		if _, ok := u.Servers[""]; !ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the hub did not stop %s's server: %w", name, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Log is the tail of the hub's (and its spawners') output.
func (h *JupyterHub) Log() string { return h.log.String() }

// Stop stops the hub, its proxy and the servers it spawned (all in its
// process group, and cleanup_servers), and removes its files.
func (h *JupyterHub) Stop() {
	_ = syscall.Kill(-h.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-h.done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-h.cmd.Process.Pid, syscall.SIGKILL)
		<-h.done
	}
	_ = syscall.Kill(-h.cmd.Process.Pid, syscall.SIGKILL)
	os.RemoveAll(h.dir)
}
