// Package location names the places cells run. A Location is a value, not
// a string to compare against "local" or "remote": the laptop is one
// location, each configured cloud another. This package is the one place
// that knows which locations exist by default; everything else iterates
// over the configured set (Set) and never assumes there are exactly two.
package location

import (
	"fmt"
	"regexp"
	"slices"
)

// Location identifies one place cells run: the laptop, or a named cloud.
// Its string form is what traces, the summary JSON and %ferry status show.
type Location string

const (
	// Local is the user's own machine: where the notebook's files and the
	// user's copy of every value live. There is exactly one.
	Local Location = "local"
	// Remote is the default cloud (the one --remote configures).
	Remote Location = "remote"
)

// String returns the location's name.
func (l Location) String() string { return string(l) }

// IsLocal reports whether l is the laptop.
func (l Location) IsLocal() bool { return l == Local }

// Describe is the location as a user reads it: "the laptop", "the cloud",
// or "the cloud gpu" for a named one.
func (l Location) Describe() string {
	switch l {
	case Local:
		return "the laptop"
	case Remote:
		return "the cloud"
	case "":
		return "nowhere"
	}
	return "the cloud " + string(l)
}

// cloudName is what a cloud may be called: short, lower case, usable in
// %%ferry NAME and as an environment variable's suffix.
var cloudName = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,31}$`)

// IsCloudName reports whether s may name a cloud (--remote NAME=URL, a
// trace's "loc"): lower-case letters, digits, - and _, a letter first, at
// most 32 characters, and not the laptop's name.
func IsCloudName(s string) bool { return s != string(Local) && cloudName.MatchString(s) }

// Parse checks a location name given by a user (a %%ferry pin, a flag).
func Parse(s string, known Set) (Location, error) {
	l := Location(s)
	if known.Has(l) {
		return l, nil
	}
	return "", fmt.Errorf("unknown location %q; configured: %s", s, known)
}

// Set is the configured locations in a fixed order, the laptop first.
type Set []Location

// NewSet returns the set of locs with Local first and the rest sorted, so
// every iteration over locations is deterministic.
func NewSet(locs ...Location) Set {
	var clouds []Location
	hasLocal := false
	for _, l := range locs {
		if l == Local {
			hasLocal = true
		} else if !slices.Contains(clouds, l) {
			clouds = append(clouds, l)
		}
	}
	slices.Sort(clouds)
	out := Set{}
	if hasLocal {
		out = append(out, Local)
	}
	return append(out, clouds...)
}

// Has reports whether l is in the set.
func (s Set) Has(l Location) bool { return slices.Contains(s, l) }

// Clouds returns every location but the laptop.
func (s Set) Clouds() Set {
	var out Set
	for _, l := range s {
		if l != Local {
			out = append(out, l)
		}
	}
	return out
}

// Except returns the set without l.
func (s Set) Except(l Location) Set {
	var out Set
	for _, x := range s {
		if x != l {
			out = append(out, x)
		}
	}
	return out
}

func (s Set) String() string {
	out := ""
	for i, l := range s {
		if i > 0 {
			out += ", "
		}
		out += string(l)
	}
	return out
}
