package backend

import (
	"bufio"
	"bytes"
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

	once   sync.Once
	client *http.Client
	mu     sync.Mutex
	isHub  *bool // nil until detected
}

// ErrHubSpawn is a server the hub failed (or took too long) to start.
var ErrHubSpawn = errors.New("JupyterHub could not start the server")

func (h *Hub) init() {
	h.once.Do(func() {
		tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: h.Insecure}
		if h.CAFile != "" {
			if pem, err := os.ReadFile(h.CAFile); err == nil {
				pool, perr := x509.SystemCertPool()
				if perr != nil {
					pool = x509.NewCertPool()
				}
				pool.AppendCertsFromPEM(pem)
				tlsCfg.RootCAs = pool
			}
		}
		h.client = &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg, TLSHandshakeTimeout: 10 * time.Second}}
	})
}

func (h *Hub) base() string { return strings.TrimRight(h.URL, "/") }

// call does one Hub API request; out may be nil. Errors are one line and
// never carry the token.
func (h *Hub) call(ctx context.Context, method, p string, body, out any) (int, error) {
	h.init()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(b)
	}
	rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, method, h.base()+p, rd)
	if err != nil {
		return 0, err
	}
	if h.Token != "" {
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
		return 0, fmt.Errorf("cannot reach JupyterHub %s: %v (is it running? check --remote)", redact(h.URL), scrub(err.Error(), h.Token))
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		return resp.StatusCode, &explainedError{fmt.Sprintf("JupyterHub %s rejected the token (HTTP %d): set FERRY_TOKEN or --token-file to a Hub API token of your user (from the hub's Token page, with the access:servers scope)", redact(h.URL), resp.StatusCode),
			&HTTPError{Method: method, Path: p, Status: resp.StatusCode, Message: scrub(serverMessage(data), h.Token)}}
	}
	if resp.StatusCode >= 300 {
		return resp.StatusCode, &HTTPError{Method: method, Path: p, Status: resp.StatusCode, Message: scrub(serverMessage(data), h.Token)}
	}
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return resp.StatusCode, fmt.Errorf("JupyterHub sent malformed JSON for %s %s: %w", method, p, err)
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
	_, err := h.call(ctx, http.MethodGet, "/hub/api/", nil, &v)
	if err != nil && !IsStatus(err) {
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
// running. It is RemoteConfig.Resolve.
func (h *Hub) Resolve(ctx context.Context) (string, error) {
	is, err := h.detect(ctx)
	if err != nil || !is {
		return h.URL, err
	}
	var u hubUser
	if _, err := h.call(ctx, http.MethodGet, "/hub/api/user", nil, &u); err != nil {
		return "", err
	}
	if u.Name == "" {
		return "", errors.New("JupyterHub's /hub/api/user names no user for this token: use a user's token, not a service's, in FERRY_TOKEN or --token-file")
	}
	s, ok := u.Servers[h.Server]
	if ok && s.Ready && s.URL != "" {
		return h.serverURL(s.URL), nil
	}
	if !ok || s.Pending == "" {
		if err := h.spawn(ctx, u.Name); err != nil {
			return "", err
		}
	}
	return h.await(ctx, u.Name)
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
	slog.Info("JupyterHub: starting your server", "user", name, "server", h.Server)
	opts := h.Options
	if opts == nil {
		opts = map[string]any{}
	}
	_, err := h.call(ctx, http.MethodPost, h.serverPath(name), opts, nil)
	if IsStatus(err, http.StatusBadRequest) {
		// 400 "already running" / "pending": fine, the wait below sees it.
		var he *HTTPError
		if errors.As(err, &he) && (strings.Contains(he.Message, "already") || strings.Contains(he.Message, "pending")) {
			return nil
		}
	}
	if err != nil {
		return fmt.Errorf("%w: %v", ErrHubSpawn, err)
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
// or the spawn timeout passed.
func (h *Hub) await(ctx context.Context, name string) (string, error) {
	timeout := h.SpawnTimeout
	if timeout <= 0 {
		timeout = DefaultStartTimeout
	}
	ctx2, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	h.init()
	req, err := http.NewRequestWithContext(ctx2, http.MethodGet, h.base()+h.serverPath(name)+"/progress", nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "token "+h.Token)
	req.Header.Set("Accept", "text/event-stream")
	var ready, failed bool
	var msg, readyURL string
	resp, err := h.client.Do(req)
	if err == nil {
		if resp.StatusCode < 300 {
			_ = ReadProgress(resp.Body, func(ev ProgressEvent) bool {
				if ev.Message != "" {
					msg = ev.Message
					slog.Info("JupyterHub: "+ev.Message, "progress", ev.Progress)
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
		return "", fmt.Errorf("%w: %s", ErrHubSpawn, orDefault(scrub(msg, h.Token), "the spawn failed (see the hub's log)"))
	}
	// The stream ended (or was not served): ask the user model.
	var u hubUser
	if _, err := h.call(ctx, http.MethodGet, "/hub/api/user", nil, &u); err != nil {
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
