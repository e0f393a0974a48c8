package backend

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/user"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coder/websocket"

	"github.com/ferry-nb/ferry/internal/location"
	"github.com/ferry-nb/ferry/internal/wire"
)

// RemoteConfig says how to reach a kernel on a Jupyter Server or Enterprise
// Gateway. The token never appears in URLs, logs or errors.
type RemoteConfig struct {
	// Loc is the cloud's name (--remote NAME=URL); default location.Remote.
	Loc        location.Location
	URL        string // http(s)://host:port[/base_url]
	Token      string
	KernelName string // kernelspec on the server; default python3
	CAFile     string // extra CA for https
	Insecure   bool   // accept any certificate (self-signed test servers)
	// Legacy forces the JSON framing even if the server offers v1.
	Legacy bool
	// WorkDir is the kernel's working directory, relative to the server's
	// root: the cloud is another machine, and two notebooks must not share
	// (or clobber) each other's files there. Empty means
	// DefaultWorkDir(the process's working directory). Start creates it
	// through the Contents API and passes it as the kernel's path.
	WorkDir string
	// Gateway says the server is an Enterprise Gateway: it has no Contents
	// API, and takes the working directory (and the launch timeout) as
	// KERNEL_* environment variables in the create request. Jupyter
	// Server has no way to say which it is, so the user does
	// (--remote-gateway). EG honours KERNEL_WORKING_DIR only with
	// EG_MIRROR_WORKING_DIRS set, and it is a path on the kernel's host.
	Gateway bool
	// Username is the KERNEL_USERNAME an Enterprise Gateway launches the
	// kernel as (its impersonation and per-user kernel limit go by it);
	// "" is the local user's name. Sent only with Gateway.
	Username string
	// KernelEnv are KERNEL_* variables forwarded to an Enterprise Gateway
	// in the create request (ForwardedKernelEnv gathers them from Ferry's
	// environment), as jupyter_server's own gateway client forwards them:
	// EG passes them on to the kernel and its launch scripts (a kernel
	// image, a namespace, GPU counts). Ferry's KERNEL_WORKING_DIR and
	// KERNEL_LAUNCH_TIMEOUT take precedence over them, since Ferry's file
	// sync and start timeout depend on those. Sent only with Gateway.
	KernelEnv map[string]string
	// StartTimeout bounds a kernel's start, from the create request until
	// it answers kernel_info (a cold node or an image pull takes minutes);
	// 0 means DefaultStartTimeout. A slow start is waited for, never
	// deleted and created again.
	StartTimeout time.Duration
	// ReconnectFor is how long a dropped kernel connection is tried
	// again while the server cannot be reached (a laptop asleep, a lost
	// network) before the kernel counts as lost; 0 means
	// DefaultReconnectFor. An answer that the kernel is gone (404) ends
	// it at once.
	ReconnectFor time.Duration
	// Resolve, if set, is called at every Start before anything else and
	// returns the Jupyter Server URL to use from then on: a JupyterHub
	// (Hub.Resolve) starts the user's server, again after the hub culled
	// it. It calls progress with what it is waiting for (the hub's spawn
	// progress), which Status shows as Spawn while the start lasts. Its
	// error ends the Start.
	Resolve func(ctx context.Context, progress func(string)) (string, error)
}

// DefaultReconnectFor is how long a lost connection is tried again by
// default. It is short so that a cloud that is really gone (a deleted VM)
// costs a cell 20 s before Ferry rebuilds what only it held on the laptop:
// while the server cannot be reached Ferry cannot tell gone from away.
// A laptop that sleeps or loses its network for minutes sets
// --reconnect-for 10m (issue 18): the cloud kernel is then found again by
// its id, with the same session (the server replays its buffered
// output), and nothing is rebuilt; meanwhile a cell needing the cloud
// fails after 25 s with the values kept.
const DefaultReconnectFor = 20 * time.Second

// DefaultStartTimeout is how long a cloud kernel may take to start.
const DefaultStartTimeout = 5 * time.Minute

// ErrStartTimeout is a kernel that was still starting when the start
// timeout passed; it was deleted.
var ErrStartTimeout = errors.New("the cloud kernel did not start in time")

// DefaultWorkDir is the server-relative working directory of the kernel
// for a notebook whose local directory is dir: ferry/<base>-<hash>, the
// hash of dir's absolute path telling apart notebooks in directories of
// the same name.
func DefaultWorkDir(dir string) string {
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	sum := sha256.Sum256([]byte(dir))
	base := strings.Map(func(r rune) rune {
		if r == '/' || r == '\\' || r < ' ' {
			return '_'
		}
		return r
	}, filepath.Base(dir))
	if base == "" || base == "." || base == "/" || base == "_" || strings.HasPrefix(base, ".") {
		base = "notebook" // a leading dot is hidden, which the Contents API refuses
	}
	return "ferry/" + base + "-" + hex.EncodeToString(sum[:4])
}

// Remote is a kernel on a Jupyter Server, reached over its REST API and
// the kernel's WebSocket.
type Remote struct {
	cfg    RemoteConfig
	meter  upMeter                 // how long its kernels existed on the server
	base   atomic.Pointer[url.URL] // replaced by cfg.Resolve at a Start
	client *http.Client
	// long is client without its overall time limit, for the create
	// request: an Enterprise Gateway answers it only once the kernel's
	// pod runs. Its requests are bounded by the start timeout instead.
	long *http.Client

	in chan wire.Incoming

	// startSem admits one Start at a time; a Start waiting for it gives
	// up with its ctx. mu is not held across a start, so Status and
	// Shutdown answer while a kernel takes minutes to come up.
	startSem chan struct{}

	// mu guards the lifecycle fields Start and Shutdown set.
	mu       sync.Mutex
	kernelID string
	session  string
	started  time.Time
	restarts int
	info     json.RawMessage
	rtt      time.Duration
	// pending is a kernel the server created that has not answered yet,
	// since startBegan: a Start that gave up (its ctx ended) leaves it
	// here, and the next Start waits on it instead of creating another.
	pending    string
	startBegan time.Time
	startTook  time.Duration // the last successful start, create to ready
	released   time.Time     // when Release let the last kernel go (zero once a new one is made)
	startState string        // what the pending kernel is doing, for Status
	// spawn is what cfg.Resolve last said while it starts the server
	// (a JupyterHub's spawn progress), since spawnBegan. spawnBegan is
	// cleared when Resolve returns; spawn only when the Start ends, so
	// the start notice, which polls Status, sees the last message (the
	// hub's "Server ready") even when Resolve returned right after it.
	spawn      string
	spawnBegan time.Time
	stopped    bool          // Shutdown began: no kernel is created again
	stop       chan struct{} // closed by Shutdown, ends a start's wait

	// connMu guards the connection, which the reader replaces on reconnect.
	connMu sync.Mutex
	ws     *websocket.Conn
	proto  string
	died   chan struct{}
	// dest receives messages: a start-up channel until the kernel answered,
	// then in.
	dest chan wire.Incoming
	// reconnected is closed and replaced each time the socket is reopened.
	reconnected chan struct{}
	closing     atomic.Bool

	exitMu   sync.Mutex
	lastExit string

	wmu sync.Mutex // one writer at a time

	seenMu sync.Mutex
	seen   map[string]struct{}
	order  []string
}

