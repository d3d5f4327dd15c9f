#!/bin/sh
# Inside the BlueZ test VM (tests/support/bluez_vm.py): the host's files, a Linux kernel with
# Bluetooth, BlueZ over D-Bus, and a controller on the virtual device's air.  Then the
# `safesignal` commands given as arguments run against that stack, each as an installer runs it,
# with bleak as the backend (no --ble-transport).
#   bluez_guest.sh OUT AIR_PORT STEP...     STEP: NAME=ARGS (ARGS split on spaces)
# stdin: the WiFi password, then the PIN (secrets never touch the host's disk or argv).
# OUT (shared with the host, writable) gets NAME.out, NAME.err, NAME.rc per step, and the logs.
set -u
OUT=$1; PORT=$2; shift 2
exec >"$OUT/guest.log" 2>&1
IFS= read -r SAFESIGNAL_WIFI_PASS
IFS= read -r SAFESIGNAL_BLE_PIN
export SAFESIGNAL_WIFI_PASS SAFESIGNAL_BLE_PIN
REPO=$(cd "$(dirname "$0")/../.." && pwd)
PY="$REPO/.venv/bin/python"
# QEMU user networking: the guest is 10.0.2.15, the host's loopback is 10.0.2.2
IF=$(ls /sys/class/net | grep -v '^lo$' | head -1)
ip link set "$IF" up
ip addr add 10.0.2.15/24 dev "$IF" 2>/dev/null
ip route add default via 10.0.2.2 2>/dev/null
modprobe hci_vhci || { echo "no hci_vhci"; exit 1; }
mkdir -p /run/dbus /var/lib/bluetooth
dbus-daemon --system --fork --nopidfile || { echo "no D-Bus"; exit 1; }
/usr/libexec/bluetooth/bluetoothd -n >"$OUT/bluetoothd.log" 2>&1 &
"$PY" "$REPO/tests/support/vhci_bridge.py" "tcp-client:10.0.2.2:$PORT" >"$OUT/bridge.log" 2>&1 &
i=0
until btmgmt info 2>/dev/null | grep -q "current settings: powered"; do
    i=$((i + 1)); [ $i -gt 120 ] && { echo "no powered adapter"; btmgmt info; exit 1; }
    sleep 1
done
btmgmt info >"$OUT/adapter.txt" 2>&1
echo "adapter up after $i s"
cd "$REPO"
for step in "$@"; do
    name=${step%%=*}; args=${step#*=}
    # shellcheck disable=SC2086  # ARGS are split on purpose
    timeout 600 "$PY" -m safesignal $args >"$OUT/$name.out" 2>"$OUT/$name.err" </dev/null
    echo $? >"$OUT/$name.rc"
    echo "step $name: rc $(cat "$OUT/$name.rc")"
done
