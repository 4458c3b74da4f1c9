package jose

import (
	"encoding/json"
	"strings"
)

// A fast path for the JSON a decrypt reads before it can connect: the JWE's
// protected header, its clevis member and the advertisement in it.
// encoding/json builds its per-type decoders by reflection on first use,
// which in a fresh process (every tether decrypt) costs more than all the
// rest of parsing; these read the common shape directly and report false
// whenever encoding/json might decode the input differently, and the
// caller then uses encoding/json. Fuzz tests hold each fast path to
// encoding/json's result.

// DecodeObject reads the JSON object data for a struct whose JSON field
// names are names, calling set(i, raw) with the raw value of each member
// named names[i]; members with other names are skipped, as encoding/json
// skips them. It reports false — decode with encoding/json instead — if
// data is not a valid JSON object, a member name is not plain ASCII, a
// field is named twice or in another case (encoding/json matches names
// case-insensitively), or set returns false. At most 32 names.
func DecodeObject(data []byte, names []string, set func(i int, raw []byte) bool) bool {
	return json.Valid(data) && decodeObject(data, names, set)
}

// decodeObject is DecodeObject for data known to be valid JSON.
func decodeObject(data []byte, names []string, set func(i int, raw []byte) bool) bool {
	if len(names) > 32 { // seen has 32 bits
		return false
	}
	p := jwkScanner{data: data}
	if !p.byte('{') {
		return false
	}
	if p.peek() == '}' {
		p.i++
		return p.end()
	}
	var seen uint32
	for {
		name, ok := p.str()
		if !ok || !p.byte(':') {
			return false
		}
		raw, ok := p.value()
		if !ok {
			return false
		}
		field := -1
		for i, n := range names {
			if string(name) == n {
				field = i
				break
			}
			if strings.EqualFold(string(name), n) {
				return false
			}
		}
		if field >= 0 {
			if seen&(1<<field) != 0 || !set(field, raw) {
				return false
			}
			seen |= 1 << field
		}
		if more, ok := p.sep('}'); !more {
			return ok
		}
	}
}

// parseHeader decodes a JWE protected header as json.Unmarshal(data, &h)
// would into a zero Header.
func parseHeader(data []byte) (Header, error) {
	var h Header
	if DecodeObject(data, headerFields, func(i int, raw []byte) bool {
		switch i {
		case 0:
			return DecodeString(raw, &h.Alg)
		case 1:
			h.Clevis = append(json.RawMessage(nil), raw...)
			return true
		case 2:
			return DecodeString(raw, &h.Enc)
		case 3:
			h.Epk = new(JWK)
			return parseJWKFast(raw, h.Epk)
		default:
			return DecodeString(raw, &h.Kid)
		}
	}) {
		return h, nil
	}
	h = Header{}
	err := json.Unmarshal(data, &h)
	return h, err
}

// headerFields are Header's JSON names, in DecodeObject's order.
var headerFields = []string{"alg", "clevis", "enc", "epk", "kid"}

// DecodeKeySet is the fast path of json.Unmarshal(data, &ks) for a JWK Set
// of plain JWKs; it does not validate the keys (ParseKeySet does).
func DecodeKeySet(data []byte) (*KeySet, bool) {
	ks := new(KeySet)
	return ks, DecodeObject(data, []string{"keys"}, func(_ int, raw []byte) bool {
		keys := []*JWK{}
		if !decodeArray(raw, func(e []byte) bool {
			k := new(JWK)
			keys = append(keys, k)
			return parseJWKFast(e, k)
		}) {
			return false
		}
		ks.Keys = keys
		return true
	})
}

// DecodeString sets *dst to the JSON string raw if it is plain printable
// ASCII without escapes, and reports whether it was.
func DecodeString(raw []byte, dst *string) bool {
	p := jwkScanner{data: raw}
	s, ok := p.str()
	if !ok || !p.end() {
		return false
	}
	*dst = string(s)
	return true
}

// decodeArray calls f with the raw value of each element of the JSON array
// data, which must be valid JSON.
func decodeArray(data []byte, f func(raw []byte) bool) bool {
	p := jwkScanner{data: data}
	if !p.byte('[') {
		return false
	}
	if p.peek() == ']' {
		p.i++
		return p.end()
	}
	for {
		raw, ok := p.value()
		if !ok || !f(raw) {
			return false
		}
		if more, ok := p.sep(']'); !more {
			return ok
		}
	}
}

// sep reads what follows a member or an element: "," when more follow,
// or the closing byte of the outermost container, after which only space
// may be left (ok).
func (p *jwkScanner) sep(close byte) (more, ok bool) {
	switch p.next() {
	case ',':
		return true, true
	case close:
		return false, p.end()
	}
	return false, false
}

// value returns the next JSON value's bytes, without surrounding space.
// The data must be valid JSON: only the value's extent is found here.
func (p *jwkScanner) value() ([]byte, bool) {
	p.skip()
	start := p.i
	depth := 0
	for p.i < len(p.data) {
		c := p.data[p.i]
		switch {
		case c == '"':
			p.i++
			for p.i < len(p.data) && p.data[p.i] != '"' {
				if p.data[p.i] == '\\' {
					p.i++
				}
				p.i++
			}
			if p.i >= len(p.data) {
				return nil, false
			}
			p.i++
		case c == '{' || c == '[':
			depth++
			p.i++
		case c == '}' || c == ']':
			if depth == 0 { // closes the enclosing container: a scalar ends here
				return p.data[start:p.i], p.i > start
			}
			depth--
			p.i++
		case depth == 0 && (c == ',' || c == ':' || c == ' ' || c == '\t' || c == '\n' || c == '\r'):
			return p.data[start:p.i], p.i > start
		default:
			p.i++
		}
		if depth == 0 && (c == '"' || c == '}' || c == ']') {
			return p.data[start:p.i], true
		}
	}
	if depth != 0 {
		return nil, false
	}
	return p.data[start:p.i], p.i > start
}
