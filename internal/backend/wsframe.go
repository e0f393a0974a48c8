package backend

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/ferry-nb/ferry/internal/wire"
)

// The two ways Jupyter Server frames kernel messages on a WebSocket.
const (
	// SubprotocolV1 is "v1.kernel.websocket.jupyter.org": binary frames
	// holding the channel and the raw message parts, offsets as uint64 LE.
	SubprotocolV1 = "v1.kernel.websocket.jupyter.org"
)

var errFrame = errors.New("malformed websocket frame")

// encodeV1 frames m for channel ch: 8-byte part count, 8-byte offsets,
// then the channel name, header, parent, metadata, content and buffers.
func encodeV1(ch wire.Channel, m *wire.Message) ([]byte, error) {
	header, err := json.Marshal(m.Header)
	if err != nil {
		return nil, err
	}
	parts := [][]byte{[]byte(ch), header, orEmpty(m.Parent), orEmpty(m.Metadata), orEmpty(m.Content)}
	parts = append(parts, m.Buffers...)
	n := len(parts) + 1 // offsets: start of each part, and the end
	size := 8 * (1 + n)
	for _, p := range parts {
		size += len(p)
	}
	out := make([]byte, 8*(1+n), size)
	binary.LittleEndian.PutUint64(out, uint64(n))
	off := uint64(8 * (1 + n))
	for i, p := range parts {
		binary.LittleEndian.PutUint64(out[8*(i+1):], off)
		off += uint64(len(p))
	}
	binary.LittleEndian.PutUint64(out[8*n:], off)
	for _, p := range parts {
		out = append(out, p...)
	}
	return out, nil
}

// decodeV1 reads a v1 frame, checking every offset.
func decodeV1(b []byte) (wire.Channel, *wire.Message, error) {
	if len(b) < 8 {
		return "", nil, fmt.Errorf("%w: %d bytes", errFrame, len(b))
	}
	n := binary.LittleEndian.Uint64(b)
	// The count and n offsets take 8*(n+1) bytes, all inside the frame.
	if n < 6 || n > uint64(len(b)/8-1) {
		return "", nil, fmt.Errorf("%w: %d offsets", errFrame, n)
	}
	offs := make([]int, n)
	for i := range offs {
		o := binary.LittleEndian.Uint64(b[8*(i+1):])
		if o > uint64(len(b)) || (i > 0 && o < uint64(offs[i-1])) {
			return "", nil, fmt.Errorf("%w: offset %d out of range", errFrame, i)
		}
		offs[i] = int(o)
	}
	if offs[0] < 8*(int(n)+1) {
		return "", nil, fmt.Errorf("%w: parts overlap the offsets", errFrame)
	}
	part := func(i int) []byte { return b[offs[i]:offs[i+1]] }
	m := &wire.Message{Parent: part(2), Metadata: part(3), Content: part(4)}
	if err := json.Unmarshal(part(1), &m.Header); err != nil {
		return "", nil, fmt.Errorf("%w: header: %v", errFrame, err)
	}
	if err := checkParts(m); err != nil {
		return "", nil, err
	}
	for i := 5; i < int(n)-1; i++ {
		m.Buffers = append(m.Buffers, part(i))
	}
	return wire.Channel(part(0)), m, nil
}

// legacyMsg is the JSON form of the legacy protocol.
type legacyMsg struct {
	Channel  string          `json:"channel"`
	Header   wire.Header     `json:"header"`
	Parent   json.RawMessage `json:"parent_header"`
	Metadata json.RawMessage `json:"metadata"`
	Content  json.RawMessage `json:"content"`
	Buffers  []any           `json:"buffers,omitempty"`
}

// encodeLegacy frames m as the legacy protocol does: JSON text, or with
// buffers a binary frame of big-endian uint32 count and offsets, the JSON
// and the buffers. It returns whether the frame is binary.
func encodeLegacy(ch wire.Channel, m *wire.Message) ([]byte, bool, error) {
	lm := legacyMsg{Channel: string(ch), Header: m.Header, Parent: orEmpty(m.Parent), Metadata: orEmpty(m.Metadata), Content: orEmpty(m.Content)}
	js, err := json.Marshal(lm)
	if err != nil {
		return nil, false, err
	}
	if len(m.Buffers) == 0 {
		return js, false, nil
	}
	parts := append([][]byte{js}, m.Buffers...)
	n := len(parts)
	out := make([]byte, 4*(n+1))
	binary.BigEndian.PutUint32(out, uint32(n))
	off := 4 * (n + 1)
	for i, p := range parts {
		binary.BigEndian.PutUint32(out[4*(i+1):], uint32(off))
		off += len(p)
	}
	for _, p := range parts {
		out = append(out, p...)
	}
	return out, true, nil
}

// decodeLegacy reads a legacy text or binary frame.
func decodeLegacy(b []byte, binaryFrame bool) (wire.Channel, *wire.Message, error) {
	var bufs [][]byte
	js := b
	if binaryFrame {
		if len(b) < 4 {
			return "", nil, fmt.Errorf("%w: %d bytes", errFrame, len(b))
		}
		c := binary.BigEndian.Uint32(b)
		// The count and n offsets take 4*(n+1) bytes, all inside the frame.
		if c < 1 || uint64(c) > uint64(len(b)/4-1) {
			return "", nil, fmt.Errorf("%w: %d parts", errFrame, c)
		}
		n := int(c)
		offs := make([]int, n+1)
		for i := 0; i < n; i++ {
			offs[i] = int(binary.BigEndian.Uint32(b[4*(i+1):]))
		}
		offs[n] = len(b)
		for i := 0; i < n; i++ {
			if offs[i] < 4*(n+1) || offs[i] > offs[i+1] {
				return "", nil, fmt.Errorf("%w: offset %d out of range", errFrame, i)
			}
		}
		js = b[offs[0]:offs[1]]
		for i := 1; i < n; i++ {
			bufs = append(bufs, b[offs[i]:offs[i+1]])
		}
	}
	var lm legacyMsg
	if err := json.Unmarshal(js, &lm); err != nil {
		return "", nil, fmt.Errorf("%w: %v", errFrame, err)
	}
	m := &wire.Message{Header: lm.Header, Parent: lm.Parent, Metadata: lm.Metadata, Content: lm.Content, Buffers: bufs}
	if err := checkParts(m); err != nil {
		return "", nil, err
	}
	return wire.Channel(lm.Channel), m, nil
}

// checkParts rejects what the ZeroMQ codec rejects too: a message without
// a type, and parent header, metadata or content that are not JSON
// objects (the legacy framing may leave them out: that is {}).
func checkParts(m *wire.Message) error {
	if m.Header.MsgType == "" {
		return fmt.Errorf("%w: no msg_type", errFrame)
	}
	for _, p := range []struct {
		name string
		b    []byte
	}{{"parent header", m.Parent}, {"metadata", m.Metadata}, {"content", m.Content}} {
		if !isObject(p.b) {
			return fmt.Errorf("%w: %s is not a JSON object", errFrame, p.name)
		}
	}
	return nil
}

// isObject reports whether b, if present, looks like a JSON object, as
// the ZeroMQ codec checks it.
func isObject(b []byte) bool {
	b = bytes.TrimSpace(b)
	return len(b) == 0 || len(b) >= 2 && b[0] == '{' && b[len(b)-1] == '}'
}

func orEmpty(b json.RawMessage) json.RawMessage {
	if len(b) == 0 {
		return json.RawMessage("{}")
	}
	return b
}
