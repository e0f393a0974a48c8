// Package session reads scripted user sessions: which cells a user runs in
// what order, how long they think before each run, and the edits they make
// to hot spots, so interactive behaviour is benchmarked, not only run-all.
package session

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/ferry-nb/ferry/internal/notebook"
)

// Script is a scripted session over one notebook.
type Script struct {
	// Notebook is the notebook's file name, relative to the script.
	Notebook string `json:"notebook"`
	// ThinkScale multiplies every think time (0 means 1).
	ThinkScale float64 `json:"think_scale"`
	// Data, when set, names the files the notebook reads from its folder
	// on the laptop: the benchmark makes them before the first run.
	Data  *Data  `json:"data,omitempty"`
	Steps []Step `json:"steps"`
}

// Data is a data set made by a script: Make (a Python file, relative to
// the session script) is run as `python MAKE SET DIR` and writes SET's
// files into DIR, once (it keeps its own stamp).
type Data struct {
	Make string `json:"make"`
	Set  string `json:"set"`
}

// Step is one execution.
type Step struct {
	// Cell is the index among all cells of the notebook.
	Cell int `json:"cell"`
	// Think is the user's idle time before the run, in seconds.
	Think float64 `json:"think_s"`
	// Edit, if set, replaces text in the cell's source before the run.
	Edit *Edit `json:"edit,omitempty"`
}

// Edit replaces Old with New in a cell's source.
type Edit struct {
	Old string `json:"old"`
	New string `json:"new"`
}

// Load reads and checks a script. Errors name the step and the fix.
func Load(path string) (*Script, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading session script: %w", err)
	}
	var s Script
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("session script %s: %v (want {\"notebook\", \"steps\": [{\"cell\", \"think_s\"}]})", path, err)
	}
	if s.ThinkScale == 0 {
		s.ThinkScale = 1
	}
	if s.ThinkScale < 0 {
		return nil, fmt.Errorf("session script %s: think_scale is negative", path)
	}
	if len(s.Steps) == 0 {
		return nil, fmt.Errorf("session script %s has no steps", path)
	}
	if s.Data != nil && (s.Data.Make == "" || s.Data.Set == "") {
		return nil, fmt.Errorf("session script %s: \"data\" needs both \"make\" (a script) and \"set\" (its data set's name)", path)
	}
	for i, st := range s.Steps {
		if st.Cell < 0 || st.Think < 0 {
			return nil, fmt.Errorf("session script %s: step %d has a negative cell or think time", path, i+1)
		}
		if st.Edit != nil && st.Edit.Old == "" {
			return nil, fmt.Errorf("session script %s: step %d edits with an empty \"old\" text", path, i+1)
		}
	}
	return &s, nil
}

// Steps converts the script to the runner's steps.
func Steps(s *Script) []notebook.Step {
	out := make([]notebook.Step, len(s.Steps))
	for i, st := range s.Steps {
		out[i] = notebook.Step{Cell: st.Cell, Think: time.Duration(st.Think * s.ThinkScale * float64(time.Second))}
		if st.Edit != nil {
			out[i].Old, out[i].New = st.Edit.Old, st.Edit.New
		}
	}
	return out
}
