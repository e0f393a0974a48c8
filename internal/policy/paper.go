package policy

import "fmt"

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
	if !c.locations().Has(Remote) {
		return place(c, v, m, Local, "no cloud to migrate to")
	}
	rt, measured := m.Runtime(c.Hash, Local)
	if !measured {
		if _, atRemote := m.Runtime(c.Hash, Remote); !atRemote {
			return place(c, v, m, Local, "first run: measured at home")
		}
	}
	hot := m.Runs(c.Hash) >= p.HotRuns && rt >= p.HotRuntime
	if rt < p.MinRuntime && !hot {
		return place(c, v, m, Local, fmt.Sprintf("not a candidate (%.2fs locally)", rt))
	}
	_, ctx := stale(c.Reads, v, Remote)
	if ctx > p.ContextLimit {
		return place(c, v, m, Local, fmt.Sprintf("context %d B over the %d B threshold", ctx, p.ContextLimit))
	}
	d := place(c, v, m, Local, "")
	if d.Costs[Remote] < d.Costs[Local] {
		return place(c, v, m, Remote, fmt.Sprintf("candidate: %.2fs remote vs %.2fs local", d.Costs[Remote], d.Costs[Local]))
	}
	d.Reason = fmt.Sprintf("candidate, but migration does not pay (%.2fs remote vs %.2fs local)", d.Costs[Remote], d.Costs[Local])
	return d
}
