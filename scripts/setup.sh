#!/usr/bin/env bash
# Installs what building gguftune needs on Debian/Ubuntu: cmake and libclang (for llama-cpp-sys-2,
# which compiles its bundled llama.cpp and generates bindings), plus a C/C++ compiler.
# Extra Debian packages named as arguments are installed too when their command is missing
# (`setup.sh bc time` checks for `bc` and `/usr/bin/time`).
set -euo pipefail
missing=()
for pkg in "$@"; do
  command -v "$pkg" >/dev/null 2>&1 || [ -x "/usr/bin/$pkg" ] || missing+=("$pkg")
done
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v c++ >/dev/null 2>&1 || missing+=(g++)
have_libclang=
# libclang itself (libclang.so.N or libclang-N.so.N), not libclang-cpp, which bindgen cannot use.
for pattern in '/usr/lib/llvm-*/lib/libclang.so*' '/usr/lib/llvm-*/lib/libclang-[0-9]*.so*' \
  '/usr/lib/*-linux-gnu/libclang.so*' '/usr/lib/*-linux-gnu/libclang-[0-9]*.so*'; do
  compgen -G "$pattern" >/dev/null && have_libclang=yes
done
[ -n "$have_libclang" ] || [ -n "${LIBCLANG_PATH:-}" ] || missing+=(libclang-dev)
# Python with venv, for the cross-check with llama.cpp's own Python GGUF reader.
command -v python3 >/dev/null 2>&1 || missing+=(python3)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null 2>&1 || { echo "setup: cargo not found; install Rust from https://rustup.rs" >&2; exit 1; }
