package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ferry-nb/ferry/internal/analysis"
	"github.com/ferry-nb/ferry/internal/backend"
	"github.com/ferry-nb/ferry/internal/calibrate"
	"github.com/ferry-nb/ferry/internal/kernel"
	"github.com/ferry-nb/ferry/internal/location"
	"github.com/ferry-nb/ferry/internal/policy"
	"github.com/ferry-nb/ferry/internal/recall"
	"github.com/ferry-nb/ferry/internal/trace"
	"github.com/ferry-nb/ferry/internal/wire"
)

func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 8 {
				return "ferry " + kernel.Version + " (" + s.Value[:8] + ")"
			}
		}
	}
	return "ferry " + kernel.Version
}

// backendFlags are the flags every command that runs cells shares.
type backendFlags struct {
	python      string
	policy      string
	seed        int64
	tracePath   string
	bandwidth   string
	rtt         string
	remoteSpeed string
	stateOff    bool
	localRemote bool

	remote         *remoteList
	remoteKernel   string
	tokenFile      string
	remoteCA       string
	remoteInsecure bool
	remoteWorkDir  string
	remoteGateway  bool
	remoteUser     string
	hubServer      string
	hubProfile     string
	hubOptions     string
	startTimeout   string
	reconnectFor   string
	forwardEnv     string
	filesCap       string
	cloudPrice     string
	cloudIdle      string
	objective      string

	// dir is the notebook's directory on this machine: the local
	// kernel's working directory, and what the cloud kernel's default
	// working directory is named after. Set by the command (ferry run:
	// the notebook's directory or --cwd); empty means Ferry's own, which
	// Jupyter sets to the notebook's when it starts `ferry kernel`.
	dir string
}

