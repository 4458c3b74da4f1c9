package eventlog

import (
	"bytes"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"strings"
	"unicode/utf16"
)

// typeNames are the event types of the TCG PC Client Platform Firmware
// Profile (10.4.1), version 1.05.
var typeNames = map[uint32]string{
	0x00000000: "EV_PREBOOT_CERT",
	0x00000001: "EV_POST_CODE",
	0x00000002: "EV_UNUSED",
	0x00000003: "EV_NO_ACTION",
	0x00000004: "EV_SEPARATOR",
	0x00000005: "EV_ACTION",
	0x00000006: "EV_EVENT_TAG",
	0x00000007: "EV_S_CRTM_CONTENTS",
	0x00000008: "EV_S_CRTM_VERSION",
	0x00000009: "EV_CPU_MICROCODE",
	0x0000000A: "EV_PLATFORM_CONFIG_FLAGS",
	0x0000000B: "EV_TABLE_OF_DEVICES",
	0x0000000C: "EV_COMPACT_HASH",
	0x0000000D: "EV_IPL",
	0x0000000E: "EV_IPL_PARTITION_DATA",
	0x0000000F: "EV_NONHOST_CODE",
	0x00000010: "EV_NONHOST_CONFIG",
	0x00000011: "EV_NONHOST_INFO",
	0x00000012: "EV_OMIT_BOOT_DEVICE_EVENTS",
	0x00000013: "EV_POST_CODE2",
	0x80000000: "EV_EFI_EVENT_BASE",
	0x80000001: "EV_EFI_VARIABLE_DRIVER_CONFIG",
	0x80000002: "EV_EFI_VARIABLE_BOOT",
	0x80000003: "EV_EFI_BOOT_SERVICES_APPLICATION",
	0x80000004: "EV_EFI_BOOT_SERVICES_DRIVER",
	0x80000005: "EV_EFI_RUNTIME_SERVICES_DRIVER",
	0x80000006: "EV_EFI_GPT_EVENT",
	0x80000007: "EV_EFI_ACTION",
	0x80000008: "EV_EFI_PLATFORM_FIRMWARE_BLOB",
	0x80000009: "EV_EFI_HANDOFF_TABLES",
	0x8000000A: "EV_EFI_PLATFORM_FIRMWARE_BLOB2",
	0x8000000B: "EV_EFI_HANDOFF_TABLES2",
	0x8000000C: "EV_EFI_VARIABLE_BOOT2",
	0x8000000D: "EV_EFI_GPT_EVENT2",
	0x80000010: "EV_EFI_HCRTM_EVENT",
	0x800000E0: "EV_EFI_VARIABLE_AUTHORITY",
	0x800000E1: "EV_EFI_SPDM_FIRMWARE_BLOB",
	0x800000E2: "EV_EFI_SPDM_FIRMWARE_CONFIG",
	0x800000E3: "EV_EFI_SPDM_DEVICE_POLICY",
	0x800000E4: "EV_EFI_SPDM_DEVICE_AUTHORITY",
}

// TypeName returns the TCG name of an event type, e.g.
// "EV_EFI_VARIABLE_DRIVER_CONFIG", or its number for an unknown one.
func TypeName(t uint32) string {
	if n, ok := typeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("EV_%#08x", t)
}

// TypeName is the TCG name of the event's type.
func (e Event) TypeName() string { return TypeName(e.Type) }

// maxDescription bounds a description, in characters.
const maxDescription = 160

// Describe says in words what the event measured, as far as its data
// tells: a UEFI variable's name (and for SecureBoot its value, for
// certificate databases what they hold), a boot application's path, the
// text a boot loader measured. The data is untrusted and, for many event
// types, not what was hashed: it describes, it proves nothing.
func (e Event) Describe() string {
	d := describe(e)
	if r := []rune(d); len(r) > maxDescription {
		d = string(r[:maxDescription-1]) + "…"
	}
	return d
}

