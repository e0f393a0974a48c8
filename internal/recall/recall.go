// Package recall is what Ferry remembers of a notebook's cells from one
// session to the next: each cell's runtime, in laptop seconds. A session's
// first run of a cell has no runtime to go on, and the cell that reads a
// 90 MB CSV looked as cheap as any other: ferry kept it on the laptop for
// 12 s where the cloud, the CSV sent compressed, took 5 (bench hybrid,
// tabular_disk: 25% behind all-remote). A user opens the same notebook
// again and again; the second session knows.
//
// The store is one JSON file on the laptop (~/.cache/ferry/recall.json
// by default). The kernel opens it at start (Open), looks cells up as it
// plans (Get, through the policy's model), records each finished cell
// (Put) and writes the file in think time and at shutdown (Save). The
// methods are safe from any goroutine; a nil *Store remembers nothing.
package recall

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"
)

// MaxEntries bounds the file: the cells seen longest ago are dropped past
// it. At ~100 bytes an entry the file stays under a megabyte.
const MaxEntries = 10000

// version is the file format's; a file of another version is ignored
// (started afresh), never misread.
const version = 1

// Entry is what is remembered of one cell.
type Entry struct {
	// LaptopSeconds is the cell's runtime on the laptop, or its runtime
	// in a cloud times that cloud's speed then (laptop-equivalent
	// seconds): the laptop is the one machine every session shares.
	LaptopSeconds float64 `json:"laptop_s"`
	// Runs is how many runs were averaged into it.
	Runs int `json:"runs"`
	// Seen is when it last ran.
	Seen time.Time `json:"seen"`
}

type file struct {
	Version int              `json:"version"`
	Cells   map[string]Entry `json:"cells"`
}

// Store is the remembered cells of every notebook on this laptop.
type Store struct {
	path  string
	mu    sync.Mutex
	cells map[string]Entry
	dirty bool
	now   func() time.Time
}

// ErrCorrupt is returned by Open for a file that is not a recall file.
var ErrCorrupt = errors.New("the recall file cannot be read")

// DefaultPath is where the recall file is kept unless FERRY_RECALL names
// another file (or "off").
func DefaultPath() (string, error) {
	c, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("no cache folder for Ferry's recall file (%w); set FERRY_RECALL to a file, or to off", err)
	}
	return filepath.Join(c, "ferry", "recall.json"), nil
}

// Open reads the recall file at path; a missing file recalls nothing. A
// file that cannot be parsed returns an empty store that will overwrite it
// on Save, and ErrCorrupt: the caller logs it and goes on, since a
// recall only ever helps placement.
func Open(path string) (*Store, error) {
	s := &Store{path: path, cells: map[string]Entry{}, now: time.Now}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return s, fmt.Errorf("reading Ferry's recall file %s: %w", path, err)
	}
	var f file
	if err := json.Unmarshal(b, &f); err != nil {
		return s, fmt.Errorf("%w: %s: %v (it will be started afresh)", ErrCorrupt, path, err)
	}
	if f.Version != version {
		return s, nil
	}
	for k, e := range f.Cells {
		if e.LaptopSeconds >= 0 && e.Runs > 0 {
			s.cells[k] = e
		}
	}
	return s, nil
}

// Key is the key of a cell: its code's hash within the
// notebook's folder on the laptop. The folder keeps two notebooks apart
// that share a cell (read_csv("data.csv") over different files).
func Key(folder, cellHash string) string {
	h := sha256.Sum256([]byte(folder + "\x00" + cellHash))
	return hex.EncodeToString(h[:12])
}

// Get is what is remembered of a cell.
func (s *Store) Get(key string) (Entry, bool) {
	if s == nil {
		return Entry{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.cells[key]
	return e, ok
}

// Put records one finished run of a cell, in laptop seconds. The runs of
// one cell are averaged, the latest weighing most (as the model does
// within a session): an edit that keeps the code's hash keeps its cost.
func (s *Store) Put(key string, laptopSeconds float64) {
	if s == nil || !(laptopSeconds >= 0) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.cells[key]
	if ok {
		e.LaptopSeconds = 0.5*laptopSeconds + 0.5*e.LaptopSeconds
	} else {
		e.LaptopSeconds = laptopSeconds
	}
	e.Runs++
	e.Seen = s.now().UTC().Truncate(time.Second)
	s.cells[key] = e
	s.dirty = true
}

// Len is how many cells are remembered.
func (s *Store) Len() int {
	if s == nil {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.cells)
}

// Save writes the file if it changed since the last Save: into a
// temporary file beside it, then renamed over it, so a crash or a second
// kernel saving at once leaves one whole file (the last writer's).
func (s *Store) Save() error {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	if !s.dirty {
		s.mu.Unlock()
		return nil
	}
	s.trimLocked()
	b, err := json.Marshal(file{Version: version, Cells: s.cells})
	s.dirty = false
	s.mu.Unlock()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(s.path), 0o700); err != nil {
		return fmt.Errorf("saving Ferry's recall file: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(s.path), ".recall-*.json")
	if err != nil {
		return fmt.Errorf("saving Ferry's recall file: %w", err)
	}
	_, werr := tmp.Write(b)
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("saving Ferry's recall file %s: %w", s.path, err)
	}
	if err := os.Rename(tmp.Name(), s.path); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("saving Ferry's recall file %s: %w", s.path, err)
	}
	return nil
}

// trimLocked drops the cells seen longest ago past MaxEntries.
func (s *Store) trimLocked() {
	if len(s.cells) <= MaxEntries {
		return
	}
	keys := make([]string, 0, len(s.cells))
	for k := range s.cells {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		a, b := s.cells[keys[i]].Seen, s.cells[keys[j]].Seen
		if a.Equal(b) {
			return keys[i] < keys[j]
		}
		return a.Before(b)
	})
	for _, k := range keys[:len(keys)-MaxEntries] {
		delete(s.cells, k)
	}
}