func (b *backendFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&b.python, "python", envOr("FERRY_PYTHON", backend.DefaultPython), "interpreter with ipykernel for the local kernel (env FERRY_PYTHON)")
	fs.StringVar(&b.policy, "policy", envOr("FERRY_POLICY", "local"), "placement policy: local, remote, pingpong, random, paper, ferry (env FERRY_POLICY)")
	fs.Int64Var(&b.seed, "seed", 1, "seed for the random policy")
	fs.StringVar(&b.tracePath, "trace", "", "write one JSON line per execution to this file (for ferry replay)")
	fs.StringVar(&b.bandwidth, "bandwidth", "100Mbit", "link rate assumed until measured; per cloud as NAME=RATE,… (e.g. gpu=20Mbit,cpu=1Gbit)")
	fs.StringVar(&b.rtt, "rtt", "20ms", "link round-trip time assumed until measured; per cloud as NAME=RTT,…")
	conf := loadConfig()
	b.remote = newRemoteList(envOr("FERRY_REMOTE", conf.Remote))
	fs.Var(b.remote, "remote", "Jupyter Server, Enterprise Gateway or JupyterHub URL of the cloud kernel, or NAME=URL for one of several clouds (repeatable: --remote gpu=URL --remote cpu=URL; %%ferry NAME pins a cell there; env FERRY_REMOTE, comma-separated); a hub is detected, and your server on it started as needed; token from FERRY_TOKEN (a named cloud's from FERRY_TOKEN_NAME first) or --token-file")
	fs.StringVar(&b.remoteKernel, "remote-kernel", envOr("FERRY_REMOTE_KERNEL", orDefaultStr(conf.RemoteKernel, "python3")), "kernelspec name on the remote server")
	fs.StringVar(&b.tokenFile, "token-file", envOr("FERRY_TOKEN_FILE", conf.TokenFile), "file holding the remote server's token (env FERRY_TOKEN_FILE)")
	fs.StringVar(&b.remoteCA, "remote-ca", envOr("FERRY_REMOTE_CA", conf.RemoteCA), "extra CA certificate (PEM) for an https remote")
	fs.BoolVar(&b.remoteInsecure, "remote-insecure", conf.RemoteInsecure, "accept any TLS certificate from the remote (self-signed test servers only)")
	fs.StringVar(&b.remoteWorkDir, "remote-workdir", envOr("FERRY_REMOTE_WORKDIR", ""), "the cloud kernel's working directory, relative to the server's root (env FERRY_REMOTE_WORKDIR; default ferry/NOTEBOOKDIR-HASH, one per notebook directory)")
	fs.BoolVar(&b.remoteGateway, "remote-gateway", envOr("FERRY_REMOTE_GATEWAY", "") != "" || conf.RemoteGateway, "the remote is an Enterprise Gateway: pass the working directory and launch timeout as KERNEL_WORKING_DIR and KERNEL_LAUNCH_TIMEOUT (env FERRY_REMOTE_GATEWAY)")
	fs.StringVar(&b.remoteUser, "remote-user", envOr("FERRY_REMOTE_USER", conf.RemoteUser), "with --remote-gateway: the KERNEL_USERNAME the gateway launches the kernel as (env FERRY_REMOTE_USER; default this machine's user). KERNEL_* variables in Ferry's environment are forwarded to the gateway too")
	fs.StringVar(&b.hubServer, "hub-server", envOr("FERRY_HUB_SERVER", conf.HubServer), "with a JupyterHub --remote: use your named server NAME instead of the default one (env FERRY_HUB_SERVER)")
	fs.StringVar(&b.hubProfile, "hub-profile", envOr("FERRY_HUB_PROFILE", conf.HubProfile), "with a JupyterHub --remote: the profile your server is started with, e.g. gpu (KubeSpawner's profile_list slug; env FERRY_HUB_PROFILE)")
	fs.StringVar(&b.hubOptions, "hub-options", envOr("FERRY_HUB_OPTIONS", string(conf.HubOptions)), "with a JupyterHub --remote: the spawner's user options as a JSON object, e.g. '{\"image\":\"pytorch\"}' (env FERRY_HUB_OPTIONS; no secrets: it is on the command line)")
	fs.StringVar(&b.startTimeout, "start-timeout", envOr("FERRY_START_TIMEOUT", orDefaultStr(conf.StartTimeout, backend.DefaultStartTimeout.String())), "how long the cloud kernel may take to start, e.g. 10m or 600 (seconds) (env FERRY_START_TIMEOUT)")
	fs.StringVar(&b.reconnectFor, "reconnect-for", envOr("FERRY_RECONNECT_FOR", orDefaultStr(conf.ReconnectFor, backend.DefaultReconnectFor.String())), "how long a lost connection to the cloud kernel is tried again before its values are rebuilt elsewhere, e.g. 10m for a laptop that sleeps (env FERRY_RECONNECT_FOR)")
	fs.StringVar(&b.forwardEnv, "forward-env", envOr("FERRY_FORWARD_ENV", ""), "comma-separated laptop environment variables to set in the cloud kernel, e.g. AWS_PROFILE,DATA_DIR (env FERRY_FORWARD_ENV); nothing else of the laptop's environment is copied")
	fs.StringVar(&b.filesCap, "files-cap", envOr("FERRY_FILES_CAP", "2GB"), "most file data from the notebook's folder moved to the cloud for one cell (e.g. 500MB); a cell needing more runs on the laptop (env FERRY_FILES_CAP)")
	fs.StringVar(&b.cloudPrice, "cloud-price", envOr("FERRY_CLOUD_PRICE", ""), "what a cloud kernel costs per hour it exists, in USD (e.g. 2.48; per cloud as gpu=2.48,cpu=0.19): %ferry status and the summary then show its cost (env FERRY_CLOUD_PRICE)")
	fs.StringVar(&b.cloudIdle, "cloud-idle", envOr("FERRY_CLOUD_IDLE", conf.CloudIdle), "let a cloud kernel go after this long with no cloud cell (e.g. 15m), its values written home first; the next cloud cell starts a new one (env FERRY_CLOUD_IDLE; default: keep it all session)")
	fs.StringVar(&b.objective, "objective", envOr("FERRY_OBJECTIVE", conf.Objective), "what --policy ferry minimises: time (your wait; the default), balanced (a cloud kernel-second weighs a quarter of a second of your wait) or cost (it weighs a whole second); balanced and cost also let an idle cloud kernel go at their break-even (env FERRY_OBJECTIVE)")
	fs.BoolVar(&b.stateOff, "no-state", false, "do not analyse cells or move state (every cell must run in one place)")
	fs.BoolVar(&b.localRemote, "local-remote", false, "stand in for the cloud with a second kernel on this machine (tests, demos)")
	fs.StringVar(&b.remoteSpeed, "remote-speed", "", "how many times faster the remote runs cells, assumed until measured (e.g. 4x; per cloud as gpu=12x,cpu=3x)")
}

