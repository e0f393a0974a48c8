package state

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/ferry-nb/ferry/internal/location"
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
	// Count is the execution count the front end showed (In [Count]),
	// 0 if the cell was not counted; messages name the cell by it.
	Count int
	// A run that raised (Failed), was interrupted, or read input from the
	// user (Stdin) is never replayed behind the user's back: its values
	// are of a run that did not finish as written, an interrupted cell may
	// have run for minutes, and a replay cannot ask the user again. What
	// such a run made is lost with its kernel, and the user is told which
	// cell to run again.
	Failed, Interrupted, Stdin bool
	// Effects are what the cell did outside its namespace that a re-run
	// would do again (files written, network, subprocesses): such a run
	// is never replayed behind the user's back.
	Effects []string
}

// Unreplayable says why the run must not be re-run hidden, as the end of
// a sentence about it ("… has side effects (…)"), or "" if it may be.
func (r Run) Unreplayable() string {
	switch {
	case len(r.Effects) > 0:
		return fmt.Sprintf("has side effects (%s), so Ferry does not run it again behind your back", r.Effects[0])
	case r.Interrupted:
		return "was interrupted"
	case r.Stdin:
		return "read input from you"
	case r.Failed:
		return "raised an error"
	}
	return ""
}

// Describe names the run's cell with its first line: "In [3]: df = load()".
func (r Run) Describe() string {
	if r.Count > 0 {
		return fmt.Sprintf("In [%d]: %s", r.Count, FirstLine(r.Code))
	}
	return FirstLine(r.Code)
}

// Ref names the run's cell for a user: "In [3]" when it was counted,
// else its first line in quotes.
func (r Run) Ref() string {
	if r.Count > 0 {
		return fmt.Sprintf("In [%d]", r.Count)
	}
	return strconv.Quote(FirstLine(r.Code))
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
	// Redo lists, per missing name whose cells are known, the runs the
	// user would run again to make it (oldest first): the run that may not
	// be replayed and those after it that lead to the name.
	Redo map[string][]Run
}

// Plan finds the runs to replay to rebuild lost (name → version), given
// which values still exist somewhere: have(name, version). Each lost name
// is planned on its own, so one unrebuildable value does not stop the
// others; the steps are then merged in log order.
func (l *Lineage) Plan(lost map[string]int, have func(name string, version int) bool) Plan {
	l.mu.Lock()
	runs := append([]Run(nil), l.runs...)
	l.mu.Unlock()
	p := Plan{Missing: map[string]string{}, Redo: map[string][]Run{}}
	steps := map[int]bool{}
	names := make([]string, 0, len(lost))
	for n := range lost {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		st, why, redo := planOne(runs, name, lost[name], have)
		if why != "" {
			p.Missing[name] = why
			if len(redo) > 0 {
				p.Redo[name] = redo
			}
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
// input) or needed in turn. A run that may not be replayed stops the
// walk; redo is then it and the runs found after it, for the user.
func planOne(runs []Run, name string, ver int, have func(string, int) bool) (steps map[int]bool, why string, redo []Run) {
	need := map[value]bool{{name, ver}: true}
	steps = map[int]bool{}
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
		if why := r.Unreplayable(); why != "" {
			redo = append(redo, r)
			for j := i + 1; j < len(runs); j++ {
				if steps[j] {
					redo = append(redo, runs[j])
				}
			}
			what := "the cell that made it"
			if r.Writes[name] != ver {
				what = "a cell it comes from"
			}
			return nil, fmt.Sprintf("%s (%s) %s", what, r.Describe(), why), redo
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
				return nil, "no record of the cell that made it", nil
			}
			miss = append(miss, v.name)
		}
		sort.Strings(miss)
		return nil, fmt.Sprintf("it needs %s, which no longer exist%s", strings.Join(miss, ", "), verbS(len(miss))), nil
	}
	return steps, "", nil
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
