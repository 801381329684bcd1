#!/usr/bin/env bash
# Installs everything forcelink needs on a fresh Debian 12 machine, and
# nothing twice: each step checks before it works.
#   1. Debian packages: PostgreSQL 15 (server, contrib), Java 17 and Maven
#      for the Kafka broker, Prometheus (promtool and the server, for the
#      operations tests) and Chromium (the status page test).
#   2. A virtualenv in .venv with forcelink and its dev tools (editable).
#   3. The Apache Kafka broker jars from Maven Central into .cache/kafka/libs.
# Set FORCELINK_SKIP_APT=1 on a machine you do not administer; the packages
# must then already be there.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(postgresql-15 postgresql-contrib openjdk-17-jre-headless maven
              prometheus chromium)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$pkg")
done
if ((${#missing[@]})) && [[ "${FORCELINK_SKIP_APT:-0}" != 1 ]]; then
  echo "install: apt packages: ${missing[*]}"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
  # Debian starts a system cluster on 5432 when it installs the server; the
  # project runs its own, so leave the system one stopped.
  $SUDO service postgresql stop >/dev/null 2>&1 || true
fi

stamp=.venv/.forcelink-installed
want=$(sha256sum pyproject.toml | cut -c1-16)
if [[ ! -x .venv/bin/python ]]; then
  python3 -m venv .venv
fi
if [[ ! -f $stamp || $(cat $stamp) != "$want" ]]; then
  echo "install: python packages into .venv"
  .venv/bin/pip install -q --upgrade pip setuptools wheel
  .venv/bin/pip install -q -e '.[dev]'
  echo "$want" > $stamp
fi

if [[ ! -f .cache/kafka/libs/.complete ]]; then
  echo "install: Apache Kafka jars from Maven Central"
  rm -rf .cache/kafka/libs
  mvn -q -B -f deploy/kafka/pom.xml dependency:copy-dependencies \
    -DoutputDirectory="$PWD/.cache/kafka/libs" -DincludeScope=runtime
  touch .cache/kafka/libs/.complete
fi
