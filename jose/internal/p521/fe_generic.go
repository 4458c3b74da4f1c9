//go:build !amd64 || purego

package p521

// hasMULX is false where there is no assembly.
const hasMULX = false

// feMul sets out = a·b mod p. Inputs must be loose (every limb < 3·2^60);
// the output is tight. out may alias a or b.
func feMul(out, a, b *fe) { feMulGeneric(out, a, b) }

// feSquare sets out = a² mod p. The input must be loose (every limb
// < 3·2^60); the output is tight. out may alias a.
func feSquare(out, a *fe) { feSquareGeneric(out, a) }
