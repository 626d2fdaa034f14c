#!/usr/bin/env bash
# `make image`: the release image without a container daemon.
#   1. a static binary: cargo build --release --locked with glibc linked in (crt-static). The
#      explicit --target keeps it in target/x86_64-unknown-linux-gnu/, so these RUSTFLAGS never
#      invalidate the ordinary target/release build;
#   2. hack/oci/imagebuild (go-containerregistry, cached by hack/oci/build.sh) writes the OCI
#      layout target/image/oci/ and the same as one tar, target/image/service-ca-oci.tar.
# Prints `<ref>@<digest>` and, as the last line of stdout, the tar's path; progress on stderr.
# Re-running is cheap: cargo does nothing when the sources are unchanged, and the image is not
# rewritten when the binary, the tool and the settings are those of the last run.
# IMAGE=<ref> overrides the reference (default: the Deployment's, ghcr.io/service-ca/service-ca:
# <workspace version>); SOURCE_DATE_EPOCH sets every timestamp in the image (default 0).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
target=x86_64-unknown-linux-gnu
cargo="${CARGO:-cargo}"
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)"
ref="${IMAGE:-ghcr.io/service-ca/service-ca:$version}"
epoch="${SOURCE_DATE_EPOCH:-0}"
out="$root/target/image"
archive=service-ca-oci.tar

[[ "$(uname -m)" == x86_64 ]] || { echo "image: only linux/amd64 images are built (this is $(uname -m))" >&2; exit 1; }

start=$(date +%s)
echo "image: cargo build --release (static, $target)..." >&2
# getrandom_backend: the getrandom crate would otherwise look for glibc's getrandom() with
# dlsym, which a static binary cannot do, and fall back to opening /dev/urandom: the process
# would then depend on /dev being mounted (found by tests/image.rs, whose chroot has no /dev).
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static --cfg getrandom_backend=\"linux_getrandom\"" CARGO_INCREMENTAL=0 \
  "$cargo" build --release --locked -p service-ca --target "$target" >&2
binary="$root/target/$target/release/service-ca"

# A static binary is what makes the image work without a libc in it: refuse anything else.
ldd_out="$(ldd "$binary" 2>&1 || true)"
if ! grep -qE 'not a dynamic executable|statically linked' <<<"$ldd_out"; then
  echo "image: $binary is not statically linked:" >&2
  echo "$ldd_out" >&2
  exit 1
fi

tool="$(bash hack/oci/build.sh imagebuild | tail -1)"
labels=(
  "org.opencontainers.image.title=service-ca"
  "org.opencontainers.image.description=Serving certificates and CA bundles for Kubernetes Services"
  "org.opencontainers.image.version=$version"
  "org.opencontainers.image.licenses=Apache-2.0"
  "org.opencontainers.image.source=https://github.com/service-ca/service-ca"
)
key="$( { sha256sum "$binary" | cut -d' ' -f1; echo "$tool" "$ref" "$epoch" "$archive"; printf '%s\n' "${labels[@]}"; } | sha256sum | cut -d' ' -f1)"
if [[ -f "$out/$archive" && -f "$out/.inputs" && "$(cat "$out/.inputs")" == "$key" && -f "$out/.digest" ]]; then
  digest="$(cat "$out/.digest")"
  echo "image: unchanged since the last build" >&2
else
  label_args=()
  for l in "${labels[@]}"; do label_args+=(--label "$l"); done
  rm -f "$out/.inputs"
  digest="$("$tool" --binary "$binary" --path /usr/local/bin/service-ca --ref "$ref" --out "$out" \
    --archive "$archive" --epoch "$epoch" "${label_args[@]}")"
  echo "$digest" >"$out/.digest"
  echo "$key" >"$out/.inputs"
fi
size="$(du -h "$out/$archive" | cut -f1)"
echo "image: $ref ($size, $(( $(date +%s) - start ))s): OCI layout $out/oci, archive $out/$archive" >&2
echo "$ref@$digest"
echo "$out/$archive"
