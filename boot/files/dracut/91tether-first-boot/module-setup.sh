#!/bin/bash
# dracut module: first boot of a factory image. If the root partition named
# in /etc/tether/first-boot.conf is not LUKS yet (or its encryption was
# interrupted), tether-first-boot.service encrypts it in place, binds it
# and removes the temporary key before systemd-cryptsetup opens it; the
# password agent of module 60tether answers for the new binding.
# Installed by "tether install dracut --first-boot DEV ..." in
# /usr/lib/dracut/modules.d/91tether-first-boot: numbered after 90crypt,
# whose hostonly crypttab filter would drop the root's line (at build time
# the partition is not LUKS yet). See docs/BOOT.md, "First boot".

check() {
    [[ -f $dracutsysrootdir/etc/tether/first-boot.conf ]] || return 1
    require_binaries @BIN@ cryptsetup blkid mount umount || return 1
    return 0
}

depends() {
    # The agent and the network come with tether's module; the service
    # needs systemd in the initramfs.
    echo tether systemd
    return 0
}

# Filesystems a recovery medium may carry.
installkernel() {
    hostonly='' instmods vfat nls_cp437 nls_iso8859_1 ext4
}

install() {
    local TETHER_FB_NAME TETHER_FB_DEVICE unit
    inst_multiple @BIN@ cryptsetup blkid mount umount sync
    inst_simple /etc/tether/first-boot.conf
    inst_script "$moddir/tether-first-boot.sh" /usr/lib/tether/tether-first-boot
    inst_simple "$moddir/tether-first-boot.service" "$systemdsystemunitdir/tether-first-boot.service"
    $SYSTEMCTL -q --root "$initdir" add-wants initrd.target tether-first-boot.service

    # systemd-cryptsetup opens the root by this line (the kernel command
    # line cannot name a LUKS UUID that does not exist yet); the agent
    # answers for it from the same file.
    . "$dracutsysrootdir/etc/tether/first-boot.conf"
    if ! grep -qs "^${TETHER_FB_NAME}[[:space:]]" "$initdir/etc/crypttab"; then
        echo "$TETHER_FB_NAME $TETHER_FB_DEVICE none luks" >> "$initdir/etc/crypttab"
    fi
    # Encrypting a large partition takes longer than any device wait: the
    # root device waits for as long as the encryption runs, whatever
    # rd.timeout= says ("zz-" sorts after the timeout.conf dracut's
    # rootfs generator writes, so this one wins).
    # systemd-cryptsetup opens the root after the service has run.
    mkdir -p "$initdir$systemdsystemunitdir/tether-first-boot.service.d"
    printf '[Unit]\nBefore=systemd-cryptsetup@%s.service\n' "$(systemd-escape "$TETHER_FB_NAME")" \
        > "$initdir$systemdsystemunitdir/tether-first-boot.service.d/name.conf"
    unit=$(systemd-escape -p --suffix=device "/dev/mapper/$TETHER_FB_NAME")
    mkdir -p "$initdir$systemdsystemconfdir/$unit.d"
    printf '[Unit]\nJobTimeoutSec=infinity\nJobRunningTimeoutSec=infinity\n' \
        > "$initdir$systemdsystemconfdir/$unit.d/zz-tether-first-boot.conf"
}
