#!/usr/bin/env bash
# The fleet benchmark of docs/fleet.md: identity-provider token requests per
# token lifetime for fleets of 1, 4, 16 and 64 processes, sharing their
# tokens through Redis and each on its own, and the first token's latency
# through Redis and through the identity provider. It runs `fleet_report`
# (ignored) in tests/fleet.rs, the headline test's harness, then prints the
# Markdown table and writes docs/fleet.svg.
#
#   bash scripts/fleet_report.sh
#   FLEET_REPORT_SIZES=1,4 FLEET_REPORT_SECONDS=6 bash scripts/fleet_report.sh
#
# Needs redis-server and Node 20.19+ with npm (the OAuth2 test server), like
# the test. Each size runs twice for FLEET_REPORT_SECONDS (default 10).
set -euo pipefail
cd "$(dirname "$0")/.."

export FLEET_REPORT_JSON="${FLEET_REPORT_JSON:-$PWD/target/fleet-report.json}"
cargo test --all-features --test fleet -- --ignored --exact fleet_report --nocapture
python3 scripts/fleet_chart.py "$FLEET_REPORT_JSON" docs/fleet.svg
