package client

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ferry-nb/ferry/internal/backend"
	"github.com/ferry-nb/ferry/internal/kernel"
	"github.com/ferry-nb/ferry/internal/location"
	"github.com/ferry-nb/ferry/internal/testenv"
)

// TestStreamsMergeLikeNbformat: consecutive stream messages of one name
// join into one output, as nbclient stores them; another stream name, a
// display or a clear_output starts a new one. Large floods join in linear
// time (they were copied whole at every message).
func TestStreamsMergeLikeNbformat(t *testing.T) {
	testenv.RequirePython(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := StartFerry(ctx, kernel.Config{Backends: map[location.Location]backend.Backend{"local": backend.NewLocal(testenv.Python())}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	summary := func(r *Result) string {
		var parts []string
		for _, o := range r.Outputs {
			switch o["output_type"] {
			case "stream":
				parts = append(parts, fmt.Sprintf("%s:%q", o["name"], o["text"]))
			default:
				d, _ := o["data"].(map[string]any)
				parts = append(parts, fmt.Sprintf("%s:%v", o["output_type"], d["text/plain"]))
			}
		}
		return strings.Join(parts, " ")
	}
	for _, tc := range []struct{ code, want string }{
		{"import sys\nfrom IPython.display import display, clear_output\nprint('a', flush=True); print('b', flush=True)\nprint('e', file=sys.stderr, flush=True)\nprint('c', flush=True)\ndisplay(1)\nprint('d', flush=True); print('f', flush=True)",
			`stdout:"a\nb\n" stderr:"e\n" stdout:"c\n" display_data:1 stdout:"d\nf\n"`},
		{"print('x', flush=True)\nclear_output()\nprint('y', flush=True); print('z', flush=True)", `stdout:"y\nz\n"`},
		{"print('p', flush=True)\nclear_output(wait=True)\nprint('q', flush=True); print('r', flush=True)", `stdout:"q\nr\n"`},
	} {
		r, err := s.Execute(ctx, tc.code, ExecOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got := summary(r); got != tc.want {
			t.Errorf("%q:\n got %s\nwant %s", tc.code, got, tc.want)
		}
	}
	// 64 x 1 MiB prints: one output of 64 MiB, each piece in order.
	r, err := s.Execute(ctx, "for i in range(64):\n    print(chr(65 + i % 26) * ((1 << 20) - 1), flush=True)", ExecOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Outputs) != 1 {
		t.Fatalf("%d outputs, want 1 stream", len(r.Outputs))
	}
	text := r.Outputs[0]["text"].(string)
	if len(text) != 64<<20 {
		t.Fatalf("%d bytes, want %d", len(text), 64<<20)
	}
	for i := 0; i < 64; i++ {
		if c := text[i<<20]; c != byte(65+i%26) || text[(i+1)<<20-1] != '\n' {
			t.Fatalf("piece %d starts with %q", i, c)
		}
	}
}
