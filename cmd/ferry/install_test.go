package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferry-nb/ferry/internal/testenv"
)

// ferry install refuses what would put a secret into kernel.json or
// start a kernel that cannot work, and warns, installing anyway, when a
// cloud is named with no way for the kernel to find its token.
func TestInstallChecks(t *testing.T) {
	const secret = "s3cr3t-t0ken"
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	confWithToken := filepath.Join(dir, "config.json")
	if err := os.WriteFile(confWithToken, []byte(`{"token_file": `+toJSON(tokenFile)+`}`), 0o600); err != nil {
		t.Fatal(err)
	}
	noConf := filepath.Join(dir, "no-config.json")
	tests := []struct {
		name    string
		args    []string
		env     []string
		wantErr string // "" means install succeeds
		warn    string // on stderr with exit 0; "" means no warning
	}{
		{name: "plain", args: nil},
		{name: "token in query", args: []string{"--remote", "http://cloud.example:8888/?token=" + secret}, env: []string{"FERRY_TOKEN=" + secret},
			wantErr: "FERRY_TOKEN"},
		{name: "token among other query parameters", args: []string{"--remote", "https://cloud.example/lab?foo=1&Token=" + secret, "--token-file", tokenFile},
			wantErr: "--token-file"},
		{name: "user and password", args: []string{"--remote", "http://me:" + secret + "@cloud.example:8888"}, env: []string{"FERRY_TOKEN=" + secret},
			wantErr: "FERRY_TOKEN"},
		{name: "unknown policy", args: []string{"--policy", "fastest"}, wantErr: "unknown policy \"fastest\""},
		{name: "oracle policy", args: []string{"--policy", "oracle"}, wantErr: "oracle"},
		{name: "known policy", args: []string{"--policy", "ferry"}},
		{name: "remote without a token source", args: []string{"--remote", "http://cloud.example:8888"}, warn: "FERRY_TOKEN"},
		{name: "remote with FERRY_TOKEN", args: []string{"--remote", "http://cloud.example:8888"}, env: []string{"FERRY_TOKEN=" + secret}},
		{name: "remote with --token-file", args: []string{"--remote", "http://cloud.example:8888", "--token-file", tokenFile}},
		{name: "remote with FERRY_TOKEN_FILE", args: []string{"--remote", "http://cloud.example:8888"}, env: []string{"FERRY_TOKEN_FILE=" + tokenFile}},
		{name: "remote with a config file's token_file", args: []string{"--remote", "http://cloud.example:8888"}, env: []string{"FERRY_CONFIG=" + confWithToken}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prefix := t.TempDir()
			env := ferryEnv(append([]string{"FERRY_CONFIG=" + noConf}, tt.env...)...)
			args := append([]string{"install", "--prefix", prefix, "--python", testenv.Python()}, tt.args...)
			code, stderr := ferryCmd(t, env, args...)
			spec := filepath.Join(prefix, "share", "jupyter", "kernels", "ferry", "kernel.json")
			b, readErr := os.ReadFile(spec)
			if strings.Contains(string(b), secret) {
				t.Errorf("kernel.json holds the token:\n%s", b)
			}
			if tt.wantErr != "" {
				if code == 0 {
					t.Fatalf("ferry install %v succeeded; want it refused (%q)", tt.args, tt.wantErr)
				}
				if readErr == nil {
					t.Errorf("a refused install wrote %s", spec)
				}
				if lines := strings.Split(strings.TrimSpace(stderr), "\n"); len(lines) != 1 || !strings.Contains(lines[0], tt.wantErr) {
					t.Errorf("want one line naming %q, got:\n%s", tt.wantErr, stderr)
				}
				if strings.Contains(stderr, secret) {
					t.Errorf("the error repeats the token: %s", stderr)
				}
				return
			}
			if code != 0 || readErr != nil {
				t.Fatalf("ferry install %v: exit %d, %v\n%s", tt.args, code, readErr, stderr)
			}
			var ks struct {
				Argv []string `json:"argv"`
			}
			if err := json.Unmarshal(b, &ks); err != nil {
				t.Fatal(err)
			}
			gotWarn := strings.Contains(strings.ToLower(stderr), "warning")
			switch {
			case tt.warn != "" && (!gotWarn || !strings.Contains(stderr, tt.warn)):
				t.Errorf("want a warning naming %q on stderr, got:\n%s", tt.warn, stderr)
			case tt.warn == "" && gotWarn:
				t.Errorf("unexpected warning:\n%s", stderr)
			}
		})
	}
}
