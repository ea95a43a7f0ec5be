#!/usr/bin/env bash
# Packages a built kernel tree as the knic library (called by build-kernel.sh).
#   knic-lib.sh OBJ_DIR SRC_DIR PORT_DIR PKG_DIR
set -euo pipefail
obj=$1 src=$2 port=$3 pkg=$4
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
# The target's binutils and compiler (build-kernel.sh sets the prefix when cross-compiling).
cross=${KNIC_CROSS_COMPILE:-}

# The library's entry points: the only global symbols left in the archive.
entry_points=(knic_start_kernel knic_syscall knic_halt knic_is_running
              knic_get_free_irq knic_put_irq knic_trigger_irq)
host_entry_points=(knic_host_jmp_buf_set knic_host_jmp_buf_longjmp)

mkdir -p "$pkg/lib" "$pkg/include/knic"
keep=(); for s in "${entry_points[@]}"; do keep+=(-G "$s"); done
"${cross}objcopy" -R .eh_frame -R .eh_frame_hdr -R .comment "${keep[@]}" "$obj/vmlinux" "$pkg/knic-kernel.o"

# The kernel must need nothing from the host but compiler runtime helpers.
undefined=$("${cross}nm" -u "$pkg/knic-kernel.o" | awk '{print $2}' | grep -v -E '^(_GLOBAL_OFFSET_TABLE_|__udivti3|__umodti3|__divti3|__modti3|__popcount[a-z]i2|__ashlti3|__lshrti3)$' || true)
[ -z "$undefined" ] || die "the kernel object references host symbols it must not:
$undefined"

"${cross}gcc" -c -O2 -fPIC -Wall -Wextra -Werror -I"$src/arch/knic/include/uapi" \
  "$port/host/jmp_buf.c" -o "$pkg/knic-host.o"
rm -f "$pkg/lib/libknic_linux.a"
"${cross}ar" rcs "$pkg/lib/libknic_linux.a" "$pkg/knic-kernel.o" "$pkg/knic-host.o"

globals=$("${cross}nm" -g --defined-only "$pkg/lib/libknic_linux.a" | awk 'NF==3 {print $3}' | sort)
expected=$(printf '%s\n' "${entry_points[@]}" "${host_entry_points[@]}" | sort)
[ "$globals" = "$expected" ] || die "the archive exports more than its entry points:
$(comm -23 <(echo "$globals") <(echo "$expected"))"

# Headers under knic/ so they never shadow libc's: the host-operations ABI and the
# syscall numbers of this kernel (the asm-generic numbering, not the host's).
cp "$src/arch/knic/include/uapi/asm/host_ops.h" "$pkg/include/knic/host_ops.h"
sed -n 's/^#define __NR\(3264\)\?_\([a-z0-9_]*\)[[:space:]]\+\([0-9]\+\).*/#define KNIC__NR_\2 \3/p' \
  "$obj/arch/knic/include/generated/uapi/asm/unistd_64.h" \
  "$src/arch/knic/include/uapi/asm/unistd.h" > "$pkg/include/knic/syscalls.h.body"
{ echo '/* Generated from the kernel syscall table (scripts/syscall.tbl, 64-bit ABI) and the port'"'"'s own calls. */'
  echo '#ifndef KNIC_SYSCALLS_H'; echo '#define KNIC_SYSCALLS_H'
  cat "$pkg/include/knic/syscalls.h.body"
  echo '#endif'; } > "$pkg/include/knic/syscalls.h"
rm "$pkg/include/knic/syscalls.h.body"
grep -q 'KNIC__NR_socket ' "$pkg/include/knic/syscalls.h" || die "no syscall numbers were generated"

# The kernel's whole UAPI under knic/uapi/, every #include rewritten to stay inside
# that prefix: <knic/uapi/linux/in.h> never picks up libc's <linux/...> or the host
# architecture's <asm/...> (this kernel's asm is knic's, with asm-generic numbering).
make -s -C "$src" O="$obj" ARCH=knic CROSS_COMPILE="$cross" INSTALL_HDR_PATH="$pkg/uapi-tmp" headers_install >/dev/null
mv "$pkg/uapi-tmp/include" "$pkg/include/knic/uapi" && rmdir "$pkg/uapi-tmp"
find "$pkg/include/knic/uapi" -name '*.h' -exec sed -i -E \
  's@^([[:space:]]*#[[:space:]]*include[[:space:]]*)<((linux|asm|asm-generic|mtd|rdma|misc|drm|sound|video|xen|scsi)/)@\1<knic/uapi/\2@' {} +
[ -f "$pkg/include/knic/uapi/linux/tls.h" ] && [ -f "$pkg/include/knic/uapi/asm/unistd_64.h" ] ||
  die "headers_install did not produce the expected UAPI"

{ echo "kernel_version=$(make -s -C "$src" kernelversion)"
  echo "variant=${KNIC_KERNEL_VARIANT:-}"
  echo "arch=$("${cross}gcc" -dumpmachine)"
  echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"; } > "$pkg/build-info"
rm -f "$pkg/knic-kernel.o" "$pkg/knic-host.o"
