// Package report renders a session as a self-contained HTML page: a
// timeline of where each cell ran, the transfers before it and the think
// time between, the policy's decisions and the totals.
package report

import (
	"fmt"
	"html/template"
	"io"
	"regexp"
	"strconv"
	"strings"

	"github.com/ferry-nb/ferry/internal/agent"
	"github.com/ferry-nb/ferry/internal/files"
	"github.com/ferry-nb/ferry/internal/location"
	"github.com/ferry-nb/ferry/internal/trace"
)

// Summary is the run's totals shown at the top.
type Summary struct {
	Title       string
	Policy      string
	WallSeconds float64
	BytesMoved  int64
	Migrations  int
	CellsLocal  int
	CellsRemote int
	Errors      int
	// StartupSeconds is the time before the first cell: starting Ferry
	// and its kernels. The timeline begins with it.
	StartupSeconds float64
	// CloudKernelSeconds is how long cloud kernels existed (their
	// billing, start to release); CloudCost that at CloudPrice USD per
	// hour (0: no price given, no cost shown).
	CloudKernelSeconds, CloudCost, CloudPrice float64
	// Cells say, per trace event (same order; may be shorter), how the
	// user knows the cell and what it took as the run saw it.
	Cells []Cell
}

// Cell is what the report knows of an execution beyond the trace.
type Cell struct {
	// Name is "cell 3 of 5" and Line its first source line.
	Name, Line string
	// Wall is the cell's time as the run saw it, from the request to the
	// reply (0 if unknown): the trace's transfer and runtime, plus Ferry's
	// own work (analysis, planning, starting a kernel).
	Wall float64
	// Error is "ZeroDivisionError: division by zero" if the cell raised.
	Error string
}

type bar struct {
	X, W, Y float64
	Class   string
	Title   string
}

type row struct {
	Class, Name, Line, Where, Why, Moved, Status string
	Runtime, Transfer, Think                     float64
	Bytes                                        string
}

type page struct {
	Summary
	Released   int    // idle cloud kernels let go, from the trace
	IdleBytes  string // moved in think time, from the trace
	Bytes      string
	Width      float64
	Height     float64
	Bars       []bar
	Ticks      []tick
	Rows       []row
	TotalSecs  float64
	ThinkSecs  float64
	ComputeSec float64
	XferSecs   float64
	FerrySecs  float64
}

type tick struct {
	X     float64
	Label string
}

// where is a location as the report shows it.
func where(l location.Location) string {
	return strings.TrimPrefix(l.Describe(), "the ")
}

