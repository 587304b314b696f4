#!/usr/bin/env bash
# The browser test drives Debian's Chromium through Playwright (executable_path=/usr/bin/chromium);
# Playwright's own browser download is not used (it needs network access we do not have).
# Installs the `chromium` package when it is missing and we are allowed to; otherwise the browser
# test skips with a message that says so.
set -uo pipefail
if [ -x /usr/bin/chromium ]; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "test-deps: installing Debian's chromium for the browser test (one time)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null && apt-get install -y -qq chromium >/dev/null \
    || echo "test-deps: could not install chromium; the browser test will be skipped"
else
  echo "test-deps: /usr/bin/chromium missing and not root; install it (apt-get install chromium) or the browser test skips"
fi
exit 0
