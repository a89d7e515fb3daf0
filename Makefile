# Aquifer build. `make` builds bin/aqd, bin/aq, lib/libaq.so and checks that python/aquifer imports;
# `make up` / `make down` start and stop a single-node Aquifer; `make test` runs every test.
CC ?= cc
ifeq ($(origin CC),default)
CC := gcc
endif
OPT ?= -O2
CFLAGS ?= $(OPT) -g
CFLAGS += -std=gnu17 -Wall -Wextra -Werror -Wno-unused-parameter -fno-omit-frame-pointer -fPIC \
	  -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 -Isrc -Iinclude -I/usr/include/fuse3 -MMD -MP
LDLIBS_CLIENT = -lisal -luring -lssl -lcrypto -lpthread -lm
LDLIBS_S3 = -lcurl -lisal -lcrypto -lpthread
# RocksDB is linked statically: its thread-locals (perf and IO-stats contexts, consulted on
# every key comparison and iterator step) then need no __tls_get_addr call each, as they
# do from a shared library. Listing 1M entries went from 2.6M to 3.2M entries/s, creates
# at 300k files from 55-56k/s to 70-87k/s. librocksdb-dev brings the .a and its -dev deps.
LDLIBS_SERVER = -l:librocksdb.a -lgflags -lsnappy -lz -lbz2 -llz4 -lzstd -lstdc++ -luring $(LDLIBS_S3) -lssl -lcrypto -lpthread -lm
LDLIBS_CLI = $(LDLIBS_CLIENT) $(LDLIBS_S3) -lfuse3 -lm

B := build
COMMON_SRC := $(wildcard src/common/*.c) $(wildcard src/proto/*.c)
# libaq checks the segment records it reads itself (src/client/local.c) with the store's code.
CLIENT_SRC := $(wildcard src/client/*.c) src/data/format.c
SERVER_SRC := $(filter-out src/server/main.c,$(wildcard src/net/*.c src/meta/*.c src/data/*.c src/tier/*.c src/server/*.c))
CLI_SRC := $(wildcard src/cli/*.c src/fuse/*.c)
S3_SRC := $(wildcard src/s3/*.c)
UNIT_SRC := $(wildcard tests/unit/test_*.c)
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)

obj = $(patsubst %.c,$(B)/%.o,$(1))
COMMON_OBJ := $(call obj,$(COMMON_SRC))
CLIENT_OBJ := $(call obj,$(CLIENT_SRC))
SERVER_OBJ := $(call obj,$(SERVER_SRC))
CLI_OBJ := $(call obj,$(CLI_SRC))
S3_OBJ := $(call obj,$(S3_SRC))
UNIT_BIN := $(patsubst tests/unit/%.c,$(B)/tests/%,$(UNIT_SRC))
# Test programs that need a server, so not named test_* (tests/run.sh runs those alone).
S3_SELFTEST := $(B)/tests/s3_selftest
TIER_SELFTEST := $(B)/tests/tier_selftest

all: bin/aqd bin/aq bin/mount.fuse.aquifer lib/libaq.so include/aq.h bin/fwdfs $(UNIT_BIN) $(S3_SELFTEST) \
	$(TIER_SELFTEST) python

$(B)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

bin/aqd: $(B)/src/server/main.o $(SERVER_OBJ) $(S3_OBJ) $(COMMON_OBJ)
	@mkdir -p bin
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS_SERVER)

# The floor a FUSE layer costs here, for aq bench meta to measure (docs/performance.md).
bin/fwdfs: bench/fwdfs.c
	@mkdir -p bin
	$(CC) $(CFLAGS) -o $@ $< -lfuse3

bin/aq: $(CLI_OBJ) $(CLIENT_OBJ) $(S3_OBJ) $(COMMON_OBJ)
	@mkdir -p bin
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS_CLI)

# `aq` is also mount(8)'s helper for `mount -t fuse.aquifer CLUSTER_FILE DIR` and fstab
# lines, once `make mount-helper` links it where mount(8) looks (README).
bin/mount.fuse.aquifer: bin/aq
	ln -sf aq $@

mount-helper: bin/mount.fuse.aquifer
	ln -sf $(CURDIR)/bin/aq /usr/sbin/mount.fuse.aquifer

lib/libaq.so: $(CLIENT_OBJ) $(COMMON_OBJ)
	@mkdir -p lib
	$(CC) $(CFLAGS) -shared -Wl,-soname,libaq.so -o $@ $^ $(LDLIBS_CLIENT)

$(B)/tests/%: tests/unit/%.c $(SERVER_OBJ) $(CLIENT_OBJ) $(S3_OBJ) $(COMMON_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests -o $@ $(filter %.c %.o,$^) $(LDLIBS_SERVER) $(LDLIBS_CLIENT)

# The S3 client's tests need nothing but src/s3 and src/common.
$(B)/tests/test_s3url: tests/unit/test_s3url.c $(S3_OBJ) $(COMMON_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests -o $@ $(filter %.c %.o,$^) $(LDLIBS_S3) -lm
$(S3_SELFTEST): tests/s3/s3_selftest.c $(S3_OBJ) $(COMMON_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $(filter %.c %.o,$^) $(LDLIBS_S3) -lm
$(TIER_SELFTEST): tests/s3/tier_selftest.c $(SERVER_OBJ) $(S3_OBJ) $(COMMON_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $(filter %.c %.o,$^) $(LDLIBS_SERVER)

# libFuzzer targets (clang only): make fuzz; make fuzz-run [FUZZ_SECONDS=N] runs each for N
# seconds, keeping its corpus in build/fuzz/corpus/NAME and any crash input in build/fuzz/.
FUZZ_BIN := $(patsubst tests/fuzz/%.c,$(B)/fuzz/%,$(FUZZ_SRC))
FUZZ_SECONDS ?= 30
fuzz: $(FUZZ_BIN)
fuzz-run: fuzz
	@set -e; for f in $(FUZZ_BIN); do \
	  n=$$(basename $$f); mkdir -p $(B)/fuzz/corpus/$$n; \
	  echo "== $$n ($(FUZZ_SECONDS)s)"; \
	  $$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 -artifact_prefix=$(B)/fuzz/$$n- \
	    $(B)/fuzz/corpus/$$n; \
	done
$(B)/fuzz/%: tests/fuzz/%.c $(COMMON_SRC)
	@mkdir -p $(dir $@)
	clang -std=gnu17 -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Isrc -Iinclude -o $@ $^ -lisal -lpthread -lcrypto -lm

# python/aquifer is pure Python over lib/libaq.so (ctypes): nothing to compile; importing it
# checks that every libaq function it declares is there.
python: lib/libaq.so
	@PYTHONPATH=python /usr/bin/python3 -c 'import aquifer'

deps:
	@bash scripts/deps.sh

up: deps all
	./bin/aq up --data $(CURDIR)/var --mount $(CURDIR)/mnt

down:
	@if [ -x bin/aq ]; then ./bin/aq down --data $(CURDIR)/var --mount $(CURDIR)/mnt; fi

# tests/s3/setup.sh installs the S3 test server (npm ci) when tests/s3/node_modules is
# missing or older than its package-lock.json.
test: deps all
	bash tests/s3/setup.sh
	bash tests/run.sh

clean:
	rm -rf $(B) bin lib python/build python/aquifer/*.so

.PHONY: all fuzz fuzz-run python deps up down test clean mount-helper
-include $(shell find $(B) -name '*.d' 2>/dev/null)
