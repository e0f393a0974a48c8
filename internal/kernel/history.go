package kernel

import (
	"context"
	"encoding/json"
	"regexp"
	"slices"
	"sort"
	"strconv"

	"github.com/ferry-nb/ferry/internal/agent"
	"github.com/ferry-nb/ferry/internal/location"
)

// IPython's history across kernels. Each kernel keeps its own execution
// count, In and Out; the front end sees one notebook. Before a cell runs
// at loc, Ferry tells that kernel, in the execute_request's metadata, what
// it lacks (the agent's _ferry_history.py applies it in a pre_run_cell
// hook, so it costs no round trip): the cell's number, the inputs of the
// cells it did not run, and, when the cell reads _, __ or ___, which
// results those are. Results a cell reads (_, Out[n], _n …) that live in
// another kernel are moved first, as pseudo-variables agent.OutPrefix+n.
// A kernel already in step (every cell on one side) is told nothing.

// kernelHistory is what one kernel incarnation knows of the history.
type kernelHistory struct {
	died <-chan struct{} // the incarnation
	upTo int             // the inputs 1..upTo are in its In; its next cell counts upTo+1
}

// underscoreN matches IPython's _n, the result of cell n.
var underscoreN = regexp.MustCompile(`^_([0-9]+)$`)

// historyWants returns the numbers of the results a cell reading reads
// needs, given the numbers of the results so far (oldest first), and
// whether it reads _, __ or ___.
func historyWants(reads []string, results []int) (want []int, last bool) {
	seen := map[int]bool{}
	add := func(n int) {
		if !seen[n] {
			seen[n] = true
			want = append(want, n)
		}
	}
	for _, r := range reads {
		switch r {
		case "_", "__", "___":
			last = true
			k := len(r) // _ is the newest, __ the one before …
			if len(results) >= k {
				add(results[len(results)-k])
			}
		case "Out", "_oh":
			for _, n := range results {
				add(n)
			}
		default:
			if m := underscoreN.FindStringSubmatch(r); m != nil {
				if n, err := strconv.Atoi(m[1]); err == nil && slices.Contains(results, n) {
					add(n)
				}
			}
		}
	}
	sort.Ints(want)
	return want, last
}

// syncHistory brings the results the cell reads to loc and returns the
// metadata to send the cell with (m's own when the kernel is in step).
// count is the number the cell gets (0: it does not count). Only the shell
// worker calls it, after the cell's moves and once loc's kernel is ready.
func (s *Server) syncHistory(ctx context.Context, loc location.Location, count int, reads []string, meta json.RawMessage) json.RawMessage {
	if s.cfg.Analyzer == nil || s.backends[loc] == nil {
		return meta
	}
	died := s.backends[loc].Died()
	kh := s.kernelHist[loc]
	if kh == nil || kh.died != died {
		// A new kernel: its In is empty and its Out gone.
		kh = &kernelHistory{died: died}
		s.kernelHist[loc] = kh
		s.histMu.Lock()
		for i := range s.history {
			delete(s.history[i].outAt, loc)
		}
		s.histMu.Unlock()
	}

	s.histMu.Lock()
	var results []int
	byLine := map[int]*historyEntry{}
	for i := range s.history {
		h := &s.history[i]
		byLine[h.Line] = h
		if h.Output != nil && h.Line != count {
			results = append(results, h.Line)
		}
	}
	want, last := historyWants(reads, results)
	from := map[location.Location][]string{}
	for _, n := range want {
		h := byLine[n]
		if h.outAt[loc] {
			continue
		}
		for _, l := range s.locs {
			if h.outAt[l] && s.backends[l] != nil {
				from[l] = append(from[l], agent.OutPrefix+strconv.Itoa(n))
				break
			}
		}
	}
	s.histMu.Unlock()
	for src, names := range from {
		if _, err := s.mover.Move(ctx, src, loc, names); err != nil {
			// The cell sees what IPython shows for a missing result ('' or
			// a KeyError), as after a restart: never a reason to fail it.
			s.log.Warn("moving results a cell reads", "from", src, "to", loc, "err", err)
			continue
		}
		s.histMu.Lock()
		for _, name := range names {
			n, _ := strconv.Atoi(name[len(agent.OutPrefix):])
			if h := byLine[n]; h != nil {
				h.outAt[loc] = true
			}
		}
		s.histMu.Unlock()
	}

	sync := map[string]any{}
	if count > 0 && kh.upTo != count-1 {
		inputs := map[string]string{}
		s.histMu.Lock()
		for _, h := range s.history {
			if h.Line > kh.upTo && h.Line < count {
				inputs[strconv.Itoa(h.Line)] = h.Input
			}
		}
		s.histMu.Unlock()
		sync["count"] = count
		sync["inputs"] = inputs
	}
	if count > 0 {
		kh.upTo = count
	}
	if last {
		l := make([]int, 3)
		for k := 0; k < 3 && k < len(results); k++ {
			l[k] = results[len(results)-1-k]
		}
		sync["last"] = l
	}
	if len(sync) == 0 {
		return meta
	}
	var md map[string]json.RawMessage
	if json.Unmarshal(meta, &md) != nil || md == nil {
		md = map[string]json.RawMessage{}
	}
	md[agent.HistoryMetaKey], _ = json.Marshal(sync)
	out, err := json.Marshal(md)
	if err != nil {
		return meta
	}
	return out
}
