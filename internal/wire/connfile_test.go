package wire

import (
	"encoding/json"
	"strings"
	"testing"
)

const goodConn = `{"transport":"tcp","ip":"127.0.0.1","shell_port":1,"iopub_port":2,"stdin_port":3,"control_port":4,"hb_port":5,"key":"k","signature_scheme":"hmac-sha256"}`

// withField returns goodConn with field set to the JSON value v, or
// removed if v is "".
func withField(t testing.TB, field, v string) string {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(goodConn), &m); err != nil {
		t.Fatal(err)
	}
	if v == "" {
		delete(m, field)
	} else {
		m[field] = json.RawMessage(v)
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestParseConnFileFieldErrors(t *testing.T) {
	tests := []struct{ field, value, says string }{
		{"shell_port", `"1"`, `"shell_port" must be a whole number, not a JSON string`},
		{"hb_port", `1.5`, `"hb_port" must be a whole number, not a JSON number 1.5`},
		{"iopub_port", `1e30`, `"iopub_port" must be a whole number`},
		{"stdin_port", `true`, `"stdin_port" must be a whole number, not a JSON bool`},
		{"control_port", `0`, `"control_port" is 0; each port must be between 1 and 65535`},
		{"control_port", ``, `"control_port" is 0`},
		{"shell_port", `65536`, `"shell_port" is 65536`},
		{"transport", `"udp"`, `transport "udp" is not supported`},
		{"transport", `"tcp\n"`, `transport "tcp\n" is not supported`},
		{"transport", `5`, `"transport" must be a string, not a JSON number;`},
		{"ip", `"1.2.3"`, `"ip" "1.2.3" is not an IP address`},
		{"ip", `["127.0.0.1"]`, `"ip" must be a string, not a JSON array`},
		{"signature_scheme", `"hmac-sha512"`, `signature_scheme "hmac-sha512" is not supported; use hmac-sha256`},
		{"signature_scheme", `"HMAC-SHA256"`, `signature_scheme "HMAC-SHA256" is not supported`},
		{"key", `""`, `"key" is empty`},
		{"key", ``, `"key" is empty`},
		{"key", `null`, `"key" is empty`},
		{"key", `12345678`, `"key" must be a string, not a JSON number;`},
		{"key", `{"k":1}`, `"key" must be a string, not a JSON object`},
	}
	for _, tt := range tests {
		t.Run(tt.field+"="+tt.value, func(t *testing.T) {
			c, err := ParseConnFile([]byte(withField(t, tt.field, tt.value)), "kernel-1.json")
			if err == nil {
				t.Fatalf("accepted %+v", c)
			}
			if c != (ConnInfo{}) {
				t.Fatalf("a rejected file also gave %+v", c)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "bad connection file kernel-1.json: ") || !strings.Contains(msg, tt.says) || strings.Contains(msg, "\n") {
				t.Fatalf("err = %q, want one line naming the file and saying %q", msg, tt.says)
			}
		})
	}
	t.Run("defaults", func(t *testing.T) {
		c, err := ParseConnFile([]byte(withField(t, "signature_scheme", "")), "k.json")
		if err != nil || c.SignatureScheme != "hmac-sha256" || c.Transport != "tcp" {
			t.Fatalf("%+v %v", c, err)
		}
		if c, err = ParseConnFile([]byte(withField(t, "transport", "")), "k.json"); err != nil || c.Transport != "tcp" {
			t.Fatalf("%+v %v", c, err)
		}
	})
}

// keySentinel stands in for a key in FuzzParseConnFile: it must never show
// in an error or in String.
const keySentinel = "S3CR3T-KEY-a91f0c"

// FuzzParseConnFile: no input makes the parser panic; a rejection is one
// line naming the file, with an empty ConnInfo; an accepted file is
// usable (supported transport and scheme, a key, five distinct ports) and
// reads back the same after writing; the key shows in no error and not in
// String.
func FuzzParseConnFile(f *testing.F) {
	f.Add([]byte(goodConn))
	f.Add([]byte(`{"transport":"ipc","ip":"/tmp/k","shell_port":1,"iopub_port":2,"stdin_port":3,"control_port":4,"hb_port":5,"key":"a"}`))
	f.Add([]byte(`{"ip":"::1","shell_port":65535,"iopub_port":2,"stdin_port":3,"control_port":4,"hb_port":5,"key":"k","kernel_name":"python3"}`))
	f.Add([]byte(`{"ip":"*","shell_port":1,"iopub_port":1,"stdin_port":3,"control_port":4,"hb_port":5,"key":"k"}`))
	f.Add([]byte(`{"ip":"localhost","shell_port":-1,"iopub_port":2,"stdin_port":3,"control_port":4,"hb_port":5,"key":"k"}`))
	f.Add([]byte(`{"ip":"127.0.0.1","shell_port":"1","key":7}`))
	f.Add([]byte(`{"ip":"127.0.0.1","shell_port":1e3,"iopub_port":2.0,"key":""}`))
	f.Add([]byte(`{"transport":"ipc","ip":"a\u0000b","shell_port":1,"iopub_port":2,"stdin_port":3,"control_port":4,"hb_port":5,"key":"k"}`))
	f.Add([]byte(`{"signature_scheme":"hmac-md5","key":"k","IP":"127.0.0.1","Shell_Port":1}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"key":"\ud800"}`))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		const name = "conn.json"
		check := func(b []byte) (ConnInfo, error) {
			c, err := ParseConnFile(b, name)
			if err != nil {
				if c != (ConnInfo{}) {
					t.Fatalf("a rejected file also gave %+v", c)
				}
				if msg := err.Error(); !strings.HasPrefix(msg, "bad connection file "+name+": ") || strings.Contains(msg, "\n") {
					t.Fatalf("error %q is not one line naming the file", msg)
				}
				return c, err
			}
			if c.Transport != "tcp" && c.Transport != "ipc" || c.SignatureScheme != "hmac-sha256" || c.Key == "" || c.IP == "" {
				t.Fatalf("accepted unusable connection info %+v", c)
			}
			seen := map[int]bool{}
			for _, p := range []int{c.ShellPort, c.IOPubPort, c.StdinPort, c.ControlPort, c.HBPort} {
				if p < 1 || p > 65535 || seen[p] {
					t.Fatalf("accepted ports %+v", c)
				}
				seen[p] = true
			}
			if _, err := NewSigner(c.SignatureScheme, []byte(c.Key)); err != nil {
				t.Fatalf("accepted a file whose key cannot sign: %v", err)
			}
			out, err := json.MarshalIndent(c, "", "  ") // as Write does
			if err != nil {
				t.Fatal(err)
			}
			again, err := ParseConnFile(out, name)
			if err != nil || again != c {
				t.Fatalf("written %+v read back as %+v, %v", c, again, err)
			}
			return c, nil
		}
		check(b)
		// The same file with a known key: the key shows nowhere.
		var m map[string]json.RawMessage
		if strings.Contains(string(b), keySentinel) || json.Unmarshal(b, &m) != nil || m == nil {
			return
		}
		for k := range m {
			if strings.EqualFold(k, "key") {
				delete(m, k)
			}
		}
		m["key"] = json.RawMessage(`"` + keySentinel + `"`)
		withKey, err := json.Marshal(m)
		if err != nil {
			return
		}
		c, err := check(withKey)
		if err != nil {
			if strings.Contains(err.Error(), keySentinel) {
				t.Fatalf("the error shows the key: %v", err)
			}
			return
		}
		if c.Key != keySentinel {
			t.Fatalf("key %q read as %q", keySentinel, c.Key)
		}
		if strings.Contains(c.String(), keySentinel) {
			t.Fatalf("String shows the key: %s", c)
		}
	})
}