// config builds the kernel configuration the flags describe. The caller
// closes the trace writer.
func (b *backendFlags) config() (kernel.Config, error) {
	cfg := kernel.Config{Policy: b.policy, Seed: b.seed}
	// A bare name (--python python3) is looked up in PATH, as a shell
	// would; a path that does not work is left for the kernel to report.
	if p, err := resolvePython(b.python); err == nil {
		b.python = p
	}
	clouds, err := b.clouds()
	if err != nil {
		return cfg, err
	}
	locs := []location.Location{location.Local}
	for _, c := range clouds {
		locs = append(locs, c.Loc)
	}
	if err := b.cloudSettings(&cfg, location.NewSet(locs...)); err != nil {
		return cfg, err
	}
	// Calibration is always on; the cache only spares later sessions
	// the measurement and a start.
	cfg.Calibration = &calibrate.Cache{Path: calibrationCache()}
	cfg.LaptopKey = "laptop|" + b.python
	for _, c := range clouds {
		if c.URL == "" {
			continue // --local-remote's stand-in: nothing to remember
		}
		cs := cfg.Clouds[c.Loc]
		cs.Key = c.URL + "|" + b.remoteKernel
		if cfg.Clouds == nil {
			cfg.Clouds = map[location.Location]kernel.CloudSettings{}
		}
		cfg.Clouds[c.Loc] = cs
	}
	if _, err := policy.New(b.policy, b.seed); err != nil {
		return cfg, err
	}
	if cfg.CloudIdle, err = parseCloudIdle(b.cloudIdle); err != nil {
		return cfg, err
	}
	if cfg.Objective, err = policy.ParseObjective(b.objective); err != nil {
		return cfg, err
	}
	if cfg.CloudIdle > 0 && b.stateOff {
		return cfg, fmt.Errorf("--cloud-idle needs Ferry to track state (it writes the cloud's values home before letting the kernel go); drop --no-state")
	}
	if cfg.Backends, err = b.backends(clouds); err != nil {
		return cfg, err
	}
	cfg.Root = b.dir
	for _, n := range strings.Split(b.forwardEnv, ",") {
		if n = strings.TrimSpace(n); n != "" {
			cfg.ForwardEnv = append(cfg.ForwardEnv, n)
		}
	}
	if cfg.FilesCap, err = parseBytes(b.filesCap); err != nil {
		return cfg, fmt.Errorf("--files-cap: %w", err)
	}
	if !b.stateOff {
		cfg.Analyzer = analysis.New(b.python)
		// What earlier sessions learnt of the notebook's cells; a file
		// that cannot be read is said and started afresh, as recall
		// only ever helps placement.
		path, err := recallPath()
		if err != nil {
			slog.Warn("no recall of cells from earlier sessions", "err", err)
		} else if path != "" {
			st, err := recall.Open(path)
			if err != nil {
				slog.Warn("recalling cells from earlier sessions", "err", err)
			}
			cfg.Recall = st
		}
	}
	cfg.Trace = trace.NewMemory()
	if b.tracePath != "" {
		if cfg.Trace, err = trace.Create(b.tracePath); err != nil {
			return cfg, err
		}
	}
	return cfg, nil
}

