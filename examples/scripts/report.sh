#!/bin/sh
# A report script run as a job:  pool enqueue pool.yaml pool.script examples/scripts/report.sh 2026-11 --wait
# Exit 0 completes the job (stdout and stderr are kept in its result); any other exit fails it.
set -eu
month="${1:?usage: report.sh YYYY-MM}"
case "$month" in
  [0-9][0-9][0-9][0-9]-[0-9][0-9]) ;;
  *) echo "bad month: $month (expected YYYY-MM)" >&2; exit 3 ;;
esac
echo "report for $month: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
