#!/bin/bash
# tether-first-boot.service in a dracut initramfs: first boot of a factory
# image. If the root partition named in /etc/tether/first-boot.conf is not
# LUKS yet, or its encryption was interrupted (a power cut: the LUKS2
# header carries the "tether-encrypt:" label until the run is finished),
# encrypt it in place, bind it and remove the temporary key. Opening it is
# left to systemd-cryptsetup (the crypttab line the module wrote) and
# tether's password agent, as on every later boot. Always exits 0: after a
# failure the next boot tries again, and systemd-cryptsetup asks for a
# passphrase if the partition is LUKS already.
# Installed by "tether install dracut --first-boot DEV ..."; see docs/BOOT.md.

conf=/etc/tether/first-boot.conf
[ -f "$conf" ] || exit 0
TETHER_FB_DEVICE= TETHER_FB_NAME= TETHER_FB_PIN= TETHER_FB_CONFIG= TETHER_FB_RECOVERY= TETHER_FB_NETWORK=
. "$conf"

say() { echo "tether: first boot: $*"; }

# A device named by a path, PARTUUID=, PARTLABEL=, LABEL= or UUID=, as
# udev links it.
resolve() {
    local p
    case $1 in
    PARTUUID=*) p=/dev/disk/by-partuuid/${1#PARTUUID=} ;;
    PARTLABEL=*) p=/dev/disk/by-partlabel/${1#PARTLABEL=} ;;
    LABEL=*) p=/dev/disk/by-label/${1#LABEL=} ;;
    UUID=*) p=/dev/disk/by-uuid/${1#UUID=} ;;
    *) p=$1 ;;
    esac
    [ -b "$p" ] && readlink -f "$p"
}

# The partition table names the device: a filesystem's LABEL= or UUID=
# is gone once the LUKS header is there.
dev=
for ((i = 0; i < 30; i++)); do
    dev=$(resolve "$TETHER_FB_DEVICE") && break
    dev=
    udevadm settle --timeout=1 2>/dev/null || sleep 1
done
if [ -z "$dev" ]; then
    say "the root partition $TETHER_FB_DEVICE did not appear; not encrypting (check the device in /etc/tether/first-boot.conf and rebuild the initramfs: dracut -f)"
    exit 0
fi

# Done already: a LUKS header without tether's label.
if cryptsetup isLuks "$dev" 2>/dev/null && ! cryptsetup luksDump "$dev" 2>/dev/null | grep -q 'tether-encrypt:'; then
    exit 0
fi

# A default route in /proc/net/route (bash alone: the initramfs has no awk).
has_route() {
    local iface dest rest
    while read -r iface dest rest; do
        [ "$dest" = 00000000 ] && return 0
    done < /proc/net/route
    return 1
}

# A policy with a network pin: wait (up to a minute) for a default route
# from systemd-networkd; tether's own retries cover the rest.
if [ "$TETHER_FB_NETWORK" = yes ]; then
    for ((i = 0; i < 60; i++)); do
        has_route && break
        sleep 1
    done
    has_route || say "no default route after 60 s; trying all the same"
fi

# The recovery passphrase goes to a file on a removable medium
# (DEV:PATH), or nowhere ("none").
medium=
case "$TETHER_FB_RECOVERY" in
none) recovery=--no-recovery ;;
*:*)
    mdev=
    for ((i = 0; i < 10; i++)); do
        mdev=$(resolve "${TETHER_FB_RECOVERY%%:*}") && break
        mdev=
        sleep 1
    done
    if [ -z "$mdev" ]; then
        say "the recovery medium ${TETHER_FB_RECOVERY%%:*} is not there; not encrypting (insert it and reboot)"
        exit 0
    fi
    medium=/run/tether-first-boot/medium
    mkdir -p "$medium"
    if ! mount -o rw "$mdev" "$medium"; then
        say "cannot mount the recovery medium $mdev; not encrypting (check it and reboot)"
        exit 0
    fi
    rpath=${TETHER_FB_RECOVERY#*:}
    recovery="--recovery-file=$medium/${rpath#/}"
    ;;
*)
    say "TETHER_FB_RECOVERY must be none or DEV:PATH; not encrypting (rerun tether install dracut --first-boot)"
    exit 0
    ;;
esac

# The state directory is a tmpfs here: tether keeps the temporary key in
# the LUKS2 header until the end, never only in this directory.
state=/run/tether-first-boot/state
mkdir -p "$state"
chmod 0700 /run/tether-first-boot "$state"
say "encrypting $dev in place (do not switch off; an interrupted run continues at the next boot)"
# Progress goes to stderr, the console.
@BIN@ luks encrypt -d "$dev" --state-dir "$state" "$recovery" "$TETHER_FB_PIN" "$TETHER_FB_CONFIG"
rc=$?
if [ -n "$medium" ]; then
    sync
    umount "$medium"
fi
if [ $rc -ne 0 ]; then
    say "encrypting $dev failed (above); the next boot tries again, and systemd-cryptsetup asks for a passphrase if it is LUKS already"
    exit 0
fi
say "$dev is encrypted and bound"
exit 0