func describe(e Event) string {
	switch e.Type {
	case EvSeparator:
		switch {
		case len(e.Data) == 4 && binary.LittleEndian.Uint32(e.Data) == 0:
			return "separator (end of this stage's measurements)"
		case len(e.Data) == 4:
			return fmt.Sprintf("separator with error %#x (the firmware met an error measuring)", binary.LittleEndian.Uint32(e.Data))
		}
	case EvNoAction:
		switch {
		case bytes.HasPrefix(e.Data, []byte("StartupLocality\x00")) && len(e.Data) == 17:
			return fmt.Sprintf("TPM started from locality %d (extends nothing)", e.Data[16])
		case len(e.Data) > 0:
			if t := text(cutAtNUL(e.Data)); t != "" {
				return t + " (extends nothing)"
			}
		}
		return "extends nothing"
	case EvEFIVariableDriverConfig, EvEFIVariableBoot, EvEFIVariableBoot2, EvEFIVariableAuthority:
		if s := describeVariable(e.Type, e.Data); s != "" {
			return s
		}
	case EvEFIBootServicesApplication, EvEFIBootServicesDriver, EvEFIRuntimeServicesDriver:
		if s := describeImage(e.Data); s != "" {
			return s
		}
	case EvEFIGPTEvent:
		// UEFI_GPT_DATA: the partition table header (its size at
		// offset 12), then the number of partitions.
		if len(e.Data) >= 16 {
			hs := uint64(binary.LittleEndian.Uint32(e.Data[12:]))
			if hs <= uint64(len(e.Data))-8 {
				n := binary.LittleEndian.Uint64(e.Data[hs:])
				return fmt.Sprintf("GPT partition table of the boot disk (%d partitions)", n)
			}
		}
		return "GPT partition table of the boot disk"
	case EvEFIPlatformFirmwareBlob:
		if len(e.Data) == 16 {
			return fmt.Sprintf("firmware volume at %#x, %d bytes", binary.LittleEndian.Uint64(e.Data), binary.LittleEndian.Uint64(e.Data[8:]))
		}
	case EvEFIPlatformFirmwareBlob2:
		// A length byte, a description, the base and the length.
		if len(e.Data) >= 1 && int(e.Data[0]) <= len(e.Data)-1 {
			if t := text(e.Data[1 : 1+int(e.Data[0])]); t != "" {
				return "firmware volume " + t
			}
		}
	case EvEventTag:
		// TCG_PCClientTaggedEvent: an ID, a size, the data (systemd
		// and the Linux EFI stub tag what they measure).
		if len(e.Data) >= 8 {
			n := uint64(binary.LittleEndian.Uint32(e.Data[4:]))
			if n <= uint64(len(e.Data)-8) {
				if t := text(e.Data[8 : 8+n]); t != "" {
					return t
				}
			}
		}
	}
	if t := text(e.Data); t != "" {
		return t
	}
	if len(e.Data) == 0 {
		return ""
	}
	return fmt.Sprintf("%d bytes of data", len(e.Data))
}

// UEFI GUIDs, in their text form.
const (
	guidX509   = "a5c059a1-94e4-4aa7-87b5-ab155c2bf072" // EFI_CERT_X509_GUID
	guidSHA256 = "c1c41626-504c-4092-aca9-41f936934328" // EFI_CERT_SHA256_GUID
)

// guid formats a UEFI GUID (its first three fields little-endian).
func guid(b []byte) string {
	return fmt.Sprintf("%08x-%04x-%04x-%x-%x", binary.LittleEndian.Uint32(b), binary.LittleEndian.Uint16(b[4:]),
		binary.LittleEndian.Uint16(b[6:]), b[8:10], b[10:16])
}

