// Package agent embeds Ferry's Python agent (agent.py) and builds the hidden
// code Ferry runs in a backend kernel to install and query it. The agent's
// docstring documents its entry points, payload format and the comm
// protocol (target CommTarget) Ferry moves variables over.
package agent

import (
	_ "embed"
	"encoding/json"
	"strconv"
)

// Source is the agent module's Python source.
//
//go:embed agent.py
var Source string

// CommTarget is the comm target the agent registers; a comm_open to it must
// carry {"secret": secret} as its data.
const CommTarget = "ferry.state"

// InstallCode returns code that installs the agent as
// sys.modules["_ferry_agent"] without binding any name in the user's
// namespace, and registers the "ferry.state" comm target guarded by secret.
func InstallCode(secret string) string {
	return `(lambda s, t: (s.modules.__setitem__("_ferry_agent", t.ModuleType("_ferry_agent")),` +
		` setattr(s.modules["_ferry_agent"], "__file__", "<ferry-agent>"),` +
		` exec(compile(` + strconv.Quote(Source) + `, "<ferry-agent>", "exec"), s.modules["_ferry_agent"].__dict__),` +
		` s.modules["_ferry_agent"].install(` + strconv.Quote(secret) + `)))(__import__("sys"), __import__("types"))`
}

// ReportExpr is the user_expressions entry that returns the post-cell
// report; maybe are the names the cell may have mutated.
func ReportExpr(maybe []string, dynamic bool) string {
	if maybe == nil {
		maybe = []string{}
	}
	b, _ := json.Marshal(maybe)
	d := "False"
	if dynamic {
		d = "True"
	}
	return `__import__("_ferry_agent").report(` + string(b) + `, ` + d + `)`
}

// DumpSessionExpr measures a full-session dill dump (the baseline).
const DumpSessionExpr = `__import__("_ferry_agent").dump_session_size()`

// ReportKey is the user_expressions key Ferry uses; it is removed from the
// reply before the front end sees it.
const ReportKey = "__ferry_report__"

// Change is one name in a report.
type Change struct {
	Size    int64  `json:"size"`
	Hash    string `json:"hash"`
	Kind    string `json:"kind"`
	Movable bool   `json:"movable"`
	Reason  string `json:"reason"`
	Group   string `json:"group"`
	// Module is the module's name for kind "module": it moves as an import.
	Module string `json:"module,omitempty"`
}

// Report is what the agent says a cell changed.
type Report struct {
	Changed map[string]Change `json:"changed"`
	Deleted []string          `json:"deleted"`
	Error   string            `json:"error"`
}

// RNG is the pseudo-variable holding the random generators' state.
const RNG = "__ferry_rng__"
