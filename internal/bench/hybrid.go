package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/ferry-nb/ferry/internal/analysis"
	"github.com/ferry-nb/ferry/internal/backend"
	"github.com/ferry-nb/ferry/internal/client"
	"github.com/ferry-nb/ferry/internal/files"
	"github.com/ferry-nb/ferry/internal/kernel"
	"github.com/ferry-nb/ferry/internal/location"
	"github.com/ferry-nb/ferry/internal/notebook"
	"github.com/ferry-nb/ferry/internal/policy"
	"github.com/ferry-nb/ferry/internal/recall"
	"github.com/ferry-nb/ferry/internal/session"
	"github.com/ferry-nb/ferry/internal/testbed"
	"github.com/ferry-nb/ferry/internal/trace"
)

// LinkSetting is one emulated laptop/cloud set-up.
type LinkSetting struct {
	Name     string
	Rate     string // tc rate
	RTT      time.Duration
	LocalCPU float64 // laptop kernel's share of a core
	// Down is the download rate (cloud to laptop) where it differs from
	// Rate, the upload: a home link.
	Down string
}

// DefaultSettings are the set-ups of the hybrid benchmark: the remote is
// about 4x faster than the throttled laptop kernel.
var DefaultSettings = []LinkSetting{
	{"1Gbit/1ms", "1gbit", time.Millisecond, 0.25, ""},
	{"100Mbit/20ms", "100mbit", 20 * time.Millisecond, 0.25, ""},
	{"20Mbit/50ms", "20mbit", 50 * time.Millisecond, 0.25, ""},
	// A home link (issue 16): 20 Mbit up, 100 Mbit down. Ferry's link
	// model is one rate per cloud, learnt from moves both ways; it starts
	// from the upload rate, the one data on the laptop meets first.
	{"home-20up-100down/40ms", "20mbit", 40 * time.Millisecond, 0.25, "100mbit"},
}

// HybridRow is one notebook session under one setting and policy.
type HybridRow struct {
	Setting    string  `json:"setting"`
	Notebook   string  `json:"notebook"`
	Policy     string  `json:"policy"`
	Seconds    float64 `json:"seconds"` // time the user waited: cells and transfers, not think time
	BytesMoved int64   `json:"bytes_moved"`
	Remote     int     `json:"cells_remote"`
	Executions int     `json:"executions"`
	// Runs is how many runs the row is the median of.
	Runs int `json:"runs"`
	// CloudSeconds is the cloud kernel-seconds the run is billed for:
	// from its first cloud cell to the end (the bench starts the kernel
	// before timing, so no start is in it), think time included; 0 when
	// no cell ran in the cloud. CloudCost is that at HybridOptions'
	// CloudPrice.
	CloudSeconds float64 `json:"cloud_kernel_seconds"`
	CloudCost    float64 `json:"cloud_cost"`
	// IdleBytes are the bytes moved in think time (prefetch, write-back),
	// hidden from the wait; HiddenShare is their share of all bytes moved.
	IdleBytes   int64   `json:"idle_bytes"`
	HiddenShare float64 `json:"hidden_share"`
	// DumpBytes is what whole-session dumps at the same migration points
	// would have moved (ElasticNotebook's and the seed paper's baseline):
	// at each execution that moved state, the serialised size of every
	// variable alive then, as the agent measured it (files not counted).
	DumpBytes int64 `json:"dump_bytes"`
}

// HybridOptions control the run.
type HybridOptions struct {
	Python     string
	Sessions   []string // session scripts
	Settings   []LinkSetting
	ThinkScale float64
	// Repeat runs every policy but local this many times, interleaved, and
	// reports the median run (local is 3-9x slower than the rest: one run
	// ranks it).
	Repeat int
	// Traces, when set, is a directory that gets every run's trace as
	// SETTING_NOTEBOOK_POLICY_RUN.jsonl, for `ferry replay` and diagnosis.
	Traces string
	// CloudPrice is what the cloud kernel costs per hour, in USD, for
	// the table's cost column (0: DefaultCloudPrice).
	CloudPrice float64
	// DataDir holds the data-on-laptop notebooks' files, one folder per
	// data set (made once, kept for the next run); it is the laptop
	// kernel's working directory and Ferry's root for those notebooks.
	// Empty: the user's cache directory's ferry/bench-data.
	DataDir  string
	Out      io.Writer
	Progress io.Writer
}

