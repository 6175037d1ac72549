#!/usr/bin/env bash
# Builds once (./build.sh), then runs the whole test suite under each libtorch CPU kernel family
# (ATEN_CPU_CAPABILITY = default, avx2, avx512), skipping those the CPU lacks. Arguments go to the test runner,
# e.g. `scripts/test-cpu-capabilities.sh --filter-test-list Objective`. Prints each run's
# "N passed, N failed, N skipped" line and exits non-zero if any run failed.
set -euo pipefail
cd "$(dirname "$0")/.."

./build.sh
dll=tests/Tests/bin/Release/net10.0/MetaGenRL.Tests.dll
logs=$(mktemp -d "${TMPDIR:-/tmp}/test-cpu-capabilities.XXXXXX")

# the /proc/cpuinfo flag a capability needs ("" for none)
flag_for() { case "$1" in avx2) echo avx2 ;; avx512) echo avx512f ;; *) echo "" ;; esac; }

summary=()
failed=0
for cap in default avx2 avx512; do
  flag=$(flag_for "$cap")
  if [ -n "$flag" ] && ! grep -qw "$flag" /proc/cpuinfo 2>/dev/null; then
    summary+=("$(printf '%-8s skipped: this CPU lacks %s' "$cap" "$flag")")
    continue
  fi
  echo "── ATEN_CPU_CAPABILITY=$cap ── (log: $logs/$cap.log)"
  if ATEN_CPU_CAPABILITY=$cap dotnet "$dll" --no-spinner --colours 0 "$@" 2>&1 | tee "$logs/$cap.log"; then rc=0; else rc=$?; fi
  line=$(grep -aE '^[0-9]+ passed, [0-9]+ failed' "$logs/$cap.log" | tail -n 1 || true)
  if [ -z "$line" ]; then line="no summary line (exit code $rc)"; failed=1
  elif [ "$rc" -ne 0 ] || ! [[ "$line" =~ ^[0-9]+\ passed,\ 0\ failed ]]; then failed=1
  fi
  summary+=("$(printf '%-8s %s' "$cap" "$line")")
done

echo
echo "ATEN_CPU_CAPABILITY results (logs in $logs):"
for s in "${summary[@]}"; do echo "  $s"; done
exit "$failed"
