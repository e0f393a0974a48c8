package transfer

import "testing"

func TestResultCompression(t *testing.T) {
	for _, tt := range []struct {
		sent, raw int64
		want      float64
	}{{50, 100, 0.5}, {0, 100, 0}, {100, 0, 0}} {
		if got := (Result{Bytes: tt.sent, RawBytes: tt.raw}).Compression(); got != tt.want {
			t.Errorf("Compression of %d/%d = %v, want %v", tt.sent, tt.raw, got, tt.want)
		}
	}
}
