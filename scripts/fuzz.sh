#!/usr/bin/env bash
# Build the fuzz targets (fuzz/) with libFuzzer on the stable toolchain and run each for a
# bounded time, seeded from fuzz/seeds/<target> (transcripts from the tests). A crash fails the
# script and leaves the input under fuzz/artifacts/<target>/.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET ...]     (default: 15 s, every target)
#
# cargo-fuzz needs nightly for its default sanitizer; libFuzzer itself only needs LLVM's
# SanitizerCoverage, which stable rustc turns on with -C passes=sancov-module. The flags apply
# to the target triple only, so build scripts and proc-macros are built normally.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

secs="${1:-15}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(imap_client pop3_client imap_backend pop3_backend lookup_response memcache_reply proxy_header sasl http_route http_h1 cert_dn)

triple="$(rustc -vV | sed -n 's/^host: //p')"
export RUSTFLAGS="-C passes=sancov-module \
  -C llvm-args=-sanitizer-coverage-level=4 \
  -C llvm-args=-sanitizer-coverage-inline-8bit-counters \
  -C llvm-args=-sanitizer-coverage-pc-table \
  -C llvm-args=-sanitizer-coverage-trace-compares \
  -C debug-assertions -C overflow-checks"
# not --locked: a dependency added to ringmail is added to fuzz/Cargo.lock here (commit it)
cargo build --release --target "$triple" --bins

status=0
for t in "${targets[@]}"; do
  corpus="target/corpus/$t"
  artifacts="artifacts/$t"
  mkdir -p "$corpus" "$artifacts" "seeds/$t"
  echo "fuzzing $t for ${secs}s"
  if ! "target/$triple/release/$t" -max_total_time="$secs" -max_len=4096 -timeout=10 \
      -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$artifacts/" \
      "$corpus" "seeds/$t" 2> "target/$t.log"; then
    echo "FUZZ FAILURE in $t; the input is in fuzz/$artifacts/:"
    tail -40 "target/$t.log"
    status=1
  else
    grep -E "stat::number_of_executed_units|stat::new_units_added" "target/$t.log" | tr '\n' ' '
    echo
  fi
done
exit $status
