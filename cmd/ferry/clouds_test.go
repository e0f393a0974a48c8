package main

import (
	"flag"
	"io"
	"strings"
	"testing"

	"github.com/ferry-nb/ferry/internal/kernel"
	"github.com/ferry-nb/ferry/internal/location"
)

func TestParseRemotes(t *testing.T) {
	tests := []struct {
		specs   []string
		want    []cloudSpec
		wantErr string
	}{
		{specs: nil},
		{specs: []string{"https://c.example/"}, want: []cloudSpec{{location.Remote, "https://c.example/"}}},
		{specs: []string{"gpu=https://g.example/?a=b", "cpu=http://127.0.0.1:8888"},
			want: []cloudSpec{{"gpu", "https://g.example/?a=b"}, {"cpu", "http://127.0.0.1:8888"}}},
		// A URL's own '=' is not a name.
		{specs: []string{"https://c.example/x?y=z"}, want: []cloudSpec{{location.Remote, "https://c.example/x?y=z"}}},
		{specs: []string{"https://a/", "https://b/"}, wantErr: "name each cloud"},
		{specs: []string{"gpu=https://a/", "gpu=https://b/"}, wantErr: `two clouds called "gpu"`},
		{specs: []string{"local=https://a/"}, wantErr: "not a cloud name"},
		{specs: []string{"GPU=https://a/"}, wantErr: "not a cloud name"},
		{specs: []string{"gpu="}, wantErr: "no URL"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.specs, " "), func(t *testing.T) {
			got, err := parseRemotes(tt.specs)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want one saying %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("got %v, want %v", got, tt.want)
				}
			}
		})
	}
}

// --remote is repeatable, and a command-line --remote replaces the
// environment's list rather than adding to it.
func TestRemoteFlagRepeats(t *testing.T) {
	t.Setenv("FERRY_REMOTE", "gpu=https://env.example/,cpu=https://env2.example/")
	var b backendFlags
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	b.register(fs)
	if got := b.remote.specs; len(got) != 2 {
		t.Fatalf("FERRY_REMOTE gave %v, want two clouds", got)
	}
	if err := fs.Parse([]string{"--remote", "a=https://a.example/", "--remote", "b=https://b.example/"}); err != nil {
		t.Fatal(err)
	}
	if got := b.remote.String(); got != "a=https://a.example/,b=https://b.example/" {
		t.Fatalf("--remote twice gave %q", got)
	}
}

// Each per-cloud flag takes one value for all, or NAME=VALUE for some,
// and names only configured clouds.
func TestCloudSettingsFromFlags(t *testing.T) {
	b := backendFlags{bandwidth: "100Mbit,gpu=20Mbit", rtt: "20ms,gpu=80ms", remoteSpeed: "2x,gpu=12x", cloudPrice: "gpu=2.48,cpu=0.19", remote: &remoteList{}}
	b.remote.specs = []string{"gpu=http://127.0.0.1:1", "cpu=http://127.0.0.1:2"}
	clouds, err := b.clouds()
	if err != nil {
		t.Fatal(err)
	}
	set := location.NewSet(location.Local, clouds[0].Loc, clouds[1].Loc)
	var cfg kernel.Config
	if err := b.cloudSettings(&cfg, set); err != nil {
		t.Fatal(err)
	}
	if cfg.RemoteSpeed != 2 || cfg.Link.Bandwidth != 100e6/8 || cfg.Link.RTT != 0.02 || cfg.CloudPrice != 0 {
		t.Fatalf("defaults: speed %v, link %+v, price %v", cfg.RemoteSpeed, cfg.Link, cfg.CloudPrice)
	}
	g, c := cfg.Clouds["gpu"], cfg.Clouds["cpu"]
	if g.Speed != 12 || g.Price != 2.48 || g.Link.Bandwidth != 20e6/8 || g.Link.RTT != 0.08 {
		t.Fatalf("gpu settings %+v", g)
	}
	if c.Speed != 0 || c.Price != 0.19 || c.Link.Bandwidth != 0 {
		t.Fatalf("cpu settings %+v (only its price was given)", c)
	}
	if cfg.Price("gpu") != 2.48 || cfg.Price("cpu") != 0.19 {
		t.Fatalf("prices %v, %v", cfg.Price("gpu"), cfg.Price("cpu"))
	}
	b.remoteSpeed = "tpu=4x"
	if err := b.cloudSettings(&cfg, set); err == nil || !strings.Contains(err.Error(), `no cloud called "tpu"`) || !strings.Contains(err.Error(), "cpu, gpu") {
		t.Fatalf("an unknown cloud's speed: %v", err)
	}
}

// A named cloud's token comes from its own variable first, then the
// shared one; the default cloud's only from the shared one.
func TestCloudTokens(t *testing.T) {
	t.Setenv("FERRY_TOKEN", "shared")
	t.Setenv("FERRY_TOKEN_GPU_EU", "gpu-own")
	if tok, _ := readCloudToken("gpu-eu", ""); tok != "gpu-own" {
		t.Fatal("gpu-eu did not get FERRY_TOKEN_GPU_EU")
	}
	if tok, _ := readCloudToken("cpu", ""); tok != "shared" {
		t.Fatal("cpu did not fall back to FERRY_TOKEN")
	}
	if tok, _ := readCloudToken(location.Remote, ""); tok != "shared" {
		t.Fatal("the default cloud did not get FERRY_TOKEN")
	}
}
