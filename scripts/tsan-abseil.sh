#!/usr/bin/env bash
# Builds Debian's own abseil (the installed version, with Debian's patches and its ABI options,
# inline namespace included) with ThreadSanitizer, static, into $1 (default build/tsan/abseil).
# Why: absl::Mutex, CondVar and Notification synchronise inside libabsl; Debian's libabsl is
# not instrumented, so TSan would see none of that synchronisation and report every access to
# lock-guarded state as a race. Linking this copy instead (the executable's symbols also take
# the place of the shared libabsl for gRPC's calls) makes every absl lock visible to TSan.
# The source comes from Debian's archive through apt-get source, with a private source list,
# so the system's apt configuration is left as it is. Skips the work when already installed.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
prefix="${1:-$root/build/tsan/abseil}"
work="$(dirname "$prefix")/abseil-build"
version="$(dpkg-query -W -f='${Version}' libabsl-dev)"
stamp="$prefix/.debian-version"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$version" ]; then
  exit 0
fi
rm -rf "$work" "$prefix"
mkdir -p "$work/apt/lists/partial" "$work/apt/parts"
for suite in "debian bookworm bookworm-updates" "debian-security bookworm-security"; do
  set -- $suite
  printf 'Types: deb-src\nURIs: http://deb.debian.org/%s\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n' \
    "$1" "${*:2}" >>"$work/apt/parts/abseil-src.sources"
done
apt_opts=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$work/apt/parts"
          -o "Dir::State::Lists=$work/apt/lists" -o APT::Sandbox::User=root -q)
apt-get "${apt_opts[@]}" update >/dev/null
(cd "$work" && apt-get "${apt_opts[@]}" source --download-only "abseil=$version" >/dev/null &&
  dpkg-source -x --no-check abseil_*.dsc src >/dev/null)
# Debian's ABI options (inline namespace, std:: types) so this copy's symbols are the same.
cp /usr/include/absl/base/options.h "$work/src/absl/base/options.h"
CXX=clang++-14 cmake -S "$work/src" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_STANDARD=17 -DBUILD_SHARED_LIBS=OFF -DABSL_BUILD_TESTING=OFF -DBUILD_TESTING=OFF \
  -DCMAKE_POSITION_INDEPENDENT_CODE=ON -DCMAKE_CXX_FLAGS="-fsanitize=thread -g" \
  -DCMAKE_INSTALL_PREFIX="$prefix" >/dev/null
cmake --build "$work/build" -j"${JOBS:-2}"
cmake --install "$work/build" >/dev/null
echo "$version" >"$stamp"
rm -rf "$work"
