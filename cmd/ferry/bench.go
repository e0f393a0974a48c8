package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/ferry-nb/ferry/internal/backend"
	"github.com/ferry-nb/ferry/internal/bench"
	"github.com/ferry-nb/ferry/internal/faults"
)

// benches are the `ferry bench` subcommands.
var benches = []struct {
	name, usage string
	run         func(ctx context.Context, args []string) error
}{
	{"overhead", "trivial and 1 MB-output cells, and whole notebooks, through Ferry vs straight to ipykernel", benchOverhead},
	{"remote", "trivial remote cell through Ferry vs a plain WebSocket client, and a large transfer's throughput", benchRemote},
	{"hybrid", "local, remote, paper, ferry and oracle on the emulated laptop/cloud test bed", benchHybrid},
	{"faults", "kernels killed, server restarted, link cut/stalled/slowed, interrupt, restart, OOM: values checked and lost", benchFaults},
	{"link", "a large move each way over the emulated rate-limited link: the share of the link's rate it reaches", benchLink},
	{"state", "bytes and time of Ferry's migrations vs full-session dill dumps, and serialisation throughput", benchState},
}

func runBench(ctx context.Context, args []string) error {
	if len(args) == 0 {
		var names []string
		for _, b := range benches {
			names = append(names, b.name)
		}
		return fmt.Errorf("name a benchmark: %s", strings.Join(names, ", "))
	}
	for _, b := range benches {
		if b.name == args[0] {
			return b.run(ctx, args[1:])
		}
	}
	return fmt.Errorf("unknown benchmark %q; run 'ferry bench' for the list", args[0])
}

