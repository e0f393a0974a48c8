package state

import (
	"fmt"
	"github.com/ferry-nb/ferry/internal/location"
	"sort"
	"strings"
	"sync"
)

// Run is one cell execution as lineage sees it: the code that ran, the
// versions of the names it read, and the versions it wrote.
type Run struct {
	// Cell is the cell's key in the cost model, for runtime estimates.
	Cell   string
	Code   string
	Loc    location.Location
	Reads  map[string]int
	Writes map[string]int
	// Failed cells are replayed too (they may bind names before raising),
	// and their error on replay is expected.
	Failed bool
	// Effects are what the cell did outside its namespace that a re-run
	// would do again (files written, network, subprocesses): such a run
	// is never replayed behind the user's back.
	Effects []string
}

// Lineage is the log of the cells that produced the state, so a value whose
// only copy died with its kernel can be rebuilt by re-running the cells
// that made it (ElasticNotebook's recomputation, applied to recovery).
// It is safe for concurrent use.
type Lineage struct {
	mu   sync.Mutex
	runs []Run
	max  int
}

// NewLineage keeps the newest max runs (0: 5000). Older values are then
// not rebuildable, which Plan reports.
func NewLineage(max int) *Lineage {
	if max <= 0 {
		max = 5000
	}
	return &Lineage{max: max}
}

// Add records a run that wrote something (runs that wrote nothing cannot
// help rebuild anything).
func (l *Lineage) Add(r Run) {
	if len(r.Writes) == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.runs = append(l.runs, r)
	if len(l.runs) > l.max {
		l.runs = append([]Run(nil), l.runs[len(l.runs)-l.max:]...)
	}
}

// Step is one run to replay.
type Step struct {
	Run
	// Inputs are the surviving names (at their current versions) the run
	// reads: they must be at the rebuild location when it runs.
	Inputs []string
}

// Plan is how to rebuild lost values.
type Plan struct {
	// Steps are the runs to replay, oldest first.
	Steps []Step
	// Rebuilt are the lost names the plan restores.
	Rebuilt []string
	// Missing says, per lost name that cannot be rebuilt, why.
	Missing map[string]string
}

// Plan finds the runs to replay to rebuild lost (name → version), given
// which values still exist somewhere: have(name, version). Each lost name
// is planned on its own, so one unrebuildable value does not stop the
// others; the steps are then merged in log order.
func (l *Lineage) Plan(lost map[string]int, have func(name string, version int) bool) Plan {
	l.mu.Lock()
	runs := append([]Run(nil), l.runs...)
	l.mu.Unlock()
	p := Plan{Missing: map[string]string{}}
	steps := map[int]bool{}
	names := make([]string, 0, len(lost))
	for n := range lost {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		st, why := planOne(runs, name, lost[name], have)
		if why != "" {
			p.Missing[name] = why
			continue
		}
		p.Rebuilt = append(p.Rebuilt, name)
		for i := range st {
			steps[i] = true
		}
	}
	idx := make([]int, 0, len(steps))
	for i := range steps {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	for _, i := range idx {
		st := Step{Run: runs[i]}
		for n, v := range runs[i].Reads {
			if have(n, v) {
				st.Inputs = append(st.Inputs, n)
			}
		}
		sort.Strings(st.Inputs)
		p.Steps = append(p.Steps, st)
	}
	return p
}

type value struct {
	name string
	ver  int
}

// planOne walks the log backwards from the newest run: a run that wrote a
// needed value is replayed, and what it read is either available (an
// input) or needed in turn.
func planOne(runs []Run, name string, ver int, have func(string, int) bool) (map[int]bool, string) {
	need := map[value]bool{{name, ver}: true}
	steps := map[int]bool{}
	for i := len(runs) - 1; i >= 0 && len(need) > 0; i-- {
		r := runs[i]
		wrote := false
		for n, v := range r.Writes {
			if need[value{n, v}] {
				delete(need, value{n, v})
				wrote = true
			}
		}
		if !wrote {
			continue
		}
		if len(r.Effects) > 0 {
			return nil, fmt.Sprintf("the cell that made it (%s) has side effects (%s), so Ferry does not run it again behind your back", FirstLine(r.Code), r.Effects[0])
		}
		steps[i] = true
		for n, v := range r.Reads {
			if !have(n, v) {
				need[value{n, v}] = true
			}
		}
	}
	if len(need) > 0 {
		var miss []string
		for v := range need {
			if v.name == name && v.ver == ver {
				return nil, "no record of the cell that made it"
			}
			miss = append(miss, v.name)
		}
		sort.Strings(miss)
		return nil, fmt.Sprintf("it needs %s, which no longer exist%s", strings.Join(miss, ", "), verbS(len(miss)))
	}
	return steps, ""
}

// FirstLine is a cell's first line, shortened, for messages.
func FirstLine(code string) string {
	line, _, more := strings.Cut(strings.TrimSpace(code), "\n")
	if len(line) > 60 {
		line, more = line[:60], true
	}
	if more {
		line += " …"
	}
	return line
}

// verbS is a present-tense verb's ending for n subjects ("it exists",
// "they exist").
func verbS(n int) string {
	if n == 1 {
		return "s"
	}
	return ""
}
