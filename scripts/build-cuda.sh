#!/usr/bin/env bash
# Builds gguftune with ggml's CUDA backend on a machine with no CUDA toolkit and no GPU, so that
# a CUDA build break shows without one.
#
# Usage: scripts/build-cuda.sh [ARCH]
#
#   ARCH   the GPU architecture(s) to compile for, in CMake's CMAKE_CUDA_ARCHITECTURES syntax:
#          90 (H100, H200; the default), 80 (A100), 86 (RTX 30xx), 89 (L4, RTX 40xx), "80;90", ...
#          Also read from the environment as CUDA_ARCH. One architecture compiles ggml's CUDA
#          kernels once; each more costs as much again.
#   JOBS   (environment) parallel compile jobs, default 2. The build runs under `nice -n 19`.
#
# What it does:
#   1. A private Python venv, target/cuda-toolkit/venv, with NVIDIA's CUDA 13.0 wheels from PyPI
#      (nvcc with its nvvm and crt parts, the runtime, cuBLAS, CCCL), versions pinned below.
#   2. A CUDA toolkit folder CMake accepts, target/cuda-toolkit/cuda: bin/, include/, nvvm/ and
#      lib64/ as symlinks into the wheels, plus the unversioned libcudart.so, libcublas.so and
#      libcublasLt.so that CMake's FindCUDAToolkit looks for (the wheels ship only libX.so.13).
#   3. `cargo build --release --locked --features cuda --target-dir target/cuda`, with:
#      - LLAMA_BUILD_SHARED_LIBS=1 (llama-cpp-sys-2's switch, same as its `dynamic-link` feature):
#        ggml and llama.cpp as shared libraries, linked to the CUDA runtime and cuBLAS
#        dynamically. The crate's static CUDA link needs libcublas_static.a and libculibos.a,
#        which a full toolkit has and the cuBLAS wheel does not.
#      - GGML_CUDA_NO_VMM=ON: ggml's CUDA backend without its virtual memory pool, which calls
#        the driver API and so links libcuda.so, a library only NVIDIA's driver installs (a
#        toolkit has a link stub in lib64/stubs; no wheel has one). ggml then uses its plain
#        cudaMalloc pool, and the CUDA runtime opens the driver (libcuda.so.1) at run time.
#      - CMAKE_CUDA_ARCHITECTURES=ARCH and CMAKE_CUDA_COMPILER (llama-cpp-sys-2 passes CMAKE_*
#        and GGML_* environment variables to ggml's CMake).
#      - an RPATH $ORIGIN/cuda-libs in the binary (DT_RPATH, which also serves the libraries it
#        loads, unlike DT_RUNPATH).
#   4. target/cuda/release/cuda-libs/: the shared libraries the binary needs besides the system's
#      and the driver's (libggml*.so, libllama.so, libcudart.so.13, libcublas.so.13,
#      libcublasLt.so.13), as hard links. Carry target/cuda/release/gguftune and this folder
#      together (640 MB, 540 MB of it libcublasLt) to a machine with an NVIDIA driver for
#      CUDA 13 (r580 or newer); it needs no toolkit there.
#   5. Prints the elapsed time, the binary's dynamic section and `ldd`, and runs
#      `gguftune devices` here (no GPU here: it lists the CPU; the CUDA runtime finds no driver).
#
# Measured: 65 minutes for architecture 90 on 2 shared cores (docs/building.md says more).
# The binary is portable: RUSTFLAGS (for the RPATH) replaces .cargo/config.toml's
# target-cpu=native, so ggml's CPU code is built for AVX2 (ggml's default without GGML_NATIVE) and
# the Rust code for baseline x86-64.
set -euo pipefail

ARCH="${1:-${CUDA_ARCH:-90}}"
JOBS="${JOBS:-2}"

# One CUDA release: 13.0 Update 2. nvcc and the libraries must be of one major version, and the
# cu12 wheels of nvcc carry no `nvcc` driver (only ptxas and headers).
WHEELS=(
    nvidia-cuda-nvcc==13.0.88
    nvidia-cuda-crt==13.0.88
    nvidia-nvvm==13.0.88
    nvidia-cuda-runtime==13.0.96
    nvidia-cublas==13.1.0.3
    nvidia-cuda-cccl==13.0.85
)

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
toolkit_dir="$root/target/cuda-toolkit"
venv="$toolkit_dir/venv"
cuda="$toolkit_dir/cuda"
target_dir="$root/target/cuda"
release="$target_dir/release"
started=$(date +%s)

