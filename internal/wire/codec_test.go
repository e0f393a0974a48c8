package wire

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func testSigner(t testing.TB) *Signer {
	s, err := NewSigner("hmac-sha256", []byte("k3y"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func encodeT(t testing.TB, s *Signer, m *Message) [][]byte {
	f, err := Encode(m, s)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func sample(t testing.TB) *Message {
	m, err := New("execute_request", "sess", "u", nil, map[string]any{"code": "1"})
	if err != nil {
		t.Fatal(err)
	}
	m.Identities = [][]byte{[]byte("id1")}
	m.Header.Extra = map[string]json.RawMessage{"subshell_id": json.RawMessage(`"s1"`)}
	m.Buffers = [][]byte{{0, 1, 2, 255}}
	return m
}

func TestRoundTripKeepsExtraHeaderFieldsAndBuffers(t *testing.T) {
	s := testSigner(t)
	got, err := Decode(encodeT(t, s, sample(t)), s)
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Header.Extra["subshell_id"]) != `"s1"` {
		t.Errorf("extra header field lost: %v", got.Header.Extra)
	}
	if len(got.Buffers) != 1 || string(got.Buffers[0]) != string([]byte{0, 1, 2, 255}) {
		t.Errorf("buffers changed: %v", got.Buffers)
	}
	if string(got.Identities[0]) != "id1" || got.Header.MsgType != "execute_request" {
		t.Errorf("decoded %+v", got)
	}
}

func TestDecodeRejects(t *testing.T) {
	s := testSigner(t)
	good := func() [][]byte { return encodeT(t, s, sample(t)) }
	d := 1 // index of the delimiter in sample's frames
	tests := []struct {
		name   string
		frames func() [][]byte
		want   error
	}{
		{"no delimiter", func() [][]byte { return [][]byte{[]byte("a"), []byte("b")} }, ErrMalformed},
		{"too few frames", func() [][]byte { return good()[:d+4] }, ErrMalformed},
		{"unsigned", func() [][]byte { f := good(); f[d+1] = nil; return f }, ErrUnsigned},
		{"bad signature", func() [][]byte { f := good(); f[d+1] = []byte(strings.Repeat("0", 64)); return f }, ErrBadSig},
		{"tampered content", func() [][]byte { f := good(); f[d+5] = []byte(`{"code":"evil"}`); return f }, ErrBadSig},
		{"content not an object", func() [][]byte {
			m := sample(t)
			m.Content = json.RawMessage(`[1]`)
			return encodeT(t, s, m)
		}, ErrMalformed},
		{"header without msg_type", func() [][]byte {
			m := sample(t)
			m.Header.MsgType = ""
			return encodeT(t, s, m)
		}, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Decode(tt.frames(), s); !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
	t.Run("replay", func(t *testing.T) {
		f := good()
		if _, err := Decode(f, s); err != nil {
			t.Fatal(err)
		}
		if _, err := Decode(f, s); !errors.Is(err, ErrReplayed) {
			t.Fatalf("replayed message: err = %v, want ErrReplayed", err)
		}
	})
}

func TestLoadConnFileErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, body, want string
	}{
		{"not json", "{", "not valid JSON"},
		{"bad transport", `{"transport":"udp","ip":"127.0.0.1","shell_port":1,"iopub_port":2,"stdin_port":3,"control_port":4,"hb_port":5}`, `transport "udp" is not supported`},
		{"missing port", `{"transport":"tcp","ip":"127.0.0.1","shell_port":1,"iopub_port":2,"stdin_port":3,"control_port":4}`, `"hb_port" is 0`},
		{"bad ip", `{"transport":"tcp","ip":"nowhere","shell_port":1,"iopub_port":2,"stdin_port":3,"control_port":4,"hb_port":5}`, `"ip" "nowhere" is not an IP address`},
		{"bad scheme", `{"transport":"tcp","ip":"127.0.0.1","shell_port":1,"iopub_port":2,"stdin_port":3,"control_port":4,"hb_port":5,"signature_scheme":"hmac-md5","key":"k"}`, "hmac-md5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "_")+".json")
			if err := os.WriteFile(p, []byte(tt.body), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := LoadConnFile(p)
			if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("err = %v, want one line containing %q", err, tt.want)
			}
		})
	}
	if _, err := LoadConnFile(filepath.Join(dir, "missing.json")); err == nil || !strings.Contains(err.Error(), "bad connection file") {
		t.Fatalf("missing file: %v", err)
	}
}

// FuzzDecode: malformed frames must never crash the kernel.
func FuzzDecode(f *testing.F) {
	s := testSigner(f)
	for _, fr := range [][][]byte{encodeT(f, s, sample(f)), {Delimiter}, {[]byte("x"), Delimiter, []byte("sig")}} {
		f.Add(join(fr))
	}
	f.Add([]byte("<IDS|MSG>\x00\x00{}\x00{}\x00{}\x00{}"))
	unsigned, _ := NewSigner("", nil)
	f.Fuzz(func(t *testing.T, data []byte) {
		frames := split(data)
		_, _ = Decode(frames, s)
		m, err := Decode(frames, unsigned)
		if err == nil {
			// Whatever decodes must encode again.
			if _, err := Encode(m, unsigned); err != nil {
				t.Fatalf("decoded message does not encode: %v", err)
			}
		}
	})
}

func join(frames [][]byte) []byte {
	var out []byte
	for i, f := range frames {
		if i > 0 {
			out = append(out, 0)
		}
		out = append(out, f...)
	}
	return out
}

func split(b []byte) [][]byte {
	var out [][]byte
	start := 0
	for i, c := range b {
		if c == 0 {
			out = append(out, b[start:i])
			start = i + 1
		}
	}
	return append(out, b[start:])
}
