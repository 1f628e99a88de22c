#!/usr/bin/env bash
# Installs what a fresh Debian machine needs to build Tessera beyond the Rust toolchain:
# libclang, which the bundled RocksDB's bindings are generated with. Safe to run again.
set -euo pipefail

have_libclang() {
  # bindgen finds libclang through LIBCLANG_PATH or the usual library directories. The
  # patterns name the C library only (libclang.so*, libclang-NN.so*): Debian's
  # libclang-cpp.so, the C++ interface some images carry, is not what bindgen loads, and a
  # looser libclang*.so* took it for libclang and skipped the install.
  local dir
  for dir in "${LIBCLANG_PATH:-}" /usr/lib/llvm-*/lib /usr/lib/x86_64-linux-gnu /usr/lib/aarch64-linux-gnu; do
    [[ -n "$dir" ]] || continue
    if compgen -G "$dir/libclang.so*" >/dev/null || compgen -G "$dir/libclang-[0-9]*.so*" >/dev/null; then
      return 0
    fi
  done
  return 1
}

if ! have_libclang; then
  echo "setup: installing libclang-dev (needed to build RocksDB's bindings)" >&2
  sudo_cmd=()
  if [[ "$(id -u)" != 0 ]]; then
    sudo_cmd=(sudo)
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -q
  "${sudo_cmd[@]}" apt-get install -y -q libclang-dev
fi
if ! command -v c++ >/dev/null 2>&1; then
  echo "setup: a C++ compiler is needed to build RocksDB; install g++" >&2
  exit 1
fi
