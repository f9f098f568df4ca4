# therasync — one Makefile for the whole tree.
#   make            build every program into build/
#   make test       set up, build, run every test; ends with "N passed, N failed"
#   make asan       the same suite on an ASan+UBSan build (build-asan/)
#   make ubsan      the same suite on a clang UBSan build (build-ubsan/)
#   make fuzz       run every libFuzzer harness FUZZ_SECONDS each (build-fuzz/)
#   make run        set up, build, start clinic-api and therasyncd on loopback
#   make bench      run therasync-bench workloads
#   make install PREFIX=/usr/local

BUILD    ?= build
PREFIX   ?= /usr/local
# jemalloc replaces glibc's malloc in every program and test: the engine's
# threads allocate in one actor and free in another, which glibc serves
# slowly (see README, Dependencies). Sanitizer builds keep their own malloc.
MALLOC   ?= jemalloc
PKGS     := libzmq lua5.4 libcurl libcjson sqlite3 libmicrohttpd libsodium $(MALLOC)
CC       ?= cc
OPT      ?= -O2 -g
SAN      ?=
CFLAGS   += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wvla \
            -Iinclude -Isrc $(OPT) $(SAN) -MMD -MP -pthread
DEPS_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS   += $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lpthread -lm
TEST_LIBS = $(shell pkg-config --libs criterion 2>/dev/null)

VERSION  := $(shell cat VERSION 2>/dev/null || echo 0.0.0)
CFLAGS   += -DTS_VERSION=\"$(VERSION)\"

