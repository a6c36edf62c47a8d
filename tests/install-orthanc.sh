#!/usr/bin/env bash
# Installs the Orthanc DICOMweb server that the integration tests start on loopback.
# Debian packages: orthanc, orthanc-dicomweb, orthanc-wsi. Needs root (or sudo).
#
# It never stops a process it did not start: no system service should start at all (a
# policy-rc.d that refuses is in place for the whole install), and if the package's
# service was started by this install anyway (a system without policy-rc.d support), that
# one is stopped by its service name, or by the PID in its own pidfile. Other Orthancs on
# the machine (other users', other test runs) are left alone.
set -euo pipefail
if command -v Orthanc >/dev/null 2>&1 && [ -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] \
   && command -v OrthancWSIDicomizer >/dev/null 2>&1; then
  echo "Orthanc already installed: $(command -v Orthanc)"
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
# Paths can be overridden (tests/test_support.py runs this script against a fake system).
POLICY=${POLICY_RC_D:-/usr/sbin/policy-rc.d}
PIDFILE=${ORTHANC_PIDFILE:-/run/orthanc.pid}  # the Debian package's init script writes it
INIT=${ORTHANC_INIT:-/etc/init.d/orthanc}
SYSTEMD=${SYSTEMD_RUN_DIR:-/run/systemd/system}

service_running() {
  if command -v systemctl >/dev/null 2>&1 && [ -d "$SYSTEMD" ]; then
    systemctl is-active --quiet orthanc 2>/dev/null
  else
    [ -f "$PIDFILE" ] && $SUDO kill -0 "$(cat "$PIDFILE")" 2>/dev/null
  fi
}

was_running=no
if service_running; then was_running=yes; fi

# A policy-rc.d that refuses every service start, in place until the install has finished;
# one that was there before is put back afterwards.
backup=""
if [ -e "$POLICY" ]; then
  backup="$(mktemp)"
  $SUDO cp -p "$POLICY" "$backup"
fi
restore_policy() {
  if [ -n "$backup" ]; then
    $SUDO cp -p "$backup" "$POLICY"
    rm -f "$backup"
  else
    $SUDO rm -f "$POLICY"
  fi
}
trap restore_policy EXIT
printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
$SUDO chmod +x "$POLICY"

export DEBIAN_FRONTEND=noninteractive
# another apt on the machine (an upgrade, another checkout's install) holds the lock: wait for it, up to 10 min
$SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
$SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends orthanc orthanc-dicomweb orthanc-wsi >/dev/null

# Only the service this install started, by name (or its own pidfile): never by process name.
if [ "$was_running" = no ] && service_running; then
  echo "stopping the orthanc service this install started (tests run their own)"
  if command -v systemctl >/dev/null 2>&1 && [ -d "$SYSTEMD" ]; then
    $SUDO systemctl stop orthanc
  elif [ -x "$INIT" ]; then
    $SUDO "$INIT" stop
  else
    $SUDO kill "$(cat "$PIDFILE")"
  fi
fi
echo "Orthanc installed: $(command -v Orthanc)"