// Write renders the HTML report for events.
func Write(w io.Writer, s Summary, evs []trace.Event) error {
	const width, laneH, left = 1000.0, 34.0, 70.0
	cellAt := func(i int) Cell {
		c := Cell{Name: fmt.Sprintf("execution %d", i+1)}
		if i < len(s.Cells) {
			c = s.Cells[i]
		}
		return c
	}
	// The timeline spans the run: start-up, then each execution (think
	// time, Ferry's own work, moves, the cell), then whatever is left of
	// the wall time.
	total := max(s.StartupSeconds, 0)
	for i, e := range evs {
		total += e.Think + max(cellAt(i).Wall, e.TransferSeconds+e.Runtime)
	}
	total = max(total, s.WallSeconds)
	if total <= 0 {
		total = 1
	}
	scale := (width - left - 10) / total
	p := page{Summary: s, Bytes: HumanBytes(s.BytesMoved), Width: width, Height: 2*laneH + 60}
	lane := map[location.Location]float64{location.Local: 20, location.Remote: 20 + laneH}
	t := 0.0
	add := func(secs, y float64, class, title string) {
		p.Bars = append(p.Bars, bar{X: left + t*scale, W: max(secs*scale, 1), Y: y, Class: class, Title: title})
	}
	if s.StartupSeconds > 0 {
		add(s.StartupSeconds, lane[location.Local], "ferry", fmt.Sprintf("Starting Ferry and its kernels took %s before the first cell.", secs(s.StartupSeconds)))
		t += s.StartupSeconds
		p.FerrySecs += s.StartupSeconds
	}
	var idleBytes int64
	for _, e := range evs {
		p.Released += len(e.Released)
		idleBytes += e.IdleBytes
	}
	p.IdleBytes = HumanBytes(idleBytes)
	for i, e := range evs {
		c := cellAt(i)
		y, ok := lane[e.Loc]
		if !ok {
			y = lane[location.Remote]
		}
		if e.Think > 0 {
			add(e.Think, y+laneH/2-2, "think", fmt.Sprintf("%s of think time before %s.", secs(e.Think), c.Name))
		}
		t += e.Think
		p.ThinkSecs += e.Think
		moved := shownNames(e.Moved)
		isMove := len(moved) > 0 || e.BytesMoved > 0
		xfer := e.TransferSeconds
		if !isMove {
			xfer = 0 // time at a move that moved nothing is Ferry's own
		}
		if own := max(c.Wall, e.TransferSeconds+e.Runtime) - xfer - e.Runtime; own > 0.0005 {
			add(own, y, "ferry", fmt.Sprintf("Ferry's own work for %s took %s: analysing it, planning where it runs, starting a kernel if one was needed.", c.Name, secs(own)))
			t += own
			p.FerrySecs += own
		}
		if isMove {
			what := strings.Join(moved, ", ")
			if what == "" {
				what = "state"
			}
			add(xfer, y, "xfer", fmt.Sprintf("Moved %s (%s) to %s in %s before %s.", what, HumanBytes(e.BytesMoved), e.Loc.Describe(), secs(xfer), c.Name))
		}
		t += xfer
		p.XferSecs += xfer
		cls, status := string(e.Loc), "ran"
		if e.Status == "error" {
			cls += " err"
			status = "raised"
			if c.Error != "" {
				status = "raised " + c.Error
			}
		}
		title := fmt.Sprintf("%s ran %s for %s.", label(c), onAt(e.Loc), secs(e.Runtime))
		if e.Status == "error" {
			title = fmt.Sprintf("%s ran %s for %s and %s.", label(c), onAt(e.Loc), secs(e.Runtime), status)
		}
		why := Reason(e.Why)
		if why != "" {
			title += " Why there: " + why
		}
		add(e.Runtime, y, cls, title)
		t += e.Runtime
		p.ComputeSec += e.Runtime
		r := row{Class: string(e.Loc), Name: c.Name, Line: c.Line, Where: where(e.Loc), Why: why, Moved: strings.Join(moved, ", "),
			Runtime: e.Runtime, Transfer: e.TransferSeconds, Think: e.Think, Bytes: HumanBytes(e.BytesMoved), Status: "ok"}
		if e.Status == "error" {
			r.Class += " err"
			r.Status = status
		} else if e.Status != "ok" && e.Status != "" {
			r.Status = e.Status
		}
		p.Rows = append(p.Rows, r)
	}
	if rest := s.WallSeconds - t; rest > 0.0005 {
		add(rest, lane[location.Local], "ferry", fmt.Sprintf("%s of the run is not part of a cell: Ferry's work between cells and stopping the kernels.", secs(rest)))
		t += rest
		p.FerrySecs += rest
	}
	p.TotalSecs = t
	for i := 0; i <= 5; i++ {
		v := total * float64(i) / 5
		p.Ticks = append(p.Ticks, tick{X: left + v*scale, Label: strconv.FormatFloat(v, 'g', 3, 64) + "s"})
	}
	return tmpl.Execute(w, p)
}

// onAt is "on the laptop", "in the cloud".
func onAt(l location.Location) string {
	if l == location.Local {
		return "on " + l.Describe()
	}
	return "in " + l.Describe()
}

// label is "Cell 3 of 5 `x = 1`".
func label(c Cell) string {
	if c.Line == "" {
		return upper(c.Name)
	}
	return upper(c.Name) + " `" + c.Line + "`"
}