// clouds are the configured clouds: each --remote, or the stand-in of
// --local-remote.
func (b *backendFlags) clouds() ([]cloudSpec, error) {
	var specs []string
	if b.remote != nil {
		specs = b.remote.specs
	}
	if len(specs) > 0 && b.localRemote {
		return nil, errors.New("--remote and --local-remote exclude each other; pick one")
	}
	if b.localRemote {
		return []cloudSpec{{Loc: location.Remote}}, nil
	}
	return parseRemotes(specs)
}

func (b *backendFlags) backends(clouds []cloudSpec) (map[location.Location]backend.Backend, error) {
	dir := b.dir
	if dir == "" {
		// Say it explicitly rather than rely on inheritance: the kernel's
		// directory is the one Ferry was started in.
		wd, err := os.Getwd()
		if err != nil {
			return nil, fmt.Errorf("finding the notebook's directory: %w", err)
		}
		dir = wd
	}
	local := backend.NewLocal(b.python)
	local.Dir = dir
	bs := map[location.Location]backend.Backend{location.Local: local}
	if b.localRemote {
		standIn := backend.NewStandIn(b.python)
		standIn.Dir = dir
		bs[location.Remote] = standIn
		return bs, nil
	}
	if len(clouds) == 0 {
		return bs, nil
	}
	timeout, err := parseStartTimeout(b.startTimeout)
	if err != nil {
		return nil, err
	}
	reconnect, err := time.ParseDuration(b.reconnectFor)
	if err != nil || reconnect <= 0 {
		return nil, fmt.Errorf("--reconnect-for %q: want how long to try a lost cloud connection again, e.g. 20s or 10m", b.reconnectFor)
	}
	wd := b.remoteWorkDir
	if wd == "" {
		wd = backend.DefaultWorkDir(dir)
	}
	for _, c := range clouds {
		token, err := readCloudToken(c.Loc, b.tokenFile)
		if err != nil {
			return nil, err
		}
		rc := backend.RemoteConfig{Loc: c.Loc, URL: c.URL, Token: token, KernelName: b.remoteKernel, CAFile: b.remoteCA, Insecure: b.remoteInsecure,
			WorkDir: wd, Gateway: b.remoteGateway, StartTimeout: timeout, ReconnectFor: reconnect, Username: b.remoteUser, KernelEnv: backend.ForwardedKernelEnv(os.Environ())}
		hub, err := b.hub(c, token, timeout)
		if err != nil {
			return nil, err
		}
		if hub != nil {
			rc.Resolve = hub.Resolve
		}
		r, err := backend.NewRemote(rc)
		if err != nil {
			if len(clouds) > 1 {
				return nil, fmt.Errorf("cloud %s: %w", c.Loc, err)
			}
			return nil, err
		}
		bs[c.Loc] = r
	}
	return bs, nil
}

// hub is the JupyterHub resolver for a --remote: every --remote but an
// Enterprise Gateway may name a hub, which is detected at the first
// start (GET /hub/api/); a plain Jupyter Server is then used as before.
// The hub's token is the remote's (FERRY_TOKEN, --token-file), and so
// are --remote-ca, --remote-insecure and --start-timeout, which also
// bounds the server's spawn. With several clouds, --hub-server,
// --hub-profile and --hub-options apply to each that is a hub.
func (b *backendFlags) hub(c cloudSpec, token string, timeout time.Duration) (*backend.Hub, error) {
	opts, err := parseHubOptions(b.hubOptions, b.hubProfile)
	if err != nil {
		return nil, err
	}
	if b.remoteGateway {
		if b.hubServer != "" || opts != nil {
			return nil, errors.New("--hub-server, --hub-profile and --hub-options are for a JupyterHub --remote, not --remote-gateway")
		}
		return nil, nil
	}
	return &backend.Hub{URL: c.URL, Token: token, Server: b.hubServer, Options: opts, SpawnTimeout: timeout,
		CAFile: b.remoteCA, Insecure: b.remoteInsecure, Log: slog.Default().With("remote", "jupyterhub", "cloud", c.Loc.String())}, nil
}

