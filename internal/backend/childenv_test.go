package backend

import (
	"os"
	"strings"
	"testing"
)

func TestChildEnvDropsTheToken(t *testing.T) {
	t.Setenv("FERRY_TOKEN", "tok-3b9e0d")
	t.Setenv("FERRY_TOKEN_FILE", "/some/file")
	env := strings.Join(ChildEnv("EXTRA=1"), "\n")
	if strings.Contains(env, "tok-3b9e0d") {
		t.Fatal("the token is in a child's environment")
	}
	for _, want := range []string{"FERRY_TOKEN_FILE=/some/file", "EXTRA=1", "PATH=" + os.Getenv("PATH")} {
		if !strings.Contains(env, want) {
			t.Errorf("lost %s", want)
		}
	}
}
