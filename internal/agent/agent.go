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

// AuditSource and ProcSource are the agent's two helper modules, installed
// before it as sys.modules["_ferry_audit"] (what a cell touches outside its
// namespace: files, side effects) and sys.modules["_ferry_proc"] (the
// process state a notebook sets).
//
//go:embed _ferry_audit.py
var AuditSource string

//go:embed _ferry_proc.py
var ProcSource string

// HistorySource is the agent's helper keeping IPython's history (count,
// In, Out) in step across kernels, sys.modules["_ferry_history"].
//
//go:embed _ferry_history.py
var HistorySource string

// ReduceSource is the agent's helper saying how objects decorators build
// in __main__ (lru_cache, singledispatch, cached_property,
// typing.NamedTuple) travel, sys.modules["_ferry_reduce"].
//
//go:embed _ferry_reduce.py
var ReduceSource string

// GraphSource is the agent's helper saying what a value reaches: the
// objects alias groups follow and the globals the code it carries uses,
// sys.modules["_ferry_graph"].
//
//go:embed _ferry_graph.py
var GraphSource string

// HistoryMetaKey is the execute_request metadata key carrying what a
// kernel lacks of the front end's history (_ferry_history.py), and
// OutPrefix names Out[n] as a movable pseudo-variable OutPrefix+"n".
const (
	HistoryMetaKey = "ferry_history"
	OutPrefix      = "__ferry_out__:"
)

// CommTarget is the comm target the agent registers; a comm_open to it must
// carry {"secret": secret} as its data.
const CommTarget = "ferry.state"

// InstallCode returns code that installs the agent as
// sys.modules["_ferry_agent"] (its helpers first) without binding any name
// in the user's namespace, and registers the "ferry.state" comm target
// guarded by secret. env are environment variables to set in the kernel
// first (the user's --forward-env), nil for none.
func InstallCode(secret string, env map[string]string) string {
	if env == nil {
		env = map[string]string{}
	}
	envJSON, _ := json.Marshal(env)
	mod := func(name, src string) string {
		return ` s.modules.__setitem__("` + name + `", t.ModuleType("` + name + `")),` +
			` setattr(s.modules["` + name + `"], "__file__", "<` + name + `>"),` +
			` exec(compile(` + strconv.Quote(src) + `, "<` + name + `>", "exec"), s.modules["` + name + `"].__dict__),`
	}
	return `(lambda s, t, j: (` + mod("_ferry_audit", AuditSource) + mod("_ferry_proc", ProcSource) + mod("_ferry_history", HistorySource) + mod("_ferry_reduce", ReduceSource) + mod("_ferry_graph", GraphSource) + mod("_ferry_agent", Source) +
		` s.modules["_ferry_agent"].install(` + strconv.Quote(secret) + `, env=j.loads(` + strconv.Quote(string(envJSON)) + `))))` +
		`(__import__("sys"), __import__("types"), __import__("json"))`
}

// ReportExpr is the user_expressions entry that returns the post-cell
// report; maybe are the names the cell may have mutated, proc whether it
// may have changed process settings (the agent then captures them),
// shared the names among them whose version another location holds too
// (the agent compares their contents, so an unchanged one needs no move),
// full whether every changed value is hashed at once (replays, whose
// hashes are compared) rather than big ones in think time.
//
// attrs are "X.attr" attribute stores the cell makes on names that are
// modules (mymod.VERBOSE = True): the agent then carries those attributes
// with the process state from now on.
func ReportExpr(maybe []string, dynamic, proc bool, shared []string, full bool, attrs ...string) string {
	if maybe == nil {
		maybe = []string{}
	}
	if shared == nil {
		shared = []string{}
	}
	b, _ := json.Marshal(maybe)
	sh, _ := json.Marshal(shared)
	py := map[bool]string{false: "False", true: "True"}
	if attrs == nil {
		attrs = []string{}
	}
	if len(attrs) > 0 {
		proc = true
	}
	at, _ := json.Marshal(attrs)
	return `__import__("_ferry_agent").report(` + string(b) + `, ` + py[dynamic] + `, ` + py[proc] + `, ` + string(sh) + `, ` + py[full] + `, ` + string(at) + `)`
}

