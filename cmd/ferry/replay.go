package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/ferry-nb/ferry/internal/location"
	"github.com/ferry-nb/ferry/internal/policy"
	"github.com/ferry-nb/ferry/internal/report"
	"github.com/ferry-nb/ferry/internal/trace"
)

func runReplay(ctx context.Context, args []string) error {
	fs := newFlags("replay")
	pol := fs.String("policy", "all", "policy to re-cost under: "+joinNames()+", oracle, recorded (the trace's own placement), or all")
	bw := fs.String("bandwidth", "100Mbit", "link rate, e.g. 1Gbit, 100Mbit, 20Mbit, 50MB/s; per cloud as gpu=20Mbit,cpu=1Gbit")
	rtt := fs.String("rtt", "20ms", "link round-trip time; per cloud as gpu=80ms,cpu=5ms")
	speed := fs.String("remote-speed", "", "how many times faster the remote runs cells, e.g. 4x, or per cloud gpu=12x,cpu=3x (default: as measured in the trace)")
	cloudNames := fs.String("clouds", "", "re-cost over these clouds too, e.g. gpu,cpu (default: the clouds the trace ran cells at, else one called remote)")
	asJSON := fs.Bool("json", false, "print a JSON list instead of a table")
	calibrate := fs.Bool("calibrate", false, "estimate the link (per-move cost, bandwidth) from the trace's own transfers")
	seed := fs.Int64("seed", 1, "seed for the random policy")
	price := fs.String("cloud-price", "", "what a cloud kernel costs per hour, in USD (e.g. 2.48, or per cloud gpu=2.48,cpu=0.19): adds its cost")
	idle := fs.String("cloud-idle", "", "re-cost with idle release after this long with no cloud cell (e.g. 15m; default: the kernel is kept to the end)")
	thinkScale := fs.Float64("think-scale", 1, "multiply the recorded think times (e.g. 60: a session recorded with seconds of thought re-costed as one with minutes, for --cloud-idle)")
	start := fs.String("cloud-start", "", "what starting a cloud kernel takes (e.g. 20s): each start waits for it and the policy prices it (default: as the trace's cells waited, else 0s)")
	objective := fs.String("objective", "", "what ferry minimises and the oracle optimises: time (default), balanced or cost")
	remembered := fs.Bool("remembered", false, "re-cost the session as its second: each cell's laptop runtime is recalled from an earlier run (the trace's own) before it first runs")
	noWarm := fs.Bool("no-warm", false, "re-cost ferry without starting a cold cloud kernel in think time before the cell expected there (to see what that gains)")
	paths, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(paths) != 1 {
		return errors.New("give exactly one trace: ferry replay TRACE.jsonl [--policy P]")
	}
	evs, err := trace.ReadFile(paths[0])
	if err != nil {
		return err
	}
	if *thinkScale <= 0 || *thinkScale > 1e6 {
		return fmt.Errorf("--think-scale %g: want a positive factor, e.g. 60", *thinkScale)
	}
	for i := range evs {
		evs[i].Think *= *thinkScale
	}
	clouds, err := replayClouds(evs, *cloudNames)
	if err != nil {
		return err
	}
	s, err := replaySettings(clouds, *bw, *rtt, *speed, *price)
	if err != nil {
		return err
	}
	if *calibrate {
		if len(clouds) > 1 {
			return fmt.Errorf("--calibrate estimates one link from the trace's transfers, and this replay has %d clouds (%s); give each its --bandwidth and --rtt instead", len(clouds), clouds)
		}
		s.Link = policy.Calibrate(evs, s.Link)
	}
	ci, err := parseCloudIdle(*idle)
	if err != nil {
		return err
	}
	s.CloudIdle = ci.Seconds()
	if s.Objective, err = policy.ParseObjective(*objective); err != nil {
		return err
	}
	if *start == "" {
		s.CloudStart = policy.RecordedStart(evs)
	} else {
		cs, err := time.ParseDuration(*start)
		if err != nil || cs < 0 {
			return fmt.Errorf("--cloud-start %q: want how long a cloud kernel takes to start, e.g. 20s", *start)
		}
		s.CloudStart = cs.Seconds()
	}
	s.NoWarm = *noWarm
	s.Remembered = *remembered
	var results []policy.Result
	if *pol == "all" {
		results = policy.ReplayAll(evs, s, *seed)
	} else {
		r, err := policy.ByName(evs, *pol, s, *seed)
		if err != nil {
			return err
		}
		results = []policy.Result{r}
	}
	if *asJSON {
		for i := range results {
			results[i].Placement = nil
		}
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(results)
	}
	fmt.Printf("%s: %d executions, link %s / %s, remote speed %s", paths[0], len(evs), *bw, *rtt, orDefaultStr(*speed, "as measured"))
	if len(clouds) > 1 {
		fmt.Printf(", clouds %s", clouds)
	}
	fmt.Println()
	priced := s.CloudPrice
	for _, c := range s.Clouds {
		priced = max(priced, c.Price)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "policy\tseconds\twall s\tbytes moved\tmigrations\tremote cells\tcloud kernel s\tcloud cost\tstarts (in think time)\tdecide µs/cell\t")
	for _, r := range results {
		fmt.Fprintf(tw, "%s\t%.2f\t%.2f\t%s\t%d\t%d\t%.1f\t%s\t%d (%d)\t%.1f\t\n", r.Policy, r.Seconds, r.WallSeconds, report.HumanBytes(r.BytesMoved), r.Migrations, r.CellsRemote,
			r.CloudKernelSeconds, usd(r.CloudCost, priced), r.CloudStarts, r.CloudWarmStarts, r.DecideMicros)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if n := len(evs); n > 0 && evs[n-1].CloudSeconds > 0 {
		// What the recorded run was billed, as its kernel measured it
		// (start-up and shutdown included), beside the re-costed figures.
		fmt.Printf("the recorded run's cloud kernels existed %.1f s by its last cell%s\n", evs[n-1].CloudSeconds, costNote(evs[n-1].CloudSeconds, s.CloudPrice))
	}
	return nil
}

// replayClouds are the clouds a replay places cells at (policy.Locations):
// those the trace ran cells at and those --clouds names.
func replayClouds(evs []trace.Event, names string) (location.Set, error) {
	var named []location.Location
	for _, n := range splitList(names) {
		if !location.IsCloudName(n) {
			return nil, fmt.Errorf("--clouds %s: %q is not a cloud name; use lower-case letters, digits, - or _ (not \"local\"), e.g. --clouds gpu,cpu", names, n)
		}
		named = append(named, location.Location(n))
	}
	return policy.Locations(evs, named...).Clouds(), nil
}

// replaySettings reads the flags that describe the clouds, each one value
// for all or NAME=VALUE per cloud, as ferry run reads them.
func replaySettings(clouds location.Set, bw, rtt, speed, price string) (policy.Settings, error) {
	f, err := parseCloudFlags(clouds, "name them with --clouds gpu,cpu or record them in the trace", bw, rtt, speed, price)
	if err != nil {
		return policy.Settings{}, err
	}
	s := policy.Settings{Link: f.Link, RemoteSpeed: f.Speed, CloudPrice: f.Price}
	if len(clouds) == 1 && clouds[0] == location.Remote && !f.perCloudGiven() {
		return s, nil // the laptop and the default cloud
	}
	s.Clouds = map[location.Location]policy.CloudSettings{}
	for _, c := range clouds {
		b, r, sp, pr := f.of(c)
		cs := policy.CloudSettings{Speed: sp, Price: pr}
		if b > 0 || r > 0 {
			cs.Link = s.Link
			if b > 0 {
				cs.Link.Bandwidth = b
			}
			if r > 0 {
				cs.Link.RTT = r
			}
		}
		s.Clouds[c] = cs
	}
	return s, nil
}

func joinNames() string {
	s := ""
	for i, n := range policy.Names {
		if i > 0 {
			s += ", "
		}
		s += n
	}
	return s
}

func orDefaultStr(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// usd is a cost for the table: "-" without a price.
func usd(cost, price float64) string {
	if price <= 0 {
		return "-"
	}
	return fmt.Sprintf("$%.4f", cost)
}

// costNote is " ($0.0123 at $2.48/h)", or "" without a price.
func costNote(seconds, price float64) string {
	if price <= 0 {
		return ""
	}
	return fmt.Sprintf(" ($%.4f at $%g/h)", seconds*price/3600, price)
}
