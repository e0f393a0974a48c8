package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// proc is a process seen in /proc, identified by pid and start time so a
// reused pid is never mistaken for it.
type proc struct {
	pid, ppid int
	start     string
	state     string
	cmdline   string
}

func (p proc) String() string { return fmt.Sprintf("pid %d (%s)", p.pid, p.cmdline) }

// readProc reads /proc/PID; ok is false if the process is gone.
func readProc(pid int) (proc, bool) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return proc{}, false
	}
	// The command name may hold spaces and parentheses: fields start
	// after the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return proc{}, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return proc{}, false
	}
	ppid, _ := strconv.Atoi(f[1])
	cl, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	return proc{pid: pid, ppid: ppid, state: f[0], start: f[19], cmdline: strings.TrimSpace(strings.ReplaceAll(string(cl), "\x00", " "))}, true
}

// running reports whether p still runs; a zombie counts as gone.
func (p proc) running() bool {
	now, ok := readProc(p.pid)
	return ok && now.start == p.start && now.state != "Z"
}

// descendants lists every process below root.
func descendants(root int) []proc {
	entries, _ := os.ReadDir("/proc")
	children := map[int][]proc{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, ok := readProc(pid); ok {
			children[p.ppid] = append(children[p.ppid], p)
		}
	}
	var out []proc
	queue := []int{root}
	for len(queue) > 0 {
		for _, c := range children[queue[0]] {
			out = append(out, c)
			queue = append(queue, c.pid)
		}
		queue = queue[1:]
	}
	return out
}

// waitAllGone fails unless every process in ps has exited within d.
func waitAllGone(t *testing.T, ps []proc, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		var left []string
		for _, p := range ps {
			if p.running() {
				left = append(left, p.String())
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still running %s after the kernel stopped: %s", within, strings.Join(left, "; "))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// mustProc reads a process that must be running.
func mustProc(t *testing.T, pid int) proc {
	t.Helper()
	p, ok := readProc(pid)
	if !ok {
		t.Fatalf("process %d is not running", pid)
	}
	return p
}

// waitGone fails unless pid exits within d.
func waitGone(t *testing.T, pid int, within time.Duration) {
	t.Helper()
	if p, ok := readProc(pid); ok {
		waitAllGone(t, []proc{p}, within)
	}
}
