package backend

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/ferry-nb/ferry/internal/wire"
)

// wsSample is a message with every part filled, extra header fields and
// buffers, one of them empty.
func wsSample(t testing.TB, bufs ...[]byte) *wire.Message {
	t.Helper()
	m, err := wire.New("comm_msg", "sess", "u", json.RawMessage(`{"msg_id":"p"}`), map[string]any{"comm_id": "c", "data": map[string]any{"op": "chunk", "seq": 1}})
	if err != nil {
		t.Fatal(err)
	}
	m.Metadata = json.RawMessage(`{"m":[1,2]}`)
	m.Header.Extra = map[string]json.RawMessage{"subshell_id": json.RawMessage(`"s1"`)}
	m.Buffers = bufs
	return m
}

func mustV1(t testing.TB, ch wire.Channel, m *wire.Message) []byte {
	t.Helper()
	b, err := encodeV1(ch, m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustLegacy(t testing.TB, ch wire.Channel, m *wire.Message) ([]byte, bool) {
	t.Helper()
	b, bin, err := encodeLegacy(ch, m)
	if err != nil {
		t.Fatal(err)
	}
	return b, bin
}

// sameJSON compares two JSON texts by value (the legacy framing re-encodes
// them, compacting and escaping).
func sameJSON(t testing.TB, a, b []byte) bool {
	t.Helper()
	var va, vb any
	if err := json.Unmarshal(orEmpty(a), &va); err != nil {
		t.Fatalf("%q is not JSON: %v", a, err)
	}
	if err := json.Unmarshal(orEmpty(b), &vb); err != nil {
		t.Fatalf("%q is not JSON: %v", b, err)
	}
	return reflect.DeepEqual(va, vb)
}

// sameMessage fails unless a and b carry the same header, parts and buffers.
// exact compares parent, metadata and content byte for byte (v1 keeps
// them as sent); otherwise by JSON value.
func sameMessage(t testing.TB, a, b *wire.Message, exact bool) {
	t.Helper()
	ha, _ := json.Marshal(a.Header)
	hb, _ := json.Marshal(b.Header)
	if !sameJSON(t, ha, hb) {
		t.Fatalf("header %s became %s", ha, hb)
	}
	for _, p := range []struct {
		name string
		x, y []byte
	}{{"parent", a.Parent, b.Parent}, {"metadata", a.Metadata, b.Metadata}, {"content", a.Content, b.Content}} {
		if exact && !bytes.Equal(orEmpty(p.x), orEmpty(p.y)) || !exact && !sameJSON(t, p.x, p.y) {
			t.Fatalf("%s %q became %q", p.name, p.x, p.y)
		}
	}
	if len(a.Buffers) != len(b.Buffers) {
		t.Fatalf("%d buffers became %d", len(a.Buffers), len(b.Buffers))
	}
	for i := range a.Buffers {
		if !bytes.Equal(a.Buffers[i], b.Buffers[i]) {
			t.Fatalf("buffer %d changed", i)
		}
	}
}

// checkFrameErr fails unless err is a one-line errFrame.
func checkFrameErr(t testing.TB, err error) {
	t.Helper()
	if !errors.Is(err, errFrame) {
		t.Fatalf("error %v is not errFrame", err)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Fatalf("error is not one line: %q", err)
	}
}

func TestWSFrameRoundTrip(t *testing.T) {
	for _, bufs := range [][][]byte{nil, {{}}, {{0, 1, 2, 255}, {}, bytes.Repeat([]byte{7}, 1000)}} {
		m := wsSample(t, bufs...)
		ch, got, err := decodeV1(mustV1(t, wire.IOPub, m))
		if err != nil || ch != wire.IOPub {
			t.Fatalf("v1 with %d buffers: %q %v", len(bufs), ch, err)
		}
		sameMessage(t, m, got, true)
		b, bin := mustLegacy(t, wire.Shell, m)
		if bin != (len(bufs) > 0) {
			t.Fatalf("legacy frame with %d buffers: binary=%v", len(bufs), bin)
		}
		ch, got, err = decodeLegacy(b, bin)
		if err != nil || ch != wire.Shell {
			t.Fatalf("legacy with %d buffers: %q %v", len(bufs), ch, err)
		}
		sameMessage(t, m, got, false)
	}
}

// v1Frame builds a v1 frame from raw offsets and parts, so a test can
// write any offsets it likes.
func v1Frame(offs []uint64, body []byte) []byte {
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(offs)))
	for _, o := range offs {
		out = binary.LittleEndian.AppendUint64(out, o)
	}
	return append(out, body...)
}

