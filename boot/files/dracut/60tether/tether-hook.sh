#!/bin/sh
# dracut initqueue hook (non-systemd initramfs): unlock bound volumes.
# Runs on every initqueue round until they are open; each run is bounded.
[ -f /etc/crypttab ] || exit 0
command -v info >/dev/null 2>&1 || . /lib/dracut-lib.sh
@BIN@ crypttab open --crypttab /etc/crypttab --deadline 20s 2>&1 | while read -r line; do
    info "$line"
done
exit 0
