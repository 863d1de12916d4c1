#!/usr/bin/env bash
# The instruction set to build llama.cpp for on this CPU, and its CMake flags (used by setup.sh).
#   bash scripts/llamacpp-flags.sh [--isa avx512|avx2|native] [--cpuinfo FILE] [--arch ARCH]
# Prints one line, ISA<TAB>CMAKE_ARGS (no flags for native: llama.cpp's own choice).
# Why not native on x86-64: llama.cpp's native build crashes at the first generation on some
# AVX-512 CPUs (AMX ones among them: the AMX build dies with SIGILL at its first tile instruction
# on a virtual machine that lists AMX, docs/benchmarks/local.md). AVX-512 with VNNI (AMX and AVX512-BF16 off) runs, and
# decodes as fast as AVX2 on this project's machines (benchmarks/llamacpp_decode.py); AVX2 is
# the fallback setup.sh takes if it cannot generate.
set -euo pipefail
isa="" cpuinfo=/proc/cpuinfo arch="$(uname -m)"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --isa) isa="$2"; shift 2 ;;
    --cpuinfo) cpuinfo="$2"; shift 2 ;;
    --arch) arch="$2"; shift 2 ;;
    *) echo "unknown argument: $1 (usage: $0 [--isa avx512|avx2|native] [--cpuinfo FILE] [--arch ARCH])" >&2; exit 2 ;;
  esac
done
flags="$(grep -m1 -E '^(flags|Features)' "$cpuinfo" 2>/dev/null || true)"
has() { [[ " ${flags#*:} " == *" $1 "* ]]; }
if [[ -z "$isa" ]]; then
  if [[ "$arch" != x86_64 ]]; then
    isa=native
  elif has avx512f && has avx512bw && has avx512vl && has avx512_vnni; then
    isa=avx512
  else
    isa=avx2
  fi
fi
common="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
case "$isa" in
  avx512)
    vbmi=OFF
    has avx512vbmi && vbmi=ON
    printf '%s\t%s\n' avx512 "$common -DGGML_BMI2=ON -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_VBMI=$vbmi -DGGML_AVX512_BF16=OFF" ;;
  avx2) printf '%s\t%s\n' avx2 "$common -DGGML_AVX512=OFF" ;;
  native) printf 'native\t\n' ;;
  *) echo "unknown instruction set: $isa (avx512, avx2 or native)" >&2; exit 2 ;;
esac