func upper(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// secs shows a duration in seconds as people read it.
func secs(s float64) string {
	switch {
	case s < 0.01:
		return fmt.Sprintf("%.0f ms", s*1000)
	case s < 10:
		return fmt.Sprintf("%.2f s", s)
	}
	return fmt.Sprintf("%.1f s", s)
}

// shownNames are state names as users know them: Ferry's pseudo-names
// become what they stand for, a file its path.
func shownNames(names []string) []string {
	var out []string
	for _, n := range names {
		out = append(out, shownName(n))
	}
	return out
}

func shownName(n string) string {
	switch {
	case n == agent.RNG:
		return "random state"
	case n == agent.Proc:
		return "process settings"
	case files.IsName(n):
		return files.Rel(n)
	}
	return n
}

var (
	pseudoRE = regexp.MustCompile(regexp.QuoteMeta(agent.RNG) + "|" + regexp.QuoteMeta(agent.Proc) + "|" + regexp.QuoteMeta(agent.FilePrefix) + `[^\s,;()]+`)
	locRE    = regexp.MustCompile(`\b(to|at|on|in) (local|remote)\b`)
)

// Reason is a placement reason as a sentence a user reads: Ferry's
// pseudo-names as what they stand for, "local" and "remote" as the laptop
// and the cloud, a capital and a full stop.
func Reason(why string) string {
	why = strings.TrimSpace(why)
	if why == "" {
		return ""
	}
	why = pseudoRE.ReplaceAllStringFunc(why, shownName)
	why = locRE.ReplaceAllStringFunc(why, func(m string) string {
		prep, loc, _ := strings.Cut(m, " ")
		return prep + " " + location.Location(loc).Describe()
	})
	why = upper(why)
	if !strings.HasSuffix(why, ".") {
		why += "."
	}
	return why
}

// HumanBytes formats a byte count for people.
func HumanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

var tmpl = template.Must(template.New("report").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Ferry report: {{.Title}}</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}
h1{font-size:20px;margin:0 0 .3em}
.totals{display:flex;gap:2em;margin:1em 0;flex-wrap:wrap}
.totals div{background:#f4f6f8;padding:.6em 1em;border-radius:6px}
.totals b{display:block;font-size:18px}
svg{border:1px solid #ddd;border-radius:6px;background:#fff}
rect.local{fill:#3b82f6}rect.remote{fill:#f59e0b}rect.xfer{fill:#ef4444}rect.think{fill:#cbd5e1}rect.ferry{fill:#94a3b8}
rect.err{stroke:#b91c1c;stroke-width:3}
.legend span{display:inline-block;width:12px;height:12px;margin:0 4px 0 14px;vertical-align:middle}
table{border-collapse:collapse;margin-top:1.5em;width:100%}
td,th{border-bottom:1px solid #eee;padding:4px 8px;text-align:left;vertical-align:top}
td.n{text-align:right;font-variant-numeric:tabular-nums}
tr.remote td.where{color:#b45309;font-weight:600}
tr.err td{background:#fee2e2}tr.err td.status{color:#b91c1c;font-weight:600}
</style></head><body>
<h1>Ferry report: {{.Title}}</h1>
<div>policy <b>{{.Policy}}</b></div>
<div class="totals">
<div><b>{{printf "%.2f" .WallSeconds}} s</b>wall time</div>
<div><b>{{printf "%.2f" .StartupSeconds}} s</b>starting up</div>
<div><b>{{.CellsLocal}} / {{.CellsRemote}}</b>cells on the laptop / in the cloud</div>
<div><b>{{.Bytes}}</b>state moved</div>
<div><b>{{.Migrations}}</b>migrations</div>
<div><b>{{.IdleBytes}}</b>moved in think time</div>
{{if .CloudKernelSeconds}}<div><b>{{printf "%.1f" .CloudKernelSeconds}} s</b>cloud kernel time{{if .Released}} ({{.Released}} idle released){{end}}</div>{{end}}
{{if .CloudPrice}}<div><b>${{printf "%.4f" .CloudCost}}</b>cloud cost at ${{.CloudPrice}}/h</div>{{end}}
<div><b>{{printf "%.2f" .ComputeSec}} s</b>computing</div>
<div><b>{{printf "%.2f" .XferSecs}} s</b>moving state</div>
<div><b>{{printf "%.2f" .ThinkSecs}} s</b>think time</div>
<div><b>{{printf "%.2f" .FerrySecs}} s</b>Ferry's own work</div>
<div><b>{{.Errors}}</b>errors</div>
</div>
<div class="legend">timeline:<span style="background:#3b82f6"></span>cell on the laptop<span style="background:#f59e0b"></span>cell in the cloud<span style="background:#ef4444"></span>moving state<span style="background:#94a3b8"></span>Ferry's own work (start-up, analysis, starting kernels)<span style="background:#cbd5e1"></span>think time<span style="background:#fff;border:3px solid #b91c1c;box-sizing:border-box"></span>raised an error (hover a bar for details)</div>
<svg width="{{.Width}}" height="{{.Height}}" role="img" aria-label="timeline">
<text x="8" y="42">laptop</text><text x="8" y="76">cloud</text>
{{range .Bars}}<rect class="{{.Class}}" x="{{printf "%.2f" .X}}" y="{{printf "%.1f" .Y}}" width="{{printf "%.2f" .W}}" height="{{if eq .Class "think"}}4{{else}}30{{end}}"><title>{{.Title}}</title></rect>
{{end}}{{range .Ticks}}<text x="{{printf "%.1f" .X}}" y="{{$.Height}}" dy="-8" font-size="11" text-anchor="middle">{{.Label}}</text>
{{end}}</svg>
<table><thead><tr><th>cell</th><th>where</th><th>why there</th><th>moved before it</th><th class="n">bytes</th><th class="n">moving s</th><th class="n">running s</th><th class="n">think s</th><th>status</th></tr></thead><tbody>
{{range .Rows}}<tr class="{{.Class}}"><td>{{.Name}}{{if .Line}} <code>{{.Line}}</code>{{end}}</td><td class="where">{{.Where}}</td><td>{{.Why}}</td><td>{{.Moved}}</td><td class="n">{{.Bytes}}</td><td class="n">{{printf "%.3f" .Transfer}}</td><td class="n">{{printf "%.3f" .Runtime}}</td><td class="n">{{printf "%.2f" .Think}}</td><td class="status">{{.Status}}</td></tr>
{{end}}</tbody></table>
</body></html>
`))
