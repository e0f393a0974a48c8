package wire

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// Encode turns m into ZeroMQ frames: identities, delimiter, signature,
// header, parent, metadata, content, buffers.
func Encode(m *Message, s *Signer) ([][]byte, error) {
	header, err := m.Header.MarshalJSON()
	if err != nil {
		return nil, fmt.Errorf("encoding header: %w", err)
	}
	parent, meta, content := orEmpty(m.Parent), orEmpty(m.Metadata), orEmpty(m.Content)
	frames := make([][]byte, 0, len(m.Identities)+6+len(m.Buffers))
	frames = append(frames, m.Identities...)
	frames = append(frames, Delimiter, s.Sign(header, parent, meta, content), header, parent, meta, content)
	frames = append(frames, m.Buffers...)
	return frames, nil
}

func orEmpty(b json.RawMessage) []byte {
	if len(b) == 0 {
		return []byte("{}")
	}
	return b
}

// Decode parses frames received on a socket, verifying the signature. It
// never panics on hostile input: every frame count and type is checked.
func Decode(frames [][]byte, s *Signer) (*Message, error) {
	d := -1
	for i, f := range frames {
		if bytes.Equal(f, Delimiter) {
			d = i
			break
		}
	}
	if d < 0 {
		return nil, fmt.Errorf("%w: no <IDS|MSG> delimiter in %d frames", ErrMalformed, len(frames))
	}
	rest := frames[d+1:]
	if len(rest) < 5 {
		return nil, fmt.Errorf("%w: %d frames after the delimiter, need at least 5", ErrMalformed, len(rest))
	}
	sig, header, parent, meta, content := rest[0], rest[1], rest[2], rest[3], rest[4]
	if err := s.Verify(sig, header, parent, meta, content); err != nil {
		return nil, err
	}
	m := &Message{Identities: frames[:d]}
	if err := json.Unmarshal(header, &m.Header); err != nil {
		return nil, fmt.Errorf("%w: header: %v", ErrMalformed, err)
	}
	if m.Header.MsgType == "" {
		return nil, fmt.Errorf("%w: header has no msg_type", ErrMalformed)
	}
	for i, f := range [...][]byte{parent, meta, content} {
		if !isObject(f) {
			return nil, fmt.Errorf("%w: %s is not a JSON object", ErrMalformed, [...]string{"parent header", "metadata", "content"}[i])
		}
	}
	m.Parent, m.Metadata, m.Content, m.rawHeader = parent, meta, content, header
	if len(rest) > 5 {
		m.Buffers = rest[5:]
	}
	return m, nil
}
