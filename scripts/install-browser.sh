#!/bin/sh
# Installs Debian's chromium for the browser test (tests/experiments/test_html_report.py) when it is missing.
# README's test command runs this first; without root or sudo it says so, and the browser test is skipped.
command -v chromium >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ]; then run=""; elif command -v sudo >/dev/null 2>&1; then run="sudo"; else
  echo "install-browser: chromium is missing and this user cannot install it (no root, no sudo);" \
       "the browser test will be skipped" >&2
  exit 0
fi
echo "install-browser: installing Debian's chromium for the browser test" >&2
$run apt-get update -qq && $run env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
  || echo "install-browser: apt-get could not install chromium; the browser test will be skipped" >&2
exit 0