// DefaultCloudPrice is the bench's cloud price in USD per hour when none
// is given: an example figure in the range of a one-GPU on-demand cloud
// machine, so the cost column has a scale; pass --cloud-price for yours.
const DefaultCloudPrice = 2.48

// Hybrid measures every session under local, remote, paper, ferry and the
// oracle's placement (computed by min-cut from the local and remote runs of
// the same session, then run live), side by side in one run.
func Hybrid(ctx context.Context, o HybridOptions) ([]HybridRow, error) {
	var rows []HybridRow
	for _, st := range o.Settings {
		tb, err := testbed.Up(testbed.Config{Rate: st.Rate, DownRate: st.Down, RTT: st.RTT, LocalCPU: st.LocalCPU})
		if err != nil {
			return rows, err
		}
		for _, n := range tb.Notes {
			fmt.Fprintf(o.Progress, "[%s] %s\n", st.Name, n)
		}
		r, err := hybridSetting(ctx, o, st, tb)
		tb.Down()
		rows = append(rows, r...)
		if err != nil {
			return rows, err
		}
	}
	return rows, nil
}

func hybridSetting(ctx context.Context, o HybridOptions, st LinkSetting, tb *testbed.Testbed) ([]HybridRow, error) {
	n0 := len(tb.Notes)
	cloud, err := tb.StartCloud(ctx, o.Python)
	if err != nil {
		return nil, err
	}
	defer cloud.Close()
	for _, n := range tb.Notes[n0:] {
		fmt.Fprintf(o.Progress, "[%s] %s\n", st.Name, n)
	}
	url, token := cloud.URL(), cloud.Server.Token
	bw, _ := policy.ParseBandwidth(st.Rate)
	link := policy.Link{Bandwidth: bw, RTT: st.RTT.Seconds(), Compression: 1}
	speed := 1 / st.LocalCPU
	price := o.CloudPrice
	if price <= 0 {
		price = DefaultCloudPrice
	}

	var rows []HybridRow
	for _, path := range o.Sessions {
		sc, err := session.Load(path)
		if err != nil {
			return rows, err
		}
		sc.ThinkScale *= o.ThinkScale
		nbPath := sc.Notebook
		if !filepath.IsAbs(nbPath) {
			nbPath = filepath.Join(filepath.Dir(path), nbPath)
		}
		name := strings.TrimSuffix(filepath.Base(nbPath), ".ipynb")
		dir, err := makeData(ctx, o, path, sc)
		if err != nil {
			return rows, fmt.Errorf("%s: %w", name, err)
		}
		traces := map[string][]trace.Event{}
		runs := map[string][]HybridRow{}
		// ferry-cost is ferry under --objective cost (issue 16's target:
		// cheaper in the cloud than all-remote, not much slower than ferry).
		// ferry-again is ferry's second session of the notebook: what the
		// ferry run learnt of each cell is recalled (package recall) before
		// the cell first runs, as for a user who opens the notebook again.
		pols := []string{"local", "remote", "paper", "ferry", "ferry-again", "ferry-cost", "oracle"}
		recalled, err := os.MkdirTemp("", "ferry-bench-recall-")
		if err != nil {
			return rows, err
		}
		defer os.RemoveAll(recalled)
		for round := 0; round < max(o.Repeat, 1); round++ {
			for _, pol := range pols {
				if pol == "local" && round > 0 {
					continue
				}
				var impl policy.Policy
				if pol == "oracle" {
					l := link
					l.PerTransfer = perTransfer(append(append([]trace.Event(nil), traces["paper"]...), traces["ferry"]...), link)
					impl = oraclePlacement(traces["local"], traces["remote"], l)
					if impl == nil {
						return rows, fmt.Errorf("%s: the local and remote runs differ in length; no oracle", name)
					}
				}
				fmt.Fprintf(o.Progress, "[%s] %s under %s (run %d) …\n", st.Name, name, pol, round+1)
				// Each round's ferry run starts knowing nothing and leaves
				// what it learnt for the round's ferry-again run.
				rc := filepath.Join(recalled, fmt.Sprintf("round%d.json", round))
				row, evs, err := hybridRun(ctx, o.Python, nbPath, dir, sc, url, token, pol, impl, link, speed, tb, rc)
				if err != nil {
					return rows, fmt.Errorf("%s under %s: %w", name, pol, err)
				}
				row.Setting, row.Notebook = st.Name, name
				row.CloudCost = row.CloudSeconds / 3600 * price
				if round == 0 {
					traces[pol] = evs
				}
				if o.Traces != "" {
					if err := writeTrace(filepath.Join(o.Traces, traceName(st.Name, name, pol, round+1)), evs); err != nil {
						return rows, err
					}
				}
				runs[pol] = append(runs[pol], row)
			}
		}
		for _, pol := range pols {
			rows = append(rows, median(runs[pol]))
		}
	}
	return rows, nil
}

