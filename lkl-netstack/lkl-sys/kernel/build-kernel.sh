#!/usr/bin/env bash
# Builds Linux as knic's in-process library.
#
#   build-kernel.sh OUT_DIR
#
# Takes Debian's linux-source-6.12 tarball, extracts it once into a cache keyed by the
# tarball, overlays knic's architecture port (arch/knic), configures a network-only
# kernel from knic.config, builds it (all cores, ccache when present) and packages
# OUT_DIR/lib/libknic_linux.a (one relocatable object whose only global symbols are
# the knic_* entry points) and OUT_DIR/include (the knic headers). Results are cached
# by tarball + port content: a second build with nothing changed takes a second.
#
# Environment: KNIC_KERNEL_TARBALL (default /usr/src/linux-source-6.12.tar.xz),
# KNIC_KERNEL_CACHE (default ~/.cache/knic/kernel), KNIC_KERNEL_JOBS (default nproc),
# KNIC_KERNEL_VARIANT (default none): a test build, knic.config plus the fragment
# variants/VARIANT.config (e.g. kunit: Linux's own unit tests run at boot), built in a
# tree of its own so it never disturbs the product kernel's incremental build.
# KNIC_KERNEL_ARCH (default: this machine's, uname -m; build.rs passes cargo's target
# architecture): x86_64 or aarch64. A foreign one is cross-compiled with Debian's cross
# gcc (aarch64-linux-gnu-*, or KNIC_KERNEL_CROSS_COMPILE), in object and package trees
# of its own (the architecture is part of the cache key).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: build-kernel.sh OUT_DIR}
tarball=${KNIC_KERNEL_TARBALL:-/usr/src/linux-source-6.12.tar.xz}
cache=${KNIC_KERNEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/knic/kernel}
jobs=${KNIC_KERNEL_JOBS:-$(nproc)}
start=$(date +%s)

say() { printf '[knic-kernel %3ss] %s\n' "$(( $(date +%s) - start ))" "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

if [ ! -f "$tarball" ]; then
  die "the kernel source $tarball is missing. Install it (Debian bookworm) with:
    sudo deploy/dev/setup-debian.sh
  which adds bookworm-backports and runs: apt-get install -t bookworm-backports linux-source-6.12
  or set KNIC_KERNEL_TARBALL to a Linux 6.12 source tarball."
fi
arch=${KNIC_KERNEL_ARCH:-$(uname -m)}
case $arch in
  x86_64|aarch64) ;;
  *) die "KNIC_KERNEL_ARCH=$arch: the library kernel builds for x86_64 or aarch64 only" ;;
esac
# The cross prefix: none for this machine's architecture, Debian's cross gcc otherwise.
if [ "$arch" = "$(uname -m)" ]; then cross=${KNIC_KERNEL_CROSS_COMPILE:-}
else cross=${KNIC_KERNEL_CROSS_COMPILE-$arch-linux-gnu-}; fi
export KNIC_CROSS_COMPILE=$cross
for tool in make "${cross}gcc" "${cross}ld" "${cross}objcopy" "${cross}nm" "${cross}ar" gcc flex bison bc xz rsync; do
  command -v "$tool" >/dev/null || die "'$tool' is needed to build the kernel${cross:+ for $arch}: run sudo deploy/dev/setup-debian.sh"
done

variant=${KNIC_KERNEL_VARIANT:-}
config=$here/knic.config
if [ -n "$variant" ]; then
  [ -f "$here/variants/$variant.config" ] ||
    die "KNIC_KERNEL_VARIANT=$variant: no $here/variants/$variant.config (variants: $(cd "$here/variants" && ls -- *.config | sed 's/\.config$//' | tr '\n' ' '))"
fi

tkey=$(stat -L -c '%n %s %Y' "$tarball" | sha256sum | cut -c1-16)
pkey=$( (cd "$here" && find arch host variants knic.config build-kernel.sh knic-lib.sh -type f | LC_ALL=C sort | xargs sha256sum) | sha256sum | cut -c1-16)
src=$cache/src-$tkey
# x86_64 keeps the trees' first names (no suffix), so existing caches stay warm.
asfx=; [ "$arch" = x86_64 ] || asfx=-$arch
obj=$cache/obj-$tkey${variant:+-$variant}$asfx
pkg=$cache/pkg-$tkey-$pkey${variant:+-$variant}$asfx

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9

