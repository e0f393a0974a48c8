// Package files is Ferry's view of the files under the notebook's folder.
// The cloud is another machine with its own disk, so files are state like
// variables: each file under the root is a pseudo-variable named
// Name("data/x.csv") in the state map, with versions (content hashes),
// holders and a size, moved by the same transfer machinery (chunked,
// hashed, compressed when it pays, the source authoritative until the
// target confirmed).
//
// This package decides which of those a cell needs where it runs, from
// three sources: what the analysis sees in the code (string paths given
// to open, np.load, pd.read_*, glob, pathlib, %run, imports of local
// modules), what the agent's audit hook saw the same cell read the last
// times it ran (Learn), and, when a cell does file I/O the analysis cannot
// resolve, every known file. The kernel calls Tracker from its shell
// worker only; Tracker is safe for concurrent use anyway.
package files

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/ferry-nb/ferry/internal/agent"
)

// Name is the state map's name of the root-relative file rel.
func Name(rel string) string { return agent.FilePrefix + rel }

// IsName reports whether a state name is a file's.
func IsName(n string) bool { return strings.HasPrefix(n, agent.FilePrefix) }

// Rel is the root-relative path of a file's state name.
func Rel(n string) string { return strings.TrimPrefix(n, agent.FilePrefix) }

// Use is one file use found in a cell's code: Op is "read", "write",
// "list", "glob" (Path is the pattern), "delete" or "exists".
type Use struct {
	Path string
	Op   string
}

// Files under the root are named by their root-relative path; the
// notebook's own files elsewhere (written under the home or /tmp, as the
// agent's audit hook decides) by their absolute path, and they land at the
// same path on the other side.

// Tracker resolves file uses against the known files for one notebook.
type Tracker struct {
	root string // the laptop's root, absolute

	mu      sync.Mutex
	learned map[string][]Use // cell key -> what the audit hook saw it read
	chdir   bool             // the notebook changed its working directory
	stamps  map[string]stamp // laptop files as Ferry last knew them
	ratios  ratios           // compression estimates (ratio.go), own lock
}

// New returns a tracker for the notebook folder root (the laptop kernel's
// working directory).
func New(root string) *Tracker {
	if abs, err := filepath.Abs(root); err == nil {
		root = abs
	}
	return &Tracker{root: filepath.Clean(root), learned: map[string][]Use{}}
}

// Root is the laptop's root folder.
func (t *Tracker) Root() string { return t.root }

