package jose

import "encoding/json"

// UnmarshalJWK decodes a JSON JWK into k exactly as json.Unmarshal(data, k)
// would. It is on the key server's hot path (every /rec body is one): the
// common shape, a flat object of the JWK's own members with plain ASCII
// strings, is read directly, at a fifth of encoding/json's cost; anything
// else (escapes, unknown or repeated members, other case, nulls) is left to
// encoding/json. FuzzUnmarshalJWK holds the two to the same result.
func UnmarshalJWK(data []byte, k *JWK) error {
	fast := *k // members the data does not name keep their values, as with encoding/json
	if parseJWKFast(data, &fast) {
		*k = fast
		return nil
	}
	return json.Unmarshal(data, k)
}

// parseJWKFast parses the common shape of a JWK into k and reports whether
// it could; on false, k holds nothing meaningful.
func parseJWKFast(data []byte, k *JWK) bool {
	p := jwkScanner{data: data}
	if !p.byte('{') {
		return false
	}
	var seen uint8
	if p.peek() == '}' {
		p.i++
		return p.end()
	}
	for {
		name, ok := p.str()
		if !ok || !p.byte(':') {
			return false
		}
		var bit uint8
		var dst *string
		switch string(name) {
		case "alg":
			bit, dst = 1<<0, &k.Alg
		case "crv":
			bit, dst = 1<<1, &k.Crv
		case "d":
			bit, dst = 1<<2, &k.D
		case "k":
			bit, dst = 1<<3, &k.K
		case "kty":
			bit, dst = 1<<4, &k.Kty
		case "x":
			bit, dst = 1<<5, &k.X
		case "y":
			bit, dst = 1<<6, &k.Y
		case "key_ops":
			bit = 1 << 7
		default:
			return false
		}
		if seen&bit != 0 {
			return false
		}
		seen |= bit
		if dst != nil {
			v, ok := p.str()
			if !ok {
				return false
			}
			*dst = string(v)
		} else if !p.strArray(&k.KeyOps) {
			return false
		}
		if more, ok := p.sep('}'); !more {
			return ok
		}
	}
}

// jwkScanner reads the tokens of the fast path; every method skips the
// JSON whitespace before its token.
type jwkScanner struct {
	data []byte
	i    int
}

func (p *jwkScanner) skip() {
	for p.i < len(p.data) {
		switch p.data[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// peek returns the next non-space byte without consuming it (0 at the end).
func (p *jwkScanner) peek() byte {
	p.skip()
	if p.i == len(p.data) {
		return 0
	}
	return p.data[p.i]
}

func (p *jwkScanner) next() byte {
	c := p.peek()
	if c != 0 {
		p.i++
	}
	return c
}

func (p *jwkScanner) byte(c byte) bool { return p.next() == c }

// end reports whether only whitespace is left.
func (p *jwkScanner) end() bool { return p.peek() == 0 && p.i == len(p.data) }

// str reads a string of printable ASCII without escapes.
func (p *jwkScanner) str() ([]byte, bool) {
	if !p.byte('"') {
		return nil, false
	}
	start := p.i
	for ; p.i < len(p.data); p.i++ {
		switch c := p.data[p.i]; {
		case c == '"':
			p.i++
			return p.data[start : p.i-1], true
		case c == '\\' || c < 0x20 || c > 0x7e:
			return nil, false
		}
	}
	return nil, false
}

// strArray reads an array of such strings into a new slice (empty, not
// nil, for [] as encoding/json gives).
func (p *jwkScanner) strArray(dst *[]string) bool {
	if !p.byte('[') {
		return false
	}
	out := []string{}
	if p.peek() == ']' {
		p.i++
		*dst = out
		return true
	}
	for {
		v, ok := p.str()
		if !ok {
			return false
		}
		out = append(out, string(v))
		switch p.next() {
		case ',':
		case ']':
			*dst = out
			return true
		default:
			return false
		}
	}
}
