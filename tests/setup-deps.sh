# Install what arjit needs on Debian 12, only what is missing.
# Sourced by tests/run.sh and examples/quickstart.sh:
#
#   . tests/setup-deps.sh
#   arjit_setup_deps               # build + tests
#   arjit_setup_deps --fuzz        # also clang and libFuzzer
#
# Runs apt-get (as root, or through sudo) only when a package is missing,
# so a prepared machine is left alone and needs no network.

# Build and test: compiler, CMake, LLVM 19 (JIT), libffi (kernel calls),
# CMocka (tests), zlib and libpng (datasets, sample images), libcurl (data
# fetch), gdb (the JIT's kernels in a debugger, tests/test_jit_debug.sh).
# OpenMP is gcc's libgomp, which build-essential brings.
ARJIT_PKGS=(build-essential cmake pkg-config llvm-19-dev libffi-dev libcmocka-dev
            zlib1g-dev libpng-dev libcurl4-openssl-dev gdb)
# The fuzzer: Debian 12's clang is 14; its libFuzzer is in libclang-rt-14-dev.
ARJIT_FUZZ_PKGS=(clang libclang-rt-14-dev)
ARJIT_LIBFUZZER=/usr/lib/llvm-14/lib/clang/14.0.6/lib/linux/libclang_rt.fuzzer-x86_64.a

arjit_pkg_installed() {
    dpkg -s "$1" 2>/dev/null | grep -q '^Status: install ok installed'
}

arjit_setup_deps() {
    local want=("${ARJIT_PKGS[@]}") missing=() p
    [[ ${1:-} == --fuzz ]] && want+=("${ARJIT_FUZZ_PKGS[@]}")
    for p in "${want[@]}"; do
        arjit_pkg_installed "$p" || missing+=("$p")
    done
    if ((${#missing[@]})); then
        local sudo=()
        if ((EUID != 0)); then
            command -v sudo >/dev/null || {
                echo "setup-deps: missing ${missing[*]}; run as root to install them" >&2
                return 1
            }
            sudo=(sudo)
        fi
        echo "setup-deps: installing ${missing[*]}"
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q || return 1
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -q --no-install-recommends "${missing[@]}" || return 1
    else
        echo "setup-deps: all ${#want[@]} packages present"
    fi
    if [[ ${1:-} == --fuzz && ! -f $ARJIT_LIBFUZZER ]]; then
        echo "setup-deps: libFuzzer not found at $ARJIT_LIBFUZZER" >&2
        return 1
    fi
}
