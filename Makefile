# lockstep: `make` builds build/lockstep; `make run` starts a local site; `make test` runs every
# test under AddressSanitizer and UndefinedBehaviorSanitizer; `make bench` prints the figures.
# CMake does the building; this file is the front door and installs missing Debian packages.

JOBS  ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all run test bench fuzz deps clean format FORCE

all: build/lockstep

build/lockstep: FORCE
	@scripts/deps.sh build
	@cmake -S . -B build/release -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLS_BIN_DIR=$(CURDIR)/build $(CMAKE_FLAGS) >/dev/null
	@cmake --build build/release -j $(JOBS)

run: build/lockstep
	@scripts/run-site.sh

test:
	@scripts/deps.sh test
	@cmake -S . -B build/asan -DCMAKE_BUILD_TYPE=Debug -DLS_SANITIZE=ON -DLS_TESTS=ON -DLS_BIN_DIR=$(CURDIR)/build/asan $(CMAKE_FLAGS) >/dev/null
	@cmake --build build/asan -j $(JOBS)
	@cd build/asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 ctest --output-on-failure -j 2 $(CTEST_ARGS)

bench: build/lockstep
	@scripts/deps.sh bench
	@cmake --build build/release -j $(JOBS) --target bench_all >/dev/null 2>&1 || true
	@bench/run.sh

clean:
	rm -rf build

format:
	clang-format -i $$(git ls-files '*.c' '*.h')
