#!/usr/bin/env bash
# Builds the dmsetup the driver runs: Debian's own lvm2 source package (the version apt offers, Debian's
# patches applied), linked statically. Used by the Dockerfile and by the VM test harness, so the suites and
# the benchmark run the binary the image ships.
#
# Why static: the driver starts one dmsetup process per kernel operation, and Debian's dmsetup spends most
# of its start-up loading seven shared objects (the loader's included). In the test VM (TCG) a
# `create_thin` message took 125 ms from Debian's binary and 40 ms from this one (docs/PERFORMANCE.md); on
# the host 1.9 against 1.3 ms, paid inside every snapshot's freeze (suspend, create_snap, resume are three
# processes).
#
# Configured like Debian's own dmsetup where a node can tell: device nodes root:disk 0660. Left out: udev
# synchronisation (the driver always sets DM_DISABLE_UDEV=1, so libdevmapper makes the nodes itself) and
# SELinux (a Debian container carries no file-context policy, so libselinux would label nothing).
#
#   usage: scripts/build-dmsetup.sh OUT_DIR     -> OUT_DIR/dmsetup, OUT_DIR/SOURCE (source version and
#                                                  the hash of this script it was built with)
#
# Idempotent: does nothing when OUT_DIR already holds a build of the version apt offers (or, when apt's
# sources cannot be reached, any earlier build). Needs gcc, make, libc6-dev (static libc), dpkg-dev and
# xz-utils, and Debian's source archive, which it reads through a private apt configuration (the system's
# apt sources are left as they are).
set -euo pipefail

out=${1:?usage: build-dmsetup.sh OUT_DIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
log() { printf '[build-dmsetup] %s\n' "$*" >&2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# A private apt: the system's binary sources, read again as source archives.
mkdir -p "$work/apt/lists/partial" "$work/apt/cache/archives/partial" "$work/apt/sources"
for f in /etc/apt/sources.list.d/*.sources; do
  [[ -e $f ]] || continue
  sed -e 's/^Types:.*/Types: deb-src/' "$f" >"$work/apt/sources/$(basename "$f")"
done
for f in /etc/apt/sources.list.d/*.list; do
  [[ -e $f ]] || continue
  sed -n -e 's/^deb /deb-src /p' "$f" >"$work/apt/sources/$(basename "$f")"
done
if [[ -f /etc/apt/sources.list ]]; then
  sed -n -e 's/^deb /deb-src /p' /etc/apt/sources.list >"$work/apt/sources.list"
else
  : >"$work/apt/sources.list"
fi
apt_opts=(
  -o "Dir::Etc::SourceList=$work/apt/sources.list"
  -o "Dir::Etc::SourceParts=$work/apt/sources"
  -o "Dir::State::Lists=$work/apt/lists"
  -o "Dir::Cache=$work/apt/cache"
  -o "Debug::NoLocking=1"
  -o "APT::Sandbox::User=root"
)
if ! apt-get "${apt_opts[@]}" update -qq --error-on=any 2>"$work/update.log"; then
  # Offline: a build already made is still the image's binary, only perhaps not of the newest source.
  if [[ -x $out/dmsetup && -f $out/SOURCE ]]; then
    log "apt sources unreachable; keeping $out/dmsetup ($(cat "$out/SOURCE"))"
    exit 0
  fi
  cat "$work/update.log" >&2
  log "apt sources unreachable and no earlier build in $out"
  exit 1
fi
# The newest lvm2 source the (unpinned) sources offer: bookworm, its updates and security.
showsrc=$(apt-cache "${apt_opts[@]}" showsrc lvm2 2>&1) || { log "no lvm2 source package: $showsrc"; exit 1; }
version=$(awk '/^Version:/ { print $2 }' <<<"$showsrc" | sort -V | tail -n 1)
[[ -n $version ]] || { log "no lvm2 source package found in the apt sources"; exit 1; }

# The build is keyed by the source version and by this script (its configure flags).
recipe=$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)
stamp="lvm2 $version recipe $recipe"
if [[ -x $out/dmsetup && -f $out/SOURCE && $(cat "$out/SOURCE") == "$stamp" ]]; then
  log "up to date: $out/dmsetup ($stamp)"
  exit 0
fi

log "building dmsetup from lvm2 $version"
(cd "$work" && apt-get "${apt_opts[@]}" source -qq "lvm2=$version" >/dev/null)
src=$(find "$work" -maxdepth 1 -type d -name 'lvm2-*' | head -n 1)
[[ -n $src ]] || { log "apt-get source did not unpack lvm2"; exit 1; }

cd "$src"
./configure \
  --enable-static_link \
  --with-device-uid=0 --with-device-gid=6 --with-device-mode=0660 \
  --disable-udev_sync --disable-udev_rules --disable-selinux --disable-blkid_wiping \
  --disable-readline --disable-dmeventd --disable-cmdlib --disable-nls \
  --disable-systemd-journal --disable-app-machineid \
  >"$work/configure.log" 2>&1 || { tail -n 30 "$work/configure.log" >&2; exit 1; }
make -j"$(nproc)" -C libdm >"$work/make.log" 2>&1 || { tail -n 30 "$work/make.log" >&2; exit 1; }
make -C libdm/dm-tools dmsetup.static >>"$work/make.log" 2>&1 || { tail -n 30 "$work/make.log" >&2; exit 1; }

bin=libdm/dm-tools/dmsetup.static
# It must really be static (no loader, no shared objects) and run here. Its exit status is not the test:
# without /dev/mapper/control (a container build) it prints its library version and may still fail.
if ldd "$bin" >/dev/null 2>&1; then
  log "$bin is dynamically linked"
  exit 1
fi
{ "$bin" --version 2>/dev/null || true; } | grep -q '^Library version' || { log "$bin does not run"; exit 1; }

# Published by rename, under names of this process's own: two builds at once each leave a whole binary.
install -m 0755 "$bin" "$out/dmsetup.$$"
echo "$stamp" >"$out/SOURCE.$$"
mv -f "$out/dmsetup.$$" "$out/dmsetup"
mv -f "$out/SOURCE.$$" "$out/SOURCE"
log "built $out/dmsetup ($stamp)"
