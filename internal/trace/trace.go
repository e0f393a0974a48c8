// Package trace records a session as JSON lines, one per execution, so that
// `ferry replay` can re-cost the same work under any policy and link.
package trace

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"github.com/ferry-nb/ferry/internal/location"
)

// Event is one cell execution. Field names are a file format: keep them.
type Event struct {
	Seq  int    `json:"seq"`
	Cell string `json:"cell"` // sha256 of the code, hex, first 16 chars
	// Index is the cell's position in the notebook when known (-1 if not).
	Index  int      `json:"index"`
	Reads  []string `json:"reads"`
	Writes []string `json:"writes"`
	// Sizes are the serialised sizes in bytes of the names written, as
	// the agent measured them after the cell (what they pickle to).
	Sizes map[string]int64 `json:"sizes,omitempty"`
	// ReadSizes are the sizes of the files the cell read, as Ferry knew
	// them: a replay needs them for data that was on the laptop before
	// any cell wrote it (the notebook's input files), which no Sizes
	// entry covers.
	ReadSizes map[string]int64 `json:"read_sizes,omitempty"`
	// ReadRatios are, of those files, the share of their size a move
	// would have put on the link, as Ferry estimated from a sample when it
	// planned the cell (files.Tracker.Ratio); a file absent had none.
	ReadRatios map[string]float64 `json:"read_ratios,omitempty"`
	// Loc is where the cell ran: "local" or a cloud's name.
	Loc location.Location `json:"loc"`
	// Runtime is the cell's execution time at Loc in seconds, without
	// transfers.
	Runtime float64 `json:"runtime_s"`
	// BytesMoved and TransferSeconds are the state moved before the cell.
	BytesMoved      int64   `json:"bytes_moved"`
	TransferSeconds float64 `json:"transfer_s"`
	// Think is the user's idle time before this execution, in seconds.
	Think  float64 `json:"think_s"`
	Status string  `json:"status"`
	// Pinned is set when the cell could only run at Loc (unmovable state
	// or a %%ferry pin).
	Pinned bool `json:"pinned,omitempty"`
	// Deterministic marks cells whose re-run gives the same values (no
	// RNG without a seed, no I/O); only those may be recomputed.
	Deterministic bool `json:"deterministic,omitempty"`
	// Why is the policy's reason for Loc.
	Why string `json:"why,omitempty"`
	// Moved names the variables brought to Loc before the cell.
	Moved []string `json:"moved,omitempty"`
	// MovedSizes are the bytes each of Moved took on the link, measured
	// as it moved (a payload of several values is shared out by their
	// sizes); they sum to BytesMoved.
	MovedSizes map[string]int64 `json:"moved_sizes,omitempty"`
	// IdleBytes are the bytes moved in the think time before this
	// execution by the think-time worker (prefetch, write-back), hidden
	// from the user's wait.
	IdleBytes int64 `json:"idle_bytes,omitempty"`
	// Released names the clouds whose idle kernel was let go in the think
	// time before this execution (--cloud-idle).
	Released []location.Location `json:"released,omitempty"`
	// CloudSeconds is how long cloud kernels had existed, summed over
	// clouds and restarts, when this execution ended: what the run is
	// billed for (cloud kernel-seconds), whatever --cloud-price is.
	CloudSeconds float64 `json:"cloud_kernel_s,omitempty"`
	// StartSeconds is how long this execution waited for a kernel to
	// start (a cloud's first cell, the first after a release): part of
	// the cell's wait that a replay prices as --cloud-start.
	StartSeconds float64 `json:"start_s,omitempty"`
}

// Apportion shares total, the bytes one payload of names took, out among
// them in proportion to est, their expected sizes (evenly where est knows
// none), so that the shares sum to total.
func Apportion(total int64, names []string, est map[string]int64) map[string]int64 {
	if len(names) == 0 {
		return nil
	}
	var sum int64
	for _, n := range names {
		sum += max(est[n], 0)
	}
	out := make(map[string]int64, len(names))
	left := total
	for i, n := range names {
		var share int64
		switch {
		case i == len(names)-1:
			share = left // the rounding goes to the last
		case sum > 0:
			share = int64(float64(total) * float64(max(est[n], 0)) / float64(sum))
		default:
			share = total / int64(len(names))
		}
		share = min(max(share, 0), left)
		out[n] = share
		left -= share
	}
	return out
}

