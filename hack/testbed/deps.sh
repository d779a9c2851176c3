#!/usr/bin/env bash
# Installs the Debian packages the test bed and the checks need, when missing:
# rabbitmq-server 3.10 (the older broker the 3.10 e2e leg runs on; broker-root.sh brings 4.x)
# and prometheus (for promtool and scraping).
set -euo pipefail
missing=()
command -v rabbitmq-plugins >/dev/null 2>&1 || [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || missing+=(rabbitmq-server)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v curl >/dev/null 2>&1 || missing+=(curl)
[ ${#missing[@]} -eq 0 ] && exit 0
echo "deps: installing ${missing[*]} from Debian" >&2
sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# Packages must not start system services: the test bed runs them as plain processes.
added_policy=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
  $sudo sh -c 'printf "#!/bin/sh\nexit 101\n" > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d'
  added_policy=1
fi
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
[ -z "$added_policy" ] || $sudo rm -f /usr/sbin/policy-rc.d
