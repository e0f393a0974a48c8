package kernel

import (
	"context"
	"encoding/json"
)

// effects is what analysis says a cell does.
type effects struct {
	Reads, Writes []string
	// Dynamic means analysis cannot see all names (exec, globals(), …):
	// every known name counts as read.
	Dynamic bool
}

// analyze returns the cell's effects. Until the analysis helper is wired
// in, nothing is known and no state moves.
func (s *Server) analyze(ctx context.Context, code string) effects { return effects{} }

// bring moves the stale variables eff needs to loc.
func (s *Server) bring(ctx context.Context, loc string, eff effects) (int64, float64, error) {
	return 0, 0, nil
}

// withReport adds the agent's post-cell report to the request.
func (s *Server) withReport(content json.RawMessage) json.RawMessage { return content }

// afterCell updates the state map from the agent's report in the reply and
// returns the reply content without Ferry's own entries.
func (s *Server) afterCell(loc, cell string, eff effects, reply json.RawMessage) json.RawMessage {
	return reply
}
