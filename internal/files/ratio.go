package files

import (
	"io"
	"os"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// A file's compression, estimated before it moves. The policy prices a
// move by the bytes it puts on the link, and until a payload has crossed
// it knows only a prior for what compression achieves. In the hybrid
// bench's tabular_disk session that priced the 90 MB CSV at 90 MB on a
// 100 Mbit link (7.2 s), where it crosses as 29 MB (2.3 s), and kept the
// cell reading it on the laptop even in the second session, when its
// runtime was known. So Ratio compresses a few samples of the laptop's
// file the way the agent's transport would and says what share of the
// bytes would cross.

// RatioMin is the smallest file whose compression is estimated: below a
// MiB a move costs its round trip, whatever it compresses to.
const RatioMin = 1 << 20

// The agent (agent.py, _chunks) sends a file in chunks of agentChunk
// bytes and compresses a chunk, at zstd's fastest level, only when its
// first agentSample bytes shrink below agentPays of their size. Ratio
// makes the same choice per sampled chunk and measures what it saves on
// ratioSample bytes from the chunk's start, in at most ratioChunks chunks
// spread over the file: about 2 MiB read and 5 ms for any file size.
const (
	agentChunk  = 8 << 20
	agentSample = 64 << 10
	agentPays   = 0.8
	ratioSample = 256 << 10
	ratioChunks = 8
)

// ratioKey is a file as it was when its ratio was estimated.
type ratioKey struct {
	rel   string
	size  int64
	mtime int64
}

// ratios caches estimates per file version (an encoder is not cheap to
// make either, so one serves every estimate, under the lock).
type ratios struct {
	mu   sync.Mutex
	enc  *zstd.Encoder
	seen map[ratioKey]float64
}

// Ratio estimates the share of the laptop's file rel that would cross the
// link if it moved now (compressed over raw bytes, in (0, 1]), or 0 when
// it cannot tell: a file under RatioMin, gone, or unreadable. An estimate
// is kept until the file's size or modification time changes.
func (t *Tracker) Ratio(rel string) float64 {
	st, err := os.Stat(t.Path(rel))
	if err != nil || !st.Mode().IsRegular() || st.Size() < RatioMin {
		return 0
	}
	key := ratioKey{rel, st.Size(), st.ModTime().UnixNano()}
	r := &t.ratios
	r.mu.Lock()
	defer r.mu.Unlock()
	if v, ok := r.seen[key]; ok {
		return v
	}
	if r.enc == nil {
		enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
		if err != nil {
			return 0
		}
		r.enc = enc
	}
	v := estimateRatio(t.Path(rel), st.Size(), r.enc)
	if r.seen == nil {
		r.seen = map[ratioKey]float64{}
	}
	if len(r.seen) > 4096 { // old versions of files: start again
		clear(r.seen)
	}
	r.seen[key] = v
	return v
}

// estimateRatio samples the file at path of size bytes: 0 if unreadable.
func estimateRatio(path string, size int64, enc *zstd.Encoder) float64 {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	chunks := (size + agentChunk - 1) / agentChunk
	step := max(chunks/ratioChunks, 1)
	buf := make([]byte, ratioSample)
	var raw, sent float64
	var out []byte
	for c := int64(0); c < chunks; c += step {
		n, err := f.ReadAt(buf, c*agentChunk)
		if err != nil && err != io.EOF {
			return 0
		}
		if n == 0 {
			break
		}
		s := buf[:n]
		// The chunk's weight: its size (the last may be short).
		w := float64(min(agentChunk, size-c*agentChunk))
		raw += w
		head := s[:min(n, agentSample)]
		if out = enc.EncodeAll(head, out[:0]); float64(len(out)) >= agentPays*float64(len(head)) {
			sent += w // sent raw, as the agent would
			continue
		}
		out = enc.EncodeAll(s, out[:0])
		sent += w * min(float64(len(out))/float64(n), 1)
	}
	if raw == 0 {
		return 0
	}
	return max(sent/raw, 1e-3)
}