// NewRemote checks cfg and returns a remote backend; it connects on Start.
func NewRemote(cfg RemoteConfig) (*Remote, error) {
	if err := CheckRemoteURL(cfg.URL); err != nil {
		return nil, err
	}
	u, _ := url.Parse(strings.TrimRight(cfg.URL, "/"))
	if cfg.KernelName == "" {
		cfg.KernelName = "python3"
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = DefaultStartTimeout
	}
	if cfg.ReconnectFor <= 0 {
		cfg.ReconnectFor = DefaultReconnectFor
	}
	if cfg.WorkDir == "" {
		wd, _ := os.Getwd()
		cfg.WorkDir = DefaultWorkDir(wd)
	}
	cfg.WorkDir = strings.Trim(path.Clean("/"+filepath.ToSlash(cfg.WorkDir)), "/")
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("reading --remote-ca: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--remote-ca %s holds no PEM certificate", cfg.CAFile)
		}
		tlsCfg.RootCAs = pool
	}
	tlsCfg.InsecureSkipVerify = cfg.Insecure
	jar, _ := cookiejar.New(nil)
	dialer := &net.Dialer{Timeout: 10 * time.Second}
	// Idle keep-alive connections are closed after a while and at Shutdown:
	// each holds two goroutines and a socket, which a long-running
	// process starting many kernels would otherwise keep for ever.
	tr := &http.Transport{TLSClientConfig: tlsCfg, TLSHandshakeTimeout: 10 * time.Second, IdleConnTimeout: 90 * time.Second,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dialer.DialContext(ctx, network, addr)
			if tc, ok := c.(*net.TCPConn); ok && err == nil {
				return &quickAckConn{TCPConn: tc}, nil
			}
			return c, err
		}}
	d := make(chan struct{})
	close(d)
	r := &Remote{cfg: cfg, client: &http.Client{Transport: tr, Jar: jar, Timeout: 60 * time.Second},
		long: &http.Client{Transport: tr, Jar: jar}, startSem: make(chan struct{}, 1), stop: make(chan struct{}),
		in: make(chan wire.Incoming, 256), died: d, seen: map[string]struct{}{},
		reconnected: make(chan struct{})}
	r.base.Store(u)
	return r, nil
}