// parseHubOptions reads --hub-options (a JSON object, the body of the
// hub's spawn request: the spawner's user options) and --hub-profile
// (its "profile" key, as KubeSpawner's profile_list names it); nil when
// neither is set.
func parseHubOptions(js, profile string) (map[string]any, error) {
	var opts map[string]any
	if js = strings.TrimSpace(js); js != "" {
		if err := json.Unmarshal([]byte(js), &opts); err != nil || opts == nil {
			return nil, fmt.Errorf("--hub-options %q is not a JSON object like '{\"profile\": \"gpu\"}'", js)
		}
	}
	if profile = strings.TrimSpace(profile); profile != "" {
		if opts == nil {
			opts = map[string]any{}
		}
		opts["profile"] = profile
	}
	return opts, nil
}

// parseBytes reads a size like 2GB, 500MB, 64KiB or a number of bytes.
func parseBytes(s string) (int64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"GIB", 1 << 30}, {"MIB", 1 << 20}, {"KIB", 1 << 10}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"B", 1}} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.m
			break
		}
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("%q is not a size like 2GB or 500MB", s)
	}
	return int64(v * float64(mult)), nil
}

// parseStartTimeout reads --start-timeout: a Go duration (10m, 90s) or a
// number of seconds.
func parseStartTimeout(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		secs, nerr := strconv.ParseFloat(s, 64)
		if nerr != nil {
			return 0, fmt.Errorf("--start-timeout %q is not a duration like 10m or a number of seconds", s)
		}
		d = time.Duration(secs * float64(time.Second))
	}
	if d <= 0 {
		return 0, fmt.Errorf("--start-timeout %q must be positive", s)
	}
	return d, nil
}

func runKernel(ctx context.Context, args []string) error {
	fs := newFlags("kernel")
	file := fs.String("f", "", "connection file written by Jupyter")
	var bf backendFlags
	bf.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if *file == "" {
		return errors.New("missing -f CONNECTION_FILE; Jupyter passes it (run 'ferry install' and pick the \"Python 3 (Ferry)\" kernel)")
	}
	// Jupyter interrupts through interrupt_request; a Ctrl-C in the terminal
	// that started Jupyter must not kill the kernel.
	signal.Ignore(syscall.SIGINT)
	info, err := wire.LoadConnFile(*file)
	if err != nil {
		return err
	}
	cfg, err := bf.config()
	if err != nil {
		return err
	}
	defer cfg.Trace.Close()
	cfg.Conn = info
	srv, err := kernel.New(cfg)
	if err != nil {
		return fmt.Errorf("starting kernel on %s: %w", filepath.Base(*file), err)
	}
	// Like ipykernel's parent poller: if the process that started us (the
	// front end's kernel manager) goes away without shutting us down, stop,
	// so no kernel is left behind.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go watchParent(wctx, cancel)
	err = srv.Serve(wctx)
	// The last replies (shutdown_reply, idle) may still sit in closed
	// sockets; let them go out before the process ends.
	if ferr := wire.Flush(2 * time.Second); ferr != nil {
		slog.Warn("flushing sockets at exit", "err", ferr)
	}
	_ = os.Stdout.Sync()
	return err
}

// recallPath is where what sessions learn of cells is kept for the next
// (package recall): FERRY_RECALL, "off" for nowhere (every session then
// starts knowing nothing of its cells), default
// $XDG_CACHE_HOME/ferry/recall.json.
func recallPath() (string, error) {
	switch v := strings.TrimSpace(os.Getenv("FERRY_RECALL")); v {
	case "":
		return recall.DefaultPath()
	case "off":
		return "", nil
	default:
		return v, nil
	}
}

