// Package boot unlocks LUKS volumes while a machine boots, by serving their
// keys to the pieces of the boot that already know how to open a volume:
//
//   - KeyServer answers systemd-cryptsetup on an AF_UNIX socket named as
//     the volume's key file in /etc/crypttab (systemd ≥ 248 reads a key
//     file that is a socket by connecting to it);
//   - Agent answers systemd's password requests in /run/systemd/ask-password
//     for volumes whose crypttab is left alone;
//   - the unit files, the dracut module and the initramfs-tools scripts that
//     start them (embedded; Install writes them into a root directory).
//
// What it promises: a volume's key is recovered from the volume's own
// bindings (the clevis tokens in its LUKS2 header) and never written
// anywhere but the socket that asked; every wait is bounded by a deadline,
// after which the asker gets no key and falls back to its prompt, and one
// log line says what was waited for and why it gave up.
package boot
