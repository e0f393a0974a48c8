package kernel

import (
	"fmt"
	"math/rand/v2"
	"strings"
)

// placer picks where the next cell runs. The cost-based policies live in
// internal/policy; these are the fixed ones the kernel needs by itself.
type placer interface {
	name() string
	next(s *Server) string
}

// Policies lists the policy names the kernel accepts.
var Policies = []string{"local", "remote", "pingpong", "random"}

func newPlacer(name string, seed int64) (placer, error) {
	switch name {
	case "", "local":
		return fixed("local"), nil
	case "remote":
		return fixed("remote"), nil
	case "pingpong":
		return &pingpong{}, nil
	case "random":
		return &random{r: rand.New(rand.NewPCG(uint64(seed), 0x5eed))}, nil
	}
	return nil, fmt.Errorf("unknown policy %q; choose one of %s", name, strings.Join(Policies, ", "))
}

type fixed string

func (f fixed) name() string        { return string(f) }
func (f fixed) next(*Server) string { return string(f) }

type pingpong struct{ n int }

func (p *pingpong) name() string { return "pingpong" }
func (p *pingpong) next(s *Server) string {
	p.n++
	if p.n%2 == 0 && s.backends["remote"] != nil {
		return "remote"
	}
	return "local"
}

type random struct{ r *rand.Rand }

func (r *random) name() string { return "random" }
func (r *random) next(s *Server) string {
	if r.r.IntN(2) == 1 && s.backends["remote"] != nil {
		return "remote"
	}
	return "local"
}

// globMatch matches IPython history search patterns: * and ? wildcards.
func globMatch(pattern, s string) (bool, error) {
	if pattern == "" {
		return true, nil
	}
	p, t := []rune(pattern), []rune(s)
	var star, mark = -1, 0
	i, j := 0, 0
	for j < len(t) {
		switch {
		case i < len(p) && (p[i] == '?' || p[i] == t[j]):
			i++
			j++
		case i < len(p) && p[i] == '*':
			star, mark = i, j
			i++
		case star >= 0:
			i = star + 1
			mark++
			j = mark
		default:
			return false, nil
		}
	}
	for i < len(p) && p[i] == '*' {
		i++
	}
	return i == len(p), nil
}