// CheckRemoteURL checks that s is an http(s) URL of a Jupyter Server and
// carries no secret: a user and password, or a token query parameter (in
// any letter case). URLs end up in logs, argv and kernel.json; the token
// belongs in FERRY_TOKEN or a token file. Its errors never repeat s's
// secret.
func CheckRemoteURL(s string) error {
	u, err := url.Parse(strings.TrimRight(s, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("remote URL %q is not an http(s) URL like https://host:8888", redact(s))
	}
	if u.User != nil {
		return errors.New("the remote URL carries a user and password (user:pass@host); drop them and put the server's token in FERRY_TOKEN or a file passed with --token-file (URLs end up in logs)")
	}
	for k := range u.Query() {
		if strings.EqualFold(k, "token") {
			return errors.New("the remote URL carries a token (?token=…); drop it and put the token in FERRY_TOKEN or a file passed with --token-file (URLs end up in logs)")
		}
	}
	return nil
}

func redact(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	u.User = nil
	q := u.Query()
	if q.Has("token") {
		q.Set("token", "REDACTED")
		u.RawQuery = q.Encode()
	}
	return u.String()
}

func (r *Remote) Location() location.Location {
	if r.cfg.Loc != "" {
		return r.cfg.Loc
	}
	return location.Remote
}
func (r *Remote) Incoming() <-chan wire.Incoming { return r.in }

func (r *Remote) Died() <-chan struct{} {
	r.connMu.Lock()
	defer r.connMu.Unlock()
	return r.died
}

func (r *Remote) Alive() bool {
	select {
	case <-r.Died():
		return false
	default:
		return true
	}
}

func (r *Remote) KernelInfo() json.RawMessage {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.info
}

// api does one REST call and turns HTTP failures into one-line errors.
func (r *Remote) api(ctx context.Context, method, path string, body any, out any) error {
	return r.apiWith(ctx, r.client, method, path, body, out)
}

// newJSONRequest is a request whose body, if any, is body as JSON: the
// REST calls to Jupyter Server and JupyterHub.
func newJSONRequest(ctx context.Context, method, url string, body any) (*http.Request, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	return http.NewRequestWithContext(ctx, method, url, rd)
}

func (r *Remote) apiWith(ctx context.Context, client *http.Client, method, path string, body any, out any) error {
	u := *r.base.Load()
	u.Path = strings.TrimRight(u.Path, "/") + path
	req, err := newJSONRequest(ctx, method, u.String(), body)
	if err != nil {
		return err
	}
	r.authorize(req.Header)
	// A JupyterHub answers a JSON request for a user server it is not
	// running with 424 (see serverGone), an HTML one with its spawn page.
	req.Header.Set("Accept", "application/json")
	if method != http.MethodGet {
		for _, c := range r.client.Jar.Cookies(&u) {
			if c.Name == "_xsrf" {
				req.Header.Set("X-XSRFToken", c.Value)
			}
		}
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := client.Do(req)
	if err != nil {
		return r.netError(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode >= 300 {
		return r.explain(&HTTPError{Method: method, Path: path, Status: resp.StatusCode, Message: scrub(serverMessage(data), r.cfg.Token)})
	}
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("remote server sent malformed JSON for %s %s: %w", method, path, err)
		}
	}
	return nil
}

func (r *Remote) authorize(h http.Header) {
	if r.cfg.Token != "" {
		h.Set("Authorization", "token "+r.cfg.Token)
	}
}

// HTTPError is a failure status the server answered a request with.
// Callers tell statuses apart with IsStatus or errors.As, never by
// searching the error's text.
type HTTPError struct {
	Method, Path string // the request, e.g. DELETE /api/kernels/ID (no host, no query)
	Status       int
	// Message is the server's own explanation (its JSON "message" and
	// "reason", or the start of its body) on one line, with URLs redacted
	// and the token removed.
	Message string
}

func (e *HTTPError) Error() string {
	s := fmt.Sprintf("remote server answered %s %s with HTTP %d", e.Method, e.Path, e.Status)
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// IsStatus reports whether err is, or wraps, an *HTTPError with one of
// codes (with no codes, any status).
func IsStatus(err error, codes ...int) bool {
	var h *HTTPError
	if !errors.As(err, &h) {
		return false
	}
	return len(codes) == 0 || slices.Contains(codes, h.Status)
}

// explainedError is an *HTTPError with the advice a user needs in place of
// the generic wording; errors.As and IsStatus still find the HTTPError.
type explainedError struct {
	msg string
	err *HTTPError
}

func (e *explainedError) Error() string { return e.msg }
func (e *explainedError) Unwrap() error { return e.err }

// NamesTheFix reports whether err already tells the user what to do
// (an explained HTTP failure, e.g. a rejected token with where to get
// one), so a caller need not append generic advice to it.
func NamesTheFix(err error) bool {
	var e *explainedError
	return errors.As(err, &e)
}

// explain words the statuses a user can act on.
func (r *Remote) explain(h *HTTPError) error {
	switch {
	case h.Status == http.StatusUnauthorized || h.Status == http.StatusForbidden:
		return &explainedError{fmt.Sprintf("remote server %s rejected the token (HTTP %d): set FERRY_TOKEN or --token-file to the server's token", redact(r.cfg.URL), h.Status), h}
	case h.Status == http.StatusNotFound && h.Path == "/api":
		return &explainedError{fmt.Sprintf("%s does not serve the Jupyter Server API (HTTP 404 at /api): check the URL and its base path", redact(r.cfg.URL)), h}
	case h.Method == http.MethodPost && h.Path == "/api/kernels" &&
		(strings.Contains(h.Message, "No such kernel") || strings.Contains(h.Message, "NoSuchKernel")):
		// jupyter-server answers an unknown kernelspec name with a bare
		// HTTP 500, the status of any failure to start a kernel; only its
		// message (jupyter_client's NoSuchKernel) tells this case apart.
		return &explainedError{fmt.Sprintf("remote server has no kernel named %q: pass --remote-kernel with one of its kernelspecs (GET /api/kernelspecs)", r.cfg.KernelName), h}
	}
	return h
}

// serverGone reports whether h is a JupyterHub's answer for a user
// server it does not run (any more): 424 Failed Dependency. (A hub with
// use_legacy_stopped_server_status_code answers 503, which an overloaded
// server also does, so that one is left to the reconnect's deadline.)
// The kernel died with its server; the next Start asks the hub again.
func serverGone(h *HTTPError) bool {
	return h.Status == http.StatusFailedDependency
}

// serverMessage extracts the server's explanation from an error body, on
// one line.
func serverMessage(data []byte) string {
	var m struct {
		Message string `json:"message"`
		Reason  string `json:"reason"`
	}
	s := string(data)
	if json.Unmarshal(data, &m) == nil && (m.Message != "" || m.Reason != "") {
		s = m.Message + " " + m.Reason
	} else if len(s) > 200 {
		s = s[:200]
	}
	return strings.Join(strings.Fields(s), " ")
}

var urlInText = regexp.MustCompile(`[a-zA-Z][a-zA-Z0-9+.-]*://[^\s"'<>]+`)

// scrub redacts the URLs in a server's message and removes the token, so
// neither reaches an error or a log.
func scrub(msg, token string) string {
	msg = urlInText.ReplaceAllStringFunc(msg, redact)
	if token != "" {
		msg = strings.ReplaceAll(msg, token, "REDACTED")
	}
	return msg
}

// netError explains a failure to reach the server.
func (r *Remote) netError(err error) error {
	var uerr *url.Error
	if errors.As(err, &uerr) {
		err = uerr.Err
	}
	if errors.Is(err, http.ErrSchemeMismatch) {
		return fmt.Errorf("remote server %s answered in plain HTTP, not HTTPS: %w (use an http:// URL in --remote)", redact(r.cfg.URL), err)
	}
	if isTLSError(err) {
		return fmt.Errorf("TLS handshake with %s failed: %w (pass --remote-ca FILE, or --remote-insecure for a self-signed test server)", redact(r.cfg.URL), err)
	}
	return fmt.Errorf("cannot reach remote server %s: %w (is it running? check --remote)", redact(r.cfg.URL), err)
}

// isTLSError reports whether err is a failed TLS handshake or certificate
// check, by its type.
func isTLSError(err error) bool {
	var (
		rec     tls.RecordHeaderError // the server does not speak TLS
		verify  *tls.CertificateVerificationError
		unknown x509.UnknownAuthorityError
		host    x509.HostnameError
		invalid x509.CertificateInvalidError
		op      *net.OpError
	)
	return errors.As(err, &rec) || errors.As(err, &verify) || errors.As(err, &unknown) ||
		errors.As(err, &host) || errors.As(err, &invalid) ||
		// An alert from the server (e.g. it wants a client certificate):
		// crypto/tls's alert type is unexported, and it reports the alert
		// as a net.OpError with this Op.
		(errors.As(err, &op) && op.Op == "remote error")
}

// Start creates a kernel on the server and connects to it, or does nothing
// if one is running. Starting is its own step, bounded by StartTimeout from
// the create request: a kernel the server created is waited for until it
// answers, however long it takes (a cold node, an image pull), and never
// deleted and created again because it is slow. A Start whose ctx ends
// leaves the kernel pending, and the next Start resumes waiting on it.
func (r *Remote) Start(ctx context.Context) error {
	select {
	case r.startSem <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("waiting for the cloud kernel's start: %w", ctx.Err())
	}
	defer func() { <-r.startSem }()
	if r.Alive() {
		return nil
	}
	defer func() {
		r.mu.Lock()
		r.spawn = ""
		r.mu.Unlock()
	}()
	spawned, err := r.resolve(ctx)
	if err != nil {
		return err
	}
	if err := r.api(ctx, http.MethodGet, "/api", nil, nil); err != nil {
		return err
	}
	r.mu.Lock()
	id, old, stopped := r.pending, r.kernelID, r.stopped
	r.mu.Unlock()
	if stopped {
		return errShutDown
	}
	if id == "" {
		var err error
		if id, err = r.create(ctx, old); err != nil {
			return err
		}
	}
	if err := r.await(ctx, id); err != nil {
		return err
	}
	if !spawned.IsZero() {
		// The server's spawn was part of this start's cost: what the
		// idle release weighs (policy.Model.ReleaseAfter).
		r.mu.Lock()
		r.startTook = time.Since(spawned)
		r.mu.Unlock()
	}
	return nil
}

// resolve asks cfg.Resolve for the server's URL (a hub starts the user's
// server) and uses it from then on; it returns when a spawn began (zero
// if the resolver reported no progress: the server was running).
func (r *Remote) resolve(ctx context.Context) (time.Time, error) {
	if r.cfg.Resolve == nil {
		return time.Time{}, nil
	}
	var began time.Time
	s, err := r.cfg.Resolve(ctx, func(msg string) {
		r.mu.Lock()
		if r.spawnBegan.IsZero() {
			r.spawnBegan = time.Now()
			began = r.spawnBegan
		}
		r.spawn = msg
		r.mu.Unlock()
	})
	r.mu.Lock()
	r.spawnBegan = time.Time{}
	r.mu.Unlock()
	if err != nil {
		return time.Time{}, err
	}
	if err := CheckRemoteURL(s); err != nil {
		return time.Time{}, err
	}
	u, _ := url.Parse(strings.TrimRight(s, "/"))
	r.base.Store(u)
	return began, nil
}

// errShutDown refuses a start once Shutdown began.
var errShutDown = errors.New("the remote backend is shut down")

// startTimeoutError is a kernel still starting when the start timeout
// passed; errors.Is finds ErrStartTimeout.
type startTimeoutError struct {
	timeout time.Duration
	state   string // the server's execution_state, or what was awaited
}

func (e *startTimeoutError) Error() string {
	return fmt.Sprintf("the cloud kernel did not start within %s (%s); raise --start-timeout", e.timeout, e.state)
}

func (e *startTimeoutError) Is(target error) bool { return target == ErrStartTimeout }

// create asks the server for a kernel in the working directory and
// records it as pending; old is the last incarnation's kernel, deleted
// first.
func (r *Remote) create(ctx context.Context, old string) (string, error) {
	if old != "" {
		r.mu.Lock()
		r.restarts++
		r.released = time.Time{}
		r.mu.Unlock()
		// The server may have restarted the dead kernel, empty, under the
		// same id; Ferry starts its own, so that one would be an orphan.
		if err := r.deleteKernel(ctx, old); err != nil {
			slog.Warn("could not delete the old remote kernel; it stays on the server", "kernel", old, "err", err)
		}
	}
	// The server answers an unknown name with a bare HTTP 500; ask first.
	var specs struct {
		Kernelspecs map[string]json.RawMessage `json:"kernelspecs"`
	}
	specErr := r.api(ctx, http.MethodGet, "/api/kernelspecs", nil, &specs)
	if IsStatus(specErr, http.StatusUnauthorized, http.StatusForbidden) {
		return "", specErr // a wrong token, said as such
	}
	if err := specErr; err == nil && specs.Kernelspecs != nil {
		if _, ok := specs.Kernelspecs[r.cfg.KernelName]; !ok {
			names := make([]string, 0, len(specs.Kernelspecs))
			for n := range specs.Kernelspecs {
				names = append(names, n)
			}
			sort.Strings(names)
			return "", fmt.Errorf("remote server has no kernel named %q: pass --remote-kernel with one of %s", r.cfg.KernelName, strings.Join(names, ", "))
		}
	}
	body := map[string]any{"name": r.cfg.KernelName}
	if r.cfg.WorkDir != "" {
		// jupyter-server starts the kernel in the nearest existing parent
		// of path, silently: the directory must exist first. An Enterprise
		// Gateway has no Contents API.
		if !r.cfg.Gateway {
			if err := r.makeDir(ctx, r.cfg.WorkDir); err != nil {
				slog.Warn("could not create the cloud kernel's working directory; it starts in the nearest existing parent", "dir", r.cfg.WorkDir, "err", err)
			}
		}
		body["path"] = r.cfg.WorkDir
	}
	if r.cfg.Gateway {
		body["env"] = r.gatewayEnv()
	}
	began := time.Now()
	r.mu.Lock()
	r.startBegan, r.startState = began, "creating"
	r.mu.Unlock()
	var k struct {
		ID string `json:"id"`
	}
	pctx, cancel := context.WithTimeout(ctx, r.cfg.StartTimeout)
	err := r.apiWith(pctx, r.long, http.MethodPost, "/api/kernels", body, &k)
	timedOut := errors.Is(pctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil
	cancel()
	if err == nil && k.ID == "" {
		err = errors.New("remote server created a kernel without an id")
	}
	if h := (*HTTPError)(nil); specErr == nil && errors.As(err, &h) && h.Status == http.StatusForbidden {
		// The same token just listed the kernelspecs, so this 403 is a
		// refusal to start one more kernel: Enterprise Gateway's
		// EG_MAX_KERNELS_PER_USER / max_kernels, or EG_UNAUTHORIZED_USERS.
		err = &explainedError{fmt.Sprintf("remote server %s refused to start another kernel (HTTP 403%s): it limits kernels per user or who may start them; shut down one of your kernels there (GET /api/kernels lists them) or ask its administrator", redact(r.cfg.URL), colonMessage(h.Message)), h}
	}
	r.mu.Lock()
	if err != nil {
		r.startBegan = time.Time{}
		r.mu.Unlock()
		if timedOut {
			return "", &startTimeoutError{r.cfg.StartTimeout, "the server did not answer the create request"}
		}
		return "", err
	}
	if r.stopped {
		r.startBegan = time.Time{}
		r.mu.Unlock()
		// Shutdown ran while the server created it: nobody else knows it.
		_ = r.deleteKernel(context.Background(), k.ID)
		return "", errShutDown
	}
	r.kernelID, r.pending, r.session, r.startState = k.ID, k.ID, wire.NewID(), "starting"
	r.mu.Unlock()
	r.meter.up(time.Now()) // billed from its creation, not from when it answers
	return k.ID, nil
}

// gatewayEnv is the env of an Enterprise Gateway create request: the
// forwarded KERNEL_* variables, the user, then Ferry's own settings.
func (r *Remote) gatewayEnv() map[string]string {
	env := make(map[string]string, len(r.cfg.KernelEnv)+3)
	for k, v := range r.cfg.KernelEnv {
		if strings.HasPrefix(k, "KERNEL_") {
			env[k] = v
		}
	}
	if r.cfg.Username != "" {
		env["KERNEL_USERNAME"] = r.cfg.Username
	} else if env["KERNEL_USERNAME"] == "" {
		env["KERNEL_USERNAME"] = localUsername()
	}
	env["KERNEL_LAUNCH_TIMEOUT"] = strconv.Itoa(int(r.cfg.StartTimeout.Seconds()))
	if r.cfg.WorkDir != "" {
		env["KERNEL_WORKING_DIR"] = r.cfg.WorkDir
	}
	return env
}

// localUsername is the name of the user Ferry runs as, as Enterprise
// Gateway's own client sends it (KERNEL_USERNAME defaults to it).
func localUsername() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	return os.Getenv("USER")
}

// ForwardedKernelEnv picks the KERNEL_* variables out of environ (as
// os.Environ gives it) for RemoteConfig.KernelEnv.
func ForwardedKernelEnv(environ []string) map[string]string {
	env := map[string]string{}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, "KERNEL_") && len(k) > len("KERNEL_") {
			env[k] = v
		}
	}
	return env
}

// colonMessage is ": msg", or "" without one.
func colonMessage(msg string) string {
	if msg == "" {
		return ""
	}
	return ": " + msg
}

// makeDir creates dir and its parents through the Contents API; one that
// exists is fine.
func (r *Remote) makeDir(ctx context.Context, dir string) error {
	p := ""
	for _, part := range strings.Split(dir, "/") {
		p = path.Join(p, part)
		err := r.api(ctx, http.MethodPut, "/api/contents/"+p, map[string]string{"type": "directory"}, nil)
		if err != nil && !IsStatus(err, http.StatusConflict) {
			return err
		}
	}
	return nil
}

// dialAttempt bounds one WebSocket dial while a kernel starts:
// jupyter-server holds the handshake until the kernel answers kernel_info,
// so a dial of a starting kernel times out and is made again. It is longer
// than jupyter-server's own kernel_info wait (kernel_info_timeout, 60 s):
// when a dial given up earlier left the server's kernel_info request
// pending (it keeps one per kernel), every later handshake waits out those
// 60 s and then opens anyway. Attempts of 20 s never lasted that long, and
// under load a slow-starting kernel was never reached (seen in make test:
// four 20 s attempts, four "Timeout waiting for kernel_info reply").
const dialAttempt = 75 * time.Second

// await waits for the pending kernel id until it answers or the start
// timeout passes. Only a kernel that is gone, dead or past the timeout is
// given up (and deleted); ctx ending leaves it pending for the next Start.
func (r *Remote) await(ctx context.Context, id string) error {
	// Shutdown ends the wait at once, a dial or kernel_info in flight too.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-r.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	r.mu.Lock()
	began := r.startBegan
	r.mu.Unlock()
	deadline := began.Add(r.cfg.StartTimeout)
	giveUp := func(err error) error {
		_ = r.deleteKernel(context.Background(), id)
		r.mu.Lock()
		if r.pending == id {
			r.pending, r.kernelID, r.startBegan = "", "", time.Time{}
		}
		r.mu.Unlock()
		return err
	}
	gone := func(h error) error {
		r.meter.down(time.Now())
		r.mu.Lock()
		if r.pending == id {
			r.pending, r.kernelID, r.startBegan = "", "", time.Time{}
		}
		r.mu.Unlock()
		return fmt.Errorf("the cloud kernel %s stopped while starting (it is gone from the server; see the server's log): %w", id, h)
	}
	state := func() string {
		r.mu.Lock()
		defer r.mu.Unlock()
		return "still " + r.startState
	}
	var ws *websocket.Conn
	var proto string
	for {
		if !time.Now().Before(deadline) {
			return giveUp(&startTimeoutError{r.cfg.StartTimeout, state()})
		}
		actx, cancel := context.WithDeadline(ctx, minTime(deadline, time.Now().Add(dialAttempt)))
		var err error
		ws, proto, err = r.dial(actx, id)
		cancel()
		if err == nil {
			break
		}
		if r.isStopped() {
			return errShutDown
		}
		if ctx.Err() != nil {
			return fmt.Errorf("waiting for the cloud kernel %s to start: %w", id, ctx.Err())
		}
		if IsStatus(err, http.StatusNotFound) {
			return gone(err)
		}
		if IsStatus(err) {
			return giveUp(err) // refused (a token, a failed start): waiting will not help
		}
		// Not answered in time, or the connection broke: ask the server
		// whether the kernel is still there and what it is doing.
		var k struct {
			State  string `json:"execution_state"`
			Reason string `json:"reason"`
		}
		gerr := r.api(ctx, http.MethodGet, "/api/kernels/"+id, nil, &k)
		switch {
		case IsStatus(gerr, http.StatusNotFound):
			return gone(gerr)
		case gerr == nil && k.State == "dead":
			return giveUp(fmt.Errorf("the cloud kernel %s died while starting: %s (see the server's log)", id, orDefault(k.Reason, "no reason given")))
		case gerr != nil && !IsStatus(gerr) && ctx.Err() == nil:
			return gerr // the server stopped answering; the kernel stays pending
		case gerr == nil && k.State != "":
			r.mu.Lock()
			r.startState = k.State
			r.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			if r.isStopped() {
				return errShutDown
			}
			return fmt.Errorf("waiting for the cloud kernel %s to start: %w", id, ctx.Err())
		case <-time.After(min(time.Second, time.Until(deadline))):
		}
	}
	startup := make(chan wire.Incoming, 64)
	died := make(chan struct{})
	r.closing.Store(false)
	r.connMu.Lock()
	r.ws, r.proto, r.died, r.dest = ws, proto, died, startup
	r.connMu.Unlock()
	go r.readLoop(ws, died)
	go r.watch(id, died)
	t0 := time.Now()
	wctx, cancel := context.WithDeadline(ctx, deadline)
	info, err := r.waitReady(wctx, startup, died)
	cancel()
	if err != nil {
		r.closeConn()
		if r.isStopped() {
			return errShutDown // Shutdown deleted the kernel
		}
		switch {
		case ctx.Err() != nil:
			return fmt.Errorf("waiting for the cloud kernel %s to start: %w", id, ctx.Err())
		case !time.Now().Before(deadline):
			return giveUp(&startTimeoutError{r.cfg.StartTimeout, "connected, no answer to kernel_info"})
		}
		return giveUp(fmt.Errorf("remote kernel %s did not answer: %w", id, err))
	}
	now := time.Now()
	r.mu.Lock()
	r.info, r.rtt, r.started = info, now.Sub(t0), now
	r.startTook, r.pending, r.startBegan = now.Sub(began), "", time.Time{}
	r.mu.Unlock()
	r.connMu.Lock()
	r.dest = r.in
	r.connMu.Unlock()
	slog.Debug("remote kernel ready", "kernel", id, "protocol", proto, "start", now.Sub(began))
	return nil
}

// isStopped reports whether Shutdown began.
func (r *Remote) isStopped() bool {
	select {
	case <-r.stop:
		return true
	default:
		return false
	}
}

// closeConn closes the socket without deleting the kernel and waits for
// the reader to stop.
func (r *Remote) closeConn() {
	r.closing.Store(true)
	r.connMu.Lock()
	ws, died := r.ws, r.died
	r.ws = nil
	r.connMu.Unlock()
	if ws != nil {
		_ = ws.CloseNow()
	}
	select {
	case <-died:
	case <-time.After(5 * time.Second):
	}
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// deleteKernel deletes a kernel on the server; one already gone counts as
// deleted. Right after the server restarted a kernel, jupyter_client
// answers DELETE with HTTP 500 until the new process is ready
// ("InvalidStateError"), so that is retried for a while.
func (r *Remote) deleteKernel(ctx context.Context, id string) error {
	var err error
	for attempt := 0; attempt < 20; attempt++ {
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err = r.api(dctx, http.MethodDelete, "/api/kernels/"+id, nil, nil)
		cancel()
		if err == nil || IsStatus(err, http.StatusNotFound, http.StatusFailedDependency) {
			// Deleted, or already gone (with its JupyterHub server too:
			// 424, serverGone, which no longer bills it).
			r.meter.down(time.Now())
			return nil
		}
		if !IsStatus(err, http.StatusInternalServerError) {
			if IsStatus(err, http.StatusMethodNotAllowed) && r.kernelGone(ctx, id) {
				r.meter.down(time.Now())
				return nil
			}
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(250 * time.Millisecond):
		}
	}
	return err
}

// kernelGone reports whether the server says kernel id does not exist:
// 404, or a JupyterHub's 424 for the user server it ran on. A DELETE to a
// culled hub server is answered 405 (the hub's redirect from /user/NAME/
// to its own /hub/user/NAME/ takes GET only), so a delete refused with
// 405 asks this before it counts as a failure.
func (r *Remote) kernelGone(ctx context.Context, id string) bool {
	gctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var h *HTTPError
	err := r.api(gctx, http.MethodGet, "/api/kernels/"+id, nil, nil)
	return errors.As(err, &h) && (h.Status == http.StatusNotFound || serverGone(h))
}

// dial opens kernel id's channels WebSocket with this backend's session;
// ctx bounds it.
func (r *Remote) dial(ctx context.Context, id string) (*websocket.Conn, string, error) {
	u := *r.base.Load()
	u.Scheme = map[string]string{"http": "ws", "https": "wss"}[u.Scheme]
	u.Path = strings.TrimRight(u.Path, "/") + "/api/kernels/" + id + "/channels"
	u.RawQuery = url.Values{"session_id": {r.session}}.Encode()
	h := http.Header{}
	r.authorize(h)
	opts := &websocket.DialOptions{HTTPClient: r.client, HTTPHeader: h, CompressionMode: websocket.CompressionDisabled}
	if !r.cfg.Legacy {
		opts.Subprotocols = []string{SubprotocolV1}
	}
	ws, resp, err := websocket.Dial(ctx, u.String(), opts)
	if err != nil {
		if resp == nil || resp.StatusCode < 300 {
			return nil, "", r.netError(err)
		}
		var data []byte
		if resp.Body != nil {
			data, _ = io.ReadAll(io.LimitReader(resp.Body, 1<<10))
		}
		h := &HTTPError{Method: http.MethodGet, Path: "/api/kernels/" + id + "/channels", Status: resp.StatusCode, Message: scrub(serverMessage(data), r.cfg.Token)}
		switch h.Status {
		case http.StatusUnauthorized, http.StatusForbidden:
			return nil, "", &explainedError{fmt.Sprintf("remote server %s rejected the token on the kernel channel (HTTP %d): set FERRY_TOKEN or --token-file", redact(r.cfg.URL), h.Status), h}
		case http.StatusNotFound:
			return nil, "", &explainedError{fmt.Sprintf("remote kernel %s is gone (HTTP 404 on its channels)", id), h}
		}
		return nil, "", h
	}
	ws.SetReadLimit(-1) // kernel messages carry arrays of any size
	return ws, ws.Subprotocol(), nil
}

// waitReady sends kernel_info requests until one is answered and an IOPub
// message arrived, as for a local kernel; ctx bounds it (the start
// timeout).
func (r *Remote) waitReady(ctx context.Context, startup <-chan wire.Incoming, died <-chan struct{}) (json.RawMessage, error) {
	ids := map[string]bool{}
	var info json.RawMessage
	iopub := false
	send := func() error {
		m, err := wire.New("kernel_info_request", r.session, "ferry", nil, nil)
		if err != nil {
			return err
		}
		ids[m.Header.MsgID] = true
		return r.write(ctx, wire.Shell, m)
	}
	if err := send(); err != nil {
		return nil, err
	}
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for info == nil || !iopub {
		select {
		case in := <-startup:
			if !ids[in.Msg.ParentID()] {
				continue
			}
			if in.Channel == wire.Shell && in.Msg.Header.MsgType == "kernel_info_reply" {
				info = in.Msg.Content
			} else if in.Channel == wire.IOPub {
				iopub = true
			}
		case <-tick.C:
			// Ask again until both came: an IOPub message may be missed
			// (a subscription still joining), and so may a reply (seen
			// under a loaded make test: a cloud kernel whose busy status
			// arrived but not its reply was waited on for 5 minutes).
			if err := send(); err != nil {
				return nil, err
			}
		case <-died:
			return nil, errors.New("connection closed")
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return info, nil
}

// readLoop delivers messages until the kernel is gone; a dropped socket is
// reopened with the same session, and the server's replay of buffered
// messages is de-duplicated by msg_id.
func (r *Remote) readLoop(ws *websocket.Conn, died chan struct{}) {
	defer close(died)
	for {
		typ, data, err := ws.Read(context.Background())
		if err != nil {
			if r.closing.Load() {
				return
			}
			slog.Warn("remote kernel connection dropped; reconnecting", "err", err)
			nws, rerr := r.reconnect()
			if rerr != nil {
				r.setExit(rerr.Error())
				slog.Error("remote kernel lost", "err", rerr)
				return
			}
			ws = nws
			continue
		}
		var ch wire.Channel
		var m *wire.Message
		if r.proto == SubprotocolV1 {
			ch, m, err = decodeV1(data)
		} else {
			ch, m, err = decodeLegacy(data, typ == websocket.MessageBinary)
		}
		if err != nil {
			slog.Warn("dropped malformed frame from remote kernel", "err", err)
			continue
		}
		if r.duplicate(m.Header.MsgID) {
			continue
		}
		if serverRestarted(ch, m) {
			// The kernel died and the server's restarter replaced it with
			// an empty one: for Ferry that is a death (the state is gone).
			r.setExit("died; the server restarted it empty")
			slog.Warn("the remote kernel died and the server restarted it", "kernel", r.kernelID)
			_ = ws.CloseNow()
			return
		}
		r.connMu.Lock()
		dest := r.dest
		r.connMu.Unlock()
		select {
		case dest <- wire.Incoming{Channel: ch, Msg: m}:
		case <-time.After(time.Minute):
			// Nobody reads the start-up channel any more (Start gave up).
			slog.Warn("dropped a message nobody waited for", "type", m.Header.MsgType)
		}
	}
}

// serverRestarted recognises the status the server itself sends when its
// restarter brought a dead kernel back ("restarting") or gave up ("dead"):
// it has no parent, unlike a kernel's own status messages.
func serverRestarted(ch wire.Channel, m *wire.Message) bool {
	if ch != wire.IOPub || m.Header.MsgType != "status" {
		return false
	}
	var c struct {
		State string `json:"execution_state"`
	}
	if m.Decode(&c) != nil || (c.State != "restarting" && c.State != "dead") {
		return false
	}
	var p struct {
		MsgID string `json:"msg_id"`
	}
	_ = json.Unmarshal(m.Parent, &p)
	return p.MsgID == ""
}

func (r *Remote) setExit(s string) {
	r.exitMu.Lock()
	r.lastExit = s
	r.exitMu.Unlock()
}

// watch notices a kernel deleted on the server (or a restarted server)
// even when the socket stays open: every few seconds it asks the server,
// and on 404 closes the socket so the reader finds the kernel gone.
func (r *Remote) watch(id string, died <-chan struct{}) {
	t := time.NewTicker(3 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-died:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := r.api(ctx, http.MethodGet, "/api/kernels/"+id, nil, nil)
		cancel()
		var h *HTTPError
		if errors.As(err, &h) && (h.Status == http.StatusNotFound || serverGone(h)) {
			r.connMu.Lock()
			ws := r.ws
			r.connMu.Unlock()
			if ws != nil {
				_ = ws.CloseNow()
			}
			return
		}
	}
}

// reconnect reopens the socket within a bounded time, unless the kernel is
// gone.
func (r *Remote) reconnect() (*websocket.Conn, error) {
	r.mu.Lock()
	id := r.kernelID
	r.mu.Unlock()
	began := time.Now()
	deadline := began.Add(r.cfg.ReconnectFor)
	wait := 100 * time.Millisecond
	told := began
	// Shutdown ends the attempts at once; the watcher ends with them.
	sctx, scancel := context.WithCancel(context.Background())
	var watch sync.WaitGroup
	watch.Add(1)
	go func() {
		defer watch.Done()
		select {
		case <-r.stop:
			scancel()
		case <-sctx.Done():
		}
	}()
	defer watch.Wait()
	defer scancel()
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(sctx, 10*time.Second)
		var k struct {
			ID string `json:"id"`
		}
		err := r.api(ctx, http.MethodGet, "/api/kernels/"+id, nil, &k)
		if err == nil {
			var ws *websocket.Conn
			ws, _, err = r.dial(ctx, id)
			if err == nil {
				cancel()
				r.connMu.Lock()
				r.ws = ws
				close(r.reconnected)
				r.reconnected = make(chan struct{})
				r.connMu.Unlock()
				slog.Info("remote kernel connection reopened", "attempt", attempt, "after", time.Since(began).Round(time.Millisecond))
				return ws, nil
			}
		}
		cancel()
		// A 404 for the kernel, or for its channels just after the kernel
		// was listed, means it was deleted or the server restarted.
		if h := (*HTTPError)(nil); errors.As(err, &h) && h.Status == http.StatusNotFound {
			return nil, &explainedError{fmt.Sprintf("the remote kernel %s is gone (deleted, or the server restarted)", id), h}
		}
		if h := (*HTTPError)(nil); errors.As(err, &h) && serverGone(h) {
			return nil, &explainedError{fmt.Sprintf("the remote kernel %s is gone: JupyterHub stopped its server (culled when idle, or stopped by you)", id), h}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("the remote kernel connection closed and could not be reopened in %s: %w", r.cfg.ReconnectFor, err)
		}
		if time.Since(told) >= time.Minute {
			told = time.Now()
			slog.Warn("the remote server is still unreachable; trying again", "for", time.Since(began).Round(time.Second), "until", r.cfg.ReconnectFor, "err", err)
		}
		select {
		case <-time.After(wait):
		case <-sctx.Done():
			return nil, errShutDown
		}
		wait = min(2*wait, 5*time.Second)
	}
}

func (r *Remote) duplicate(id string) bool {
	if id == "" {
		return false
	}
	r.seenMu.Lock()
	defer r.seenMu.Unlock()
	if _, ok := r.seen[id]; ok {
		return true
	}
	const keep = 1 << 14
	r.seen[id] = struct{}{}
	r.order = append(r.order, id)
	if len(r.order) > keep {
		delete(r.seen, r.order[0])
		r.order = r.order[1:]
	}
	return false
}

// Send sends a request to the remote kernel.
func (r *Remote) Send(ctx context.Context, ch wire.Channel, m *wire.Message) error {
	if !r.Alive() {
		return fmt.Errorf("remote kernel is not running: %w", ErrDied)
	}
	return r.write(ctx, ch, m)
}

// write frames and writes one message; if the socket is being reopened it
// waits for that (bounded) and writes on the new one.
func (r *Remote) write(ctx context.Context, ch wire.Channel, m *wire.Message) error {
	r.connMu.Lock()
	proto := r.proto
	r.connMu.Unlock()
	var data []byte
	typ := websocket.MessageBinary
	var err error
	if proto == SubprotocolV1 {
		data, err = encodeV1(ch, m)
	} else {
		var bin bool
		data, bin, err = encodeLegacy(ch, m)
		if !bin {
			typ = websocket.MessageText
		}
	}
	if err != nil {
		return fmt.Errorf("encoding %s for the remote kernel: %w", m.Header.MsgType, err)
	}
	for attempt := 0; attempt < 2; attempt++ {
		r.connMu.Lock()
		ws, again, died := r.ws, r.reconnected, r.died
		r.connMu.Unlock()
		if ws == nil {
			return fmt.Errorf("remote kernel is not connected: %w", ErrDied)
		}
		// A large payload over a slow link may take long; bound it by size.
		wctx, cancel := context.WithTimeout(ctx, 60*time.Second+time.Duration(len(data)/(256<<10))*time.Second)
		r.wmu.Lock()
		err = ws.Write(wctx, typ, data)
		r.wmu.Unlock()
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-again:
		case <-died:
			return fmt.Errorf("sending to the remote kernel: %w", ErrDied)
		case <-ctx.Done():
			return fmt.Errorf("sending to the remote kernel: %w", ctx.Err())
		case <-time.After(25 * time.Second):
			return fmt.Errorf("sending to the remote kernel: %w", err)
		}
	}
	return fmt.Errorf("sending to the remote kernel: %w", err)
}

// Interrupt asks the server to interrupt the kernel.
func (r *Remote) Interrupt(ctx context.Context) error {
	r.mu.Lock()
	id := r.kernelID
	r.mu.Unlock()
	if id == "" {
		return errors.New("remote kernel is not running")
	}
	return r.api(ctx, http.MethodPost, "/api/kernels/"+id+"/interrupt", nil, nil)
}

// Shutdown deletes the kernel on the server (a pending one too) and
// closes the socket. A Start waiting for a kernel returns at once.
func (r *Remote) Shutdown(ctx context.Context) error {
	r.mu.Lock()
	if !r.stopped {
		r.stopped = true
		close(r.stop)
	}
	id := r.kernelID
	r.mu.Unlock()
	if id == "" {
		return nil
	}
	err := r.deleteAndClose(ctx, id)
	r.client.CloseIdleConnections()
	return err
}

// deleteAndClose deletes kernel id on the server and closes the socket,
// the reader stopping without trying to reconnect.
func (r *Remote) deleteAndClose(ctx context.Context, id string) error {
	r.closing.Store(true)
	err := r.deleteKernel(ctx, id)
	r.closeConn()
	return err
}

var _ Releaser = (*Remote)(nil)

// Release deletes the running kernel on purpose (idle release): the
// reader stops without reconnecting, Died closes, and the next Start
// creates a new kernel. The caller has written home what only it held.
func (r *Remote) Release(ctx context.Context) error {
	r.mu.Lock()
	id := r.kernelID
	r.mu.Unlock()
	if id == "" || !r.Alive() {
		return nil
	}
	if err := r.deleteAndClose(ctx, id); err != nil {
		return fmt.Errorf("deleting the idle cloud kernel %s: %w", id, err)
	}
	r.mu.Lock()
	r.released = time.Now()
	r.mu.Unlock()
	r.setExit("released after idle time")
	return nil
}

// Status describes the remote kernel without its token.
func (r *Remote) Status() Status {
	r.mu.Lock()
	st := Status{Location: r.Location(), Kind: "jupyter-server kernel " + r.cfg.KernelName, URL: redact(r.cfg.URL), KernelID: r.kernelID,
		Started: r.started, Restarts: r.restarts, RTT: r.rtt, State: "not started", WorkDir: r.cfg.WorkDir,
		Starting: r.startBegan, StartTook: r.startTook, UpSeconds: r.meter.seconds(time.Now()), Released: r.released}
	startState := r.startState
	st.Spawn = r.spawn
	if !r.spawnBegan.IsZero() {
		st.Starting, startState = r.spawnBegan, "JupyterHub: "+r.spawn
	}
	if b := r.base.Load(); b != nil {
		st.URL = redact(b.String()) // a hub user's server, once resolved
	}
	r.mu.Unlock()
	r.exitMu.Lock()
	st.LastExit = r.lastExit
	r.exitMu.Unlock()
	r.connMu.Lock()
	proto := r.proto
	r.connMu.Unlock()
	switch {
	case !st.Starting.IsZero():
		st.State = fmt.Sprintf("starting (%s, %s so far)", startState, time.Since(st.Starting).Round(time.Second))
	case st.KernelID == "":
	case r.Alive():
		st.State = "connected (" + protoName(proto) + ")"
	case !st.Released.IsZero():
		st.State = "released after idle time (a new kernel starts for the next cloud cell)"
	default:
		st.State = "disconnected"
	}
	return st
}

func protoName(p string) string {
	if p == SubprotocolV1 {
		return "v1 binary protocol"
	}
	return "legacy JSON protocol"
}

// quickAckConn acknowledges every read at once. A kernel's messages come
// as bursts of small WebSocket frames; with the server's Nagle algorithm
// holding the second frame until the first is acknowledged, Linux's
// delayed ACK would add 40 ms to every cell. TCP_QUICKACK is reset by the
// kernel after use, so it is set again after each read.
type quickAckConn struct {
	*net.TCPConn
}

func (c *quickAckConn) Read(b []byte) (int, error) {
	n, err := c.TCPConn.Read(b)
	if raw, rerr := c.TCPConn.SyscallConn(); rerr == nil {
		_ = raw.Control(func(fd uintptr) {
			_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK, 1)
		})
	}
	return n, err
}
