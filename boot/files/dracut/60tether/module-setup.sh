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

cmdline() {
    echo "rd.neednet=1"
}

install() {
    inst_multiple @BIN@ cryptsetup
    # The smb pin's helper, if installed.
    inst_multiple -o @SMB@
    # Name resolution for server names in bindings (Go reads these files).
    inst_multiple -o /etc/hosts /etc/nsswitch.conf
    mkdir -p "${initdir}/etc/cmdline.d"
    cmdline > "${initdir}/etc/cmdline.d/60tether.conf"

    if dracut_module_included "systemd"; then
        # systemd in the initramfs: systemd-cryptsetup asks for the
        # passphrase; tether's password agent answers for bound volumes.
        inst_simple "$moddir/tether-askpass.path" "$systemdsystemunitdir/tether-askpass.path"
        inst_simple "$moddir/tether-askpass.service" "$systemdsystemunitdir/tether-askpass.service"
        $SYSTEMCTL -q --root "$initdir" add-wants cryptsetup.target tether-askpass.path
    else
        # No systemd: once the network is up, open every bound crypttab
        # volume that is still closed; crypt's own prompt handles the rest.
        inst_hook initqueue/online 60 "$moddir/tether-hook.sh"
        inst_hook initqueue/settled 60 "$moddir/tether-hook.sh"
    fi
}