// sessionDumps is the bytes whole-session dumps would move at the
// executions of evs that moved state: each time, every variable then
// alive at its last measured size. Files are not variables: a dump
// leaves them on disk.
func sessionDumps(evs []trace.Event) int64 {
	live := map[string]int64{}
	var total int64
	for _, e := range evs {
		if e.BytesMoved > 0 {
			for _, n := range slices.Sorted(maps.Keys(live)) {
				total += live[n]
			}
		}
		for n, sz := range e.Sizes {
			if !files.IsName(n) {
				live[n] = sz
			}
		}
	}
	return total
}

// makeData makes a session's data set on the laptop (the bench's data
// directory) and returns its folder, or "" when the notebook makes its
// data in the kernel. The maker keeps a stamp: a second bench run only
// checks it.
func makeData(ctx context.Context, o HybridOptions, script string, sc *session.Script) (string, error) {
	if sc.Data == nil {
		return "", nil
	}
	base := o.DataDir
	if base == "" {
		c, err := os.UserCacheDir()
		if err != nil {
			return "", fmt.Errorf("no folder for the bench's data (%w); pass --data DIR", err)
		}
		base = filepath.Join(c, "ferry", "bench-data")
	}
	dir := filepath.Join(base, sc.Data.Set)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("the bench's data folder: %w", err)
	}
	mk := filepath.Join(filepath.Dir(script), sc.Data.Make)
	fmt.Fprintf(o.Progress, "making (or checking) data set %s in %s …\n", sc.Data.Set, dir)
	cmd := exec.CommandContext(ctx, o.Python, mk, sc.Data.Set, dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("making data set %s with %s: %w: %s", sc.Data.Set, mk, err, strings.TrimSpace(string(out)))
	}
	return dir, nil
}

func traceName(setting, nb, pol string, run int) string {
	safe := strings.NewReplacer("/", "-", " ", "-").Replace(setting)
	return fmt.Sprintf("%s_%s_%s_%d.jsonl", safe, nb, pol, run)
}

func writeTrace(path string, evs []trace.Event) error {
	w, err := trace.Create(path)
	if err != nil {
		return err
	}
	for _, e := range evs {
		if err := w.Add(e); err != nil {
			w.Close()
			return err
		}
	}
	return w.Close()
}

// median returns the run with the median time (the lower middle one of an
// even count), recording how many runs it was chosen from.
func median(rs []HybridRow) HybridRow {
	sorted := append([]HybridRow(nil), rs...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Seconds < sorted[j].Seconds })
	m := sorted[(len(sorted)-1)/2]
	m.Runs = len(rs)
	return m
}

// billedFromFirstCloudCell is the cloud kernel-seconds of a bench run's
// events (the warm-up first) from the first cloud cell after the warm-up
// to the end: what a kernel started for that cell and kept would be
// billed, the start aside.
func billedFromFirstCloudCell(all []trace.Event) float64 {
	for i := 1; i < len(all); i++ {
		if all[i].Loc != location.Local {
			return max(all[len(all)-1].CloudSeconds-all[i-1].CloudSeconds, 0)
		}
	}
	return 0
}