// calibrationCache is where the speed calibration's figures and the
// clouds' start times are kept across sessions: FERRY_CALIBRATION_CACHE,
// "off" for nowhere (every session then measures afresh), default
// $XDG_CACHE_HOME/ferry/calibration.json.
func calibrationCache() string {
	switch v := strings.TrimSpace(os.Getenv("FERRY_CALIBRATION_CACHE")); v {
	case "":
		return calibrate.DefaultPath()
	case "off":
		return ""
	default:
		return v
	}
}

// readToken reads the remote token from FERRY_TOKEN or a token file; never
// from argv, where any user could read it in ps.
func readToken(file string) (string, error) {
	if t := strings.TrimSpace(os.Getenv("FERRY_TOKEN")); t != "" {
		return t, nil
	}
	if file == "" {
		return "", nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("reading the token file: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// fileConfig is ~/.config/ferry/config.json (or $FERRY_CONFIG): defaults
// for the flags, so a notebook front end needs none.
type fileConfig struct {
	Remote         string `json:"remote"`
	RemoteKernel   string `json:"remote_kernel"`
	TokenFile      string `json:"token_file"`
	RemoteCA       string `json:"remote_ca"`
	RemoteInsecure bool   `json:"remote_insecure"`
	RemoteGateway  bool   `json:"remote_gateway"`
	RemoteUser     string `json:"remote_user"`
	ReconnectFor   string `json:"reconnect_for"`
	// HubServer, HubProfile and HubOptions (a JSON object) are
	// --hub-server, --hub-profile and --hub-options.
	HubServer    string          `json:"hub_server"`
	HubProfile   string          `json:"hub_profile"`
	HubOptions   json.RawMessage `json:"hub_options"`
	StartTimeout string          `json:"start_timeout"`
	CloudIdle    string          `json:"cloud_idle"`
	Objective    string          `json:"objective"`
}

func loadConfig() fileConfig {
	var c fileConfig
	path := os.Getenv("FERRY_CONFIG")
	if path == "" {
		dir, err := os.UserConfigDir()
		if err != nil {
			return c
		}
		path = filepath.Join(dir, "ferry", "config.json")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return c
	}
	if err := json.Unmarshal(b, &c); err != nil {
		fmt.Fprintf(os.Stderr, "ferry: ignoring %s: not valid JSON (%v)\n", path, err)
	}
	return c
}

// watchParent cancels when the parent process changes (it died and we were
// re-parented), or when JPY_PARENT_PID names a process that is gone.
func watchParent(ctx context.Context, cancel context.CancelFunc) {
	parent := os.Getppid()
	if v, err := strconv.Atoi(os.Getenv("JPY_PARENT_PID")); err == nil && v > 1 {
		parent = v
	}
	if parent <= 1 {
		return
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if syscall.Kill(parent, 0) != nil || (os.Getppid() != parent && os.Getenv("JPY_PARENT_PID") == "") {
			fmt.Fprintln(os.Stderr, "ferry kernel: the front end's process went away; shutting down")
			cancel()
			return
		}
	}
}

// parseCloudIdle reads --cloud-idle: a duration ("15m", "90s"), or a
// bare number of minutes; "" or 0 for never.
func parseCloudIdle(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	if m, err := strconv.ParseFloat(s, 64); err == nil && m >= 0 && !math.IsInf(m, 0) {
		return time.Duration(m * float64(time.Minute)), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("--cloud-idle %q: want how long a cloud kernel may sit idle, e.g. 15m or 90s (a bare number is minutes)", s)
	}
	return d, nil
}

// parseCloudPrice reads --cloud-price: USD per hour, "" for none.
func parseCloudPrice(s string) (float64, error) {
	if s == "" {
		return 0, nil
	}
	v, err := strconv.ParseFloat(strings.TrimPrefix(strings.TrimSpace(s), "$"), 64)
	if err != nil || v < 0 || math.IsInf(v, 0) || math.IsNaN(v) {
		return 0, fmt.Errorf("--cloud-price %q: want US dollars per hour, e.g. 2.48", s)
	}
	return v, nil
}
