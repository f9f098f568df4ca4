# Sourced by tests/run.sh and tests/fuzz/run.sh: the libFuzzer flags of
# each harness beyond the common ones.
fuzz_flags() {
  local src=$1 name=$2
  case "$name" in
    fuzz_json|fuzz_merge|fuzz_front|fuzz_lua|fuzz_clinic_http) echo "-dict=$src/tests/fuzz/json.dict" ;;
  esac
  # Lua frees by its garbage collector, later: libFuzzer then took every
  # input for a possible leak and scanned the heap after each (40 times
  # slower). LeakSanitizer still runs when the fuzzer exits.
  [ "$name" = fuzz_lua ] && echo "-detect_leaks=0"
  return 0
}