if [ -f "$pkg/.complete" ]; then
  say "cached build $tkey-$pkey"
else
  if [ ! -f "$src/.extracted" ]; then
    say "extracting $(basename "$tarball") (once per tarball)"
    rm -rf "$src" && mkdir -p "$src"
    tar -xf "$tarball" -C "$src" --strip-components=1
    touch "$src/.extracted"
  fi

  # Overlay the port: copy what changed (keeping make's view of time sane), drop what went.
  mkdir -p "$src/arch/knic"
  (cd "$here/arch/knic" && find . -type f) | while read -r f; do
    if ! cmp -s "$here/arch/knic/$f" "$src/arch/knic/$f"; then
      mkdir -p "$(dirname "$src/arch/knic/$f")"; cp "$here/arch/knic/$f" "$src/arch/knic/$f"
    fi
  done
  (cd "$src/arch/knic" && find . -type f) | while read -r f; do
    [ -e "$here/arch/knic/$f" ] || rm -f "$src/arch/knic/$f"
  done

  cc=${cross}gcc hostcc=gcc
  if command -v ccache >/dev/null; then cc="ccache $cc" hostcc="ccache gcc"; export CCACHE_BASEDIR=$src; fi
  kmake=(make -C "$src" O="$obj" ARCH=knic CROSS_COMPILE="$cross" CC="$cc" HOSTCC="$hostcc" -j"$jobs")

  mkdir -p "$obj"
  if [ -n "$variant" ]; then
    # The variant's lines come last, so they win over knic.config's.
    cat "$here/knic.config" "$here/variants/$variant.config" >"$obj/.knic.config.wanted"
    config=$obj/.knic.config.wanted
  fi
  if ! cmp -s "$config" "$obj/.knic.config" || [ ! -f "$obj/.config" ]; then
    say "configuring a network-only kernel (knic.config${variant:+ + variants/$variant.config})"
    KCONFIG_ALLCONFIG="$config" "${kmake[@]}" allnoconfig >"$obj/config.log" 2>&1 ||
      { tail -n 30 "$obj/config.log" >&2; die "kernel configuration failed (log: $obj/config.log)"; }
    # Both kinds of pin: "CONFIG_X=v" must appear as is, "# CONFIG_X is not set" must
    # leave X unset (absent or "is not set").
    missing=$(grep -E '^(CONFIG_|# CONFIG_[A-Z0-9_]+ is not set$)' "$config" | while read -r line; do
      case $line in
        "# "*) opt=${line#\# }; opt=${opt%% *}
               ! grep -q "^$opt=" "$obj/.config" || echo "  $line" ;;
        *) grep -qx "$line" "$obj/.config" || echo "  $line" ;;
      esac; done)
    [ -z "$missing" ] || die "these options of knic.config${variant:+ + variants/$variant.config} did not take effect (a dependency is off):
$missing"
    cp "$config" "$obj/.knic.config"
  fi

  say "building Linux $(make -s -C "$src" kernelversion) for $arch with $jobs jobs$( [ "$cc" = "${cross}gcc" ] || echo ', ccache') (a few minutes the first time)"
  log=$obj/build.log
  "${kmake[@]}" vmlinux >"$log" 2>&1 &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 10
    kill -0 "$pid" 2>/dev/null || break
    say "... $(grep -c '^  CC ' "$log" || true) files compiled"
  done
  if ! wait "$pid"; then
    grep -E 'error|Error|undefined' "$log" | head -n 40 >&2 || true
    tail -n 15 "$log" >&2
    die "the kernel build failed (full log: $log)"
  fi

  say "packaging the library"
  rm -rf "$pkg.tmp" && mkdir -p "$pkg.tmp"
  "$here/knic-lib.sh" "$obj" "$src" "$here" "$pkg.tmp"
  rm -rf "$pkg" && mv "$pkg.tmp" "$pkg" && touch "$pkg/.complete"
fi

mkdir -p "$out"
rm -rf "$out/lib" "$out/include"
cp -r "$pkg/lib" "$pkg/include" "$out/"
[ -f "$pkg/build-info" ] && cp "$pkg/build-info" "$out/"
say "library ready: $out/lib/libknic_linux.a"
