// Package calibrate measures how fast a kernel runs cells, so that the
// cloud's speed is measured rather than assumed (issue 16): a short
// single-threaded loop and a multi-threaded BLAS product (calibrate.py),
// evaluated hidden in each kernel, compared between the laptop and each
// cloud. It also keeps the figures across sessions (Cache), so a session
// knows a cloud it measured before without starting its kernel.
//
// The think-time worker runs it (thinktime); the policy's model reads the
// results (policy.Model.ObserveCalibration); the kernel wires the cache.
package calibrate

import (
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

//go:embed calibrate.py
var source string

// Expr is the user_expressions entry that runs the calibration and
// evaluates to its JSON figures. It runs in a child process of the kernel
// (the same interpreter, machine, cgroup and CPU affinity), not in the
// kernel: importing numpy there gave a kernel where the user had never
// imported it a global numpy random state, which Ferry then tracked as
// the user's (__ferry_rng__) and, when that cloud kernel died, named
// among the values lost. A failure evaluates to a message Parse rejects.
func Expr() string {
	return `(lambda sp, sys: (lambda r: r.stdout.strip() or ("calibration failed: " + r.stderr.strip()[-300:]))(sp.run([sys.executable, "-c", ` +
		strconv.Quote(source+"\nprint(result)\n") + `], capture_output=True, text=True, timeout=120)))(__import__("subprocess"), __import__("sys"))`
}

// Result is one kernel's figures.
type Result struct {
	// Single is the seconds for the single-threaded loop.
	Single float64 `json:"single"`
	// Multi is the seconds for the BLAS products (0: no numpy there).
	Multi float64 `json:"multi,omitempty"`
	// Cores are the cores the kernel's process may use.
	Cores int `json:"cores"`
	// StartSeconds is how long the kernel took to start, last time (0:
	// not known): the cold start a session that has not started it yet
	// prices, which a fresh model would otherwise take as free.
	StartSeconds float64 `json:"start_s,omitempty"`
	// When is when it was measured.
	When time.Time `json:"when"`
}

// ErrMalformed is a calibration answer Ferry cannot read.
var ErrMalformed = errors.New("malformed calibration result")

// Parse reads the expression's value (the text/plain repr of a str).
func Parse(text string) (Result, error) {
	var s string
	// The repr of a str: single-quoted Python literal; JSON inside has
	// no single quotes or backslashes, so unquoting is direct.
	if len(text) >= 2 && text[0] == '\'' && text[len(text)-1] == '\'' {
		s = text[1 : len(text)-1]
	} else {
		return Result{}, fmt.Errorf("%w: %.60q", ErrMalformed, text)
	}
	var raw struct {
		Single float64  `json:"single"`
		Multi  *float64 `json:"multi"`
		Cores  int      `json:"cores"`
	}
	if err := json.Unmarshal([]byte(s), &raw); err != nil {
		return Result{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if !(raw.Single > 0) || math.IsInf(raw.Single, 0) {
		return Result{}, fmt.Errorf("%w: loop took %v s", ErrMalformed, raw.Single)
	}
	r := Result{Single: raw.Single, Cores: raw.Cores, When: time.Now()}
	if raw.Multi != nil && *raw.Multi > 0 && !math.IsInf(*raw.Multi, 0) {
		r.Multi = *raw.Multi
	}
	return r, nil
}

// Speed is how many times faster there runs cells than here, by the
// figures: the geometric mean of the single-threaded and multi-threaded
// ratios (data-science cells are some of each: a pandas apply or a Python
// loop gains the first, a BLAS, scikit-learn n_jobs=-1 or torch cell the
// second), or the single-threaded ratio where either side lacks numpy.
// Cells measured at both places replace it cell by cell's median.
func Speed(here, there Result) float64 {
	if here.Single <= 0 || there.Single <= 0 {
		return 0
	}
	st := here.Single / there.Single
	if here.Multi <= 0 || there.Multi <= 0 {
		return st
	}
	return math.Sqrt(st * here.Multi / there.Multi)
}

// Cache keeps figures across sessions in one JSON file, by key (a cloud's
// URL and kernelspec, the laptop's interpreter). Any goroutine may call
// its methods.
type Cache struct {
	Path string // "" keeps nothing
	// MaxAge is how long figures stay good (0: 30 days): a cloud's
	// machine type can change behind the same URL.
	MaxAge time.Duration
	mu     sync.Mutex
}

// DefaultPath is $XDG_CACHE_HOME/ferry/calibration.json (or the OS's
// equivalent), "" when there is no cache directory.
func DefaultPath() string {
	dir, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(dir, "ferry", "calibration.json")
}

// Load returns key's figures if the cache holds fresh ones.
func (c *Cache) Load(key string) (Result, bool) {
	if c == nil || c.Path == "" || key == "" {
		return Result{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	all := c.read()
	r, ok := all[key]
	age := c.MaxAge
	if age <= 0 {
		age = 30 * 24 * time.Hour
	}
	if !ok || time.Since(r.When) > age {
		return Result{}, false
	}
	return r, true
}

// Store records key's figures (keeping a known start time if r has
// none); a cache that cannot be written is only a measurement lost, so
// the error is for the log.
func (c *Cache) Store(key string, r Result) error {
	return c.update(key, func(old Result) Result {
		if r.StartSeconds <= 0 {
			r.StartSeconds = old.StartSeconds
		}
		return r
	})
}

// StoreStart records how long key's kernel took to start, beside its
// figures.
func (c *Cache) StoreStart(key string, seconds float64) error {
	if seconds <= 0 {
		return nil
	}
	return c.update(key, func(old Result) Result {
		old.StartSeconds = seconds
		if old.When.IsZero() {
			old.When = time.Now()
		}
		return old
	})
}

func (c *Cache) update(key string, f func(Result) Result) error {
	if c == nil || c.Path == "" || key == "" {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	all := c.read()
	all[key] = f(all[key])
	b, err := json.MarshalIndent(all, "", " ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(c.Path), 0o700); err != nil {
		return fmt.Errorf("calibration cache: %w", err)
	}
	tmp := c.Path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("calibration cache: %w", err)
	}
	return os.Rename(tmp, c.Path)
}

func (c *Cache) read() map[string]Result {
	all := map[string]Result{}
	b, err := os.ReadFile(c.Path)
	if err != nil {
		return all
	}
	if json.Unmarshal(b, &all) != nil {
		return map[string]Result{} // a damaged cache is started afresh
	}
	return all
}
