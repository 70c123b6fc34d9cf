#!/bin/bash
# The Go-client walkthrough's stats.sh (sourced by the pipeline's stdin with
# REPONAME set, e.g. "docker/docker"): prints "REPONAME, packages, lines of Go".
#
# The walkthrough fetched each project with `go get`; no network reaches
# GitHub here, so the image carries Debian's copies of these projects' Go
# sources (the golang-*-dev packages, under /usr/share/gocode/src, a GOPATH)
# and this script reads them from there instead.

goPath="${GOPATH:-/usr/share/gocode}"
goPath="${goPath%%:*}"
pkgPath="$goPath/src/github.com/$REPONAME"

if [ ! -d "$pkgPath" ]; then
  echo "stats.sh: no sources for $REPONAME under $goPath/src/github.com (have: $(cd "$goPath/src/github.com" && ls -d */* | tr '\n' ' '))" >&2
  return 1 2>/dev/null || exit 1
fi

# the number of Go packages in the repo (what `go list $pkgName/... | wc -l` counted):
# directories holding non-test .go files, vendored code excluded
deps=$(find "$pkgPath" -path '*/vendor' -prune -o -name '*.go' ! -name '*_test.go' -printf '%h\n' | sort -u | wc -l)

# the number of lines of Go code
golines=$( (find "$pkgPath" -name '*.go' -print0 | xargs -0 cat) | wc -l)

# output the stats
echo "$REPONAME, $deps, $golines"
