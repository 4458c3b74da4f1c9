package tang

import (
	"errors"
	"fmt"

	"github.com/tether-nbde/tether/jose"
)

// The McCallum-Relyea exchange. Upper case are scalars, lower case points:
//
//	server exchange key   s = S·G            (advertised)
//	bind (client):        C random, c = C·G  (the JWE "epk"); K = C·s
//	recover (client):     E random, e = E·G; x = c + e   --> POST /rec/{kid}
//	server:               y = S·x                         <-- reply
//	client:               K = y − E·s = S·c = C·s
//
// The server never sees c or K; an eavesdropper sees only blinded points.

// Bind makes a new ephemeral client key for the server exchange key s and
// returns its public half (to store as the JWE epk) and Z, the x coordinate
// of the shared point K, from which the content key is derived.
func Bind(s *jose.JWK) (epk *jose.JWK, z []byte, err error) {
	c, sp, err := exchangeKey(s)
	if err != nil {
		return nil, nil, err
	}
	C, cp, err := c.RandomScalar()
	if err != nil {
		return nil, nil, err
	}
	K, err := c.ScalarMult(sp, C)
	if err != nil {
		return nil, nil, err
	}
	return c.JWKFromPoint(cp), c.X(K), nil
}

// Recovery is the client state of one recovery: the blinding scalar E.
type Recovery struct {
	curve *jose.Curve
	s     []byte // server exchange point
	e     []byte // blinding scalar E
	es    []byte // E·S, the unblinding term, once computed
	// Request is x = c + e, the public JWK to POST to /rec/{kid}.
	Request *jose.JWK
}

// NewRecovery blinds the stored epk c for the server exchange key s.
func NewRecovery(epk, s *jose.JWK) (*Recovery, error) {
	c, sp, err := exchangeKey(s)
	if err != nil {
		return nil, err
	}
	cp, err := c.Point(epk)
	if err != nil {
		return nil, fmt.Errorf("epk: %w", err)
	}
	E, ep, err := c.RandomScalar()
	if err != nil {
		return nil, err
	}
	x, err := c.Add(cp, ep)
	if err != nil {
		return nil, err
	}
	req := c.JWKFromPoint(x)
	req.Alg = "ECMR"
	return &Recovery{curve: c, s: sp, e: E, Request: req}, nil
}

// Finish unblinds the server's reply y and returns Z, the x coordinate of K.
func (r *Recovery) Finish(reply *jose.JWK) ([]byte, error) {
	if reply.Kty != "EC" || reply.Crv != r.curve.Name {
		return nil, errors.New("server reply is not an EC key on the expected curve")
	}
	yp, err := r.curve.Point(reply)
	if err != nil {
		return nil, fmt.Errorf("server reply: %w", err)
	}
	if err := r.precompute(); err != nil {
		return nil, err
	}
	K, err := r.curve.Sub(yp, r.es)
	if err != nil {
		return nil, errors.New("server reply gives the identity point")
	}
	return r.curve.X(K), nil
}

// precompute computes the unblinding term E·S, which does not depend on the
// server's reply: a client can do it while the server works.
func (r *Recovery) precompute() error {
	if r.es != nil {
		return nil
	}
	es, err := r.curve.ScalarMult(r.s, r.e)
	if err != nil {
		return err
	}
	r.es = es
	return nil
}

// Exchange is the server step: y = S·x for the private exchange key S and
// the client's blinded point x. x must be a valid point on S's curve.
func Exchange(S *jose.JWK, x *jose.JWK) (*jose.JWK, error) {
	c, err := jose.CurveByName(S.Crv)
	if err != nil {
		return nil, err
	}
	d, err := c.Scalar(S)
	if err != nil {
		return nil, err
	}
	xp, err := c.Point(x)
	if err != nil {
		return nil, err
	}
	y, err := c.ScalarMult(xp, d)
	if err != nil {
		return nil, err
	}
	out := c.JWKFromPoint(y)
	out.Alg = "ECMR"
	out.KeyOps = []string{"deriveKey"}
	return out, nil
}

func exchangeKey(s *jose.JWK) (*jose.Curve, []byte, error) {
	c, err := jose.CurveByName(s.Crv)
	if err != nil {
		return nil, nil, err
	}
	p, err := c.Point(s)
	if err != nil {
		return nil, nil, fmt.Errorf("server exchange key: %w", err)
	}
	return c, p, nil
}
