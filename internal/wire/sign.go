package wire

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"sync"
)

// Errors a received message can fail with. Callers count and log them; they
// never reach a user's cell.
var (
	ErrUnsigned  = errors.New("message is not signed")
	ErrBadSig    = errors.New("message signature does not match (wrong key?)")
	ErrReplayed  = errors.New("message signature was seen before (replayed)")
	ErrMalformed = errors.New("malformed message")
)

// replayWindow matches jupyter_client's digest_history_size.
const replayWindow = 1 << 16

// Signer signs and verifies messages with HMAC-SHA256 and remembers recent
// signatures to reject replays. An empty key disables signing, as Jupyter
// allows; Ferry's own connection files always carry a key.
type Signer struct {
	key []byte

	mu    sync.Mutex
	pool  sync.Pool
	seen  map[string]struct{}
	order []string
	next  int
}

// NewSigner returns a signer for the scheme named in a connection file.
func NewSigner(scheme string, key []byte) (*Signer, error) {
	if len(key) > 0 && scheme != "hmac-sha256" && scheme != "" {
		return nil, fmt.Errorf("signature scheme %q is not supported: use hmac-sha256", scheme)
	}
	s := &Signer{key: append([]byte(nil), key...), seen: make(map[string]struct{})}
	s.pool.New = func() any { return hmac.New(sha256.New, s.key) }
	return s, nil
}

// Enabled reports whether messages are signed.
func (s *Signer) Enabled() bool { return s != nil && len(s.key) > 0 }

// Sign returns the hex signature of the four signed frames.
func (s *Signer) Sign(header, parent, metadata, content []byte) []byte {
	if !s.Enabled() {
		return nil
	}
	h := s.pool.Get().(hash.Hash)
	h.Reset()
	h.Write(header)
	h.Write(parent)
	h.Write(metadata)
	h.Write(content)
	sum := h.Sum(nil)
	s.pool.Put(h)
	out := make([]byte, hex.EncodedLen(len(sum)))
	hex.Encode(out, sum)
	return out
}

// Verify checks sig against the frames and rejects a signature seen before.
func (s *Signer) Verify(sig, header, parent, metadata, content []byte) error {
	if !s.Enabled() {
		return nil
	}
	if len(sig) == 0 {
		return ErrUnsigned
	}
	if !hmac.Equal(sig, s.Sign(header, parent, metadata, content)) {
		return ErrBadSig
	}
	key := string(sig)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.seen[key]; dup {
		return ErrReplayed
	}
	if len(s.order) < replayWindow {
		s.order = append(s.order, key)
	} else {
		delete(s.seen, s.order[s.next])
		s.order[s.next] = key
		s.next = (s.next + 1) % replayWindow
	}
	s.seen[key] = struct{}{}
	return nil
}
