#!/usr/bin/env bash
# Fails when the C sources use functions we ban: unbounded or non-reentrant;
# or when a file points outside the repository at the shared folder beside
# it (the repository must stand alone: the interface is docs/PROTOCOL.md,
# docs/CLINIC_API.md and bench/README.md, the limits bench/LIMITS.md, the
# Node peer bench/PEERS.md).
set -u
cd "$(dirname "$0")/.." || exit 2
rc=0
pattern='\b(sprintf|vsprintf|strcpy|strcat|strtok|atoi|atol|gets)\s*\('
if grep -rnE "$pattern" src include tests bench --include='*.c' --include='*.h'; then
  echo "banned function used (see above): use snprintf, memcpy with lengths, strtok_r, strtol" >&2
  rc=1
else
  echo "banned-function check: clean"
fi
# Built from two parts so that this script does not match itself.
needle='../'shared
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  hits=$(git grep -nF -e "$needle" -- .)   # tracked files
else
  hits=$(grep -rnF --exclude-dir=.git --exclude-dir='build*' -e "$needle" .)
fi
if [ -n "$hits" ]; then
  printf '%s\n' "$hits"
  echo "reference to $needle (see above): the repository must stand alone; point at" \
       "the in-repo docs (docs/PROTOCOL.md, docs/CLINIC_API.md, bench/LIMITS.md," \
       "bench/PEERS.md, bench/README.md) instead" >&2
  rc=1
else
  echo "standalone check: no file refers to $needle"
fi
exit $rc
