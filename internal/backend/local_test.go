package backend

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ferry-nb/ferry/internal/testenv"
)

// The local kernel's connection file holds the HMAC key: it is gone once
// the kernel answers, not only at Shutdown, which a killed Ferry never
// reaches. The kernel keeps working without it.
func TestLocalLeavesNoConnectionFile(t *testing.T) {
	testenv.RequirePython(t)
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	l := NewLocal(testenv.Python())
	if err := l.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = l.Shutdown(ctx)
	})
	ents, err := os.ReadDir(tmp)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "ferry-local-") {
			t.Errorf("%s is still in TMPDIR after the kernel started", e.Name())
		}
	}
	if !l.Alive() {
		t.Fatal("the kernel died once its connection file was removed")
	}
}
