#!/bin/sh
# Web Terminal Portal: enroll this machine (POSIX sh; needs curl).
#
# What it does, and nothing else:
#   1. adds this machine's own portal key (made for this machine only) to the
#      current user's authorized_keys (once);
#   2. reads this host's public SSH host keys;
#   3. registers the machine with the portal (single-use token), which then
#      connects back with that key to verify, pinning those host keys.
#
# Environment overrides:
#   SSH_HOST_KEY_DIR      where ssh_host_*_key.pub live (default /etc/ssh)
#   SSH_PORT              the port sshd listens on (default 22)
#   AUTHORIZED_KEYS_FILE  default ~/.ssh/authorized_keys
#   PORTAL_MACHINE_HOST   the address the portal should connect to
#                         (default: the address this registration comes from)
set -eu

PORTAL_URL={{ portal_url|shquote }}
TOKEN={{ token|shquote }}
PORTAL_KEY={{ machine_key|shquote }}

key_dir="${SSH_HOST_KEY_DIR:-/etc/ssh}"
port="${SSH_PORT:-22}"
user="$(id -un)"
home="${HOME:-}"
if [ -z "$home" ]; then home="$(getent passwd "$user" | cut -d: -f6)"; fi
ak="${AUTHORIZED_KEYS_FILE:-$home/.ssh/authorized_keys}"

command -v curl >/dev/null 2>&1 || { echo "portal: curl is required" >&2; exit 1; }
case "$port" in ''|*[!0-9]*) echo "portal: SSH_PORT must be a number" >&2; exit 1 ;; esac

# 1. authorized_keys (idempotent: the key blob is added only if absent)
umask 077
mkdir -p "$(dirname "$ak")"
[ -f "$ak" ] || : > "$ak"
blob="$(printf '%s\n' "$PORTAL_KEY" | cut -d' ' -f2)"
if grep -qF "$blob" "$ak"; then
  echo "portal: the portal key is already in $ak"
else
  if [ -s "$ak" ] && [ -n "$(tail -c 1 "$ak")" ]; then printf '\n' >> "$ak"; fi
  printf '%s\n' "$PORTAL_KEY" >> "$ak"
  echo "portal: added the portal key to $ak"
fi

# 2. host keys, as a JSON array of "type base64" strings
keys=""
for f in "$key_dir"/ssh_host_*_key.pub; do
  [ -r "$f" ] || continue
  line="$(cut -d' ' -f1,2 < "$f" | tr -cd 'A-Za-z0-9+/=@. -')"
  [ -n "$line" ] || continue
  keys="${keys:+$keys,}\"$line\""
done
[ -n "$keys" ] || { echo "portal: no readable host keys in $key_dir" >&2; exit 1; }

clean() { printf '%s' "$1" | tr -cd 'A-Za-z0-9._ ()#:,+/-' | cut -c1-120; }
hostname_="$(clean "$(hostname 2>/dev/null || uname -n)")"
os_="$(clean "$(uname -sr 2>/dev/null || echo unknown)")"
user_="$(clean "$user")"
host_field=""
if [ -n "${PORTAL_MACHINE_HOST:-}" ]; then
  host_field=",\"host\":\"$(clean "$PORTAL_MACHINE_HOST")\""
fi

body="{\"token\":\"$TOKEN\",\"hostname\":\"$hostname_\",\"username\":\"$user_\",\"port\":$port,\"os\":\"$os_\",\"host_keys\":[$keys]$host_field}"

# 3. register; the portal connects back before answering
echo "portal: registering with $PORTAL_URL ..."
if out="$(printf '%s' "$body" | curl -sS --max-time 60 -o - -w '\n%{http_code}' \
    -H 'Content-Type: application/json' --data-binary @- "$PORTAL_URL/api/machines/register")"; then
  code="$(printf '%s' "$out" | tail -n 1)"
  reply="$(printf '%s' "$out" | sed '$d')"
else
  echo "portal: could not reach $PORTAL_URL" >&2; exit 1
fi
if [ "$code" = "200" ]; then
  echo "portal: enrolled. This machine is online in the portal."
else
  echo "portal: registration failed ($code): $reply" >&2
  exit 1
fi
