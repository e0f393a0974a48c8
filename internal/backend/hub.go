package backend

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"
)

// Hub resolves a --remote URL that may name a JupyterHub into the URL of
// the token's user's single-user Jupyter Server, starting that server
// through the Hub's REST API when it is not running. A URL that is not a
// hub is returned unchanged, so a plain Jupyter Server works as before.
//
// Detection: GET {url}/hub/api/ answers JupyterHub's {"version": ...}
// (without authentication); a Jupyter Server answers 404 there. Its
// Resolve is RemoteConfig.Resolve: called at every Start of the cloud
// kernel, so a server the hub culled or stopped is started again by the
// next cloud cell.
type Hub struct {
	URL   string // what --remote says
	Token string // a Hub API token; with access:servers it also opens /user/NAME/
	// Server is a named server ("" for the user's default one).
	Server string
	// Options is the spawn request's body: profile and user options.
	Options map[string]any
	// SpawnTimeout bounds a server's spawn; 0 means DefaultStartTimeout.
	SpawnTimeout time.Duration
	CAFile       string
	Insecure     bool
	// Log receives what the hub does (spawn requests, progress events);
	// nil is slog.Default(). The token is never logged.
	Log *slog.Logger

	once    sync.Once
	client  *http.Client
	initErr error
	mu      sync.Mutex
	isHub   *bool // nil until detected
}

// errHubJSON is an answer that is not the JSON the Hub API sends.
var errHubJSON = errors.New("JupyterHub sent malformed JSON")

// ErrHubSpawn is a server the hub failed (or took too long) to start.
var ErrHubSpawn = errors.New("JupyterHub could not start the server")

func (h *Hub) init() error {
	h.once.Do(func() {
		tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: h.Insecure}
		if h.CAFile != "" {
			pem, err := os.ReadFile(h.CAFile)
			if err != nil {
				h.initErr = fmt.Errorf("reading --remote-ca: %w", err)
				return
			}
			pool, perr := x509.SystemCertPool()
			if perr != nil {
				pool = x509.NewCertPool()
			}
			if !pool.AppendCertsFromPEM(pem) {
				h.initErr = fmt.Errorf("--remote-ca %s holds no PEM certificate", h.CAFile)
				return
			}
			tlsCfg.RootCAs = pool
		}
		h.client = &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg, TLSHandshakeTimeout: 10 * time.Second, IdleConnTimeout: 90 * time.Second}}
	})
	return h.initErr
}

func (h *Hub) log() *slog.Logger {
	if h.Log != nil {
		return h.Log
	}
	return slog.Default()
}

func (h *Hub) base() string { return strings.TrimRight(h.URL, "/") }

// call does one Hub API request; out may be nil. Errors are one line and
// never carry the token.
func (h *Hub) call(ctx context.Context, method, p string, body, out any) (int, error) {
	return h.do(ctx, method, p, body, out, true)
}

// do is call, with the token only when auth is set.
func (h *Hub) do(ctx context.Context, method, p string, body, out any, auth bool) (int, error) {
	if err := h.init(); err != nil {
		return 0, err
	}
	rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	req, err := newJSONRequest(rctx, method, h.base()+p, body)
	if err != nil {
		return 0, err
	}
	if auth && h.Token != "" {
		req.Header.Set("Authorization", "token "+h.Token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := h.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		if isTLSError(err) {
			return 0, fmt.Errorf("TLS handshake with JupyterHub %s failed: %w (pass --remote-ca FILE, or --remote-insecure for a self-signed test hub)", redact(h.URL), err)
		}
		return 0, fmt.Errorf("cannot reach JupyterHub %s: %w (is it running? check --remote)", redact(h.URL), err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		return resp.StatusCode, &explainedError{fmt.Sprintf("JupyterHub %s rejected the token (HTTP %d on %s): put an API token of your hub user in FERRY_TOKEN or the file --token-file names (request one at %s/hub/token)", redact(h.URL), resp.StatusCode, p, redact(h.base())),
			&HTTPError{Method: method, Path: p, Status: resp.StatusCode, Message: scrub(serverMessage(data), h.Token)}}
	}
	if resp.StatusCode >= 300 {
		return resp.StatusCode, &HTTPError{Method: method, Path: p, Status: resp.StatusCode, Message: scrub(serverMessage(data), h.Token)}
	}
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%w for %s %s: %w", errHubJSON, method, p, err)
		}
	}
	return resp.StatusCode, nil
}

