#!/usr/bin/env bash
# Installs what a fresh Debian machine needs to build Tessera beyond the Rust toolchain:
# libclang, which the bundled RocksDB's bindings are generated with. Safe to run again.
set -euo pipefail

have_libclang() {
  # bindgen finds libclang through LIBCLANG_PATH or the usual library directories.
  if [[ -n "${LIBCLANG_PATH:-}" ]] && compgen -G "${LIBCLANG_PATH}/libclang*.so*" >/dev/null; then
    return 0
  fi
  compgen -G "/usr/lib/llvm-*/lib/libclang.so*" >/dev/null \
    || compgen -G "/usr/lib/x86_64-linux-gnu/libclang*.so*" >/dev/null \
    || compgen -G "/usr/lib/aarch64-linux-gnu/libclang*.so*" >/dev/null
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