func TestDecodeV1Rejects(t *testing.T) {
	good := mustV1(t, wire.Shell, wsSample(t, []byte("buf")))
	n := int(binary.LittleEndian.Uint64(good))
	setOff := func(i int, v uint64) []byte {
		b := bytes.Clone(good)
		binary.LittleEndian.PutUint64(b[8*(i+1):], v)
		return b
	}
	hdr := `{"msg_type":"x"}`
	tests := []struct {
		name  string
		frame []byte
		says  string
	}{
		{"empty", nil, "0 bytes"},
		{"short", []byte{1, 2, 3}, "3 bytes"},
		{"count only", binary.LittleEndian.AppendUint64(nil, 6), "6 offsets"},
		{"too few offsets", setOff(-1, 5), "5 offsets"},
		{"count past the end", setOff(-1, uint64(len(good)/8)), "offsets"},
		{"offsets end where the last should start", func() []byte {
			b := v1Frame([]uint64{56, 56, 56, 56, 56, 56}, nil)
			binary.LittleEndian.PutUint64(b, 7)
			return b
		}(), "7 offsets"},
		{"huge count", setOff(-1, 1<<62), "offsets"},
		{"offset past the end", setOff(n-1, uint64(len(good)+1)), "out of range"},
		{"offset far past the end", setOff(2, 1<<63), "out of range"},
		{"offsets go back", setOff(3, 8), "out of range"},
		{"first offset inside the offsets", setOff(0, 8), "overlap"},
		{"header not JSON", v1Frame([]uint64{56, 61, 62, 64, 66, 68}, []byte("shell{{}{}{}")), "header"},
		{"no msg_type", v1Frame([]uint64{56, 61, 63, 65, 67, 69}, []byte("shell{}{}{}{}")), "no msg_type"},
		{"content not an object", v1Frame([]uint64{56, 61, 61 + uint64(len(hdr)), 63 + uint64(len(hdr)), 65 + uint64(len(hdr)), 68 + uint64(len(hdr))},
			[]byte("shell"+hdr+"{}{}[1]")), "content is not a JSON object"},
		{"parent not an object", v1Frame([]uint64{56, 61, 61 + uint64(len(hdr)), 65 + uint64(len(hdr)), 67 + uint64(len(hdr)), 69 + uint64(len(hdr))},
			[]byte("shell"+hdr+"null{}{}")), "parent header is not a JSON object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ch, m, err := decodeV1(tt.frame)
			if err == nil {
				t.Fatalf("decoded %q %+v", ch, m)
			}
			checkFrameErr(t, err)
			if m != nil || ch != "" {
				t.Fatalf("a rejected frame also gave %q %+v", ch, m)
			}
			if !strings.Contains(err.Error(), tt.says) {
				t.Fatalf("error %q does not say %q", err, tt.says)
			}
		})
	}
}

func TestDecodeLegacyRejects(t *testing.T) {
	bin, _ := mustLegacy(t, wire.Shell, wsSample(t, []byte("buf")))
	set := func(i int, v uint32) []byte {
		b := bytes.Clone(bin)
		binary.BigEndian.PutUint32(b[4*(i+1):], v)
		return b
	}
	tests := []struct {
		name   string
		frame  []byte
		binary bool
		says   string
	}{
		{"empty text", nil, false, "unexpected end"},
		{"not JSON", []byte("{"), false, "unexpected end"},
		{"a list", []byte("[]"), false, "cannot unmarshal"},
		{"no msg_type", []byte(`{"channel":"shell","header":{}}`), false, "no msg_type"},
		{"header null", []byte(`{"channel":"shell","header":null}`), false, "header is null"},
		{"content a list", []byte(`{"channel":"shell","header":{"msg_type":"x"},"content":[]}`), false, "content is not a JSON object"},
		{"short binary", []byte{0, 0}, true, "2 bytes"},
		{"zero parts", []byte{0, 0, 0, 0, 0, 0, 0, 0}, true, "0 parts"},
		{"too many parts", set(-1, 1<<31), true, "parts"},
		{"count without offsets", []byte{0, 0, 0, 1}, true, "1 parts"},
		{"offset inside the offsets", set(0, 2), true, "out of range"},
		{"offset past the end", set(1, uint32(len(bin)+1)), true, "out of range"},
		{"offsets go back", set(1, 9), true, "out of range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ch, m, err := decodeLegacy(tt.frame, tt.binary)
			if err == nil {
				t.Fatalf("decoded %q %+v", ch, m)
			}
			checkFrameErr(t, err)
			if m != nil || ch != "" {
				t.Fatalf("a rejected frame also gave %q %+v", ch, m)
			}
			if !strings.Contains(err.Error(), tt.says) {
				t.Fatalf("error %q does not say %q", err, tt.says)
			}
		})
	}
}

