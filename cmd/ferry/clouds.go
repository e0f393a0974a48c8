package main

import (
	"fmt"
	"os"
	"regexp"
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

// cloudName is what a cloud may be called: short, lower case, usable in
// %%ferry NAME and as an environment variable's suffix.
var cloudName = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,31}$`)

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
			if !cloudName.MatchString(name) || name == string(location.Local) {
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
func perCloud[T any](flag, s string, clouds location.Set, parse func(string) (T, error)) (def T, per map[location.Location]T, err error) {
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
			return def, nil, fmt.Errorf("--%s %s: no cloud called %q (clouds: %s; name them with --remote NAME=URL)", flag, p, name, orNone(clouds))
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

// cloudSettings fills cfg's defaults and per-cloud settings from the
// flags that describe a cloud's speed, price and link.
func (b *backendFlags) cloudSettings(cfg *kernel.Config, clouds location.Set) error {
	var err error
	var bws, rtts, speeds, prices map[location.Location]float64
	if cfg.Link.Bandwidth, bws, err = perCloud("bandwidth", b.bandwidth, clouds, policy.ParseBandwidth); err != nil {
		return err
	}
	if cfg.Link.RTT, rtts, err = perCloud("rtt", b.rtt, clouds, policy.ParseRTT); err != nil {
		return err
	}
	cfg.Link.Compression = 1
	if cfg.RemoteSpeed, speeds, err = perCloud("remote-speed", b.remoteSpeed, clouds, policy.ParseSpeed); err != nil {
		return err
	}
	if cfg.CloudPrice, prices, err = perCloud("cloud-price", b.cloudPrice, clouds, parseCloudPrice); err != nil {
		return err
	}
	for _, loc := range clouds {
		c := kernel.CloudSettings{Speed: speeds[loc], Price: prices[loc]}
		if bw, rtt := bws[loc], rtts[loc]; bw > 0 || rtt > 0 {
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
