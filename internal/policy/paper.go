package policy

import (
	"fmt"
	"slices"

	"github.com/ferry-nb/ferry/internal/location"
)

// Paper is the seed paper's approach as published (eScience 2021,
// arXiv 2107.00187): the laptop is home; a cell becomes a migration
// candidate when its measured runtime is long or it is a hot spot (re-run
// while being developed); a candidate migrates when the context it needs is
// under a size threshold and moving it is expected to pay off against the
// runtime saved. Cells without a measured runtime run at home first.
type Paper struct {
	// MinRuntime makes a cell a candidate on runtime alone (seconds).
	MinRuntime float64
	// HotRuns and HotRuntime make a re-run cell a candidate.
	HotRuns    int
	HotRuntime float64
	// ContextLimit is the context-size threshold in bytes.
	ContextLimit int64
}

// NewPaper returns the paper policy with the thresholds we use.
func NewPaper() *Paper {
	return &Paper{MinRuntime: 1.0, HotRuns: 2, HotRuntime: 0.3, ContextLimit: 1 << 30}
}

func (p *Paper) Name() string { return "paper" }

func (p *Paper) Decide(c Cell, v View, m *Model) Decision {
	if d, ok := pinned(c); ok {
		return d
	}
	clouds := c.locations().Clouds()
	if len(clouds) == 0 {
		return place(c, v, m, Local, "no cloud to migrate to")
	}
	rt, measured := m.Runtime(c.Hash, Local)
	if !measured {
		ranInCloud := slices.ContainsFunc(clouds, func(cl location.Location) bool {
			_, ok := m.Runtime(c.Hash, cl)
			return ok
		})
		if !ranInCloud {
			return place(c, v, m, Local, "first run: measured at home")
		}
	}
	hot := m.Runs(c.Hash) >= p.HotRuns && rt >= p.HotRuntime
	if rt < p.MinRuntime && !hot {
		return place(c, v, m, Local, fmt.Sprintf("not a candidate (%.2fs locally)", rt))
	}
	// With several clouds the paper's one remote is the one a migration
	// pays most at.
	d := place(c, v, m, Local, "")
	to := clouds[0]
	for _, cl := range clouds[1:] {
		if d.Costs[cl] < d.Costs[to] {
			to = cl
		}
	}
	where := "remote"
	if to != Remote {
		where = "at " + to.String()
	}
	if _, ctx := stale(c.Reads, v, to); ctx > p.ContextLimit {
		return place(c, v, m, Local, fmt.Sprintf("context %d B over the %d B threshold", ctx, p.ContextLimit))
	}
	if d.Costs[to] < d.Costs[Local] {
		return place(c, v, m, to, fmt.Sprintf("candidate: %.2fs %s vs %.2fs local", d.Costs[to], where, d.Costs[Local]))
	}
	d.Reason = fmt.Sprintf("candidate, but migration does not pay (%.2fs %s vs %.2fs local)", d.Costs[to], where, d.Costs[Local])
	return d
}
