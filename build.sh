#!/usr/bin/env bash
# Idempotent setup and build: Debian packages (MuJoCo 2.2.2, Box2D 2.4, g++), the native shims, then
# `dotnet build -c Release`. Quick when nothing changed.
set -euo pipefail
cd "$(dirname "$0")"

# ── DEBIAN PACKAGES ──
need=()
for pkg in libmujoco2.2.2 libmujoco-dev libbox2d2 libbox2d-dev g++ ; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "build.sh: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "build.sh: missing Debian packages: ${need[*]}" >&2
    echo "install them with:  sudo apt-get update && sudo apt-get install -y ${need[*]}" >&2
    exit 1
  fi
fi
command -v dotnet >/dev/null || { echo "build.sh: the .NET 10 SDK (dotnet) is not on PATH" >&2; exit 1; }

# ── NATIVE SHIMS ── (rebuilt only when the source is newer than the library)
mkdir -p native/build
build_shim() { # source, library name, compiler, link flags
  local src="native/$1" out="native/build/lib$2.so"
  [ -f "$src" ] || return 0
  if [ ! -f "$out" ] || [ "$src" -nt "$out" ]; then
    echo "build.sh: compiling $src"
    "$3" -O2 -shared -fPIC -Wall -o "$out.tmp" "$src" $4
    mv "$out.tmp" "$out"
  fi
}
build_shim metagenrl_mujoco.c metagenrl_mujoco gcc "-lmujoco"
build_shim metagenrl_box2d.cpp metagenrl_box2d g++ "-std=c++17 -lbox2d"

# ── .NET ──
dotnet build MetaGenRL.slnx -c Release -nologo -v q -clp:ErrorsOnly
