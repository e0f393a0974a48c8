package files

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestMatch(t *testing.T) {
	for _, c := range []struct {
		pat, rel string
		want     bool
	}{
		{"data/*.csv", "data/a.csv", true},
		{"data/*.csv", "data/sub/a.csv", false},
		{"data/*.csv", "data/a.txt", false},
		{"data/**/*.csv", "data/sub/a.csv", true},
		{"data/**/*.csv", "data/a.csv", true},
		{"**", "x/y/z", true},
		{"*.py", "mod.py", true},
		{"[ab].txt", "c.txt", false},
	} {
		if got := Match(c.pat, c.rel); got != c.want {
			t.Errorf("Match(%q, %q) = %v, want %v", c.pat, c.rel, got, c.want)
		}
	}
}

func TestNeed(t *testing.T) {
	root := t.TempDir()
	outside := filepath.Join(t.TempDir(), "only-on-laptop.csv")
	if err := os.WriteFile(outside, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	known := []string{Name("data/a.csv"), Name("data/b.csv"), Name("data/sub/c.csv"), Name("mymod.py"), Name("pkg/__init__.py"), Name("pkg/x.py"), Name("notes.txt"), Name("/tmp/nb-own/f.txt"), "x"}
	for _, c := range []struct {
		name    string
		uses    []Use
		unknown bool
		imports []string
		want    []string
		outside []string
	}{
		{"literal read", []Use{{"data/a.csv", "read"}}, false, nil, []string{Name("data/a.csv")}, nil},
		{"absolute under the root", []Use{{filepath.Join(root, "notes.txt"), "read"}}, false, nil, []string{Name("notes.txt")}, nil},
		{"unknown file read", []Use{{"missing.csv", "read"}}, false, nil, nil, nil},
		{"glob", []Use{{"data/*.csv", "glob"}}, false, nil, []string{Name("data/a.csv"), Name("data/b.csv")}, nil},
		{"listing", []Use{{"data", "list"}}, false, nil, []string{Name("data/a.csv"), Name("data/b.csv"), Name("data/sub/c.csv")}, nil},
		{"plain write needs nothing", []Use{{"data/a.csv", "write"}}, false, nil, nil, nil},
		{"local module", nil, false, []string{"mymod", "numpy"}, []string{Name("mymod.py")}, nil},
		{"local package", nil, false, []string{"pkg"}, []string{Name("pkg/__init__.py"), Name("pkg/x.py")}, nil},
		{"unresolved I/O brings everything", nil, true, nil, []string{Name("/tmp/nb-own/f.txt"), Name("data/a.csv"), Name("data/b.csv"), Name("data/sub/c.csv"), Name("mymod.py"), Name("notes.txt"), Name("pkg/__init__.py"), Name("pkg/x.py")}, nil},
		{"outside the root", []Use{{outside, "read"}}, false, nil, nil, []string{outside}},
		{"outside the root, missing", []Use{{"/nonexistent/x.csv", "read"}}, false, nil, nil, nil},
		{"the notebook's own file outside the root", []Use{{"/tmp/nb-own/f.txt", "read"}}, false, nil, []string{Name("/tmp/nb-own/f.txt")}, nil},
		{"glob outside the root", []Use{{"/tmp/nb-own/*.txt", "glob"}}, false, nil, []string{Name("/tmp/nb-own/f.txt")}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := New(root).Need("cell", c.uses, c.unknown, c.imports, func() []string { return known })
			if !reflect.DeepEqual(got.Names, c.want) || !reflect.DeepEqual(got.Outside, c.outside) {
				t.Fatalf("Need = %+v, want names %v outside %v", got, c.want, c.outside)
			}
		})
	}
}

func TestLearnedReads(t *testing.T) {
	tr := New(t.TempDir())
	known := []string{Name("a.csv"), Name("b.csv"), Name("d/x")}
	if got := tr.Need("c1", nil, false, nil, func() []string { return known }); len(got.Names) != 0 {
		t.Fatalf("before learning: %v", got.Names)
	}
	tr.Learn("c1", []string{"a.csv"}, []string{"d"})
	tr.Learn("c1", []string{"b.csv"}, nil)
	want := []string{Name("a.csv"), Name("b.csv"), Name("d/x")}
	if got := tr.Need("c1", nil, false, nil, func() []string { return known }); !reflect.DeepEqual(got.Names, want) {
		t.Fatalf("after learning: %v, want %v", got.Names, want)
	}
	if got := tr.Need("c2", nil, false, nil, func() []string { return known }); len(got.Names) != 0 {
		t.Fatalf("another cell learned c1's reads: %v", got.Names)
	}
	tr.Chdir()
	if got := tr.Need("c2", []Use{{"whatever", "read"}}, false, nil, func() []string { return known }); len(got.Names) != 3 {
		t.Fatalf("after a chdir a relative read should bring every file: %v", got.Names)
	}
}

// TestOutsideChanges: a laptop file changed or removed by something other
// than a cell is noticed; one Ferry stamped after its own write is not.
func TestOutsideChanges(t *testing.T) {
	root := t.TempDir()
	tr := New(root)
	p := filepath.Join(root, "data.csv")
	if err := os.WriteFile(p, []byte("a\n1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tr.Stamp("data.csv")
	if changed, _, _, _ := tr.Outside("data.csv"); changed {
		t.Fatal("unchanged file reported changed")
	}
	// An editor rewrites it (another size; mtime may be equal on coarse clocks).
	if err := os.WriteFile(p, []byte("a\n1\n2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	changed, gone, size, v := tr.Outside("data.csv")
	if !changed || gone || size != 6 || v == "" {
		t.Fatalf("edited file: changed %v gone %v size %d version %q", changed, gone, size, v)
	}
	if changed, _, _, _ := tr.Outside("data.csv"); changed {
		t.Fatal("the same change reported twice")
	}
	// Ferry's own write, stamped after, is not an outside change.
	if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	tr.Stamp("data.csv")
	if changed, _, _, _ := tr.Outside("data.csv"); changed {
		t.Fatal("Ferry's own stamped write reported as an outside change")
	}
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	if changed, gone, _, _ := tr.Outside("data.csv"); !changed || !gone {
		t.Fatalf("removed file: changed %v gone %v", changed, gone)
	}
	if changed, _, _, _ := tr.Outside("never-stamped.csv"); changed {
		t.Fatal("a file never stamped and absent reported changed")
	}
}