// describeVariable describes UEFI_VARIABLE_DATA: the variable's GUID, the
// lengths of its name (in UTF-16 characters) and data, the name, the data.
func describeVariable(typ uint32, b []byte) string {
	if len(b) < 32 {
		return ""
	}
	nameLen, dataLen := binary.LittleEndian.Uint64(b[16:]), binary.LittleEndian.Uint64(b[24:])
	rest := b[32:]
	if nameLen > uint64(len(rest))/2 {
		return ""
	}
	name := utf16String(rest[:2*nameLen])
	rest = rest[2*nameLen:]
	if dataLen > uint64(len(rest)) {
		return name
	}
	data := rest[:dataLen]
	if typ == EvEFIVariableAuthority {
		// The EFI_SIGNATURE_DATA (owner GUID, certificate) in db or
		// MokList that verified the image loaded next; shim also
		// measures its SbatLevel and MokListTrusted here.
		// shim measures its built-in vendor certificate bare, as
		// "Shim".
		for _, der := range [][]byte{data[min(16, len(data)):], data} {
			if c, err := x509.ParseCertificate(der); err == nil {
				return fmt.Sprintf("%s: certificate %s verified the next image", name, subject(c))
			}
		}
		if t := text(data); t != "" {
			return name + " = " + t
		}
		return fmt.Sprintf("%s (%d bytes)", name, len(data))
	}
	switch name {
	case "SecureBoot", "AuditMode", "DeployedMode", "SetupMode", "MokListTrusted":
		if len(data) == 1 {
			state := "off"
			if data[0] == 1 {
				state = "on"
			}
			return fmt.Sprintf("%s = %d (%s)", name, data[0], state)
		}
	case "PK", "KEK", "db", "dbx", "dbt", "dbr", "MokList", "MokListX":
		if len(data) == 0 {
			if name == "PK" {
				return "PK: empty (no platform key: Secure Boot is in setup mode)"
			}
			return name + ": empty"
		}
		return name + ": " + describeSigLists(data)
	case "BootOrder":
		if len(data)%2 == 0 {
			var ids []string
			for i := 0; i+1 < len(data) && len(ids) < 16; i += 2 {
				ids = append(ids, fmt.Sprintf("Boot%04X", binary.LittleEndian.Uint16(data[i:])))
			}
			return "BootOrder = " + strings.Join(ids, ",")
		}
	}
	if len(name) == 8 && strings.HasPrefix(name, "Boot") {
		if s := describeLoadOption(data); s != "" {
			return name + ": " + s
		}
	}
	return fmt.Sprintf("%s (%d bytes)", name, len(data))
}

// describeSigLists summarises EFI_SIGNATURE_LISTs: certificates (with
// the first subjects) and hashes.
func describeSigLists(b []byte) string {
	var certs []string
	ncerts, nhashes, nother := 0, 0, 0
	for len(b) >= 28 {
		typ := guid(b[:16])
		listSize := uint64(binary.LittleEndian.Uint32(b[16:]))
		hdrSize := uint64(binary.LittleEndian.Uint32(b[20:]))
		sigSize := uint64(binary.LittleEndian.Uint32(b[24:]))
		if listSize < 28 || listSize > uint64(len(b)) || hdrSize > listSize-28 || sigSize < 16 {
			break
		}
		sigs := b[28+hdrSize : listSize]
		for uint64(len(sigs)) >= sigSize {
			s := sigs[16:sigSize] // after the owner GUID
			switch typ {
			case guidX509:
				ncerts++
				if len(certs) < 3 {
					if c, err := x509.ParseCertificate(s); err == nil {
						certs = append(certs, subject(c))
					}
				}
			case guidSHA256:
				nhashes++
			default:
				nother++
			}
			sigs = sigs[sigSize:]
		}
		b = b[listSize:]
	}
	var parts []string
	if ncerts > 0 {
		p := fmt.Sprintf("%d certificate(s)", ncerts)
		if len(certs) > 0 {
			more := ""
			if len(certs) < ncerts {
				more = "; …"
			}
			p += " (" + strings.Join(certs, "; ") + more + ")"
		}
		parts = append(parts, p)
	}
	if nhashes > 0 {
		parts = append(parts, fmt.Sprintf("%d SHA-256 hash(es)", nhashes))
	}
	if nother > 0 {
		parts = append(parts, fmt.Sprintf("%d other entries", nother))
	}
	if len(parts) == 0 {
		return "no signature list"
	}
	return strings.Join(parts, ", ")
}