func benchOverhead(ctx context.Context, args []string) error {
	fs := newFlags("bench overhead")
	python := fs.String("python", envOr("FERRY_PYTHON", backend.DefaultPython), "interpreter with ipykernel")
	rounds := fs.Int("rounds", 200, "measured round trips per cell and side")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the run (Ferry, the clients and the benchmark) to this file")
	nbDir := fs.String("notebooks", "bench/notebooks", "also run these whole notebooks both ways (\"\" to skip)")
	nbRounds := fs.Int("notebook-rounds", 3, "runs per notebook and side; the median is reported")
	arrays := fs.Bool("arrays", true, "also run the built-in array-heavy notebook (cells rebinding and mutating 40-80 MB arrays)")
	if err := parse(fs, args); err != nil {
		return err
	}
	var nbs []string
	if *nbDir != "" {
		var err error
		if nbs, err = filepath.Glob(filepath.Join(*nbDir, "*.ipynb")); err != nil || len(nbs) == 0 {
			return fmt.Errorf("no notebooks in %s; pass --notebooks DIR, or --notebooks '' to skip the whole-notebook figure", *nbDir)
		}
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	fmt.Printf("ferry bench overhead: %d interleaved rounds per cell\n", *rounds)
	if _, err := bench.Overhead(ctx, *python, *rounds, os.Stdout); err != nil {
		return err
	}
	var extra []bench.Named
	if *arrays {
		extra = append(extra, bench.ArrayNotebook())
	}
	if len(nbs)+len(extra) == 0 {
		return nil
	}
	fmt.Printf("\nall-local, fresh kernels, %d runs per notebook and side (start-up not timed)\n", *nbRounds)
	_, err := bench.NotebookOverhead(ctx, *python, nbs, extra, max(*nbRounds, 1), os.Stdout)
	return err
}

func benchFaults(ctx context.Context, args []string) error {
	fs := newFlags("bench faults")
	python := fs.String("python", envOr("FERRY_PYTHON", backend.DefaultPython), "interpreter with ipykernel and jupyter-server")
	only := fs.String("only", "", "run only the cases whose name contains this")
	md := fs.String("markdown", "", "also write the table as Markdown to this file")
	if err := parse(fs, args); err != nil {
		return err
	}
	fmt.Println("ferry bench faults: real ipykernels and a real jupyter-server behind a fault-injecting link")
	rs, err := faults.Run(ctx, faults.Options{Python: *python, Only: *only, Log: os.Stderr})
	table := faults.Markdown(rs)
	fmt.Print("\n" + table)
	if *md != "" {
		if werr := os.WriteFile(*md, []byte(table), 0o644); werr != nil && err == nil {
			err = werr
		}
	}
	if err != nil {
		return err
	}
	for _, r := range rs {
		if !r.Survived {
			return fmt.Errorf("%s did not survive: %s", r.Case, r.Note)
		}
	}
	return nil
}

func benchState(ctx context.Context, args []string) error {
	fs := newFlags("bench state")
	python := fs.String("python", envOr("FERRY_PYTHON", backend.DefaultPython), "interpreter with ipykernel")
	dir := fs.String("notebooks", "bench/notebooks", "directory of benchmark notebooks")
	gib := fs.Float64("array-gib", 1, "size of the array for the serialisation figure, in GiB (0 to skip)")
	if err := parse(fs, args); err != nil {
		return err
	}
	nbs, err := filepath.Glob(filepath.Join(*dir, "*.ipynb"))
	if err != nil || len(nbs) == 0 {
		return fmt.Errorf("no notebooks in %s; pass --notebooks DIR", *dir)
	}
	fmt.Println("ferry bench state: pingpong placement, a second local kernel as the remote, full-session dill dump at every migration")
	if _, err := bench.State(ctx, *python, nbs, os.Stdout); err != nil {
		return err
	}
	if *gib > 0 {
		return bench.Serialisation(ctx, *python, *gib, os.Stdout)
	}
	return nil
}

func benchRemote(ctx context.Context, args []string) error {
	fs := newFlags("bench remote")
	python := fs.String("python", envOr("FERRY_PYTHON", backend.DefaultPython), "interpreter with ipykernel and jupyter-server")
	rounds := fs.Int("rounds", 200, "measured round trips per side")
	mb := fs.Int("transfer-mb", 200, "size of the transfer for the throughput figure, in MB")
	if err := parse(fs, args); err != nil {
		return err
	}
	fmt.Printf("ferry bench remote: local jupyter-server on loopback, %d interleaved rounds\n", *rounds)
	return bench.Remote(ctx, *python, *rounds, *mb, os.Stdout)
}

func benchLink(ctx context.Context, args []string) error {
	fs := newFlags("bench link")
	python := fs.String("python", envOr("FERRY_PYTHON", backend.DefaultPython), "interpreter with ipykernel and jupyter-server")
	rate := fs.String("rate", "100mbit", "the link's rate (tc tbf)")
	rtt := fs.Duration("rtt", 20*time.Millisecond, "round trip added by the latency proxy")
	mb := fs.Int("mb", 100, "size of the moved array in MiB")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *mb <= 0 {
		return fmt.Errorf("--mb %d: want a positive size", *mb)
	}
	fmt.Printf("ferry bench link: %d MiB of random bytes each way over %s with %s round trip\n", *mb, *rate, *rtt)
	_, err := bench.LinkUse(ctx, *python, *rate, *rtt, *mb, os.Stdout)
	return err
}

func benchHybrid(ctx context.Context, args []string) error {
	fs := newFlags("bench hybrid")
	python := fs.String("python", envOr("FERRY_PYTHON", backend.DefaultPython), "interpreter with ipykernel and jupyter-server")
	sessions := fs.String("sessions", "bench/sessions", "directory of session scripts")
	only := fs.String("settings", "", "comma-separated subset of the link settings (default all: "+settingNames()+")")
	think := fs.Float64("think-scale", 0.3, "multiply the scripts' think times (they are waited for real)")
	repeat := fs.Int("repeat", 1, "run every policy but local this many times, interleaved, and report the median")
	md := fs.String("md", "bench/hybrid.md", "write the table as Markdown here")
	js := fs.String("json", "bench/hybrid.json", "write the rows as JSON here")
	nbs := fs.String("notebooks", "", "comma-separated subset of the session scripts by name (default all)")
	traces := fs.String("traces", "", "write every run's trace into this directory")
	price := fs.String("cloud-price", fmt.Sprint(bench.DefaultCloudPrice), "what the cloud kernel costs per hour in USD, for the cost column")
	data := fs.String("data", "", "folder for the data-on-laptop notebooks' files, made once (default the cache folder's ferry/bench-data)")
	if err := parse(fs, args); err != nil {
		return err
	}
	usd, err := parseCloudPrice(*price)
	if err != nil {
		return err
	}
	all, err := filepath.Glob(filepath.Join(*sessions, "*.json"))
	if err != nil || len(all) == 0 {
		return fmt.Errorf("no session scripts in %s; pass --sessions DIR", *sessions)
	}
	var paths []string
	for _, p := range all {
		if *nbs == "" || strings.Contains(","+*nbs+",", ","+strings.TrimSuffix(filepath.Base(p), ".json")+",") {
			paths = append(paths, p)
		}
	}
	if len(paths) == 0 {
		return fmt.Errorf("no session script matches %q in %s", *nbs, *sessions)
	}
	if *traces != "" {
		if err := os.MkdirAll(*traces, 0o755); err != nil {
			return fmt.Errorf("creating the traces directory: %w", err)
		}
	}
	var settings []bench.LinkSetting
	for _, st := range bench.DefaultSettings {
		if *only == "" || strings.Contains(","+*only+",", ","+st.Name+",") {
			settings = append(settings, st)
		}
	}
	if len(settings) == 0 {
		return fmt.Errorf("no link setting matches %q; choose from %s", *only, settingNames())
	}
	rows, err := bench.Hybrid(ctx, bench.HybridOptions{Python: *python, Sessions: paths, Settings: settings, ThinkScale: *think, Repeat: *repeat, Traces: *traces, CloudPrice: usd, DataDir: *data, Out: os.Stdout, Progress: os.Stderr})
	if len(rows) > 0 {
		if werr := bench.WriteHybrid(rows, *md, *js, os.Stdout); werr != nil && err == nil {
			err = werr
		}
	}
	return err
}

func settingNames() string {
	var n []string
	for _, st := range bench.DefaultSettings {
		n = append(n, st.Name)
	}
	return strings.Join(n, ",")
}
