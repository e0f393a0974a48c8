package main

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-nb/ferry/internal/testenv"
)

func TestParseCloudPrice(t *testing.T) {
	for _, c := range []struct {
		in   string
		want float64
		ok   bool
	}{
		{"", 0, true}, {"2.48", 2.48, true}, {"$0.5", 0.5, true}, {" 3 ", 3, true}, {"0", 0, true},
		{"-1", 0, false}, {"cheap", 0, false}, {"NaN", 0, false}, {"Inf", 0, false},
	} {
		got, err := parseCloudPrice(c.in)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("parseCloudPrice(%q) = %v, %v; want %v, ok %v", c.in, got, err, c.want, c.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "--cloud-price") {
			t.Errorf("the error does not name the flag: %v", err)
		}
	}
}

func TestParseCloudIdle(t *testing.T) {
	for _, c := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"", 0, true}, {"15m", 15 * time.Minute, true}, {"90s", 90 * time.Second, true}, {"10", 10 * time.Minute, true},
		{"0", 0, true}, {"1.5", 90 * time.Second, true},
		{"-5m", 0, false}, {"-1", 0, false}, {"soon", 0, false}, {"Inf", 0, false}, {"15 min", 0, false},
	} {
		got, err := parseCloudIdle(c.in)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("parseCloudIdle(%q) = %v, %v; want %v, ok %v", c.in, got, err, c.want, c.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "--cloud-idle") {
			t.Errorf("the error does not name the flag: %v", err)
		}
	}
}

// The summary bills a cloud kernel for as long as it existed, at
// --cloud-price; a run that never starts one is billed nothing.
func TestRunBillsCloudKernelTime(t *testing.T) {
	testenv.SkipIfShort(t, "real kernels, 10 s")
	testenv.RequirePython(t)
	dir := t.TempDir()
	nb := writeNotebook(t, dir, "nb.ipynb", []string{"x = 1", "print(x + 1)"})
	run := func(policy string) map[string]float64 {
		t.Helper()
		sum := filepath.Join(dir, policy+".json")
		code, _, stderr := ferryOut(t, quietEnv(), "run", nb, "-o", filepath.Join(dir, policy+".ipynb"), "--local-remote", "--policy", policy,
			"--cloud-price", "3.6", "--summary", sum, "--python", testenv.Python())
		if code != 0 {
			t.Fatalf("ferry run --policy %s: exit %d\n%s", policy, code, stderr)
		}
		b, err := os.ReadFile(sum)
		if err != nil {
			t.Fatal(err)
		}
		var s map[string]any
		if err := json.Unmarshal(b, &s); err != nil {
			t.Fatal(err)
		}
		out := map[string]float64{}
		for _, k := range []string{"cloud_kernel_seconds", "cloud_cost", "wall_seconds", "cells_remote"} {
			v, ok := s[k].(float64)
			if !ok {
				t.Fatalf("summary has no number %s: %s", k, b)
			}
			out[k] = v
		}
		return out
	}
	remote := run("remote")
	if remote["cells_remote"] != 2 || remote["cloud_kernel_seconds"] <= 0 || remote["cloud_kernel_seconds"] > remote["wall_seconds"]+1 {
		t.Errorf("all-remote run: %v; want both cells remote and cloud time within the run's wall time", remote)
	}
	if want := remote["cloud_kernel_seconds"] * 3.6 / 3600; math.Abs(remote["cloud_cost"]-want) > 1e-9 {
		t.Errorf("cloud cost %v, want %v at $3.60/h", remote["cloud_cost"], want)
	}
	if local := run("local"); local["cloud_kernel_seconds"] != 0 || local["cloud_cost"] != 0 {
		t.Errorf("an all-local run starts no cloud kernel, yet was billed: %v", local)
	}
}