// detect reports whether URL is a JupyterHub, once: GET /hub/api/ with
// a "version" in its JSON.
func (h *Hub) detect(ctx context.Context) (bool, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.isHub != nil {
		return *h.isHub, nil
	}
	var v struct {
		Version string `json:"version"`
	}
	// Without the token: the answer must not depend on it (a wrong one
	// is reported by the next, authenticated, request), and a server
	// that is not a hub is not shown it.
	_, err := h.do(ctx, http.MethodGet, "/hub/api/", nil, &v, false)
	if err != nil && !IsStatus(err) && !errors.Is(err, errHubJSON) {
		// Unreachable: not decided; Remote's own GET /api words the
		// error as it always did for a plain server.
		return false, nil
	}
	is := err == nil && v.Version != ""
	h.isHub = &is
	return is, nil
}

// hubServer is one entry of a user model's "servers".
type hubServer struct {
	Name    string `json:"name"`
	Ready   bool   `json:"ready"`
	Pending string `json:"pending"`
	URL     string `json:"url"`
}

type hubUser struct {
	Name    string               `json:"name"`
	Server  string               `json:"server"`
	Pending string               `json:"pending"`
	Servers map[string]hubServer `json:"servers"`
}

// Resolve returns the Jupyter Server URL to use: URL itself when it is
// not a hub, else the token's user's server, started if it is not
// running; progress (may be nil) hears each of the spawn's progress
// messages. It is RemoteConfig.Resolve.
func (h *Hub) Resolve(ctx context.Context, progress func(string)) (string, error) {
	is, err := h.detect(ctx)
	if err != nil || !is {
		return h.URL, err
	}
	// Resolve runs once per start: its connections need not outlive it
	// (each idle one holds two goroutines).
	defer h.client.CloseIdleConnections()
	if progress == nil {
		progress = func(string) {}
	}
	u, err := h.user(ctx)
	if err != nil {
		return "", err
	}
	s, ok := u.Servers[h.Server]
	if ok && s.Pending == "stop" {
		// The hub is stopping it (a culler, the user's Stop button): a
		// spawn is refused until that ends.
		progress("waiting for the hub to finish stopping your " + h.describe() + " first")
		if u, err = h.awaitStopped(ctx); err != nil {
			return "", err
		}
		s, ok = u.Servers[h.Server]
	}
	if ok && s.Ready && s.URL != "" {
		return h.serverURL(s.URL), nil
	}
	if !ok || s.Pending == "" {
		progress("starting your " + h.describe())
		if err := h.spawn(ctx, u.Name); err != nil {
			return "", err
		}
	}
	return h.await(ctx, u.Name, progress)
}

