package kernel

// globMatch matches history search patterns as IPython does, with
// SQLite's GLOB: * any run of characters, ? one character, [abc], [a-z]
// and [^abc] one character of (or not of) a set; case-sensitive. A [
// without its ] matches nothing, and an empty pattern only empty text.
func globMatch(pattern, s string) bool {
	p, t := []rune(pattern), []rune(s)
	pi, ti := 0, 0
	star, mark := -1, 0 // the last * seen and where its match ends
	for ti < len(t) {
		if pi < len(p) {
			switch p[pi] {
			case '*':
				star, mark = pi, ti
				pi++
				continue
			case '?':
				pi++
				ti++
				continue
			case '[':
				if ok, next := matchClass(p, pi, t[ti]); ok {
					pi, ti = next, ti+1
					continue
				}
			default:
				if p[pi] == t[ti] {
					pi++
					ti++
					continue
				}
			}
		}
		if star < 0 {
			return false
		}
		// Let the last * take one more character and try again.
		mark++
		pi, ti = star+1, mark
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}

// matchClass matches c against the set starting at p[i] == '['. next is
// the index after the closing ']'; a set without one matches nothing.
func matchClass(p []rune, i int, c rune) (ok bool, next int) {
	j := i + 1
	negate := j < len(p) && p[j] == '^'
	if negate {
		j++
	}
	first := true
	for ; j < len(p); j++ {
		if p[j] == ']' && !first {
			return ok != negate, j + 1
		}
		first = false
		if j+2 < len(p) && p[j+1] == '-' && p[j+2] != ']' {
			if p[j] <= c && c <= p[j+2] {
				ok = true
			}
			j += 2
			continue
		}
		if p[j] == c {
			ok = true
		}
	}
	return false, 0
}
