#!/usr/bin/env bash
# Installs the Orthanc DICOMweb server that the integration tests start on loopback.
# Debian packages: orthanc, orthanc-dicomweb, orthanc-wsi. Needs root (or sudo).
# No system service is started: a policy-rc.d that refuses is put in place first.
set -euo pipefail
if command -v Orthanc >/dev/null 2>&1 && [ -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] \
   && command -v OrthancWSIDicomizer >/dev/null 2>&1; then
  echo "Orthanc already installed: $(command -v Orthanc)"
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends orthanc orthanc-dicomweb orthanc-wsi >/dev/null
# Stop a system Orthanc in case one was started anyway (tests run their own).
$SUDO pkill -x Orthanc 2>/dev/null || true
echo "Orthanc installed: $(command -v Orthanc)"
