#!/bin/sh
# Builds the Kinesthetic filter `@NAME@` into build/@NAME@.wasm:
#
#   ./build.sh         generate the bindings, compile, make the component
#   ./build.sh test    the same, then `kinesthetic filter test` on test/
#
# Every command is printed before it runs. The tools, found on PATH (the
# crates.io ones also in ${CARGO_HOME:-~/.cargo}/bin), or where CLANG,
# WIT_BINDGEN, WASM_TOOLS and KINESTHETIC point:
#   - Debian's clang lld wasi-libc libclang-rt-dev-wasm32 (apt-get install)
#   - wit-bindgen-cli 0.63.0 and wasm-tools 1.263.0 (cargo install --locked)
#   - kinesthetic, for the test only
# In a Kinesthetic checkout, `cargo xtask install-tools` installs them all.
set -eu

cd "$(dirname "$0")"
name=@NAME@

die() {
  echo "build.sh: $*" >&2
  exit 1
}

# Prints a command, then runs it.
run() {
  echo "+ $*" >&2
  "$@"
}

# A tool from crates.io: on PATH, else where `cargo install` puts it.
cargo_tool() {
  if command -v "$1" >/dev/null 2>&1; then
    command -v "$1"
  elif [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/$1" ]; then
    echo "${CARGO_HOME:-$HOME/.cargo}/bin/$1"
  else
    echo "$1"
  fi
}

# Fails unless TOOL runs and prints VERSION (the pinned one: the bindings
# and the component format depend on it).
pinned() {
  version=$("$1" --version 2>/dev/null) ||
    die "$1 not found or does not run: cargo install --locked $3@$2"
  version=$(printf '%s\n' "$version" | sed -n 1p)
  case " $version " in
    *" $2 "*) ;;
    *) die "$1 is \`$version\`, not the pinned $2: cargo install --locked $3@$2" ;;
  esac
}

apt_hint="apt-get install clang lld wasi-libc libclang-rt-dev-wasm32"
CLANG=${CLANG:-clang}
WIT_BINDGEN=${WIT_BINDGEN:-$(cargo_tool wit-bindgen)}
WASM_TOOLS=${WASM_TOOLS:-$(cargo_tool wasm-tools)}

case "${1:-build}" in
  build | test) ;;
  *) die "unknown command \`$1\`: use \`./build.sh\` or \`./build.sh test\`" ;;
esac

command -v "$CLANG" >/dev/null 2>&1 || die "$CLANG not found: $apt_hint"
pinned "$WIT_BINDGEN" 0.63.0 wit-bindgen-cli
pinned "$WASM_TOOLS" 1.263.0 wasm-tools

# 1. The C bindings of the filter world, generated fresh (never edited).
mkdir -p build/gen
run "$WIT_BINDGEN" c wit --world filter --out-dir build/gen

# 2. A core Wasm module: a reactor (a library, no `main`) for wasm32-wasi.
run "$CLANG" --target=wasm32-wasi -mexec-model=reactor -O2 -Wall -Wextra \
  -Wl,--strip-all -Ibuild/gen -o "build/$name.core.wasm" \
  "$name.c" build/gen/filter.c build/gen/filter_component_type.o ||
  die "compiling failed; if the messages above say a header (stdlib.h), \
wasm-ld or libclang_rt is missing: $apt_hint"

# 3. The component. Without stdio it imports nothing but the world's `log`:
#    no WASI adapter is needed.
run "$WASM_TOOLS" component new "build/$name.core.wasm" -o "build/$name.wasm"
echo "built build/$name.wasm" >&2

if [ "${1:-build}" = test ]; then
  KINESTHETIC=${KINESTHETIC:-kinesthetic}
  command -v "$KINESTHETIC" >/dev/null 2>&1 ||
    die "$KINESTHETIC not found: put kinesthetic on PATH or set KINESTHETIC=/path/to/kinesthetic"
  # One --param KEY=VALUE per parameter the test needs.
  run "$KINESTHETIC" filter test "build/$name.wasm" --param needle=error \
    --input test/input.txt --expect test/expected.txt
fi