// Measured returns evs with each written value's size replaced by the
// bytes it took when it moved, if that version moved later in the trace:
// a size measured on the link beats one measured in the kernel, which
// knows neither compression nor what a library pickles beside the value.
// evs itself is not changed.
func Measured(evs []Event) []Event {
	out := append([]Event(nil), evs...)
	// writer[n] is the event that wrote the newest version of n so far.
	writer := map[string]int{}
	fixed := map[int]bool{} // events whose Sizes map is already a copy
	for i, e := range out {
		for n, b := range e.MovedSizes {
			w, ok := writer[n]
			if !ok {
				continue
			}
			if !fixed[w] {
				sz := make(map[string]int64, len(out[w].Sizes)+1)
				for k, v := range out[w].Sizes {
					sz[k] = v
				}
				out[w].Sizes = sz
				fixed[w] = true
			}
			out[w].Sizes[n] = b
			delete(writer, n) // the first move measured it; later ones may be partial
		}
		for _, n := range e.Writes {
			writer[n] = i
		}
	}
	return out
}

// Writer appends events to a file (if any) and keeps them in memory for
// the run's report.
type Writer struct {
	mu     sync.Mutex
	f      *os.File
	w      *bufio.Writer
	enc    *json.Encoder
	events []Event
}

// NewMemory returns a writer that only keeps events in memory.
func NewMemory() *Writer { return &Writer{} }

// Events returns the events added so far.
func (t *Writer) Events() []Event {
	if t == nil {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]Event(nil), t.events...)
}

// Create opens path for writing a trace.
func Create(path string) (*Writer, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("creating trace: %w", err)
	}
	w := bufio.NewWriter(f)
	return &Writer{f: f, w: w, enc: json.NewEncoder(w)}, nil
}

// Add writes one event and flushes it, so a crash loses at most one line.
func (t *Writer) Add(e Event) error {
	if t == nil {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.events = append(t.events, e)
	if t.enc == nil {
		return nil
	}
	if err := t.enc.Encode(e); err != nil {
		return fmt.Errorf("writing trace: %w", err)
	}
	return t.w.Flush()
}

// Close closes the file.
func (t *Writer) Close() error {
	if t == nil {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.f == nil {
		return nil
	}
	if err := t.w.Flush(); err != nil {
		t.f.Close()
		return err
	}
	return t.f.Close()
}

// maxLine bounds one event's line.
const maxLine = 16 << 20

// Read parses a trace. Errors name the line and the problem.
func Read(r io.Reader) ([]Event, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxLine)
	var out []Event
	line := 0
	for sc.Scan() {
		line++
		s := strings.TrimSpace(sc.Text())
		if s == "" {
			continue
		}
		var e Event
		// One event per line: text after it is an error, not ignored.
		if err := json.Unmarshal([]byte(s), &e); err != nil {
			return nil, fmt.Errorf("trace line %d: not a trace event (%v)", line, err)
		}
		if err := e.validate(); err != nil {
			return nil, fmt.Errorf("trace line %d: %w", line, err)
		}
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("trace line %d: longer than %d MiB; not a trace Ferry wrote", line+1, maxLine>>20)
		}
		return nil, fmt.Errorf("reading trace: %w", err)
	}
	if len(out) == 0 {
		return nil, errors.New("trace is empty: record one with 'ferry run NB --trace FILE.jsonl'")
	}
	return out, nil
}

// ReadFile reads a trace file.
func ReadFile(path string) ([]Event, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening trace: %w", err)
	}
	defer f.Close()
	return Read(f)
}

func (e *Event) validate() error {
	if e.Cell == "" {
		return errors.New(`missing "cell"`)
	}
	// Replay and the oracle cost the laptop and every cloud a trace names.
	if e.Loc != location.Local && !location.IsCloudName(string(e.Loc)) {
		return fmt.Errorf(`"loc" is %q; want %q or a cloud's name (lower-case letters, digits, - or _)`, e.Loc, location.Local)
	}
	if e.Runtime < 0 || e.Think < 0 || e.TransferSeconds < 0 || e.BytesMoved < 0 {
		return errors.New("negative time or size")
	}
	for _, m := range []map[string]int64{e.Sizes, e.MovedSizes} {
		for n, s := range m {
			if s < 0 {
				return fmt.Errorf("negative size for %q", n)
			}
		}
	}
	return nil
}
