#!/usr/bin/env bash
# Regenerate book/_vendor/: the JavaScript, CSS and fonts the built site needs, so that the
# site works with no network (no CDN). Run from anywhere; needs npm (registry access) and tar.
# The output is committed, so building the book never needs npm.
#
#   scripts/vendor_js.sh            # re-download the pinned versions and replace book/_vendor/
#
# To upgrade, change a version below, rerun, rebuild (`make book`) and run the site test
# (`make site`), then update the table in book/_vendor/README.md.
set -euo pipefail

# Pinned versions ----------------------------------------------------------------------------
# @jupyter-widgets/html-manager 1.x renders the widget state written by ipywidgets 8
# (ipywidgets 8.1.9 declares `__html_manager_version__ = '^1.0.1'`; 0.x is ipywidgets 7).
HTML_MANAGER_VERSION=1.0.15
# MathJax 3 (Sphinx 7's mathjax extension speaks the v3 configuration).
MATHJAX_VERSION=3.2.2
# (No icon font: book/_ext/offline_site.py draws every icon, the scrubbers' too, as inline SVG
# from the theme's own Font Awesome 6 paths.)

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/book/_vendor"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

echo "Downloading packages with npm pack into $WORK"
(
    cd "$WORK"
    npm pack --silent \
        "@jupyter-widgets/html-manager@$HTML_MANAGER_VERSION" \
        "mathjax@$MATHJAX_VERSION" >/dev/null
    for tgz in *.tgz; do
        mkdir -p "${tgz%.tgz}"
        tar -xzf "$tgz" -C "${tgz%.tgz}"
    done
)
HM="$WORK/jupyter-widgets-html-manager-$HTML_MANAGER_VERSION/package"
MJ="$WORK/mathjax-$MATHJAX_VERSION/package"

# Keep README.md (hand-written) and replace everything else.
find "$DEST" -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} + 2>/dev/null || true
mkdir -p "$DEST"

# --- ipywidgets: the standalone html-manager bundle ------------------------------------------
# dist/embed.js bundles @jupyter-widgets/base, /controls and /output (the core widgets) and
# needs no AMD loader; webpack finds its fonts next to the script (publicPath = script dir).
# Only the woff2 fonts are kept (font-awesome 5 solid/regular/brands, used by widget icons):
# every browser that runs this bundle prefers woff2, so the others are never requested.
mkdir -p "$DEST/html-manager"
cp "$HM/dist/embed.js" "$HM/dist/embed.js.LICENSE.txt" "$DEST/html-manager/"
cp "$HM/dist/"*.woff2 "$DEST/html-manager/"
cp "$HM/package.json" "$DEST/html-manager/package.json"

# --- MathJax 3: TeX input and CHTML output, the other TeX extensions beside it, the fonts -----
# tex-chtml.js (1.16 MB) has the TeX packages the chapters use (base, ams, newcommand, ...); a
# page that uses another one (\boldsymbol, \cancel, \color, ...) makes MathJax's autoload
# fetch it from input/tex/extensions/, so those files are kept too (552 kB on disk, loaded only
# by a page that needs one). tex-chtml-full.js (1.33 MB on every page) bundled them all.
# all-packages.js is dropped: only the -full components use it. CHTML loads its woff fonts
# from output/chtml/fonts/woff-v2/.
mkdir -p "$DEST/mathjax/output/chtml/fonts" "$DEST/mathjax/input/tex/extensions"
cp "$MJ/es5/tex-chtml.js" "$DEST/mathjax/"
cp "$MJ/es5/input/tex/extensions/"*.js "$DEST/mathjax/input/tex/extensions/"
rm "$DEST/mathjax/input/tex/extensions/all-packages.js"
cp -r "$MJ/es5/output/chtml/fonts/woff-v2" "$DEST/mathjax/output/chtml/fonts/"
cp "$MJ/LICENSE" "$MJ/package.json" "$DEST/mathjax/"

echo "Vendored into $DEST:"
(cd "$DEST" && find . -type f | sort && du -sh .)