// HashesKey and HashesExpr ask the agent for the content hashes of
// names' current versions, computed now if they were left for think time
// (a JSON object name -> hash, "" for a value that cannot be hashed).
const HashesKey = "__ferry_hashes__"

func HashesExpr(names []string) string {
	b, _ := json.Marshal(names)
	return `__import__("_ferry_agent").hashes_now(` + string(b) + `)`
}

// InfoKey and InfoExpr ask the installed agent about its kernel (Python
// and module versions, environment names, root and files) in the install
// request's user_expressions.
const (
	InfoKey  = "__ferry_info__"
	InfoExpr = `__import__("_ferry_agent").info()`
)

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
	// Needs is the top-level module the value's type comes from (sklearn
	// for a fitted model): loading it faithfully elsewhere needs the same
	// version there.
	Needs string `json:"needs,omitempty"`
	// Uses are the notebook globals the code the value carries reads when
	// called: an instance's methods, a function a factory returned, a
	// bound method, a partial (_ferry_graph.py).
	Uses []string `json:"uses,omitempty"`
	// Ratio is the share of the value's payload a move would send
	// (compressed over raw bytes), estimated from samples for values of a
	// MiB or more; 0 when not estimated (protocol 6).
	Ratio float64 `json:"ratio,omitempty"`
}

// FindVersionsExpr asks the agent for the versions of top-level modules
// (without importing them): {module: version, null if not installed}.
func FindVersionsExpr(mods []string) string {
	b, _ := json.Marshal(mods)
	return `__import__("_ferry_agent").find_versions(` + string(b) + `)`
}

// Report is what the agent says a cell changed. Files under the root the
// cell wrote are in Changed, and those it deleted in Deleted, as
// FilePrefix pseudo-names.
type Report struct {
	Changed map[string]Change `json:"changed"`
	Deleted []string          `json:"deleted"`
	Error   string            `json:"error"`
	// Reads are the root-relative files the cell read, and Lists the
	// folders it listed or globbed, as the audit hook saw them.
	Reads []string `json:"reads,omitempty"`
	Lists []string `json:"lists,omitempty"`
	// Effects are what a re-run would do again: files written, network
	// connections, subprocesses. A cell with effects is never re-run
	// behind the user's back.
	Effects []string `json:"effects,omitempty"`
	// Imports are top-level modules imported since the last report, with
	// their versions ("" when a module has none).
	Imports map[string]string `json:"imports,omitempty"`
	// Hashes are content hashes the agent computed in think time since
	// its last report, of versions it reported earlier with hash "" and
	// that this cell did not change.
	Hashes map[string]string `json:"hashes,omitempty"`
}

// Info is what the agent says of its kernel when installed.
type Info struct {
	Python  string            `json:"python"`
	Pickle  int               `json:"pickle"`
	Modules map[string]string `json:"modules"`
	// Env are the names of the kernel's environment variables, never
	// their values.
	Env  []string `json:"env"`
	Root string   `json:"root"`
	// Files are the files under the root: path -> [size, mtime ns].
	Files     map[string][2]int64 `json:"files"`
	Truncated bool                `json:"truncated"`
	User      string              `json:"user"`
}

// RNG is the pseudo-variable holding the random generators' state.
const RNG = "__ferry_rng__"

// Proc is the pseudo-variable holding the process state the notebook set
// (environment variables, cwd, sys.path, print options, rcParams, logging,
// warnings filters, IPython settings and magics). Every cell reads it.
const Proc = "__ferry_proc__"

// FilePrefix starts the pseudo-name of a file under the notebook's root:
// FilePrefix + "data/x.csv". Such a name is never a Python identifier.
const FilePrefix = "__ferry_file__:"