// coldCloud says whether the bench run called name starts with the cloud
// kernel not yet running: ferry's (under each objective, and its second
// session), which start it when the policy first places a cell there or
// starts it in the think time before one. The other runs start it before
// timing.
func coldCloud(name string) bool {
	switch name {
	case "ferry", "ferry-again", "ferry-cost":
		return true
	}
	return false
}

// billedFromStart is the cloud kernel-seconds of a coldCloud run's events
// (the warm-up first) and what its first cloud cell waited for the
// kernel's start: the kernel is billed from its start, but the start
// itself is put aside, as the other runs' starts come before timing. A
// start begun in think time is waited for only in part, and the rest
// stays billed; a restart after a release is waited for and billed.
func billedFromStart(all []trace.Event) (billed, firstStart float64) {
	if len(all) == 0 {
		return 0, 0
	}
	for _, e := range all[1:] {
		if e.Loc != location.Local {
			firstStart = e.StartSeconds
			break
		}
	}
	return max(all[len(all)-1].CloudSeconds-firstStart, 0), firstStart
}

// perTransfer estimates the fixed cost of one move from a run's transfers.
func perTransfer(evs []trace.Event, link policy.Link) float64 {
	var sum float64
	n := 0
	for _, e := range evs {
		if e.BytesMoved > 0 {
			sum += max(e.TransferSeconds-link.TransferTime(e.BytesMoved), 0)
			n++
		}
	}
	if n == 0 {
		return 0
	}
	return sum / float64(n)
}

// oraclePlacement computes the optimal placement for the session from its
// all-local and all-remote runs.
func oraclePlacement(local, remote []trace.Event, link policy.Link) policy.Policy {
	if len(local) == 0 || len(local) != len(remote) {
		return nil
	}
	rl, rr := make([]float64, len(local)), make([]float64, len(local))
	for i := range local {
		rl[i], rr[i] = local[i].Runtime, remote[i].Runtime
	}
	// The first execution of every run is the warm-up cell, pinned remote.
	return policy.Fixed("oracle", append([]location.Location{policy.Remote}, policy.Placement(policy.OracleFrom(local, rl, rr, policy.Settings{Link: link}))...))
}

func hybridRun(ctx context.Context, python, nbPath, dir string, sc *session.Script, url, token, pol string, impl policy.Policy,
	link policy.Link, speed float64, tb *testbed.Testbed, recallPath string) (HybridRow, []trace.Event, error) {
	nb, err := notebook.Read(nbPath)
	if err != nil {
		return HybridRow{}, nil, err
	}
	local := backend.NewLocal(python)
	local.OnStart = tb.SlowLocal
	local.Dir = dir
	remote, err := backend.NewRemote(backend.RemoteConfig{URL: url, Token: token})
	if err != nil {
		return HybridRow{}, nil, err
	}
	an := analysis.New(python)
	defer an.Close()
	tr := trace.NewMemory()
	var obj policy.Objective
	var rc *recall.Store
	name := pol
	switch pol {
	case "ferry-cost":
		pol, obj = "ferry", policy.ObjectiveCost
	case "ferry", "ferry-again":
		if rc, err = recall.Open(recallPath); err != nil {
			return HybridRow{}, nil, err
		}
		if (pol == "ferry") != (rc.Len() == 0) {
			return HybridRow{}, nil, fmt.Errorf("the recall file %s holds %d cells before the %s run", recallPath, rc.Len(), pol)
		}
		pol = "ferry"
	}
	cfg := kernel.Config{Backends: map[location.Location]backend.Backend{location.Local: local, location.Remote: remote}, Policy: pol, PolicyImpl: impl, Objective: obj,
		Analyzer: an, Trace: tr, Link: link, RemoteSpeed: speed, Root: dir, Recall: rc}
	if impl != nil {
		cfg.Policy = ""
	}
	sess, err := client.StartFerry(ctx, cfg)
	if err != nil {
		return HybridRow{}, nil, err
	}
	defer sess.Close(context.Background())
	// Both kernels must be up before timing starts, but for ferry's runs
	// (coldCloud): Ferry given the cloud's speed starts the cloud kernel
	// with the first cell it places there, and what the cost objective
	// weighs is whether and when to start it; a kernel already running
	// is billed whatever runs where. Their start is put aside below.
	warmup := "%%ferry remote\npass"
	if coldCloud(name) {
		warmup = "%%ferry local\npass"
	}
	if _, err := sess.Execute(ctx, warmup, client.ExecOptions{}); err != nil {
		return HybridRow{}, nil, err
	}
	_, runErr := notebook.RunSteps(ctx, nb, sess, session.Steps(sc), notebook.RunOptions{})
	all := tr.Events()
	evs := all[1:] // without the warm-up cell
	row := HybridRow{Policy: name, Executions: len(evs)}
	firstStart := 0.0
	if coldCloud(name) {
		row.CloudSeconds, firstStart = billedFromStart(all)
	} else {
		row.CloudSeconds = billedFromFirstCloudCell(all)
	}
	for _, e := range evs {
		// A kernel started again after a release is waited for too.
		row.Seconds += e.Runtime + e.TransferSeconds + e.StartSeconds
		row.BytesMoved += e.BytesMoved
		row.IdleBytes += e.IdleBytes
		if e.Loc == policy.Remote {
			row.Remote++
		}
	}
	// The first start aside, as the other runs start theirs before timing.
	row.Seconds -= firstStart
	row.DumpBytes = sessionDumps(evs)
	if all := row.BytesMoved + row.IdleBytes; all > 0 {
		row.HiddenShare = float64(row.IdleBytes) / float64(all)
	}
	return row, evs, runErr
}

