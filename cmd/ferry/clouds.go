package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/ferry-nb/ferry/internal/kernel"
	"github.com/ferry-nb/ferry/internal/location"
	"github.com/ferry-nb/ferry/internal/policy"
)

// Several clouds (issue 18): --remote is repeatable, each a URL for the
// default cloud ("remote") or NAME=URL for a named one, and the flags that
// describe a cloud take one value for all or NAME=VALUE per cloud:
//
//	ferry run nb.ipynb --remote gpu=https://gpu.example/ --remote cpu=https://cpu.example/ \
//	    --remote-speed gpu=12x,cpu=3x --cloud-price gpu=2.48,cpu=0.19 --rtt gpu=80ms,cpu=5ms
//
// Each named cloud's token is FERRY_TOKEN_NAME (upper case, - as _) if
// set, else the shared FERRY_TOKEN or --token-file.

// cloudSpec is one --remote: where a cloud is and what it is called.
type cloudSpec struct {
	Loc location.Location
	URL string
}

// remoteList is the repeatable --remote flag. Its default (FERRY_REMOTE,
// the config file) is a comma-separated list in the same form; a --remote
// on the command line replaces the default rather than adding to it.
type remoteList struct {
	specs []string
	set   bool
}

func newRemoteList(def string) *remoteList { return &remoteList{specs: splitList(def)} }

func (r *remoteList) String() string {
	if r == nil {
		return ""
	}
	return strings.Join(r.specs, ",")
}

