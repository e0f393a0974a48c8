package recall

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "recall.json")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	k := Key("/home/u/nb", "abc")
	if _, ok := s.Get(k); ok {
		t.Fatal("an empty store recalls a cell")
	}
	s.Put(k, 12)
	s.Put(k, 8)
	if err := s.Save(); err != nil {
		t.Fatal(err)
	}
	again, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	e, ok := again.Get(k)
	if !ok || e.LaptopSeconds != 10 || e.Runs != 2 {
		t.Fatalf("after a save and an open: %+v %v, want 10 s over 2 runs", e, ok)
	}
	if _, ok := again.Get(Key("/home/u/other", "abc")); ok {
		t.Fatal("the same cell in another folder is remembered: two notebooks' cells mixed")
	}
}

func TestCorruptFileIsStartedAfresh(t *testing.T) {
	path := filepath.Join(t.TempDir(), "recall.json")
	if err := os.WriteFile(path, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Open(path)
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open of a corrupt file: %v, want ErrCorrupt", err)
	}
	s.Put(Key("d", "c"), 1)
	if err := s.Save(); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path); err != nil {
		t.Fatalf("the file written over the corrupt one: %v", err)
	}
}

func TestOtherVersionIsIgnored(t *testing.T) {
	path := filepath.Join(t.TempDir(), "recall.json")
	if err := os.WriteFile(path, []byte(`{"version": 99, "cells": {"k": {"laptop_s": 3, "runs": 1}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Open(path)
	if err != nil || s.Len() != 0 {
		t.Fatalf("a file of another version: %d cells, err %v; want none read, no error", s.Len(), err)
	}
}

func TestTrimDropsOldest(t *testing.T) {
	path := filepath.Join(t.TempDir(), "recall.json")
	s, _ := Open(path)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	i := 0
	s.now = func() time.Time { i++; return t0.Add(time.Duration(i) * time.Second) }
	for n := range MaxEntries + 5 {
		s.Put(Key("d", fmt.Sprint(n)), 1)
	}
	if err := s.Save(); err != nil {
		t.Fatal(err)
	}
	again, _ := Open(path)
	if again.Len() != MaxEntries {
		t.Fatalf("%d cells kept, want %d", again.Len(), MaxEntries)
	}
	for n := range 5 {
		if _, ok := again.Get(Key("d", fmt.Sprint(n))); ok {
			t.Fatalf("cell %d, among the oldest, was kept", n)
		}
	}
	if _, ok := again.Get(Key("d", fmt.Sprint(MaxEntries+4))); !ok {
		t.Fatal("the newest cell was dropped")
	}
}

func TestNilStoreRemembersNothing(t *testing.T) {
	var s *Store
	s.Put("k", 1)
	if _, ok := s.Get("k"); ok || s.Save() != nil || s.Len() != 0 {
		t.Fatal("a nil store remembered or failed")
	}
}
