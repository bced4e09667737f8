#!/usr/bin/env bash
# make images: builds the two OCI images without a Docker engine and writes them as OCI
# archives:
#   target/images/rds-iam-webhook.tar      (rds-iam-injector/webhook:<version>)
#   target/images/rds-iam-tokenagent.tar   (rds-iam-injector/tokenagent:<version>)
#
# 1. cargo build --release --target x86_64-unknown-linux-gnu with
#    RUSTFLAGS='-C target-feature=+crt-static' (static glibc binaries), in its own target
#    dir target/static so the normal build is not invalidated;
# 2. the build context target/images/context: the binaries, images/etc and Debian's CA bundle;
# 3. buildah bud (vfs storage, chroot isolation, timestamps at 0) of webhook/Dockerfile and
#    tokenagent/Dockerfile on that context, then buildah push to oci-archive:;
# 4. skopeo inspect of each archive, and the sizes.
# Push to a registry with e.g.
#   skopeo copy oci-archive:target/images/rds-iam-webhook.tar docker://registry.example.com/rds-iam-injector/webhook:0.1.0
# Needs buildah and skopeo (testenv/setup.sh installs them); a missing tool is an error.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

TRIPLE=x86_64-unknown-linux-gnu
STATIC_TARGET="$ROOT/target/static"
OUT="$ROOT/target/images"
CONTEXT="$OUT/context"
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
VERSION="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)"

die() { echo "images: $*" >&2; exit 1; }
for tool in buildah skopeo cargo; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is missing: run testenv/setup.sh"
done
[[ -n "$VERSION" ]] || die "no version in Cargo.toml"
[[ -s "$CA_BUNDLE" ]] || die "$CA_BUNDLE is missing: apt-get install ca-certificates"

echo "images: building static release binaries (target dir target/static)"
start=$SECONDS
RUSTFLAGS='-C target-feature=+crt-static' CARGO_TARGET_DIR="$STATIC_TARGET" \
  cargo build --release --locked --target "$TRIPLE" \
  -p rds-iam-webhook -p rds-iam-tokenagent --bin rds-iam-webhook --bin rds-iam-tokenagent
echo "images: static build took $((SECONDS - start)) s"
BIN="$STATIC_TARGET/$TRIPLE/release"
for b in rds-iam-webhook rds-iam-tokenagent; do
  # A static binary has no program interpreter (PT_INTERP): ldd says so.
  ldd "$BIN/$b" 2>&1 | grep -Eq 'statically linked|not a dynamic executable' \
    || die "$BIN/$b is not static: $(ldd "$BIN/$b" 2>&1 | head -n 3 | tr '\n' ' ')"
done

rm -rf "$CONTEXT"
mkdir -p "$CONTEXT/etc/ssl/certs"
cp images/etc/passwd images/etc/group images/etc/nsswitch.conf "$CONTEXT/etc/"
install -m 0644 "$CA_BUNDLE" "$CONTEXT/etc/ssl/certs/ca-certificates.crt"
install -m 0755 "$BIN/rds-iam-webhook" "$BIN/rds-iam-tokenagent" "$CONTEXT/"
chmod 0644 "$CONTEXT"/etc/passwd "$CONTEXT"/etc/group "$CONTEXT"/etc/nsswitch.conf

# buildah keeps its storage under target/images, not in /var/lib/containers.
STORE=(--root "$OUT/storage" --runroot "$OUT/run" --storage-driver vfs)
build() { # build NAME DOCKERFILE
  local name="$1" dockerfile="$2" tag="rds-iam-injector/$1:$VERSION" archive="$OUT/rds-iam-$1.tar"
  echo "images: buildah bud -f $dockerfile -> $tag"
  buildah "${STORE[@]}" bud --isolation chroot --timestamp 0 --layers=false --quiet \
    -f "$dockerfile" -t "localhost/$tag" "$CONTEXT" >/dev/null
  rm -f "$archive"
  buildah "${STORE[@]}" push --quiet "localhost/$tag" "oci-archive:$archive:$tag"
  buildah "${STORE[@]}" rmi "localhost/$tag" >/dev/null
  skopeo inspect "oci-archive:$archive" >"$archive.inspect.json" \
    || die "skopeo cannot read $archive"
  local layers
  layers="$(skopeo inspect --raw "oci-archive:$archive" | python3 -c 'import json,sys; print(sum(l["size"] for l in json.load(sys.stdin)["layers"]))')"
  printf 'images: %s: %s (archive %s bytes, compressed layers %s bytes)\n' \
    "$tag" "$archive" "$(stat -c %s "$archive")" "$layers"
}
build webhook webhook/Dockerfile
build tokenagent tokenagent/Dockerfile
echo "images: done in $((SECONDS - start)) s"