// awaitStopped polls the user model until the server is no longer being
// stopped, bounded by the spawn timeout.
func (h *Hub) awaitStopped(ctx context.Context) (hubUser, error) {
	timeout := h.SpawnTimeout
	if timeout <= 0 {
		timeout = DefaultStartTimeout
	}
	deadline := time.Now().Add(timeout)
	for {
		u, err := h.user(ctx)
		if err != nil {
			return u, err
		}
		if s, ok := u.Servers[h.Server]; !ok || s.Pending != "stop" {
			return u, nil
		}
		if time.Now().After(deadline) {
			return u, fmt.Errorf("%w: the hub was still stopping your %s after %s; see the hub's log", ErrHubSpawn, h.describe(), timeout)
		}
		select {
		case <-ctx.Done():
			return u, fmt.Errorf("waiting for JupyterHub to stop your %s: %w", h.describe(), ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// user is the token's user's model.
func (h *Hub) user(ctx context.Context) (hubUser, error) {
	var u hubUser
	if _, err := h.call(ctx, http.MethodGet, "/hub/api/user", nil, &u); err != nil {
		return u, err
	}
	if u.Name == "" {
		return u, fmt.Errorf("JupyterHub %s names no user for this token (a service's token?): put an API token of your hub user in FERRY_TOKEN or the file --token-file names (request one at %s/hub/token)", redact(h.URL), redact(h.base()))
	}
	return u, nil
}

// serverURL makes the user model's server path ("/user/NAME/") absolute
// on the hub's URL (the proxy serves both).
func (h *Hub) serverURL(p string) string {
	b, _ := url.Parse(h.base())
	if r, err := url.Parse(p); err == nil && r.IsAbs() {
		return strings.TrimRight(r.String(), "/")
	}
	b.Path = "/" + strings.TrimLeft(p, "/")
	return strings.TrimRight(b.String(), "/")
}

func (h *Hub) serverPath(name string) string {
	p := "/hub/api/users/" + url.PathEscape(name)
	if h.Server != "" {
		return p + "/servers/" + url.PathEscape(h.Server)
	}
	return p + "/server"
}

func (h *Hub) describe() string {
	if h.Server != "" {
		return fmt.Sprintf("server %q", h.Server)
	}
	return "server"
}

// spawn asks the hub to start the server (201 started, 202 pending).
func (h *Hub) spawn(ctx context.Context, name string) error {
	h.log().Info("JupyterHub: starting your server", "user", name, "server", h.Server)
	opts := h.Options
	if opts == nil {
		opts = map[string]any{}
	}
	_, err := h.call(ctx, http.MethodPost, h.serverPath(name), opts, nil)
	if IsStatus(err, http.StatusBadRequest) {
		// A 400 is also the hub's answer to a server that is already
		// running or pending (another client started it meanwhile): the
		// user model says which, not the message's words.
		if u, uerr := h.user(ctx); uerr == nil {
			if s, ok := u.Servers[h.Server]; ok && (s.Ready || s.Pending != "") {
				return nil
			}
		}
	}
	if err != nil {
		return fmt.Errorf("%w: %w", ErrHubSpawn, err)
	}
	return nil
}

// ProgressEvent is one event of the hub's spawn progress stream.
type ProgressEvent struct {
	Progress int    `json:"progress"`
	Message  string `json:"message"`
	Ready    bool   `json:"ready"`
	Failed   bool   `json:"failed"`
	URL      string `json:"url"`
	HTMLMsg  string `json:"html_message"`
}

// ReadProgress reads a hub's text/event-stream of progress events ("data:
// {json}" lines), calling each for every event until it returns false or
// the stream ends.
func ReadProgress(r io.Reader, each func(ProgressEvent) bool) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "data:") {
			continue
		}
		var ev ProgressEvent
		if err := json.Unmarshal([]byte(strings.TrimSpace(strings.TrimPrefix(line, "data:"))), &ev); err != nil {
			continue
		}
		if !each(ev) {
			return nil
		}
	}
	return sc.Err()
}

// await follows the spawn's progress until the server is ready, failed,
// or the spawn timeout passed, telling progress each new message.
func (h *Hub) await(ctx context.Context, name string, progress func(string)) (string, error) {
	timeout := h.SpawnTimeout
	if timeout <= 0 {
		timeout = DefaultStartTimeout
	}
	ctx2, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := h.init(); err != nil {
		return "", err
	}
	req, err := http.NewRequestWithContext(ctx2, http.MethodGet, h.base()+h.serverPath(name)+"/progress", nil)
	if err != nil {
		return "", err
	}
	if h.Token != "" {
		req.Header.Set("Authorization", "token "+h.Token)
	}
	req.Header.Set("Accept", "text/event-stream")
	var ready, failed bool
	var msg, readyURL string
	// The stream is advisory: when it cannot be read (an old hub, a proxy
	// that buffers it), the user model below still decides.
	resp, err := h.client.Do(req)
	if err == nil {
		if resp.StatusCode < 300 {
			_ = ReadProgress(resp.Body, func(ev ProgressEvent) bool {
				if m := scrub(ev.Message, h.Token); m != "" && m != msg {
					msg = m
					h.log().Info("JupyterHub: "+m, "progress", ev.Progress)
					progress(m)
				}
				ready, failed, readyURL = ev.Ready, ev.Failed, ev.URL
				return !ev.Ready && !ev.Failed
			})
		}
		resp.Body.Close()
	}
	switch {
	case ctx.Err() != nil:
		return "", fmt.Errorf("waiting for JupyterHub to start your %s: %w", h.describe(), ctx.Err())
	case errors.Is(ctx2.Err(), context.DeadlineExceeded):
		return "", fmt.Errorf("%w: your %s did not start within %s (last: %s); raise --start-timeout or see the hub's log", ErrHubSpawn, h.describe(), timeout, orDefault(msg, "no progress"))
	case failed:
		return "", fmt.Errorf("%w: %s", ErrHubSpawn, orDefault(msg, "the spawn failed (see the hub's log)"))
	}
	// The stream ended (or was not served): ask the user model.
	u, err := h.user(ctx)
	if err != nil {
		return "", err
	}
	if s, ok := u.Servers[h.Server]; ok && s.Ready {
		return h.serverURL(s.URL), nil
	}
	if ready && readyURL != "" {
		return h.serverURL(readyURL), nil
	}
	return "", fmt.Errorf("%w: your %s is not running after its spawn (%s; see the hub's log)", ErrHubSpawn, h.describe(), orDefault(msg, "no progress reported"))
}
