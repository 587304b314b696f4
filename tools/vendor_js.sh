#!/usr/bin/env bash
# Vendor the JavaScript the rendered book serves itself (no CDN): the ipywidgets HTML manager,
# RequireJS and MathJax 3, pinned by tools/js/package-lock.json, copied into book/_static/vendor/.
# Skips the work when the copy already matches the lockfile.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=book/_static/vendor
stamp="$dest/.lock-sha"
want=$(sha256sum tools/js/package-lock.json | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
command -v npm >/dev/null || { echo "vendor_js.sh: npm is needed to vendor the book's JavaScript (apt-get install npm)" >&2; exit 1; }
(cd tools/js && npm ci --no-audit --no-fund --loglevel=error)
nm=tools/js/node_modules
rm -rf "$dest" && mkdir -p "$dest/html-manager" "$dest/mathjax/output"
cp "$nm/requirejs/require.js" "$dest/require.js"
# embed-amd.js plus the icon fonts its CSS refers to (same folder).
cp "$nm/@jupyter-widgets/html-manager/dist/embed-amd.js" "$dest/html-manager/"
find "$nm/@jupyter-widgets/html-manager/dist" -maxdepth 1 -type f \
  \( -name '*.woff2' -o -name '*.woff' -o -name '*.ttf' -o -name '*.eot' -o -name '*.svg' \) \
  -exec cp {} "$dest/html-manager/" \;
cp "$nm/mathjax/es5/tex-chtml.js" "$dest/mathjax/"
cp -r "$nm/mathjax/es5/input" "$dest/mathjax/"
cp -r "$nm/mathjax/es5/output/chtml" "$dest/mathjax/output/"
cp -r "$nm/mathjax/es5/a11y" "$nm/mathjax/es5/ui" "$dest/mathjax/"
for lic in "$nm"/@jupyter-widgets/html-manager/LICENSE* "$nm"/requirejs/LICENSE* "$nm"/mathjax/LICENSE*; do
  [ -f "$lic" ] && cp "$lic" "$dest/LICENSE.$(basename "$(dirname "$lic")")" || true
done
echo "$want" > "$stamp"
echo "vendored book JavaScript into $dest"