func subject(c *x509.Certificate) string {
	if c.Subject.CommonName != "" {
		return "CN=" + c.Subject.CommonName
	}
	return c.Subject.String()
}

// describeLoadOption describes an EFI_LOAD_OPTION (a Boot#### variable):
// attributes, the device path's length, the description (UTF-16,
// NUL-terminated), the device path.
func describeLoadOption(b []byte) string {
	if len(b) < 6 {
		return ""
	}
	fpLen := int(binary.LittleEndian.Uint16(b[4:]))
	rest := b[6:]
	end := -1
	for i := 0; i+1 < len(rest); i += 2 {
		if rest[i] == 0 && rest[i+1] == 0 {
			end = i
			break
		}
	}
	if end < 0 {
		return ""
	}
	desc := utf16String(rest[:end])
	rest = rest[end+2:]
	if fpLen <= len(rest) {
		if p := devicePath(rest[:fpLen]); p != "" {
			return desc + ", " + p
		}
	}
	return desc
}

// describeImage describes UEFI_IMAGE_LOAD_EVENT: the image's address,
// length and link address, the device path's length, the device path.
func describeImage(b []byte) string {
	if len(b) < 32 {
		return ""
	}
	n := binary.LittleEndian.Uint64(b[24:])
	if n > uint64(len(b)-32) {
		return ""
	}
	if p := devicePath(b[32 : 32+n]); p != "" {
		return p
	}
	return "image loaded from memory (no file path)"
}

// devicePath renders what a person recognises of a UEFI device path: its
// file path nodes (\EFI\debian\shimx64.efi), or a firmware file's GUID.
func devicePath(b []byte) string {
	var files []string
	fv := ""
	for len(b) >= 4 {
		typ, sub, n := b[0], b[1], int(binary.LittleEndian.Uint16(b[2:]))
		if n < 4 || n > len(b) || typ == 0x7f {
			break
		}
		body := b[4:n]
		switch {
		case typ == 4 && sub == 4: // media: file path
			if f := utf16String(body); f != "" {
				files = append(files, f)
			}
		case typ == 4 && sub == 6 && len(body) == 16: // media: PIWG firmware file
			fv = "firmware file " + guid(body)
		}
		b = b[n:]
	}
	if len(files) > 0 {
		p := files[0]
		for _, f := range files[1:] {
			p = strings.TrimSuffix(p, `\`) + `\` + strings.TrimPrefix(f, `\`)
		}
		return p
	}
	return fv
}

// utf16String decodes little-endian UTF-16 up to the first NUL.
func utf16String(b []byte) string {
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		c := binary.LittleEndian.Uint16(b[i:])
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return printable(string(utf16.Decode(u)))
}

func cutAtNUL(b []byte) []byte {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		return b[:i]
	}
	return b
}

// text returns data as text if it is text: printable ASCII (with
// trailing NULs, as C strings are measured), or UTF-16LE of ASCII
// characters (as UEFI strings are). Otherwise "".
func text(b []byte) string {
	t := bytes.TrimRight(b, "\x00")
	if len(t) == 0 {
		return ""
	}
	ascii := true
	for _, c := range t {
		if (c < 0x20 || c > 0x7e) && c != '\n' && c != '\t' && c != '\r' {
			ascii = false
			break
		}
	}
	if ascii {
		return printable(string(t))
	}
	// UTF-16LE: even length (after the NUL cut, one zero high byte may
	// have gone), every high byte zero.
	if len(t)%2 == 1 {
		if len(t) == len(b) {
			return ""
		}
		t = b[:len(t)+1]
	}
	if len(t) < 4 {
		return ""
	}
	for i := 0; i+1 < len(t); i += 2 {
		c := t[i]
		if t[i+1] != 0 || ((c < 0x20 || c > 0x7e) && c != '\n' && c != '\t' && c != '\r') {
			return ""
		}
	}
	return utf16String(t)
}

// printable makes s one line: control characters become spaces.
func printable(s string) string {
	return strings.TrimSpace(strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == 0xfffd {
			return ' '
		}
		return r
	}, s))
}
