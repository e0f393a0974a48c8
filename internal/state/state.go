// Package state is Ferry's map of the notebook's variables: for each name,
// its version, which locations hold that version, its size and content
// hash, whether it can move, and which cell produced it. The kernel asks it
// what a cell needs brought where, and tells it what each cell changed.
package state

import (
	"sort"
	"strings"
	"sync"

	"github.com/ferry-nb/ferry/internal/agent"
	"github.com/ferry-nb/ferry/internal/location"
)

// isFile tells a file's pseudo-name (files.Name) from a variable's.
func isFile(n string) bool { return strings.HasPrefix(n, agent.FilePrefix) }

// Var is one variable of the user's namespace.
type Var struct {
	Name    string
	Version int
	// At holds the locations with the newest version.
	At   map[location.Location]bool
	Size int64
	Hash string
	// Movable is false for generators, open files, sockets …; Reason says
	// why, and the cells that read it are pinned to where it lives.
	Movable bool
	Reason  string
	// Kind is a short type name for %ferry status.
	Kind string
	// Producer is the code hash of the cell that wrote this version.
	Producer string
	// Group names an alias group: names sharing objects move together.
	Group string
	// Uses are the globals a function or class reads when called, so a
	// cell calling it needs them too.
	Uses []string
	// Needs is the top-level module the value's type comes from (sklearn
	// for a fitted model): the target must have it, at the same version,
	// to load the value faithfully.
	Needs string
	// Ratio is the agent's estimate of the share of the value's bytes a
	// move sends (0 if none): planning prices the move by it.
	Ratio float64
}

// Locations returns the holders, sorted.
func (v *Var) Locations() []location.Location {
	out := make([]location.Location, 0, len(v.At))
	for l := range v.At {
		out = append(out, l)
	}
	return location.NewSet(out...)
}

// Map is the state map. It is safe for concurrent use.
type Map struct {
	mu   sync.Mutex
	vars map[string]*Var
	// gone[loc] are names deleted in the newest state that loc still holds
	// an old value of; they are deleted there before a cell runs there.
	gone map[location.Location]map[string]bool
}

// New returns an empty map.
func New() *Map {
	return &Map{vars: map[string]*Var{}, gone: map[location.Location]map[string]bool{}}
}

// Get returns a copy of a variable.
func (m *Map) Get(name string) (Var, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.vars[name]
	if !ok {
		return Var{}, false
	}
	c := *v
	c.At = make(map[location.Location]bool, len(v.At))
	for l := range v.At {
		c.At[l] = true
	}
	return c, true
}

// Names lists every known name, sorted.
func (m *Map) Names() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]string, 0, len(m.vars))
	for n := range m.vars {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// List returns copies of all variables, sorted by name.
func (m *Map) List() []Var {
	var out []Var
	for _, n := range m.Names() {
		if v, ok := m.Get(n); ok {
			out = append(out, v)
		}
	}
	return out
}

// AnyName among a function's or class's Uses says that calling it may
// touch any name (eval, exec or globals() in its body).
const AnyName = "*"

// UsesAnyName reports whether a name in names, or a global its code uses
// (transitively), may touch any name when called: a cell calling a
// notebook function that evaluates strings is as dynamic as one that does
// so itself.
func (m *Map) UsesAnyName(names []string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	seen := map[string]bool{}
	queue := append([]string(nil), names...)
	for len(queue) > 0 {
		n := queue[0]
		queue = queue[1:]
		if n == AnyName {
			return true
		}
		v, ok := m.vars[n]
		if !ok || seen[n] {
			continue
		}
		seen[n] = true
		queue = append(queue, v.Uses...)
	}
	return false
}

// Needs expands the names a cell reads to everything that must be at its
// location: the names themselves, the globals of notebook functions they
// call (transitively), and the members of their alias groups.
func (m *Map) Needs(reads []string) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	need := map[string]bool{}
	queue := append([]string(nil), reads...)
	for len(queue) > 0 {
		n := queue[0]
		queue = queue[1:]
		v, ok := m.vars[n]
		if !ok || need[n] {
			continue
		}
		need[n] = true
		queue = append(queue, v.Uses...)
		if v.Group != "" {
			for _, o := range m.vars {
				if o.Group == v.Group && !need[o.Name] {
					queue = append(queue, o.Name)
				}
			}
		}
	}
	out := make([]string, 0, len(need))
	for n := range need {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Stale returns, among names, those whose newest version is not at loc,
// grouped by a location that holds them (the laptop preferred as the
// source, as it is where the user's copy lives).
func (m *Map) Stale(loc location.Location, names []string) map[location.Location][]string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[location.Location][]string{}
	for _, n := range names {
		v, ok := m.vars[n]
		if !ok || v.At[loc] || len(v.At) == 0 {
			continue
		}
		src := location.Local
		if !v.At[src] {
			src = v.Locations()[0]
		}
		out[src] = append(out[src], n)
	}
	return out
}

// Pinned returns the location holding an unmovable variable among names,
// the names that pin it, and whether there is one. Two unmovable values at
// different places cannot be served; the first location wins and the cell
// sees a NameError-free but stale view only if analysis missed a read.
func (m *Map) Pinned(names []string) (loc location.Location, why []string, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, n := range names {
		v, found := m.vars[n]
		if !found || v.Movable || len(v.At) == 0 {
			continue
		}
		l := v.Locations()[0]
		if loc == "" {
			loc = l
		}
		if l == loc {
			why = append(why, n+" ("+v.Reason+")")
		}
	}
	return loc, why, loc != ""
}

// Size is the total size of names.
func (m *Map) Size(names []string) int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	var s int64
	for _, n := range names {
		if v, ok := m.vars[n]; ok {
			s += v.Size
		}
	}
	return s
}

