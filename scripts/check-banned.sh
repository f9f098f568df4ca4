#!/usr/bin/env bash
# Fails when the C sources use functions we ban: unbounded or non-reentrant.
set -u
pattern='\b(sprintf|vsprintf|strcpy|strcat|strtok|atoi|atol|gets)\s*\('
if grep -rnE "$pattern" src include tests bench --include='*.c' --include='*.h'; then
  echo "banned function used (see above): use snprintf, memcpy with lengths, strtok_r, strtol" >&2
  exit 1
fi
echo "banned-function check: clean"