// Learn records what the agent saw cell read (files) and list (folders)
// when it ran, so the next run elsewhere brings them first.
func (t *Tracker) Learn(cell string, reads, lists []string) {
	if len(reads) == 0 && len(lists) == 0 {
		return
	}
	uses := make([]Use, 0, len(reads)+len(lists))
	for _, r := range reads {
		uses = append(uses, Use{Path: r, Op: "read"})
	}
	for _, l := range lists {
		uses = append(uses, Use{Path: l, Op: "list"})
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	// Union with what was seen before: a cell may read other files on
	// other runs (a loop over a folder that grew).
	seen := map[Use]bool{}
	for _, u := range t.learned[cell] {
		seen[u] = true
	}
	for _, u := range uses {
		if !seen[u] {
			t.learned[cell] = append(t.learned[cell], u)
			seen[u] = true
		}
	}
}

// Chdir records that the notebook changed its working directory: relative
// paths in code then no longer resolve against the root, so every cell
// doing file I/O counts as touching any file.
func (t *Tracker) Chdir() {
	t.mu.Lock()
	t.chdir = true
	t.mu.Unlock()
}

// Needs is what a cell needs of the files.
type Needs struct {
	// Names are the known files' state names the cell may read.
	Names []string
	// Outside are absolute paths outside the root the cell reads that
	// exist on the laptop: they cannot follow the cell, so it stays there.
	Outside []string
}

// Need resolves a cell's file uses (from the analysis), whether it does
// file I/O the analysis could not resolve (unknown), the top-level modules
// it imports, and what it was seen to read before, against known (the
// state map's names, asked for only when the cell touches files or
// imports: a notebook's folder may hold thousands, and a cell that does
// neither, the common case, should not pay for walking them (the overhead
// bench, run in a source tree, spent 0.1 ms of a trivial cell's 0.75 ms
// overhead here).
func (t *Tracker) Need(cell string, uses []Use, unknown bool, imports []string, known func() []string) Needs {
	t.mu.Lock()
	learned := append([]Use(nil), t.learned[cell]...)
	chdir := t.chdir
	t.mu.Unlock()
	if !unknown && len(uses) == 0 && len(learned) == 0 && len(imports) == 0 {
		return Needs{}
	}
	names := known()
	rels := make([]string, 0, len(names))
	for _, n := range names {
		if IsName(n) {
			rels = append(rels, Rel(n))
		}
	}
	need := map[string]bool{}
	var out Needs
	if unknown || (chdir && len(uses) > 0) {
		for _, r := range rels {
			need[r] = true
		}
	}
	have := map[string]bool{}
	for _, r := range rels {
		have[r] = true
	}
	for _, u := range append(uses, learned...) {
		rel, inside := t.rel(u.Path)
		if !inside {
			// A file of the notebook's own outside the folder (one it
			// wrote under the home or /tmp) is tracked by its absolute
			// path; any other that the laptop has cannot follow the cell.
			p := filepath.Clean(u.Path)
			switch {
			case !filepath.IsAbs(p) || u.Op == "write":
			case have[p]:
				need[p] = true
			case u.Op == "glob" || u.Op == "list":
				for _, r := range rels {
					if strings.HasPrefix(r, "/") && (Match(p, r) || strings.HasPrefix(r, p+"/")) {
						need[r] = true
					}
				}
			default:
				if _, err := os.Stat(p); err == nil {
					out.Outside = append(out.Outside, p)
				}
			}
			continue
		}
		switch u.Op {
		case "write":
			// A plain write needs nothing there; "a" and "r+" come as a
			// read too.
		case "glob":
			for _, r := range rels {
				if Match(rel, r) {
					need[r] = true
				}
			}
		case "list":
			for _, r := range rels {
				if rel == "." || strings.HasPrefix(r, rel+"/") {
					need[r] = true
				}
			}
		default: // read, exists, delete
			need[rel] = true
			for _, r := range rels { // a folder read or removed whole
				if strings.HasPrefix(r, rel+"/") {
					need[r] = true
				}
			}
		}
	}
	for _, m := range imports {
		for _, r := range rels {
			if r == m+".py" || strings.HasPrefix(r, m+"/") {
				need[r] = true
			}
		}
	}
	for r := range need {
		if have[r] {
			out.Names = append(out.Names, Name(r))
		}
	}
	sort.Strings(out.Names)
	sort.Strings(out.Outside)
	return out
}

// rel returns p relative to the root ("/" separated) and whether it is
// under it. Relative paths are taken relative to the root.
func (t *Tracker) rel(p string) (string, bool) {
	if p == "" {
		return "", false
	}
	if !filepath.IsAbs(p) {
		p = filepath.Join(t.root, p)
	}
	p = filepath.Clean(p)
	if p == t.root {
		return ".", true
	}
	if !strings.HasPrefix(p, t.root+string(filepath.Separator)) {
		return "", false
	}
	return filepath.ToSlash(p[len(t.root)+1:]), true
}

// Match reports whether the root-relative file rel matches the glob
// pattern (also root-relative), with "**" matching any number of folders
// as glob.glob(recursive=True) does.
func Match(pattern, rel string) bool {
	return matchParts(strings.Split(pattern, "/"), strings.Split(rel, "/"))
}

func matchParts(pat, parts []string) bool {
	for len(pat) > 0 {
		if pat[0] == "**" {
			for i := 0; i <= len(parts); i++ {
				if matchParts(pat[1:], parts[i:]) {
					return true
				}
			}
			return false
		}
		if len(parts) == 0 {
			return false
		}
		if ok, err := path.Match(pat[0], parts[0]); err != nil || !ok {
			return false
		}
		pat, parts = pat[1:], parts[1:]
	}
	return len(parts) == 0
}

// A stamp is what the laptop's disk showed of a file when Ferry last knew
// its content there: size and modification time.
type stamp struct {
	size  int64
	mtime int64
}

// Path is where the tracked file rel is on the laptop.
func (t *Tracker) Path(rel string) string {
	if strings.HasPrefix(rel, "/") {
		return rel
	}
	return filepath.Join(t.root, filepath.FromSlash(rel))
}

// Stamp records the laptop's file rel as Ferry knows it now (after the
// inventory, a laptop cell that wrote it, or a move that brought it).
func (t *Tracker) Stamp(rel string) {
	st, err := os.Stat(t.Path(rel))
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stamps == nil {
		t.stamps = map[string]stamp{}
	}
	if err != nil {
		delete(t.stamps, rel)
		return
	}
	t.stamps[rel] = stamp{st.Size(), st.ModTime().UnixNano()}
}

// Outside says whether the laptop's file rel changed since it was
// stamped, by something other than a cell (an editor, a download): then
// its size and a version for it, or gone if it was removed. A file never
// stamped is stamped now and counts as unchanged.
func (t *Tracker) Outside(rel string) (changed, gone bool, size int64, version string) {
	st, err := os.Stat(t.Path(rel))
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stamps == nil {
		t.stamps = map[string]stamp{}
	}
	old, known := t.stamps[rel]
	if err != nil {
		delete(t.stamps, rel)
		return known, known, 0, ""
	}
	now := stamp{st.Size(), st.ModTime().UnixNano()}
	t.stamps[rel] = now
	if !known || old == now {
		return false, false, now.size, ""
	}
	return true, false, now.size, fmt.Sprintf("stat:%d:%d", now.size, now.mtime)
}
