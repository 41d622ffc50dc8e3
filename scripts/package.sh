#!/usr/bin/env bash
# Build the release tarball that the CloudFormation stacks install:
#
#   dist/originlens-<version>-linux-amd64.tar.gz
#     originlens-<version>-linux-amd64/
#       bin/app bin/ingest bin/nc-probe     linux/amd64, static, -trimpath
#       systemd/originlens-app.service      units installed by the user data
#       systemd/originlens-ingest.service
#       systemd/originlens-geoipupdate.*   GeoLite2 refresh (MaxMindSecretArn)
#       systemd/originlens-app-relay.conf   drop-in for relay mode (UpstreamPort)
#       etc/app.env etc/ingest.env          default configuration
#       etc/policy.example.yaml             the app's embedded rules, to edit
#                                           and upload as the stack's PolicyKey
#       VERSION
#
# VERSION overrides `git describe`, GO the go command, DIST the output
# directory (dist). The archive is reproducible for a given commit (sorted
# names, fixed owner and mtime).
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
case $VERSION in
*[!A-Za-z0-9._+-]*) echo "package: VERSION ${VERSION@Q} holds characters unfit for a file name" >&2; exit 1 ;;
esac
name=originlens-$VERSION-linux-amd64
DIST=${DIST:-dist}
out=$DIST/$name.tar.gz
epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root=$stage/$name
mkdir -p "$root/bin" "$root/systemd" "$root/etc"

for cmd in app ingest nc-probe; do
	if [ ! -d "cmd/$cmd" ]; then
		echo "package: cmd/$cmd does not exist yet; the tarball needs all of app, ingest and nc-probe" >&2
		exit 1
	fi
	echo "package: building bin/$cmd ($VERSION, linux/amd64)"
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 "$GO" build -trimpath \
		-ldflags "-s -w -X main.version=$VERSION" -o "$root/bin/$cmd" "./cmd/$cmd"
done
install -m 0644 deploy/systemd/*.service deploy/systemd/*.timer deploy/systemd/*.conf "$root/systemd/"
install -m 0644 deploy/systemd/*.env "$root/etc/"
install -m 0644 internal/policy/default.yaml "$root/etc/policy.example.yaml"
echo "$VERSION" >"$root/VERSION"

mkdir -p "$DIST"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$epoch" \
	-C "$stage" -cf - "$name" | gzip -n -9 >"$out.tmp"
mv "$out.tmp" "$out"
(cd "$DIST" && sha256sum "$name.tar.gz" >"$name.tar.gz.sha256")
echo "package: $out"
echo "package: upload with: aws s3 cp $out s3://<bucket>/originlens/$name.tar.gz"
