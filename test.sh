#!/usr/bin/env bash
# Builds (./build.sh), then runs every test. The last line is the plain "N passed, N failed, N skipped".
set -euo pipefail
cd "$(dirname "$0")"
./build.sh
exec dotnet tests/Tests/bin/Release/net10.0/MetaGenRL.Tests.dll --no-spinner --colours 0 "$@"
