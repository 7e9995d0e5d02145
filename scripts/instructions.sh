#!/usr/bin/env bash
# Instructions per request through each case, in the build users get (no
# tokio test-util), counted by valgrind's callgrind: a loop of N requests and
# one of 2N, the difference over N. Needs valgrind (Debian's package).
#
#     bash scripts/instructions.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-200000}
bin=$(cargo bench -p tower-bearer-bench-prod --bench instructions --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "instructions" and m.get("executable"):
        print(m["executable"])')
count() { # case, requests
  local out
  out=$(mktemp)
  INSTRUCTIONS_CASE=$1 INSTRUCTIONS_N=$2 valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" >/dev/null 2>&1
  callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }'
  rm -f "$out"
}
printf '| case | instructions per request |\n|---|---|\n'
for case in bare add-authorization bearer bearer-grpc keyed-100; do
  one=$(count "$case" "$n")
  two=$(count "$case" $((2 * n)))
  printf '| %s | %s |\n' "$case" "$(( (two - one) / n ))"
done
