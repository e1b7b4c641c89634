#!/bin/sh
# rnnserve --help lists the server's own flags, --helpfull still lists every flag, and --version
# names the version and the build. Usage: help_version_test.sh <rnnserve binary> <version>
set -u
bin="$1"
version="$2"
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

help=$("$bin" --help 2>&1)
for flag in model_repository host port metrics_port session_idle_timeout max_sessions \
            max_state_bytes evict_idle_after max_batch max_queue_delay threads \
            max_message_bytes allow_non_finite allow_non_finite_weights max_in_flight_per_stream drain_timeout \
            shutdown_grace metrics_host tls_cert_file tls_key_file tls_client_ca_file \
            tls_refresh_interval auth_tokens_file auth_reload_interval health_port log_level \
            max_sessions_per_principal max_state_bytes_per_principal slice_steps \
            max_steps_per_request max_buffered_steps max_tombstone_bytes; do
  echo "$help" | grep -q -- "--$flag (" || fail "--help does not describe --$flag"
done
echo "$help" | grep -q "No flags matched" && fail "--help says 'No flags matched'"

helpfull=$("$bin" --helpfull 2>&1)
echo "$helpfull" | grep -q -- "--max_in_flight_per_stream (" || fail "--helpfull lacks our flags"
echo "$helpfull" | grep -q -- "--flagfile (" || fail "--helpfull lacks Abseil's flags"

out=$("$bin" --version 2>&1)
rc=$?
[ "$rc" -eq 0 ] || fail "--version exited with $rc"
echo "$out" | grep -q "^rnnserve $version (.* build, .*)$" ||
  fail "--version printed '$out', expected 'rnnserve $version (<build type> build, <compiler>)'"
echo "$out" | grep -q "NDEBUG" && fail "--version printed Abseil's default: '$out'"

[ "$failures" -eq 0 ] && echo "PASS: --help, --helpfull and --version"
exit "$failures"
