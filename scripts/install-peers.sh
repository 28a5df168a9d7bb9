#!/usr/bin/env bash
# Install the real peers used by the e2e tests and benchmarks (QEMU, DPDK testpmd, Open vSwitch with
# DPDK, a guest kernel with virtio modules, a static busybox). Idempotent and quiet:
#   - everything present            -> one line, exit 0 (fast: no apt/dpkg calls)
#   - something missing, can install -> apt-get update + install (log in $LOG), one line per step
#   - something missing, cannot      -> one line saying why, exit 0 (the tests then skip with a
#                                       reason, or fail when CI=true; see test/e2e/support/peers.ts)
# Note: on Debian 12 dpdk-testpmd is in dpdk-dev, not in the dpdk package.
set -u
export DEBIAN_FRONTEND=noninteractive

# clang + libclang-rt-14-dev (libFuzzer) and valgrind: the C addon's fuzz test (test/fuzz/fuzz.test.ts).
# openvswitch-switch-dpdk: OVS-DPDK, the anchor of the net benchmarks (test/e2e/support/ovs-dpdk.ts runs it by
# hand; the package's own service is not used).
PKGS=(qemu-system-x86 qemu-utils dpdk dpdk-dev linux-image-amd64 busybox-static cpio xz-utils iproute2 systemd strace clang libclang-rt-14-dev valgrind openvswitch-switch-dpdk)
OVS_DPDK_VSWITCHD=/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk
LOG="${TMPDIR:-/tmp}/vhostd-install-peers.log"

have() { command -v "$1" >/dev/null 2>&1; }

kernel_ok() {
  local img v
  for img in /boot/vmlinuz-*; do
    [ -r "$img" ] || continue
    v="${img#/boot/vmlinuz-}"
    compgen -G "/lib/modules/$v/kernel/drivers/net/virtio_net.ko*" >/dev/null && return 0
    grep -qs 'virtio_net\.ko' "/lib/modules/$v/modules.builtin" && return 0
  done
  return 1
}

busybox_static_ok() {
  local b
  for b in /bin/busybox /usr/bin/busybox; do
    # a dynamically linked busybox names its ELF interpreter; busybox-static does not
    [ -x "$b" ] && ! LC_ALL=C grep -qa -e '/lib64/ld-linux' -e '/lib/ld-linux' "$b" && return 0
  done
  return 1
}

missing_list() {
  local m=()
  have qemu-system-x86_64 || m+=("qemu-system-x86_64")
  { have qemu-storage-daemon && have qemu-img; } || m+=("qemu-storage-daemon/qemu-img")
  have dpdk-testpmd || m+=("dpdk-testpmd")
  kernel_ok || m+=("guest kernel+virtio modules")
  busybox_static_ok || m+=("static busybox")
  have ip || m+=("ip (iproute2: network namespaces for the vport tests)")
  have systemd-analyze || m+=("systemd-analyze (checks the example unit in contrib/systemd)")
  have strace || m+=("strace (the system calls the daemon makes, against the unit's SystemCallFilter=)")
  { have clang && compgen -G "/usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a" >/dev/null; } || m+=("clang with libFuzzer (native fuzz test)")
  have valgrind || m+=("valgrind (native fuzz test)")
  { [ -x "$OVS_DPDK_VSWITCHD" ] && have ovsdb-tool && have ovsdb-server && have ovs-vsctl && have ovs-appctl; } || m+=("Open vSwitch with DPDK (net benchmark anchor)")
  if compgen -G "/lib/modules/*/kernel/drivers/net/virtio_net.ko.xz" >/dev/null; then have xz || m+=("xz"); fi
  if compgen -G "/lib/modules/*/kernel/drivers/net/virtio_net.ko.zst" >/dev/null; then have zstd || m+=("zstd"); fi
  echo "${m[*]:-}"
}

missing="$(missing_list)"
if [ -z "$missing" ]; then
  echo "install-peers: all test peers present (qemu, dpdk-testpmd, guest kernel, busybox-static, iproute2, systemd-analyze, strace, clang/libFuzzer, valgrind, ovs-vswitchd-dpdk)"
  exit 0
fi

if ! have apt-get; then
  echo "install-peers: missing [$missing] and no apt-get here; cannot install (e2e tests will skip, or fail with CI=true)"
  exit 0
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if have sudo && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n env DEBIAN_FRONTEND=noninteractive)
  else
    echo "install-peers: missing [$missing]; not root and no passwordless sudo, cannot install (e2e tests will skip, or fail with CI=true)"
    exit 0
  fi
fi

# Another apt/dpkg run (e.g. unattended-upgrades) holds the lock: wait up to 10 min for it.
echo "install-peers: missing [$missing]; installing ${PKGS[*]} (log: $LOG)"
if ! "${SUDO[@]}" apt-get update -q >"$LOG" 2>&1; then
  echo "install-peers: apt-get update failed (see $LOG); continuing with the existing package lists"
fi
if ! "${SUDO[@]}" apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=600 "${PKGS[@]}" >>"$LOG" 2>&1; then
  echo "install-peers: apt-get install failed (see $LOG):"
  tail -n 5 "$LOG" | sed 's/^/  /'
  exit 0
fi

missing="$(missing_list)"
if [ -n "$missing" ]; then
  echo "install-peers: installed, but still missing [$missing] (see $LOG)"
else
  echo "install-peers: test peers installed"
fi
exit 0
