#!/usr/bin/env bash
# Install (or report) the Debian packages this project needs.
#
# Usage: scripts/system-deps.sh [run|test]     (default: test)
#
#   run   what running the portal needs: openssh-client, curl
#   test  everything running and testing need: the above plus openssh-server
#         (tests start a real sshd), chromium (browser tests), nginx (the
#         two-instance topology test), fonts-dejavu-core, ca-certificates, procps
#
# If everything is already installed it does nothing and exits 0 at once
# (no apt-get update). Otherwise:
#   - as root: one `apt-get update`, then a non-interactive
#     `apt-get install -y --no-install-recommends <missing>` (no stdin needed,
#     so it works in CI);
#   - as anyone else: prints which packages are missing and the exact sudo
#     command to install them, and exits 1.
set -euo pipefail

usage() {
  sed -n '2,17s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}

mode="${1:-test}"
case "$mode" in
  run)
    packages=(openssh-client curl)
    ;;
  test)
    packages=(openssh-server openssh-client chromium nginx fonts-dejavu-core ca-certificates curl procps)
    ;;
  -h|--help|help)
    usage
    exit 0
    ;;
  *)
    echo "system-deps.sh: unknown mode '$mode' (expected: run or test)" >&2
    usage >&2
    exit 2
    ;;
esac
if [ "$#" -gt 1 ]; then
  echo "system-deps.sh: too many arguments" >&2
  usage >&2
  exit 2
fi

if ! command -v dpkg-query >/dev/null 2>&1; then
  echo "system-deps.sh: dpkg-query not found: this script supports Debian/Ubuntu only." >&2
  echo "Install these packages (Debian names) by other means: ${packages[*]}" >&2
  exit 1
fi

# The file each package must provide, where a package being "installed" is not
# enough (e.g. a binary deleted by hand); such a package is reinstalled.
binary_of() {
  case "$1" in
    openssh-server) echo /usr/sbin/sshd ;;
    openssh-client) echo /usr/bin/ssh ;;
    chromium) echo /usr/bin/chromium ;;
    nginx) echo /usr/sbin/nginx ;;
    curl) echo /usr/bin/curl ;;
    *) echo "" ;;
  esac
}

is_installed() {
  local status
  status="$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)"
  # "install ok installed", or "hold ok installed" for a held package.
  case "$status" in
    *" ok installed") ;;
    *) return 1 ;;
  esac
  local bin
  bin="$(binary_of "$1")"
  if [ -n "$bin" ] && [ ! -x "$bin" ]; then
    return 1
  fi
  return 0
}

find_missing() {
  missing=()
  local pkg
  for pkg in "${packages[@]}"; do
    if ! is_installed "$pkg"; then
      missing+=("$pkg")
    fi
  done
}

find_missing
if [ "${#missing[@]}" -eq 0 ]; then
  echo "system-deps.sh ($mode): all present: ${packages[*]}"
  exit 0
fi

install_args=(install -y --no-install-recommends)
# A package that dpkg thinks is installed but whose binary is gone needs
# --reinstall (for packages that are not installed it is a plain install).
for pkg in "${missing[@]}"; do
  if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q ' ok installed$'; then
    install_args+=(--reinstall)
    break
  fi
done
install_args+=("${missing[@]}")

if [ "$(id -u)" -ne 0 ]; then
  {
    echo "system-deps.sh ($mode): missing Debian packages: ${missing[*]}"
    echo "Install them with:"
    echo "  sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get ${install_args[*]}"
  } >&2
  exit 1
fi

echo "system-deps.sh ($mode): installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt_opts=(-q -o Dpkg::Use-Pty=0 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
apt-get "${apt_opts[@]}" update </dev/null
apt-get "${apt_opts[@]}" "${install_args[@]}" </dev/null

find_missing
if [ "${#missing[@]}" -ne 0 ]; then
  echo "system-deps.sh ($mode): still missing after apt-get install: ${missing[*]}" >&2
  exit 1
fi
echo "system-deps.sh ($mode): all present: ${packages[*]}"
