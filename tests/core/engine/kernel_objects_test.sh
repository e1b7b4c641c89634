#!/usr/bin/env bash
# Each per-ISA kernel object (core/engine/kernels/) must export nothing but its own namespace
# and its renamed copy of Eigen. Any other global or weak symbol (an inline function or
# template instantiation under a shared name) could be merged by the linker with another
# object's copy, and an AVX-512 copy would then run on AVX2 hosts and fault.
#   kernel_objects_test.sh NM OBJECT...   (objects named .../kernels_<isa>.cc.o)
set -euo pipefail
nm_tool="$1"
shift
[ "$#" -gt 0 ] || { echo "no kernel objects given" >&2; exit 1; }
status=0
for object in "$@"; do
  isa="$(basename "$object" .cc.o)"
  isa="${isa#kernels_}"
  symbols="$("$nm_tool" -C --defined-only "$object" | awk '$2 ~ /^[A-Z]$/ { $1 = ""; $2 = ""; print }')"
  [ -n "$symbols" ] || { echo "$object: defines no global symbol at all" >&2; status=1; }
  # Toolchain data, never code: the exception personality pointer and sanitizer bookkeeping.
  shared="$(grep -v -e "rnnserve::kernels_${isa}::" -e "rnnserve_eigen_${isa}::" \
                 -e "DW\.ref\.__gxx_personality_v0" -e "__asan_" -e "__ubsan_" -e "__tsan_" \
                 -e "__sancov_" <<<"$symbols" || true)"
  if [ -n "$shared" ]; then
    echo "$object ($isa) exports symbols other objects may share:" >&2
    head -20 <<<"$shared" >&2
    status=1
  fi
  grep -q "rnnserve::kernels_${isa}::Table()" <<<"$symbols" ||
    { echo "$object: no rnnserve::kernels_${isa}::Table()" >&2; status=1; }
  echo "$object: $(wc -l <<<"$symbols") exported, all in kernels_${isa} or rnnserve_eigen_${isa}"
done
exit "$status"
