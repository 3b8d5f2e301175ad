# lockstep: `make` builds build/lockstep; `make run` starts a local site; `make test` runs every
# test under AddressSanitizer and UndefinedBehaviorSanitizer, then each fuzz target briefly;
# `make fuzz` fuzzes each target for FUZZ_SECONDS (60); `make bench` prints the figures;
# `make chaos` runs the chaos runner (tests/chaos) for long seeds against the release build.
# CMake does the building; this file is the front door and installs missing Debian packages.

JOBS  ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all run test tsan bench fuzz fuzz-run chaos deps clean format FORCE

all: build/lockstep

build/lockstep: FORCE
	@scripts/deps.sh build
	@cmake -S . -B build/release -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLS_BIN_DIR=$(CURDIR)/build $(CMAKE_FLAGS) >/dev/null
	@cmake --build build/release -j $(JOBS)

# `make run` builds quietly (build/run-build.log), so that the dashboard's URL is what shows.
run:
	@scripts/deps.sh build
	@mkdir -p build
	@$(MAKE) --no-print-directory build/lockstep >build/run-build.log 2>&1 || \
		{ tail -n 30 build/run-build.log; exit 1; }
	@scripts/run-site.sh

# The cluster tests run every server from the sanitized build and their CLI commands from the
# release build (LS_CLIENT), but in the tests that set CLI_LEAK_CHECK=1 (tests/cluster/lib.sh).
test:
	@scripts/deps.sh test
	@$(MAKE) --no-print-directory build/lockstep
	@cmake -S . -B build/asan -DCMAKE_BUILD_TYPE=Debug -DLS_SANITIZE=ON -DLS_TESTS=ON -DLS_BIN_DIR=$(CURDIR)/build/asan $(CMAKE_FLAGS) >/dev/null
	@cmake --build build/asan -j $(JOBS)
	@cd build/asan && LS_CLIENT=$(CURDIR)/build/lockstep ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 ctest --output-on-failure -j 2 $(CTEST_ARGS)
	@$(MAKE) --no-print-directory tsan
	@$(MAKE) --no-print-directory fuzz-run FUZZ_SECONDS=$(TEST_FUZZ_SECONDS)

# ThreadSanitizer (build/tsan): the unit tests and the cluster tests that keep the writer, the
# checkpoint thread, the reader threads, the mirror runs, the shared-database workers, the C
# library's thread, the log's ring of warnings and the loop busy at once. A race report stops
# the process (halt_on_error) and fails the test; tests/tsan.supp silences third-party internals
# only. `make tsan TSAN_TESTS=.` runs every test under it (changes, upload_resume, digest and
# verify were in `make test`'s set until its time passed 15 minutes).
# Three at a time: these tests spend most of their time waiting (TSan's slow processes, pauses).
TSAN_TESTS ?= ^unit/|^cluster/test_(concurrency|repl_concurrent|clib|mirror|mirror_live|messenger_pg|messenger_sqlite|metrics)$$
TSAN_OPTIONS_ALL = halt_on_error=1:second_deadlock_stack=1:suppressions=$(CURDIR)/tests/tsan.supp

tsan:
	@scripts/deps.sh test
	@$(MAKE) --no-print-directory build/lockstep
	@cmake -S . -B build/tsan -DCMAKE_BUILD_TYPE=Debug -DLS_TSAN=ON -DLS_TESTS=ON -DLS_BIN_DIR=$(CURDIR)/build/tsan $(CMAKE_FLAGS) >/dev/null
	@cmake --build build/tsan -j $(JOBS)
	@cd build/tsan && LS_CLIENT=$(CURDIR)/build/lockstep TSAN_OPTIONS=$(TSAN_OPTIONS_ALL) ctest --output-on-failure -j 3 -R '$(TSAN_TESTS)' $(TSAN_CTEST_ARGS)

# Fuzzing (tests/fuzz, libFuzzer, clang): `make fuzz` fuzzes each target for FUZZ_SECONDS, after
# replaying every saved crash (tests/fuzz/regressions) and the seeds; `make test` does the same
# briefly (TEST_FUZZ_SECONDS per target, two targets at a time). FUZZ_ARGS=-R fuzz/http/ picks.
FUZZ_SECONDS ?= 60
TEST_FUZZ_SECONDS ?= 10
FUZZ_JOBS ?= 2
FUZZ_ARGS ?=

fuzz:
	@scripts/deps.sh test
	@$(MAKE) --no-print-directory fuzz-run

fuzz-run:
	@CC=clang cmake -S . -B build/fuzz -DCMAKE_BUILD_TYPE=Debug -DLS_FUZZ=ON -DLS_FUZZ_SECONDS=$(FUZZ_SECONDS) -DLS_BIN_DIR=$(CURDIR)/build/fuzz $(CMAKE_FLAGS) >/dev/null
	@cmake --build build/fuzz -j $(JOBS)
	@cd build/fuzz && ctest --output-on-failure -j $(FUZZ_JOBS) -R '^fuzz/' $(FUZZ_ARGS)

# The chaos runner (tests/chaos) against the release build: each of CHAOS_SEEDS for CHAOS_SECONDS,
# one after the other; every seed runs even when one fails, and the target fails if any did.
CHAOS_SEEDS ?= 11 12 13 14 15
CHAOS_SECONDS ?= 120

chaos: build/lockstep
	@cc -O2 -Wall -Wextra -D_GNU_SOURCE -o build/faultproxy tests/tools/faultproxy.c
	@rc=0; for s in $(CHAOS_SEEDS); do \
		tests/chaos --seed $$s --seconds $(CHAOS_SECONDS) --lockstep build/lockstep \
			--faultproxy build/faultproxy $(CHAOS_ARGS) || rc=1; \
	done; exit $$rc

bench: build/lockstep
	@scripts/deps.sh bench
	@cmake -S . -B build/release >/dev/null # again: bench_notify links libpq when deps.sh has just installed it
	@cmake --build build/release -j $(JOBS) --target $(patsubst bench/%.c,bench_%,$(wildcard bench/*.c)) \
		>build/release/bench-build.log 2>&1 || { tail -n 30 build/release/bench-build.log; exit 1; }
	@bench/run.sh

clean:
	rm -rf build

format:
	clang-format -i $$(git ls-files '*.c' '*.h')
