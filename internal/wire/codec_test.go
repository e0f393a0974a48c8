package wire

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const testKey = "k3y"

func testSigner(t testing.TB) *Signer {
	t.Helper()
	s, err := NewSigner("hmac-sha256", []byte(testKey))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func encodeT(t testing.TB, s *Signer, m *Message) [][]byte {
	t.Helper()
	f, err := Encode(m, s)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func sample(t testing.TB) *Message {
	t.Helper()
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

// signedFrames signs raw header, parent, metadata and content frames, so
// a test reaches the checks behind the signature.
func signedFrames(s *Signer, header, parent, meta, content string, rest ...[]byte) [][]byte {
	h, p, m, c := []byte(header), []byte(parent), []byte(meta), []byte(content)
	return append([][]byte{[]byte("id"), Delimiter, s.Sign(h, p, m, c), h, p, m, c}, rest...)
}

func TestDecodeRejects(t *testing.T) {
	s := testSigner(t)
	good := func() [][]byte { return encodeT(t, s, sample(t)) }
	d := 1 // index of the delimiter in sample's frames
	const hdr = `{"msg_id":"1","session":"s","username":"u","date":"","msg_type":"execute_request","version":"5.3"}`
	tests := []struct {
		name   string
		frames func() [][]byte
		want   error
		says   string // the error message must say this
	}{
		{"no frames", func() [][]byte { return nil }, ErrMalformed, "no <IDS|MSG> delimiter"},
		{"no delimiter", func() [][]byte { return [][]byte{[]byte("a"), []byte("b")} }, ErrMalformed, "no <IDS|MSG> delimiter"},
		{"delimiter last", func() [][]byte { return [][]byte{[]byte("id"), Delimiter} }, ErrMalformed, "0 frames after the delimiter"},
		{"too few frames", func() [][]byte { return good()[:d+4] }, ErrMalformed, "3 frames after the delimiter, need at least 5"},
		{"unsigned", func() [][]byte { f := good(); f[d+1] = nil; return f }, ErrUnsigned, "not signed"},
		{"bad signature", func() [][]byte { f := good(); f[d+1] = []byte(strings.Repeat("0", 64)); return f }, ErrBadSig, "wrong key"},
		{"signature of another key", func() [][]byte {
			other, _ := NewSigner("hmac-sha256", []byte("other"))
			return encodeT(t, other, sample(t))
		}, ErrBadSig, "does not match"},
		{"tampered content", func() [][]byte { f := good(); f[d+5] = []byte(`{"code":"evil"}`); return f }, ErrBadSig, "does not match"},
		{"header not JSON", func() [][]byte { return signedFrames(s, `{`, `{}`, `{}`, `{}`) }, ErrMalformed, "header"},
		{"header null", func() [][]byte { return signedFrames(s, `null`, `{}`, `{}`, `{}`) }, ErrMalformed, "header is null"},
		{"header a list", func() [][]byte { return signedFrames(s, `[]`, `{}`, `{}`, `{}`) }, ErrMalformed, "header"},
		{"msg_type not a string", func() [][]byte { return signedFrames(s, `{"msg_type":5}`, `{}`, `{}`, `{}`) }, ErrMalformed, `"msg_type" is not a string`},
		{"header without msg_type", func() [][]byte {
			m := sample(t)
			m.Header.MsgType = ""
			return encodeT(t, s, m)
		}, ErrMalformed, "no msg_type"},
		{"parent not an object", func() [][]byte { return signedFrames(s, hdr, `null`, `{}`, `{}`) }, ErrMalformed, "parent header is not a JSON object"},
		{"metadata not an object", func() [][]byte { return signedFrames(s, hdr, `{}`, `[]`, `{}`) }, ErrMalformed, "metadata is not a JSON object"},
		{"content not an object", func() [][]byte {
			m := sample(t)
			m.Content = json.RawMessage(`[1]`)
			return encodeT(t, s, m)
		}, ErrMalformed, "content is not a JSON object"},
		{"content a string", func() [][]byte { return signedFrames(s, hdr, `{}`, `{}`, `"code"`) }, ErrMalformed, "content is not a JSON object"},
		{"content cut short", func() [][]byte { return signedFrames(s, hdr, `{}`, `{}`, `{"code": 1`) }, ErrMalformed, "content is not a JSON object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode(tt.frames(), s)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if msg := err.Error(); !strings.Contains(msg, tt.says) || strings.Contains(msg, "\n") {
				t.Errorf("error %q should be one line saying %q", msg, tt.says)
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
		// Another signer (another connection's key) keeps its own window.
		if _, err := Decode(f, testSigner(t)); err != nil {
			t.Fatalf("a fresh signer rejected a new message: %v", err)
		}
	})
	t.Run("replay after a rejected copy", func(t *testing.T) {
		f := good()
		bad := append([][]byte(nil), f...)
		bad[d+5] = []byte(`{"code":"evil"}`)
		if _, err := Decode(bad, s); !errors.Is(err, ErrBadSig) {
			t.Fatalf("tampered: %v", err)
		}
		// A forged copy must not use up the genuine message's signature.
		if _, err := Decode(f, s); err != nil {
			t.Fatalf("the genuine message after a forged copy: %v", err)
		}
	})
	t.Run("empty key disables signing", func(t *testing.T) {
		off, err := NewSigner("", nil)
		if err != nil {
			t.Fatal(err)
		}
		f := encodeT(t, off, sample(t))
		if len(f[d+1]) != 0 {
			t.Fatalf("signature %q with no key", f[d+1])
		}
		if _, err := Decode(f, off); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("unsupported scheme", func(t *testing.T) {
		if _, err := NewSigner("hmac-md5", []byte("k")); err == nil || !strings.Contains(err.Error(), "hmac-sha256") {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestLoadConnFileErrors(t *testing.T) {
	dir := t.TempDir()
	const ports = `"shell_port":1,"iopub_port":2,"stdin_port":3,"control_port":4,"hb_port":5`
	tests := []struct {
		name, body, want string
	}{
		{"empty file", "", "not valid JSON"},
		{"not json", "{", "not valid JSON"},
		{"a list", "[]", "not valid JSON"},
		{"port as text", `{"transport":"tcp","ip":"127.0.0.1","shell_port":"1"}`, `"shell_port" must be a whole number, not a JSON string`},
		{"no key", `{"transport":"tcp","ip":"127.0.0.1",` + ports + `}`, `"key" is empty`},
		{"bad transport", `{"transport":"udp","ip":"127.0.0.1",` + ports + `}`, `transport "udp" is not supported`},
		{"no ip", `{"transport":"tcp",` + ports + `}`, `"ip" is missing`},
		{"bad ip", `{"transport":"tcp","ip":"nowhere",` + ports + `}`, `"ip" "nowhere" is not an IP address`},
		{"ipc without path", `{"transport":"ipc",` + ports + `}`, `"ip" (the ipc path prefix) is missing`},
		{"missing port", `{"transport":"tcp","ip":"127.0.0.1","shell_port":1,"iopub_port":2,"stdin_port":3,"control_port":4}`, `"hb_port" is 0`},
		{"port too big", `{"transport":"tcp","ip":"127.0.0.1","shell_port":70000,"iopub_port":2,"stdin_port":3,"control_port":4,"hb_port":5}`, `"shell_port" is 70000`},
		{"negative port", `{"transport":"tcp","ip":"127.0.0.1","shell_port":1,"iopub_port":-2,"stdin_port":3,"control_port":4,"hb_port":5}`, `"iopub_port" is -2`},
		{"shared port", `{"transport":"tcp","ip":"127.0.0.1","shell_port":1,"iopub_port":2,"stdin_port":3,"control_port":1,"hb_port":5}`, `control_port and shell_port are both 1`},
		{"bad scheme", `{"transport":"tcp","ip":"127.0.0.1",` + ports + `,"signature_scheme":"hmac-md5","key":"k"}`, "hmac-md5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "_")+".json")
			if err := os.WriteFile(p, []byte(tt.body), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := LoadConnFile(p)
			if err == nil {
				t.Fatalf("loaded %s", tt.body)
			}
			if msg := err.Error(); !strings.Contains(msg, tt.want) || !strings.Contains(msg, p) || strings.Contains(msg, "\n") {
				t.Fatalf("err = %q, want one line naming the file and containing %q", msg, tt.want)
			}
		})
	}
	for name, path := range map[string]string{"missing file": filepath.Join(dir, "missing.json"), "a directory": dir} {
		t.Run(name, func(t *testing.T) {
			_, err := LoadConnFile(path)
			if err == nil || !strings.Contains(err.Error(), "bad connection file") || !strings.Contains(err.Error(), path) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("err = %v", err)
			}
		})
	}
	t.Run("written files load", func(t *testing.T) {
		info, err := NewLocalConnInfo()
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, "ok.json")
		if err := info.Write(p); err != nil {
			t.Fatal(err)
		}
		if st, err := os.Stat(p); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("connection file mode %v, want 0600 (it holds the key)", st.Mode())
		}
		got, err := LoadConnFile(p)
		if err != nil || got != info {
			t.Fatalf("loaded %+v, %v; want %+v", got, err, info)
		}
		if strings.Contains(info.String(), info.Key) {
			t.Error("String shows the key")
		}
	})
}

// fuzzFrames encodes frames as the fuzzer's input: each frame is a uvarint
// length and its bytes, so frames may hold any byte, NUL included.
func fuzzFrames(frames [][]byte) []byte {
	var out []byte
	for _, f := range frames {
		out = binary.AppendUvarint(out, uint64(len(f)))
		out = append(out, f...)
	}
	return out
}

// unfuzzFrames is the inverse; a bad length takes the rest as one frame.
func unfuzzFrames(b []byte) [][]byte {
	var out [][]byte
	for len(b) > 0 {
		n, k := binary.Uvarint(b)
		if k <= 0 || n > uint64(len(b)-k) {
			return append(out, b)
		}
		out = append(out, b[k:k+int(n)])
		b = b[k+int(n):]
	}
	return out
}

// FuzzDecode: no sequence of frames makes Decode panic, and whatever it
// accepts encodes again and decodes to the same message.
func FuzzDecode(f *testing.F) {
	s := testSigner(f)
	unsigned, _ := NewSigner("", nil)
	const hdr = `{"msg_id":"1","session":"s","username":"u","date":"","msg_type":"execute_request","version":"5.3"}`
	full := sample(f)
	full.Identities = [][]byte{[]byte("a"), {}, Delimiter[:3]}
	full.Buffers = [][]byte{{}, Delimiter, bytes.Repeat([]byte{0}, 64), []byte("\xff\xfe")}
	full.Header.Extra["x"] = json.RawMessage(`{"deep":[1,{"a":null}]}`)
	seeds := [][][]byte{
		encodeT(f, s, sample(f)),
		encodeT(f, s, full),
		encodeT(f, unsigned, full),
		{Delimiter},
		{[]byte("x"), Delimiter, []byte("sig")},
		{Delimiter, nil, []byte("{}"), []byte("{}"), []byte("{}"), []byte("{}")},
		{Delimiter, nil, []byte(hdr), []byte("{}"), []byte("{}"), []byte("{}")},
		{Delimiter, nil, []byte(`{"msg_type":"a","msg_id":null,"date":7}`), []byte("{}"), []byte("{}"), []byte("{}")},
		{Delimiter, nil, []byte(hdr), []byte(" {} "), []byte("{\n}"), []byte(`{"a":"\u0000"}`)},
		{Delimiter, nil, []byte(`{"msg_type":"x","extra":` + strings.Repeat("[", 64) + strings.Repeat("]", 64) + `}`), []byte("{}"), []byte("{}"), []byte("{}")},
		{Delimiter, nil, []byte(hdr), []byte("{"), []byte("}"), []byte("{}")},
		signedFrames(s, hdr, `{}`, `{}`, `{"code":"print(1)"}`, []byte("buf")),
		signedFrames(s, `{"msg_type":"\ud800"}`, `{}`, `{}`, `{}`),
		// Frame counts: 4 signed frames after the delimiter, none, a
		// delimiter among the identities and one later.
		signedFrames(s, hdr, `{}`, `{}`, `{}`)[:6],
		{[]byte("id"), Delimiter},
		append([][]byte{Delimiter[:8], []byte("<IDS|MSG>x")}, signedFrames(s, hdr, `{}`, `{}`, `{}`)[1:]...),
		append([][]byte{Delimiter}, signedFrames(s, hdr, `{}`, `{}`, `{}`)...),
		// Bad HMACs: upper-case hex, cut short, one digit changed, another
		// key's, a signature over other frames.
		func() [][]byte {
			fr := signedFrames(s, hdr, `{}`, `{}`, `{}`)
			fr[2] = bytes.ToUpper(fr[2])
			return fr
		}(),
		func() [][]byte { fr := signedFrames(s, hdr, `{}`, `{}`, `{}`); fr[2] = fr[2][:63]; return fr }(),
		func() [][]byte { fr := signedFrames(s, hdr, `{}`, `{}`, `{}`); fr[2][0] ^= 1; return fr }(),
		signedFrames(testSignerKey(f, "other"), hdr, `{}`, `{}`, `{}`),
		func() [][]byte { fr := signedFrames(s, hdr, `{}`, `{}`, `{}`); fr[6] = []byte(`{"a":1}`); return fr }(),
	}
	for _, fr := range seeds {
		f.Add(fuzzFrames(fr))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		frames := unfuzzFrames(data)
		mk, errk := Decode(frames, testSigner(t))
		if errk != nil {
			if !errors.Is(errk, ErrMalformed) && !errors.Is(errk, ErrUnsigned) && !errors.Is(errk, ErrBadSig) {
				t.Fatalf("a signed decode failed with %v, want ErrMalformed, ErrUnsigned or ErrBadSig", errk)
			}
			if mk != nil {
				t.Fatalf("a rejected message also gave %+v", mk)
			}
		}
		m, err := Decode(frames, unsigned)
		for _, e := range []error{errk, err} {
			if e != nil && strings.Contains(e.Error(), "\n") {
				t.Fatalf("error is not one line: %q", e)
			}
		}
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("an unsigned decode failed with %v, want ErrMalformed", err)
			}
			if errk == nil {
				t.Fatalf("the keyed decoder accepted what is malformed: %v", err)
			}
			return
		}
		if errk == nil {
			// Only a genuine signature passes: it is the HMAC of the four
			// signed frames under the key.
			d := len(mk.Identities)
			if !bytes.Equal(frames[d+1], s.Sign(frames[d+2], frames[d+3], frames[d+4], frames[d+5])) {
				t.Fatalf("accepted signature %q", frames[d+1])
			}
		}
		again, err := Encode(m, unsigned)
		if err != nil {
			t.Fatalf("decoded message does not encode: %v", err)
		}
		m2, err := Decode(again, unsigned)
		if err != nil {
			t.Fatalf("re-encoded message does not decode: %v", err)
		}
		h1, _ := json.Marshal(m.Header)
		h2, _ := json.Marshal(m2.Header)
		if !bytes.Equal(h1, h2) || !bytes.Equal(m.Parent, m2.Parent) || !bytes.Equal(m.Metadata, m2.Metadata) ||
			!bytes.Equal(m.Content, m2.Content) || len(m.Buffers) != len(m2.Buffers) || len(m.Identities) != len(m2.Identities) {
			t.Fatalf("round trip changed the message:\n%s %s %s\n%s %s %s", h1, m.Parent, m.Content, h2, m2.Parent, m2.Content)
		}
		for i := range m.Buffers {
			if !bytes.Equal(m.Buffers[i], m2.Buffers[i]) {
				t.Fatalf("buffer %d changed", i)
			}
		}
		// A message this codec signs, it accepts.
		signed, err := Encode(m2, s)
		if err != nil {
			t.Fatal(err)
		}
		fresh := testSigner(t)
		if _, err := Decode(signed, fresh); err != nil {
			t.Fatalf("a freshly signed message was rejected: %v", err)
		}
		if _, err := Decode(signed, fresh); !errors.Is(err, ErrReplayed) {
			t.Fatalf("a replayed message: err = %v, want ErrReplayed", err)
		}
		// Any one bit changed in a signed frame breaks the signature.
		d := len(m2.Identities)
		i := d + 2 + len(data)%4
		bit := len(data) % 8
		if len(signed[i]) > 0 {
			tampered := append([][]byte(nil), signed...)
			tampered[i] = bytes.Clone(signed[i])
			tampered[i][len(data)%len(signed[i])] ^= 1 << bit
			if _, err := Decode(tampered, testSigner(t)); !errors.Is(err, ErrBadSig) {
				t.Fatalf("frame %d tampered: err = %v, want ErrBadSig", i-d-2, err)
			}
		}
	})
}

func testSignerKey(t testing.TB, key string) *Signer {
	t.Helper()
	s, err := NewSigner("hmac-sha256", []byte(key))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestFuzzFramesRoundTrip(t *testing.T) {
	in := [][]byte{{}, {0, 0}, Delimiter, bytes.Repeat([]byte{7}, 300)}
	if got := unfuzzFrames(fuzzFrames(in)); len(got) != len(in) || !bytes.Equal(got[3], in[3]) || !bytes.Equal(got[1], in[1]) {
		t.Fatalf("frames %q became %q", in, got)
	}
}

// The hand-written header encoding says what json.Marshal of the map did,
// escapes included, and a decoded message's header goes on as it came.
func TestHeaderEncodingFastPath(t *testing.T) {
	for _, h := range []Header{
		NewHeader("execute_request", "sess", "u"),
		{MsgID: `a"b\c`, Session: "s\n\x01", Username: "ü <&>", Date: "d", MsgType: "t", Version: "5.3"},
		{},
	} {
		fast, _ := h.MarshalJSON()
		var back Header
		if err := json.Unmarshal(fast, &back); err != nil {
			t.Fatalf("%s: %v", fast, err)
		}
		if back.MsgID != h.MsgID || back.Session != h.Session || back.Username != h.Username || back.Date != h.Date || back.MsgType != h.MsgType || back.Version != h.Version || back.Extra != nil {
			t.Errorf("round trip of %+v gave %+v", h, back)
		}
		slow, _ := json.Marshal(map[string]any{"msg_id": h.MsgID, "session": h.Session, "username": h.Username, "date": h.Date, "msg_type": h.MsgType, "version": h.Version})
		var a, b map[string]string
		_ = json.Unmarshal(fast, &a)
		_ = json.Unmarshal(slow, &b)
		if len(a) != 6 || len(b) != 6 || a["msg_id"] != b["msg_id"] || a["session"] != b["session"] || a["username"] != b["username"] {
			t.Errorf("fast %s, slow %s", fast, slow)
		}
	}
	s := testSigner(t)
	raw := `{"version":"5.3","msg_type":"execute_request","msg_id":"m1","date":"d","session":"s","username":"u","subshell_id":null}`
	m, err := Decode(signedFrames(s, raw, "{}", "{}", "{}"), s)
	if err != nil {
		t.Fatal(err)
	}
	if string(m.HeaderJSON()) != raw {
		t.Errorf("HeaderJSON = %s, want the header as received", m.HeaderJSON())
	}
}