// reduction is "NNx smaller" for a row's state moved against session
// dumps, or "-" when it moved nothing.
func reduction(r HybridRow) string {
	moved := r.BytesMoved + r.IdleBytes
	if moved == 0 || r.DumpBytes == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0fx smaller", float64(r.DumpBytes)/float64(moved))
}

// WriteHybrid prints the table and writes it as Markdown and JSON.
func WriteHybrid(rows []HybridRow, mdPath, jsonPath string, out io.Writer) error {
	var b strings.Builder
	b.WriteString("| setting | notebook | local s | remote s | paper s | ferry s | oracle s | ferry vs local | ferry vs oracle | ferry vs best fixed | ferry MB moved | vs session dumps | hidden in think time | ferry 2nd session s | 2nd session vs best fixed | ferry cost-objective s | cloud kernel-s remote / ferry / cost-objective | cost remote / ferry / cost-objective |\n")
	b.WriteString("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	type key struct{ s, n string }
	by := map[key]map[string]HybridRow{}
	var order []key
	for _, r := range rows {
		k := key{r.Setting, r.Notebook}
		if by[k] == nil {
			by[k] = map[string]HybridRow{}
			order = append(order, k)
		}
		by[k][r.Policy] = r
	}
	for _, k := range order {
		m := by[k]
		l, rm, p, f, or := m["local"].Seconds, m["remote"].Seconds, m["paper"].Seconds, m["ferry"].Seconds, m["oracle"].Seconds
		fc, fa := m["ferry-cost"], m["ferry-again"].Seconds
		fmt.Fprintf(&b, "| %s | %s | %.2f | %.2f | %.2f | %.2f | %.2f | %.2fx faster | %+.1f%% | %+.1f%% | %.1f | %s | %.0f%% | %.2f | %+.1f%% | %.2f | %.0f / %.0f / %.0f | $%.4f / $%.4f / $%.4f |\n",
			k.s, k.n, l, rm, p, f, or, l/f, 100*(f-or)/or, 100*(f-min(l, rm))/min(l, rm), float64(m["ferry"].BytesMoved)/1e6, reduction(m["ferry"]), 100*m["ferry"].HiddenShare,
			fa, 100*(fa-min(l, rm))/min(l, rm), fc.Seconds, m["remote"].CloudSeconds, m["ferry"].CloudSeconds, fc.CloudSeconds, m["remote"].CloudCost, m["ferry"].CloudCost, fc.CloudCost)
	}
	fmt.Fprint(out, b.String())
	if mdPath != "" {
		if err := os.WriteFile(mdPath, []byte(b.String()), 0o644); err != nil {
			return err
		}
	}
	if jsonPath != "" {
		js, _ := json.MarshalIndent(rows, "", "  ")
		if err := os.WriteFile(jsonPath, append(js, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}
