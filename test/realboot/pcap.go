package realboot

import (
	"encoding/binary"
	"fmt"
	"os"
	"testing"
	"time"
)

// dhcpRequests reads a capture QEMU's filter-dump wrote (Options.Capture:
// classic pcap, Ethernet frames, microsecond timestamps in the host's
// clock) and returns when the guest sent a DHCP (BOOTP) request: an IPv4
// UDP datagram to port 67. It is the proof that a boot asked no DHCP
// server, where QEMU's user network always has one to answer.
func dhcpRequests(file string) ([]time.Time, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	if len(data) < 24 || binary.LittleEndian.Uint32(data) != 0xa1b2c3d4 {
		return nil, fmt.Errorf("%s: not a little-endian microsecond pcap file", file)
	}
	if lt := binary.LittleEndian.Uint32(data[20:]); lt != 1 {
		return nil, fmt.Errorf("%s: link type %d, not Ethernet", file, lt)
	}
	var out []time.Time
	for p := data[24:]; len(p) > 0; {
		if len(p) < 16 {
			return nil, fmt.Errorf("%s: a truncated record header", file)
		}
		sec, usec := binary.LittleEndian.Uint32(p), binary.LittleEndian.Uint32(p[4:])
		n := int(binary.LittleEndian.Uint32(p[8:]))
		if len(p) < 16+n {
			break // QEMU was killed while writing: the last frame is cut
		}
		frame := p[16 : 16+n]
		p = p[16+n:]
		if len(frame) < 14+20 || binary.BigEndian.Uint16(frame[12:]) != 0x0800 {
			continue // not IPv4
		}
		ip := frame[14:]
		ihl := int(ip[0]&0x0f) * 4
		if ip[9] != 17 || len(ip) < ihl+4 {
			continue // not UDP
		}
		if binary.BigEndian.Uint16(ip[ihl+2:]) == 67 {
			out = append(out, time.Unix(int64(sec), int64(usec)*1000))
		}
	}
	return out, nil
}

// noDHCPBefore fails t if the capture in pcap holds a DHCP request sent
// before at (since m's power-on), or none at all: the booted system's own
// networkd asks after the root is open, which shows the capture sees
// them. It returns how many came after.
func noDHCPBefore(t *testing.T, pcap string, m *Machine, at time.Duration) int {
	t.Helper()
	reqs, err := dhcpRequests(pcap)
	if err != nil {
		t.Fatal(err)
	}
	before := 0
	for _, r := range reqs {
		if r.Before(m.At(at)) {
			before++
		}
	}
	if before > 0 || len(reqs) == 0 {
		t.Errorf("%d DHCP requests before the root was opened (%s after power-on), %d in all; want none before, some after (the booted system's networkd)", before, at.Round(time.Second), len(reqs))
	}
	return len(reqs) - before
}
