#!/usr/bin/env bash
# Wall time of `hwnas profile` per device and setting, each with an empty artifact cache (cold: conversions
# included), writing into a scratch folder. Run on a quiet machine:  bash tools/bench/profile_time.sh
set -euo pipefail
out=$(mktemp -d)
echo "| device | space | resolution | wall s (cold cache) | entries |"
echo "|---|---|---|---|---|"
for spec in "cpu 224" "cpu 32" "cpu-tflite 224" "cpu-tflite 32"; do
  set -- $spec
  export HWNAS_CACHE_DIR="$out/cache-$1-$2"
  start=$(date +%s.%N)
  hwnas profile --device "$1" --space proxyless --resolution "$2" --out "$out/" --force -q >/dev/null
  end=$(date +%s.%N)
  n=$(python3 -c "import json,sys; print(len(json.load(open(sys.argv[1]))['entries']))" "$out/$1-proxyless-$2.json")
  printf "| %s | proxyless | %s | %.1f | %s |\n" "$1" "$2" "$(echo "$end - $start" | bc)" "$n"
done
rm -rf "$out"