func (r *remoteList) Set(v string) error {
	if !r.set {
		r.specs, r.set = nil, true
	}
	r.specs = append(r.specs, splitList(v)...)
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// splitNamed splits "NAME=VALUE"; ok is false for a bare value (a URL's
// own "=" comes after its "://", so a name never holds ':' or '/').
func splitNamed(s string) (name, value string, ok bool) {
	name, value, ok = strings.Cut(s, "=")
	if !ok || strings.ContainsAny(name, ":/") {
		return "", s, false
	}
	return strings.TrimSpace(name), strings.TrimSpace(value), true
}

// parseRemotes reads the --remote values into clouds, checking names.
func parseRemotes(specs []string) ([]cloudSpec, error) {
	var out []cloudSpec
	seen := map[location.Location]bool{}
	for _, s := range specs {
		name, url, named := splitNamed(s)
		loc := location.Remote
		if named {
			if !location.IsCloudName(name) {
				return nil, fmt.Errorf("--remote %s: %q is not a cloud name; use lower-case letters, digits, - or _ (not \"local\"), e.g. --remote gpu=https://…", s, name)
			}
			loc = location.Location(name)
		}
		if url == "" {
			return nil, fmt.Errorf("--remote %s: no URL; want --remote URL or --remote NAME=URL", s)
		}
		if seen[loc] {
			if !named {
				return nil, fmt.Errorf("--remote given twice without names; name each cloud: --remote gpu=URL --remote cpu=URL")
			}
			return nil, fmt.Errorf("--remote: two clouds called %q; give each its own name", loc)
		}
		seen[loc] = true
		out = append(out, cloudSpec{Loc: loc, URL: url})
	}
	return out, nil
}

// perCloud reads a flag that takes one value for every cloud or
// NAME=VALUE per cloud ("4x", "gpu=12x,cpu=3x", or "2x,gpu=12x": a
// default and an override). Names must be configured clouds.
// hint says how a cloud is named where the flag was given.
func perCloud[T any](flag, s string, clouds location.Set, hint string, parse func(string) (T, error)) (def T, per map[location.Location]T, err error) {
	for _, p := range splitList(s) {
		name, v, named := splitNamed(p)
		x, err := parse(v)
		if err != nil {
			return def, nil, err
		}
		if !named {
			def = x
			continue
		}
		loc := location.Location(name)
		if loc == location.Local || !clouds.Has(loc) {
			return def, nil, fmt.Errorf("--%s %s: no cloud called %q (clouds: %s; %s)", flag, p, name, orNone(clouds), hint)
		}
		if per == nil {
			per = map[location.Location]T{}
		}
		per[loc] = x
	}
	return def, per, nil
}

func orNone(s location.Set) string {
	if len(s) == 0 {
		return "none"
	}
	return s.String()
}

// nameByRemote is how ferry run and kernel name a cloud, for errors.
const nameByRemote = "name them with --remote NAME=URL"

// cloudFlags are what --bandwidth, --rtt, --remote-speed and
// --cloud-price say: one value for every cloud (Link, Speed, Price) and
// each named cloud's own.
type cloudFlags struct {
	Link                  policy.Link
	Speed, Price          float64
	bw, rtt, speed, price map[location.Location]float64
}

// parseCloudFlags reads those four flags over clouds; hint says how a
// cloud is named where they were given.
func parseCloudFlags(clouds location.Set, hint, bw, rtt, speed, price string) (cloudFlags, error) {
	var f cloudFlags
	var err error
	if f.Link.Bandwidth, f.bw, err = perCloud("bandwidth", bw, clouds, hint, policy.ParseBandwidth); err != nil {
		return f, err
	}
	if f.Link.RTT, f.rtt, err = perCloud("rtt", rtt, clouds, hint, policy.ParseRTT); err != nil {
		return f, err
	}
	f.Link.Compression = 1
	if f.Speed, f.speed, err = perCloud("remote-speed", speed, clouds, hint, policy.ParseSpeed); err != nil {
		return f, err
	}
	if f.Price, f.price, err = perCloud("cloud-price", price, clouds, hint, parseCloudPrice); err != nil {
		return f, err
	}
	return f, nil
}

// of is cloud c's own values, zero where the flags gave it none.
func (f cloudFlags) of(c location.Location) (bw, rtt, speed, price float64) {
	return f.bw[c], f.rtt[c], f.speed[c], f.price[c]
}

// perCloudGiven reports whether any cloud was given a value of its own.
func (f cloudFlags) perCloudGiven() bool {
	return len(f.bw)+len(f.rtt)+len(f.speed)+len(f.price) > 0
}

// cloudSettings fills cfg's defaults and per-cloud settings from the
// flags that describe a cloud's speed, price and link.
func (b *backendFlags) cloudSettings(cfg *kernel.Config, clouds location.Set) error {
	f, err := parseCloudFlags(clouds, nameByRemote, b.bandwidth, b.rtt, b.remoteSpeed, b.cloudPrice)
	if err != nil {
		return err
	}
	cfg.Link, cfg.RemoteSpeed, cfg.CloudPrice = f.Link, f.Speed, f.Price
	for _, loc := range clouds {
		bw, rtt, speed, price := f.of(loc)
		c := kernel.CloudSettings{Speed: speed, Price: price}
		if bw > 0 || rtt > 0 {
			c.Link = policy.Link{Bandwidth: bw, RTT: rtt}
		}
		if c != (kernel.CloudSettings{}) {
			if cfg.Clouds == nil {
				cfg.Clouds = map[location.Location]kernel.CloudSettings{}
			}
			cfg.Clouds[loc] = c
		}
	}
	return nil
}

// tokenEnv is the environment variable holding a named cloud's token.
func tokenEnv(loc location.Location) string {
	return "FERRY_TOKEN_" + strings.ToUpper(strings.ReplaceAll(string(loc), "-", "_"))
}

// readCloudToken is loc's token: its own FERRY_TOKEN_NAME, else the shared
// FERRY_TOKEN or token file. Never from argv.
func readCloudToken(loc location.Location, file string) (string, error) {
	if loc != location.Remote {
		if t := strings.TrimSpace(os.Getenv(tokenEnv(loc))); t != "" {
			return t, nil
		}
	}
	return readToken(file)
}
