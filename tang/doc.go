// Package tang implements the Tang protocol: the McCallum-Relyea key
// exchange, the client side (fetch and trust an advertisement, recover a key
// with blinding) and the server side (a key directory in tangd's format and
// an http.Handler that answers like tangd).
//
// See docs/PROTOCOL.md for the wire format and the status codes.
package tang
