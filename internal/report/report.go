// Package report renders a session as a self-contained HTML page: a
// timeline of where each cell ran, the transfers before it and the think
// time between, the policy's decisions and the totals.
package report

import (
	"fmt"
	"github.com/ferry-nb/ferry/internal/location"
	"html/template"
	"io"
	"strconv"
	"strings"

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
}

type bar struct {
	X, W, Y float64
	Class   string
	Title   string
}

type row struct {
	Seq                           int
	Cell, Loc, Status, Why, Moved string
	Runtime, Transfer, Think      float64
	Bytes                         string
}

type page struct {
	Summary
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
}

type tick struct {
	X     float64
	Label string
}

// Write renders the HTML report for events.
func Write(w io.Writer, s Summary, evs []trace.Event) error {
	const width, laneH, left = 1000.0, 34.0, 70.0
	var total float64
	for _, e := range evs {
		total += e.Think + e.TransferSeconds + e.Runtime
	}
	if total <= 0 {
		total = 1
	}
	scale := (width - left - 10) / total
	p := page{Summary: s, Bytes: HumanBytes(s.BytesMoved), Width: width, Height: 2*laneH + 60}
	lane := map[location.Location]float64{location.Local: 20, location.Remote: 20 + laneH}
	t := 0.0
	for _, e := range evs {
		y := lane[e.Loc]
		if e.Think > 0 {
			p.Bars = append(p.Bars, bar{X: left + t*scale, W: e.Think * scale, Y: y + laneH/2 - 2, Class: "think", Title: fmt.Sprintf("think %.2fs", e.Think)})
		}
		t += e.Think
		p.ThinkSecs += e.Think
		if e.TransferSeconds > 0 || e.BytesMoved > 0 {
			p.Bars = append(p.Bars, bar{X: left + t*scale, W: max(e.TransferSeconds*scale, 1), Y: y, Class: "xfer",
				Title: fmt.Sprintf("moved %s to %s in %.2fs: %s", HumanBytes(e.BytesMoved), e.Loc, e.TransferSeconds, strings.Join(e.Moved, ", "))})
		}
		t += e.TransferSeconds
		p.XferSecs += e.TransferSeconds
		cls := string(e.Loc)
		if e.Status == "error" {
			cls += " err"
		}
		p.Bars = append(p.Bars, bar{X: left + t*scale, W: max(e.Runtime*scale, 1), Y: y, Class: cls,
			Title: fmt.Sprintf("#%d cell %s at %s: %.3fs (%s)", e.Seq, e.Cell, e.Loc, e.Runtime, e.Why)})
		t += e.Runtime
		p.ComputeSec += e.Runtime
		p.Rows = append(p.Rows, row{Seq: e.Seq, Cell: e.Cell, Loc: string(e.Loc), Status: e.Status, Why: e.Why, Moved: strings.Join(e.Moved, ", "),
			Runtime: e.Runtime, Transfer: e.TransferSeconds, Think: e.Think, Bytes: HumanBytes(e.BytesMoved)})
	}
	p.TotalSecs = t
	for i := 0; i <= 5; i++ {
		v := total * float64(i) / 5
		p.Ticks = append(p.Ticks, tick{X: left + v*scale, Label: strconv.FormatFloat(v, 'g', 3, 64) + "s"})
	}
	return tmpl.Execute(w, p)
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
rect.local{fill:#3b82f6}rect.remote{fill:#f59e0b}rect.xfer{fill:#ef4444}rect.think{fill:#cbd5e1}
rect.err{stroke:#000;stroke-width:2}
.legend span{display:inline-block;width:12px;height:12px;margin:0 4px 0 14px;vertical-align:middle}
table{border-collapse:collapse;margin-top:1.5em;width:100%}
td,th{border-bottom:1px solid #eee;padding:4px 8px;text-align:left;vertical-align:top}
td.n{text-align:right;font-variant-numeric:tabular-nums}
tr.remote td:nth-child(3){color:#b45309;font-weight:600}
</style></head><body>
<h1>Ferry report: {{.Title}}</h1>
<div>policy <b>{{.Policy}}</b></div>
<div class="totals">
<div><b>{{printf "%.2f" .WallSeconds}} s</b>wall time</div>
<div><b>{{.CellsLocal}} / {{.CellsRemote}}</b>cells local / remote</div>
<div><b>{{.Bytes}}</b>state moved</div>
<div><b>{{.Migrations}}</b>migrations</div>
<div><b>{{printf "%.2f" .ComputeSec}} s</b>computing</div>
<div><b>{{printf "%.2f" .XferSecs}} s</b>moving state</div>
<div><b>{{printf "%.2f" .ThinkSecs}} s</b>think time</div>
<div><b>{{.Errors}}</b>errors</div>
</div>
<div class="legend">timeline:<span style="background:#3b82f6"></span>cell on laptop<span style="background:#f59e0b"></span>cell in cloud<span style="background:#ef4444"></span>state transfer<span style="background:#cbd5e1"></span>think time (hover a bar for details)</div>
<svg width="{{.Width}}" height="{{.Height}}" role="img" aria-label="timeline">
<text x="8" y="42">laptop</text><text x="8" y="76">cloud</text>
{{range .Bars}}<rect class="{{.Class}}" x="{{printf "%.2f" .X}}" y="{{printf "%.1f" .Y}}" width="{{printf "%.2f" .W}}" height="{{if eq .Class "think"}}4{{else}}30{{end}}"><title>{{.Title}}</title></rect>
{{end}}{{range .Ticks}}<text x="{{printf "%.1f" .X}}" y="{{$.Height}}" dy="-8" font-size="11" text-anchor="middle">{{.Label}}</text>
{{end}}</svg>
<table><thead><tr><th>#</th><th>cell</th><th>where</th><th>why</th><th>moved</th><th class="n">bytes</th><th class="n">transfer s</th><th class="n">runtime s</th><th class="n">think s</th><th>status</th></tr></thead><tbody>
{{range .Rows}}<tr class="{{.Loc}}"><td>{{.Seq}}</td><td><code>{{.Cell}}</code></td><td>{{.Loc}}</td><td>{{.Why}}</td><td>{{.Moved}}</td><td class="n">{{.Bytes}}</td><td class="n">{{printf "%.3f" .Transfer}}</td><td class="n">{{printf "%.3f" .Runtime}}</td><td class="n">{{printf "%.2f" .Think}}</td><td>{{.Status}}</td></tr>
{{end}}</tbody></table>
</body></html>
`))