echo "== CUDA wheels into $venv"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps "${WHEELS[@]}"
wheel_root="$("$venv/bin/python" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')"
for part in bin/nvcc nvvm/bin/cicc include/cuda_runtime.h include/cublas_v2.h include/cccl/cub \
    lib/libcudart.so.13 lib/libcublas.so.13 lib/libcublasLt.so.13; do
    if [ ! -e "$wheel_root/$part" ]; then
        echo "error: $wheel_root/$part is missing: the wheels' layout is not the one this script knows" >&2
        exit 1
    fi
done

echo "== CUDA toolkit folder $cuda (symlinks into $wheel_root)"
rm -rf "$cuda"
mkdir -p "$cuda/bin" "$cuda/lib64"
# nvcc finds its parts (nvcc.profile, cicc, ptxas, headers) from the folder it was started
# from, not from where the symlink points: every file of bin/ is linked one by one.
for file in "$wheel_root"/bin/*; do
    ln -s "$file" "$cuda/bin/$(basename "$file")"
done
ln -s "$wheel_root/include" "$cuda/include"
ln -s "$wheel_root/nvvm" "$cuda/nvvm"
for file in "$wheel_root"/lib/*; do
    ln -s "$file" "$cuda/lib64/$(basename "$file")"
done
for lib in cudart cublas cublasLt; do
    ln -s "lib$lib.so.13" "$cuda/lib64/lib$lib.so"
done
ln -s lib64 "$cuda/lib"
"$cuda/bin/nvcc" --version | tail -n 2

echo "== cargo build --release --locked --features cuda --target-dir $target_dir (CUDA architecture $ARCH, $JOBS jobs)"
export PATH="$cuda/bin:$PATH"
export CUDA_PATH="$cuda" CUDAToolkit_ROOT="$cuda"
export CMAKE_CUDA_COMPILER="$cuda/bin/nvcc" CMAKE_CUDA_ARCHITECTURES="$ARCH"
export CMAKE_BUILD_PARALLEL_LEVEL="$JOBS" CARGO_BUILD_JOBS="$JOBS"
export LLAMA_BUILD_SHARED_LIBS=1 GGML_CUDA_NO_VMM=ON
export RUSTFLAGS="${RUSTFLAGS:-} -C link-arg=-Wl,--disable-new-dtags,-rpath,\$ORIGIN/cuda-libs"
nice -n 19 cargo build --release --locked --features cuda --target-dir "$target_dir"

echo "== $release/cuda-libs: what the binary loads besides the system's and the driver's"
rm -rf "$release/cuda-libs"
mkdir -p "$release/cuda-libs"
# From the CMake install of llama-cpp-sys-2's build (the copies it links into target/cuda/release
# are made once and not refreshed by a rebuild).
ggml_lib="$(ls -td "$release"/build/llama-cpp-sys-2-*/out/lib | head -n 1)"
for file in "$ggml_lib"/lib*.so*; do
    cp -P -l "$file" "$release/cuda-libs/"
done
for lib in libcudart.so.13 libcublas.so.13 libcublasLt.so.13; do
    cp -L -l "$wheel_root/lib/$lib" "$release/cuda-libs/"
done
ls -l "$release/cuda-libs"
du -sh --apparent-size "$release/cuda-libs"

elapsed=$(( $(date +%s) - started ))
echo "== $release/gguftune: dynamic section"
readelf -d "$release/gguftune" | grep -E 'NEEDED|RPATH|RUNPATH'
echo "== ldd $release/gguftune"
ldd "$release/gguftune"
echo "== $release/gguftune devices (no GPU here: the CPU only)"
"$release/gguftune" devices || echo "(gguftune devices failed with status $?)"
printf '\nbuilt in %dm%02ds: %s (CUDA architecture %s); carry it with %s/\n' \
    $((elapsed / 60)) $((elapsed % 60)) "$release/gguftune" "$ARCH" "$release/cuda-libs"