# The engine library: the runtime, the actors and the Lua policy engine.
# One folder per actor; runtime/ knows no actor, msgs/ is the contract
# between them (msgs.def and the payloads).
LIB_SRC  := $(wildcard $(addsuffix /*.c,$(addprefix src/,runtime msgs front store persist \
              sync api policy cache)))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
LIB      := $(BUILD)/libtherasync.a
# The base: what knows no actor. clinic-api is a product of its own and
# links only this.
BASE_SRC := $(wildcard src/runtime/*.c)
BASE_OBJ := $(BASE_SRC:%.c=$(BUILD)/obj/%.o)
BASE     := $(BUILD)/libtherasync-base.a

# One folder per program.
dir_therasyncd      := src/daemon
dir_therasync       := src/cli
dir_clinic-api      := src/clinic-api
dir_therasync-bench := src/bench
dir_therasync-canned := src/canned
ALL_PROGRAMS := therasyncd therasync clinic-api therasync-bench therasync-canned
PROGRAMS := $(foreach p,$(ALL_PROGRAMS),$(if $(wildcard $(dir_$(p))/*.c),$(p)))
BINS     := $(PROGRAMS:%=$(BUILD)/%)

# Tests: every tests/{unit,e2e}/test_*.c is one Criterion binary, linked with
# the library and tests/support/*.c.
SUPPORT_SRC := $(wildcard tests/support/*.c)
SUPPORT_OBJ := $(SUPPORT_SRC:%.c=$(BUILD)/obj/%.o)
TEST_SRC := $(wildcard tests/unit/test_*.c tests/e2e/test_*.c)
TEST_BIN := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)

.SECONDARY:
.PHONY: all test asan ubsan fuzz fuzz-build fuzz-bins docs run bench install setup check clean format
all: $(BINS) $(TEST_BIN)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(DEPS_CFLAGS) -c $< -o $@

# rpc.discover's answer is docs/openrpc.json, included by the assembler
$(BUILD)/obj/src/front/openrpc.o: docs/openrpc.json

$(LIB): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(AR) rcs $@ $^

$(BASE): $(BASE_OBJ)
	@mkdir -p $(dir $@)
	$(AR) rcs $@ $^

lib_clinic-api := $(BASE)
define program_rule
$(BUILD)/$(1): $$(patsubst %.c,$(BUILD)/obj/%.o,$$(wildcard $$(dir_$(1))/*.c)) $$(or $$(lib_$(1)),$(LIB))
	$$(CC) $$(CFLAGS) -o $$@ $$^ $$(LDLIBS)
endef
$(foreach p,$(PROGRAMS),$(eval $(call program_rule,$(p))))

$(BUILD)/tests/%: $(BUILD)/obj/tests/%.o $(SUPPORT_OBJ) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS) $(TEST_LIBS)

setup:
	@bash scripts/setup.sh

JOBS     ?= $(shell nproc 2>/dev/null || echo 2)

# make test also runs each fuzzer a few seconds on its corpus (one test
# each); asan and ubsan do not: the fuzzers are ASan+UBSan builds already.
test: setup
	@$(MAKE) --no-print-directory -j$(JOBS) all
	@$(MAKE) --no-print-directory fuzz-build
	@bash tests/run.sh $(BUILD) $(FUZZ_BUILD)

asan: setup
	@$(MAKE) --no-print-directory -j$(JOBS) all BUILD=build-asan OPT="-O1 -g" MALLOC= \
	    SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
	@bash tests/run.sh build-asan

# clang's UBSan, float-to-integer overflow included (GCC's leaves it out):
# a value out of range is undefined behaviour, not a wrong number.
ubsan: setup
	@$(MAKE) --no-print-directory -j$(JOBS) all BUILD=build-ubsan CC=clang OPT="-O1 -g" MALLOC= \
	    SAN="-fsanitize=undefined,float-cast-overflow -fno-sanitize-recover=all -fno-omit-frame-pointer"
	@bash tests/run.sh build-ubsan

# Fuzzing (tests/fuzz/README.md): each tests/fuzz/fuzz_*.c is a libFuzzer
# harness, built by clang with ASan and UBSan into build-fuzz/fuzz/, the
# library's objects instrumented for coverage.
FUZZ_BUILD   := build-fuzz
FUZZ_SECONDS ?= 600
FUZZ_RUNS    ?=
FUZZ_NAMES   := $(patsubst tests/fuzz/%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BINS     = $(FUZZ_NAMES:%=$(BUILD)/fuzz/%)
CLINIC_OBJ    = $(patsubst %.c,$(BUILD)/obj/%.o,$(filter-out %/main.c,$(wildcard src/clinic-api/*.c)))
# fuzz_clinic_http includes http.c, to reach its static parsers.
fuzz_skip_fuzz_clinic_http = $(BUILD)/obj/src/clinic-api/http.o

fuzz-build: setup
	@$(MAKE) --no-print-directory -j$(JOBS) fuzz-bins BUILD=$(FUZZ_BUILD) CC=clang OPT="-O1 -g" \
	    MALLOC= SAN="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"

fuzz-bins: $(FUZZ_BINS)

$(BUILD)/fuzz/%: $(BUILD)/obj/tests/fuzz/%.o $(CLINIC_OBJ) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -fsanitize=fuzzer -o $@ $(filter-out $(fuzz_skip_$*),$^) $(LDLIBS)

fuzz: fuzz-build
	@FUZZ_RUNS=$(FUZZ_RUNS) bash tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

run: setup
	@$(MAKE) --no-print-directory -j$(JOBS) $(BINS)
	@bash scripts/run.sh $(BUILD)

# Rewrites docs/ARCHITECTURE.md's message table from src/msgs/msgs.def.
docs: $(BUILD)/tests/unit/test_msgs
	@TS_UPDATE_DOCS=1 TS_SOURCE_DIR=$(CURDIR) $(BUILD)/tests/unit/test_msgs --filter 'msgs/the_architecture*'

bench: $(BINS)
	@bash scripts/bench.sh $(BUILD)

check:
	@bash scripts/check-banned.sh

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

# FHS layout under $(DESTDIR)$(PREFIX) (README, Running under systemd):
# programs people run in bin/, the test servers (clinic-api,
# therasync-canned; therasync-bench finds clinic-api there) in
# libexec/therasync/, the shipped policies where therasyncd looks
# (<its dir>/../share/therasync/policies), systemd's unit, sysusers and
# tmpfiles files in lib/, man pages. The config goes to SYSCONFDIR:
# /etc for PREFIX=/usr, else PREFIX/etc; an existing one is kept. The
# unit's /usr/bin and /etc/therasync (and tmpfiles') are rewritten for
# PREFIX and SYSCONFDIR.
SYSCONFDIR ?= $(if $(filter /usr,$(PREFIX)),/etc,$(PREFIX)/etc)
USER_BINS  := $(filter-out $(BUILD)/clinic-api $(BUILD)/therasync-canned,$(BINS))
TEST_BINS  := $(filter $(BUILD)/clinic-api $(BUILD)/therasync-canned,$(BINS))
install: $(BINS)
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/libexec/therasync \
	    $(DESTDIR)$(PREFIX)/share/therasync/policies $(DESTDIR)$(PREFIX)/lib/systemd/system \
	    $(DESTDIR)$(PREFIX)/lib/sysusers.d $(DESTDIR)$(PREFIX)/lib/tmpfiles.d \
	    $(DESTDIR)$(PREFIX)/share/man/man1 $(DESTDIR)$(PREFIX)/share/man/man8
	install -m 755 $(USER_BINS) $(DESTDIR)$(PREFIX)/bin/
	$(if $(TEST_BINS),install -m 755 $(TEST_BINS) $(DESTDIR)$(PREFIX)/libexec/therasync/)
	install -m 644 policies/*.lua $(DESTDIR)$(PREFIX)/share/therasync/policies/
	sed -e 's|/usr/bin/|$(PREFIX)/bin/|g' -e 's|/etc/therasync/|$(SYSCONFDIR)/therasync/|g' \
	    scripts/therasyncd.service > $(DESTDIR)$(PREFIX)/lib/systemd/system/therasyncd.service
	chmod 644 $(DESTDIR)$(PREFIX)/lib/systemd/system/therasyncd.service
	install -m 644 scripts/therasync.sysusers $(DESTDIR)$(PREFIX)/lib/sysusers.d/therasync.conf
	sed -e 's|/etc/therasync|$(SYSCONFDIR)/therasync|g' scripts/therasync.tmpfiles \
	    > $(DESTDIR)$(PREFIX)/lib/tmpfiles.d/therasync.conf
	chmod 644 $(DESTDIR)$(PREFIX)/lib/tmpfiles.d/therasync.conf
	install -m 644 man/therasync.1 man/therasync-bench.1 $(DESTDIR)$(PREFIX)/share/man/man1/
	install -m 644 man/therasyncd.8 $(DESTDIR)$(PREFIX)/share/man/man8/
	install -d -m 750 $(DESTDIR)$(SYSCONFDIR)/therasync
	test -e $(DESTDIR)$(SYSCONFDIR)/therasync/therasyncd.lua || \
	    install -m 640 scripts/therasyncd.lua $(DESTDIR)$(SYSCONFDIR)/therasync/therasyncd.lua

clean:
	rm -rf build build-asan build-ubsan build-fuzz

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

# The bench's --hdr histogram log is zlib-compressed (HdrHistogram's V2
# encoding); test_hlog checks the encoder, test_bench decodes the bench's log.
$(BUILD)/therasync-bench $(BUILD)/tests/unit/test_hlog $(BUILD)/tests/e2e/test_bench: LDLIBS += -lz
$(BUILD)/tests/unit/test_hlog: $(BUILD)/obj/src/bench/hlog.o

# test_gen checks the bench's data generator, which lives with the bench;
# test_store_query runs selectors over the data it generates.
$(BUILD)/tests/unit/test_gen $(BUILD)/tests/unit/test_store_query: $(BUILD)/obj/src/bench/gen.o