// FuzzDecodeV1: no byte string makes the v1 decoder panic; what it rejects
// is an errFrame and gives no message; what it accepts encodes again to a
// frame that decodes to the same message, every part byte for byte.
func FuzzDecodeV1(f *testing.F) {
	f.Add(mustV1(f, wire.Shell, wsSample(f)))
	f.Add(mustV1(f, wire.IOPub, wsSample(f, []byte{}, []byte("\x00\xff"), bytes.Repeat([]byte("b"), 100))))
	f.Add(mustV1(f, "", &wire.Message{Header: wire.Header{MsgType: "x"}}))
	f.Add(v1Frame([]uint64{56, 56, 56, 56, 56, 56}, nil))
	f.Add(v1Frame([]uint64{56, 61, 62, 64, 66, 68}, []byte("shell{{}{}{}")))
	f.Add(v1Frame([]uint64{56, 61, 63, 65, 67, 69}, []byte("shell{}{}{}{}")))
	f.Add(v1Frame([]uint64{64, 69, 85, 87, 89, 91, 91}, []byte(`stdin{"msg_type":"x"}{}{}{}`)))
	f.Add(v1Frame([]uint64{56, 1 << 63, 0, 0, 0, 0}, nil))
	f.Add([]byte{6, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		ch, m, err := decodeV1(b)
		if err != nil {
			checkFrameErr(t, err)
			if m != nil || ch != "" {
				t.Fatalf("a rejected frame also gave %q %+v", ch, m)
			}
			return
		}
		if m == nil || m.Header.MsgType == "" {
			t.Fatalf("accepted a frame without a message type: %+v", m)
		}
		again, err := encodeV1(ch, m)
		if err != nil {
			t.Fatalf("a decoded message does not encode: %v", err)
		}
		ch2, m2, err := decodeV1(again)
		if err != nil {
			t.Fatalf("a re-encoded frame does not decode: %v", err)
		}
		if ch2 != ch {
			t.Fatalf("channel %q became %q", ch, ch2)
		}
		sameMessage(t, m, m2, true)
	})
}

// FuzzDecodeLegacy is FuzzDecodeV1 for the legacy framing, text and binary.
func FuzzDecodeLegacy(f *testing.F) {
	for _, m := range []*wire.Message{wsSample(f), wsSample(f, []byte{}, []byte("\x00\xff"))} {
		b, bin := mustLegacy(f, wire.Control, m)
		f.Add(b, bin)
	}
	f.Add([]byte(`{"channel":"iopub","header":{"msg_type":"stream","x":[1]},"parent_header":null,"content":{"text":"\u0000"},"buffers":[1,"a"]}`), false)
	f.Add([]byte(`{"header":{"msg_type":"a"},"metadata":"no"}`), false)
	f.Add([]byte{0, 0, 0, 1, 0, 0, 0, 8, '{', '}'}, true)
	f.Add([]byte{0, 0, 0, 2, 0, 0, 0, 12, 0, 0, 0, 10, '{', '}'}, true)
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0}, true)
	f.Fuzz(func(t *testing.T, b []byte, binaryFrame bool) {
		ch, m, err := decodeLegacy(b, binaryFrame)
		if err != nil {
			checkFrameErr(t, err)
			if m != nil || ch != "" {
				t.Fatalf("a rejected frame also gave %q %+v", ch, m)
			}
			return
		}
		if m == nil || m.Header.MsgType == "" {
			t.Fatalf("accepted a frame without a message type: %+v", m)
		}
		again, bin, err := encodeLegacy(ch, m)
		if err != nil {
			t.Fatalf("a decoded message does not encode: %v", err)
		}
		ch2, m2, err := decodeLegacy(again, bin)
		if err != nil {
			t.Fatalf("a re-encoded frame does not decode: %v", err)
		}
		if ch2 != ch {
			t.Fatalf("channel %q became %q", ch, ch2)
		}
		sameMessage(t, m, m2, false)
	})
}

// FuzzWSFrameEncode: any message Ferry builds survives both framings.
func FuzzWSFrameEncode(f *testing.F) {
	f.Add(uint8(0), "execute_request", "print(1)", []byte("a\x00b"), uint8(0xff))
	f.Add(uint8(1), "comm_msg", "", []byte{}, uint8(0))
	f.Add(uint8(2), "x\u2028\"</script>", "\xff\xfe", []byte("\x00\x00\x00"), uint8(0))
	f.Add(uint8(3), "stream", strings.Repeat("é", 100), bytes.Repeat([]byte{1, 2}, 300), uint8(2))
	channels := []wire.Channel{wire.Shell, wire.IOPub, wire.Stdin, wire.Control}
	f.Fuzz(func(t *testing.T, chIdx uint8, msgType, text string, payload []byte, sep byte) {
		if msgType == "" {
			msgType = "x"
		}
		ch := channels[int(chIdx)%len(channels)]
		m, err := wire.New(msgType, "s", "u", json.RawMessage(`{"msg_id":"p"}`), map[string]any{"text": text})
		if err != nil {
			t.Fatal(err)
		}
		note, _ := json.Marshal(text)
		m.Header.Extra = map[string]json.RawMessage{"note": note}
		if len(payload) > 0 {
			m.Buffers = bytes.Split(payload, []byte{sep})
		}
		got1, mv1, err := decodeV1(mustV1(t, ch, m))
		if err != nil || got1 != ch {
			t.Fatalf("v1: %q %v", got1, err)
		}
		sameMessage(t, m, mv1, true)
		b, bin := mustLegacy(t, ch, m)
		got2, ml, err := decodeLegacy(b, bin)
		if err != nil || got2 != ch {
			t.Fatalf("legacy: %q %v", got2, err)
		}
		sameMessage(t, m, ml, false)
	})
}
