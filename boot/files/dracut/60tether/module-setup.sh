#!/bin/bash
# dracut module: unlock root (and other early) volumes with tether.
# Installed by "tether install dracut" in /usr/lib/dracut/modules.d/60tether.
# See docs/BOOT.md.

check() {
    require_binaries @BIN@ cryptsetup || return 1
    # Included whenever the crypt module is; "dracut -a tether" forces it.
    return 0
}

depends() {
    echo crypt network
    return 0
}

# Without systemd in the initramfs, dracut brings the network up only when
# told to. With systemd, systemd-networkd runs in any case and tether's
# password agent waits for the network within its own deadline, so a root
# that needs no network (tpm2 only, or no binding) waits for nothing.
cmdline() {
    dracut_module_included "systemd" || echo "rd.neednet=1"
}

# TPM drivers, for tpm2 bindings and TPM-held device identities: tpm_crb
# and tpm_tis are built into some kernels (Debian's) and modules in others;
# SPI and I2C TPMs are modules everywhere.
installkernel() {
    hostonly='' instmods tpm_crb tpm_tis "=drivers/char/tpm"
}

install() {
    inst_multiple @BIN@ cryptsetup
    # The smb pin's helper, if installed.
    inst_multiple -o @SMB@
    # Name resolution for server names in bindings (Go reads these files).
    inst_multiple -o /etc/hosts /etc/nsswitch.conf
    # The boot settings of "tether install dracut --deadline/--retry".
    inst_multiple -o /etc/tether/initramfs.conf
    # CA certificates, for https bindings that trust the system's CAs: the
    # bundles Go's crypto/x509 looks for on Linux, whichever exist.
    inst_multiple -o /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt \
        /etc/ssl/ca-bundle.pem /etc/pki/tls/cacert.pem \
        /etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem /etc/ssl/cert.pem
    # Managed mode: the enrolment (device.json) and identity key (or, in a
    # TPM, what loads it) of every state directory under /etc/tether; the
    # default one from $TETHER_DEVICE_DIR when that is set at build time.
    # The identity's private key is then in the initramfs, which dracut
    # writes readable by root only (umask 077); see docs/BOOT.md.
    tether_copy_device "${TETHER_DEVICE_DIR:-/etc/tether/device}" /etc/tether/device
    local d
    for d in /etc/tether/*; do
        [[ $d == /etc/tether/device ]] || tether_copy_device "$d" "$d"
    done
    if dracut_module_included "systemd-networkd"; then
        inst_simple "$moddir/99-tether-dhcp.network" /etc/systemd/network/99-tether-dhcp.network
    fi
    if ! dracut_module_included "systemd"; then
        mkdir -p "${initdir}/etc/cmdline.d"
        cmdline > "${initdir}/etc/cmdline.d/60tether.conf"
    fi

    if dracut_module_included "systemd"; then
        # systemd in the initramfs: systemd-cryptsetup asks for the
        # passphrase; tether's password agent answers for bound volumes.
        inst_simple "$moddir/tether-askpass.path" "$systemdsystemunitdir/tether-askpass.path"
        inst_simple "$moddir/tether-askpass.service" "$systemdsystemunitdir/tether-askpass.service"
        $SYSTEMCTL -q --root "$initdir" add-wants cryptsetup.target tether-askpass.path
        # The agent's lines (answered, or why not) on the console too: in
        # the initramfs that is where the person at the prompt looks.
        # --initramfs: the deadline before the prompt matters, and past it
        # the agent keeps trying behind the prompt (tether.deadline=,
        # tether.retry=, /etc/tether/initramfs.conf).
        mkdir -p "${initdir}$systemdsystemunitdir/tether-askpass.service.d"
        printf '[Service]\nStandardOutput=journal+console\nStandardError=journal+console\nExecStart=\nExecStart=%s\n' \
            "@BIN@ askpass --crypttab /etc/crypttab --initramfs" \
            > "${initdir}$systemdsystemunitdir/tether-askpass.service.d/initramfs.conf"
    else
        # No systemd: once the network is up, open every bound crypttab
        # volume that is still closed; crypt's own prompt handles the rest.
        inst_hook initqueue/online 60 "$moddir/tether-hook.sh"
        inst_hook initqueue/settled 60 "$moddir/tether-hook.sh"
    fi
}

tether_copy_device() {
    local f
    [[ -f $1/device.json ]] || return 0
    for f in "$1"/*; do
        [[ -f $f ]] && inst_simple "$f" "$2/${f##*/}"
    done
    chmod 0700 "${initdir}$2"
}