// Arrived records that names now also live at loc, at the versions given
// (a copy made before a newer write does not count).
func (m *Map) Arrived(loc location.Location, versions map[string]int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for n, ver := range versions {
		if v, ok := m.vars[n]; ok && v.Version == ver {
			v.At[loc] = true
		}
	}
}

// Versions returns the current versions of names.
func (m *Map) Versions(names []string) map[string]int {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]int{}
	for _, n := range names {
		if v, ok := m.vars[n]; ok {
			out[n] = v.Version
		}
	}
	return out
}

// Change is what a cell did to one name, as the agent reports it.
type Change struct {
	Size    int64
	Hash    string
	Movable bool
	Reason  string
	Kind    string
	Group   string
	Uses    []string
	Needs   string
	Ratio   float64
}

// Ran records a cell that ran at loc: changed names get a new version held
// only at loc; deleted names are gone (and will be deleted at the other
// locations before a cell runs there). It returns the versions written.
func (m *Map) Ran(loc location.Location, cell string, changed map[string]Change, deleted []string) map[string]int {
	m.mu.Lock()
	defer m.mu.Unlock()
	wrote := make(map[string]int, len(changed))
	for n, c := range changed {
		v, ok := m.vars[n]
		if !ok {
			v = &Var{Name: n}
			m.vars[n] = v
		}
		for l := range v.At {
			// The old copy there is stale; never read it. A stale file
			// stays on that disk until a cell there reads it, and then
			// the new version is brought: deleting the user's copy of a
			// file because a cloud cell rewrote it would lose it there.
			if l != loc && !isFile(n) {
				m.markGone(l, n)
			}
		}
		v.Version++
		v.At = map[location.Location]bool{loc: true}
		v.Size, v.Hash, v.Movable, v.Reason, v.Kind, v.Group, v.Uses, v.Needs, v.Ratio = c.Size, c.Hash, c.Movable, c.Reason, c.Kind, c.Group, c.Uses, c.Needs, c.Ratio
		v.Producer = cell
		delete(m.gone[loc], n)
		wrote[n] = v.Version
	}
	for _, n := range deleted {
		v, ok := m.vars[n]
		if !ok {
			continue
		}
		for l := range v.At {
			if l != loc {
				m.markGone(l, n)
			}
		}
		delete(m.vars, n)
		delete(m.gone[loc], n)
	}
	return wrote
}

// Lost forgets every copy held at loc (its kernel died). It returns the
// variables that now have no copy anywhere, as they were, for lineage to
// rebuild them.
func (m *Map) Lost(loc location.Location) []Var {
	m.mu.Lock()
	defer m.mu.Unlock()
	var lost []Var
	for n, v := range m.vars {
		if !v.At[loc] || (loc == location.Local && isFile(n)) {
			continue // files on the laptop's disk outlive its kernel
		}
		delete(v.At, loc)
		if len(v.At) == 0 {
			lost = append(lost, *v)
			delete(m.vars, n)
		}
	}
	delete(m.gone, loc)
	sort.Slice(lost, func(i, j int) bool { return lost[i].Name < lost[j].Name })
	return lost
}

// Have reports whether name's version ver exists at some location.
func (m *Map) Have(name string, ver int) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.vars[name]
	return ok && v.Version == ver && len(v.At) > 0
}

// Restore puts back a lost variable, rebuilt at loc. A name bound again
// since it was lost keeps its newer value.
func (m *Map) Restore(v Var, loc location.Location) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.vars[v.Name]; ok {
		return false
	}
	v.At = map[location.Location]bool{loc: true}
	m.vars[v.Name] = &v
	delete(m.gone[loc], v.Name)
	return true
}

// Drop records that loc's copies of names are not the newest any more (a
// replay overwrote them), so they are brought again before being read
// there. It never drops a last copy.
func (m *Map) Drop(loc location.Location, names []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, n := range names {
		if v, ok := m.vars[n]; ok && v.At[loc] && len(v.At) > 1 {
			delete(v.At, loc)
		}
	}
}

func (m *Map) markGone(loc location.Location, name string) {
	if m.gone[loc] == nil {
		m.gone[loc] = map[string]bool{}
	}
	m.gone[loc][name] = true
}

// Gone returns the names to delete at loc before a cell runs there, and
// clears them (the caller deletes them).
func (m *Map) Gone(loc location.Location) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for n := range m.gone[loc] {
		if v, ok := m.vars[n]; ok && v.At[loc] {
			continue
		}
		out = append(out, n)
	}
	delete(m.gone, loc)
	sort.Strings(out)
	return out
}

// SetUnmovable records that name cannot be serialised, so cells reading it
// are pinned to where it lives.
func (m *Map) SetUnmovable(name, why string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if v, ok := m.vars[name]; ok {
		v.Movable, v.Reason = false, why
	}
}

// SetHashes fills in content hashes the agent at loc computed after it
// reported their versions (with hash ""): only for a version loc holds
// and only where none is known, so a hash never lands on a version it
// was not computed from.
func (m *Map) SetHashes(loc location.Location, hashes map[string]string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for n, h := range hashes {
		if v, ok := m.vars[n]; ok && v.At[loc] && v.Hash == "" && h != "" {
			v.Hash = h
		}
	}
}

// Shared returns the names among names whose current version loc holds
// and another location too: for them a content hash after a cell at loc
// decides whether the other copy stays fresh.
func (m *Map) Shared(loc location.Location, names []string) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for _, n := range names {
		v, ok := m.vars[n]
		if !ok || !v.At[loc] {
			continue
		}
		for l := range v.At {
			if l != loc {
				out = append(out, n)
				break
			}
		}
	}
	return out
}
