# shellcheck shell=bash
# Sourced by scripts/test and scripts/demo: makes sure the system packages
# the project needs are installed. As root it installs them with apt-get;
# otherwise it prints the exact command and stops.
#
#   libfabric-dev  headers and pkg-config file (building libfabric-sys, ABI test)
#   libfabric-bin  fi_info, fi_pingpong (interoperability and benchmarks)
#   pkg-config     how every crate here finds libfabric
#   clang, libclang-dev  the generator parses the headers with libclang (tests, regen)
#   gcc            the ABI cross-check compiles a C probe (cc)
#   diffutils      `cargo xtask regen --check` prints its diff with diff(1)
#   iproute2       `ip netns`: the two-host test runs its peers in network namespaces
#   valgrind       the memcheck and DRD lanes (scripts/memcheck, scripts/drd)

ensure_packages() {
    local wanted=("$@") missing=()
    for pkg in "${wanted[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
            missing+=("$pkg")
        fi
    done
    if [ ${#missing[@]} -eq 0 ]; then
        return 0
    fi
    if [ "$(id -u)" -eq 0 ]; then
        echo "installing: ${missing[*]}" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
    else
        echo "missing system packages: ${missing[*]}" >&2
        echo "run: sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
}
