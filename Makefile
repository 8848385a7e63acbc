# SPDX-License-Identifier: MIT
# ktls-migrate — plain GNU make.  `make help` lists the targets.

PKG_CONFIG ?= pkg-config
CC ?= cc
O ?= build
WERROR ?= 1
SANITIZE ?=
V ?= 0
, := ,
empty :=
space := $(empty) $(empty)

VERSION := 0.1.0
SOVERSION := 0

# ---- dependencies ----------------------------------------------------------
# Each one is checked on its own (module:minimum version:Debian package), so
# a missing one is named instead of silently emptying every flag.  Only
# goals that compile ask (depcheck is an order-only prerequisite of every
# object), so `make deps`, `make clean` and `make help` work without them.
DEPS := openssl:3.0.0:libssl-dev liburing:2.0:liburing-dev \
	libxxhash:0.8.0:libxxhash-dev \
	libnl-3.0:3.4.0:libnl-3-dev libnl-genl-3.0:3.4.0:libnl-genl-3-dev \
	libnl-route-3.0:3.4.0:libnl-route-3-dev
dep_field = $(word $(2),$(subst :, ,$(1)))
dep_ok = $(shell $(PKG_CONFIG) --atleast-version=$(call dep_field,$(1),2) \
	$(call dep_field,$(1),1) >/dev/null 2>&1 && echo y)
DEPS_MISSING := $(strip $(foreach d,$(DEPS),$(if $(call dep_ok,$(d)),,$(d))))
PKGS := $(foreach d,$(DEPS),$(call dep_field,$(d),1))
ifeq ($(DEPS_MISSING),)
PKG_CFLAGS := $(shell $(PKG_CONFIG) --cflags $(PKGS))
PKG_LIBS := $(shell $(PKG_CONFIG) --libs $(PKGS))
endif
APT_MISSING := $(foreach d,$(DEPS_MISSING),$(call dep_field,$(d),3))

.PHONY: depcheck deps-if-missing
depcheck:
ifneq ($(DEPS_MISSING),)
	@$(foreach d,$(DEPS_MISSING),echo 'make: missing $(call dep_field,$(d),1) >= $(call dep_field,$(d),2) (pkg-config module; Debian package $(call dep_field,$(d),3))' >&2;)
	@command -v $(PKG_CONFIG) >/dev/null 2>&1 || echo 'make: $(PKG_CONFIG) itself is not installed (Debian package pkg-config)' >&2
	@echo 'make: install with: apt-get install -y pkg-config $(APT_MISSING)   (or: make deps, as root)' >&2
	@exit 1
endif

# check, demo and bench install only what is missing (packages, guest
# kernels, chroots): nothing runs apt or the network when all is there.
deps-if-missing:
	$(Q)scripts/deps.sh --if-missing
# ---- end of dependencies ---------------------------------------------------

CFLAGS ?= -O2 -g
override CFLAGS += -std=gnu11 -fPIC -D_GNU_SOURCE -MMD -MP \
	-Wall -Wextra -Wmissing-prototypes -Wformat=2 -Wshadow -Wvla \
	-Ilib/include -Ilib -Iktls $(PKG_CFLAGS)
ifeq ($(WERROR),1)
override CFLAGS += -Werror
endif
ifneq ($(SANITIZE),)
SAN_LIST := $(if $(filter 1 yes,$(SANITIZE)),address$(,)undefined,$(SANITIZE))
override CFLAGS += -fsanitize=$(SAN_LIST) -fno-omit-frame-pointer \
	-fno-sanitize-recover=all
override LDFLAGS += -fsanitize=$(SAN_LIST)
endif

ifeq ($(V),1)
Q :=
say = @true
else
Q := @
say = @printf '  %-6s %s\n' $(1) $(2)
endif

KTLS_SRC := $(wildcard ktls/*.c)
LIB_SRC := $(wildcard lib/*.c)
LIB_OBJ := $(patsubst %.c,$(O)/obj/%.o,$(KTLS_SRC) $(LIB_SRC))
# Shared test code (harness, PKI, peer) linked into every test binary.
HARNESS_OBJ := $(patsubst %.c,$(O)/obj/%.o,$(wildcard tests/*.c))
UNIT_SRC := $(wildcard tests/unit/*.c)
KTLS_TEST_SRC := $(wildcard tests/ktls/*.c)
SESSION_TEST_SRC := $(wildcard tests/session/*.c)
UNIT_BIN := $(patsubst tests/unit/%.c,$(O)/tests/unit/%,$(UNIT_SRC))
KTLS_TEST_BIN := $(patsubst tests/ktls/%.c,$(O)/tests/ktls/%,$(KTLS_TEST_SRC))
SESSION_TEST_BIN := $(patsubst tests/session/%.c,$(O)/tests/session/%,$(SESSION_TEST_SRC))
TOOL := $(O)/ktls-migrate
STATIC_LIB := $(O)/libktm.a
SHARED_LIB := $(O)/libktm.so.$(VERSION)

.PHONY: all lib tools tests check check-unit check-unit-san check-ktls \
	check-vm check-layers check-fuzz fuzz fuzz-bins deps demo demo-vm clean \
	help analyze bench bench-vm
.DEFAULT_GOAL := all

all: lib tools tests
lib: $(STATIC_LIB) $(SHARED_LIB)
tools: $(TOOL)
tests: $(UNIT_BIN) $(KTLS_TEST_BIN) $(SESSION_TEST_BIN)

$(O)/obj/%.o: %.c | depcheck
	@mkdir -p $(dir $@)
	$(call say,CC,$<)
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

$(STATIC_LIB): $(LIB_OBJ)
	$(call say,AR,$@)
	$(Q)rm -f $@ && $(AR) rcs $@ $^

$(SHARED_LIB): $(LIB_OBJ) lib/libktm.map
	$(call say,LD,$@)
	$(Q)$(CC) -shared -Wl,-soname,libktm.so.$(SOVERSION) \
		-Wl,--version-script=lib/libktm.map -Wl,-z,defs $(LDFLAGS) \
		-o $@ $(LIB_OBJ) $(PKG_LIBS)
	$(Q)ln -sf libktm.so.$(VERSION) $(O)/libktm.so.$(SOVERSION)
	$(Q)ln -sf libktm.so.$(VERSION) $(O)/libktm.so

# The tool sees only the public header (lib/include); it links the static
# library so build/ktls-migrate runs from the tree without LD_LIBRARY_PATH.
TOOL_OBJ := $(patsubst %.c,$(O)/obj/%.o,$(wildcard tools/*.c))
$(TOOL): $(TOOL_OBJ) $(STATIC_LIB)
	$(call say,LD,$@)
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)

$(O)/obj/tools/%.o: tools/%.c | depcheck
	@mkdir -p $(dir $@)
	$(call say,CC,$<)
	$(Q)$(CC) $(CPPFLAGS) $(filter-out -Ilib -Iktls,$(CFLAGS)) -c -o $@ $<

# The session tests also drive the tool's proxy accept loop (tools/proxy.c,
# not part of libktm).
TEST_TOOL_OBJ := $(O)/obj/tools/proxy.o $(O)/obj/tools/addr.o \
	$(O)/obj/tools/tool.o
$(O)/tests/%: tests/%.c $(HARNESS_OBJ) $(STATIC_LIB) $(TEST_TOOL_OBJ) | depcheck
	@mkdir -p $(dir $@) $(dir $(O)/obj/tests/$*)
	$(call say,CC,$<)
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -Itests -Itools -MF $(O)/obj/tests/$*.d \
		$(LDFLAGS) -o $@ $< $(HARNESS_OBJ) $(TEST_TOOL_OBJ) $(STATIC_LIB) \
		$(PKG_LIBS)

$(HARNESS_OBJ): override CFLAGS += -Itests

# examples/poll_pair in the tree, on the public header and the static
# library only, for tests/session/evloop (which runs it, natively and in
# the guest tier).
EXAMPLE_TEST_BIN := $(O)/tests/examples/poll_pair
tests: $(EXAMPLE_TEST_BIN)
$(EXAMPLE_TEST_BIN): $(O)/tests/examples/%: examples/%.c $(STATIC_LIB) | depcheck
	@mkdir -p $(dir $@) $(O)/obj/examples
	$(call say,CC,$<)
	$(Q)$(CC) $(CPPFLAGS) $(filter-out -Ilib -Iktls,$(CFLAGS)) \
		-MF $(O)/obj/examples/$*.d $(LDFLAGS) -o $@ $< $(STATIC_LIB) \
		$(PKG_LIBS)

# The hostile tests run the tool next to them (O/ktls-migrate), also in the
# sanitizer build.
$(O)/tests/session/hostile: $(TOOL)
$(O)/tests/session/proxy_hostile: $(TOOL)

# ---- tests ---------------------------------------------------------------
# `make check`: unit tests natively, the same unit tests under ASan+UBSan,
# then the kernel-TLS tests natively when this kernel has the tls ULP,
# otherwise inside a QEMU guest on every cached kernel (tests/vm/).
check: deps-if-missing
	$(Q)$(MAKE) --no-print-directory all
	$(Q)scripts/check-layers.pl --build $(O) --quiet
	$(Q)$(MAKE) --no-print-directory analyze
	$(Q)$(MAKE) --no-print-directory O=$(O)/san SANITIZE=1 tests
	$(Q)$(MAKE) --no-print-directory fuzz
	$(Q)tests/run.sh --build $(O) --san-build $(O)/san all fuzz

# The include and call graphs of ktls/, lib/, tools/: no cycle, no arrow
# up the layers (ktls <- lib <- tools).  Prints both graphs.
check-layers: lib tools
	$(Q)scripts/check-layers.pl --build $(O)

check-unit: tests
	$(Q)tests/run.sh --build $(O) unit

check-unit-san:
	$(Q)$(MAKE) --no-print-directory O=$(O)/san SANITIZE=1 tests
	$(Q)tests/run.sh --build $(O)/san unit

check-ktls: tests tools
	$(Q)tests/run.sh --build $(O) ktls

check-vm: tests tools
	$(Q)tests/run.sh --build $(O) vm

deps:
	$(Q)scripts/deps.sh

bench: deps-if-missing
	$(Q)$(MAKE) --no-print-directory all
	$(Q)bench/run.sh --build $(O)
	$(Q)bench/migrate.sh --build $(O)

bench-vm: deps-if-missing
	$(Q)$(MAKE) --no-print-directory all
	$(Q)bench/run-vm.sh --build $(O)

demo: deps-if-missing
	$(Q)$(MAKE) --no-print-directory all
	$(Q)scripts/demo.sh --build $(O)

# The same demo inside the real-kernel guest (the newest cached kernel),
# with a smaller image: kernel TLS there, under emulation (not a speed).
demo-vm: deps-if-missing
	$(Q)$(MAKE) --no-print-directory all
	$(Q)k=$$(bash tests/vm/fetch-kernels.sh --list | tail -1); \
	  test -n "$$k" || { echo "no guest kernel cached: make deps" >&2; exit 1; }; \
	  bash tests/vm/run.sh --timeout 900 "$$k" -- scripts/demo.sh --build $(O) --size 64M --emulated

# ---- fuzzing ------------------------------------------------------------
# `make fuzz`: libFuzzer targets (fuzz/*.c) built with Debian's clang
# against an ASan+UBSan build of the library in $(O)/fuzz; seeds in
# fuzz/corpus/TARGET.  `make check-fuzz` (and `make check`) runs each for
# FUZZ_SECONDS (30) on a copy of its corpus.
# The destination's frame handler (ktm_dest_frame, no sockets) is
# fuzz/dest_frames.c.
FUZZ_CC ?= clang
FUZZ_SECONDS ?= 30
FUZZ_SRC := $(wildcard fuzz/*.c)
FUZZ_TOOL_OBJ := $(O)/obj/tools/tls_opts.o $(O)/obj/tools/tool.o \
	$(O)/obj/tools/addr.o

fuzz:
	$(Q)$(MAKE) --no-print-directory O=$(O)/fuzz CC=$(FUZZ_CC) \
		SANITIZE=address,undefined,fuzzer-no-link fuzz-bins

fuzz-bins: $(patsubst fuzz/%.c,$(O)/bin/%,$(FUZZ_SRC))

$(O)/bin/%: fuzz/%.c $(STATIC_LIB) $(FUZZ_TOOL_OBJ)
	@mkdir -p $(dir $@) $(O)/obj/fuzz
	$(call say,FUZZ,$<)
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -Itools -fsanitize=fuzzer \
		-MF $(O)/obj/fuzz/$*.d -o $@ $< $(FUZZ_TOOL_OBJ) $(STATIC_LIB) \
		$(PKG_LIBS) -lpthread

check-fuzz: fuzz
	$(Q)tests/run.sh --build $(O) fuzz

# cppcheck, then the complexity bound (scripts/complexity.sh: no function
# over 60 lines or 15 decision points in lib/, ktls/, tools/, no
# exception).  Part of make check.
analyze:
	$(Q)cppcheck --quiet --error-exitcode=1 --enable=warning,portability \
		--inline-suppr -Ilib/include -Ilib -Iktls -D_GNU_SOURCE \
		ktls lib tools
	$(Q)scripts/complexity.sh

clean:
	rm -rf $(O)

help:
	@echo 'make            library, tool and test binaries into $(O)/'
	@echo 'make deps       install build/test packages (apt) and cache guest kernels'
	@echo 'make check      all test tiers; last line: N passed, N failed, N skipped'
	@echo 'make check-unit | check-unit-san | check-ktls | check-vm'
	@echo 'make check-layers  include/call graphs: fail on a cycle or an upward arrow'
	@echo 'make fuzz       libFuzzer targets (clang) into $(O)/fuzz/bin; make check-fuzz runs them'
	@echo 'make demo       the README demo'
	@echo 'make install    PREFIX=/usr/local DESTDIR= MULTIARCH=1 LIBDIR= BINDIR= INCLUDEDIR= MANDIR= UNITDIR='
	@echo 'make uninstall  the same variables; removes what install put there'
	@echo 'make check-package  build the .debs, lintian, try them in a bookworm chroot'
	@echo 'options: V=1 WERROR=0 SANITIZE=1 O=dir'

# ---- install ---------------------------------------------------------------
# make install [DESTDIR=] [PREFIX=/usr/local] [MULTIARCH=1] [LIBDIR=] ...
# MULTIARCH=1 puts the libraries in Debian's multiarch directory
# (PREFIX/lib/x86_64-linux-gnu).  Man pages are built from man/*.scd (scdoc).
PREFIX ?= /usr/local
ifeq ($(MULTIARCH),1)
LIBDIR ?= $(PREFIX)/lib/$(shell $(CC) -print-multiarch)
else
LIBDIR ?= $(PREFIX)/lib
endif
BINDIR ?= $(PREFIX)/bin
INCLUDEDIR ?= $(PREFIX)/include
MANDIR ?= $(PREFIX)/share/man
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
UNITDIR ?= $(PREFIX)/lib/systemd/system
SCDOC ?= scdoc
INSTALL ?= install

MAN_SRC := $(wildcard man/*.scd)
MAN_PAGES := $(patsubst man/%.scd,$(O)/man/%,$(MAN_SRC))
# qemu-recv is documented on the qemu-send page
MAN_PAGES += $(O)/man/ktls-migrate-qemu-recv.1
UNITS := $(patsubst contrib/systemd/%.in,$(O)/systemd/%,$(wildcard contrib/systemd/*.in))
PC_FILE := $(O)/libktm.pc

.PHONY: man units install uninstall examples check-package $(PC_FILE) $(UNITS)
man: $(MAN_PAGES)
units: $(UNITS)

# Regenerated every time: they carry BINDIR / PREFIX of this invocation.
$(UNITS): $(O)/systemd/%: contrib/systemd/%.in
	@mkdir -p $(dir $@)
	$(Q)sed 's|@BINDIR@|$(BINDIR)|g' $< > $@

$(O)/man/%: man/%.scd
	@mkdir -p $(dir $@)
	$(call say,SCDOC,$<)
	$(Q)command -v $(SCDOC) >/dev/null || { echo 'make: scdoc is not installed (apt-get install -y scdoc)' >&2; exit 1; }
	$(Q)$(SCDOC) < $< > $@.tmp && mv $@.tmp $@

$(O)/man/ktls-migrate-qemu-recv.1:
	@mkdir -p $(dir $@)
	$(Q)echo '.so man1/ktls-migrate-qemu-send.1' > $@

# The .pc names the dependencies for static linking (Requires.private);
# the header needs none of them.
$(PC_FILE):
	@mkdir -p $(dir $@)
	$(call say,GEN,$@)
	$(Q)printf '%s\n' 'prefix=$(PREFIX)' 'libdir=$(LIBDIR)' \
		'includedir=$(INCLUDEDIR)' '' 'Name: libktm' \
		'Description: TLS handshake with OpenSSL, then Linux kernel TLS for migration streams' \
		'Version: $(VERSION)' \
		'Requires.private: $(subst $(space),$(,) ,$(PKGS))' \
		'Libs: -L$${libdir} -lktm' 'Cflags: -I$${includedir}' > $@

install: lib tools man units $(PC_FILE)
	$(Q)$(INSTALL) -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(PKGCONFIGDIR) \
		$(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) \
		$(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man3 $(DESTDIR)$(MANDIR)/man5
	$(Q)$(INSTALL) -m 644 $(SHARED_LIB) $(STATIC_LIB) $(DESTDIR)$(LIBDIR)/
	$(Q)ln -sf libktm.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libktm.so.$(SOVERSION)
	$(Q)ln -sf libktm.so.$(SOVERSION) $(DESTDIR)$(LIBDIR)/libktm.so
	$(Q)$(INSTALL) -m 644 $(PC_FILE) $(DESTDIR)$(PKGCONFIGDIR)/
	$(Q)$(INSTALL) -m 644 lib/include/ktm.h $(DESTDIR)$(INCLUDEDIR)/
	$(Q)$(INSTALL) -m 755 $(TOOL) $(DESTDIR)$(BINDIR)/
	$(Q)for m in $(MAN_PAGES); do \
		$(INSTALL) -m 644 $$m $(DESTDIR)$(MANDIR)/man$${m##*.}/ || exit 1; done
	$(Q)$(INSTALL) -m 644 $(UNITS) $(DESTDIR)$(UNITDIR)/

uninstall:
	rm -f $(DESTDIR)$(LIBDIR)/libktm.so.$(VERSION) \
		$(DESTDIR)$(LIBDIR)/libktm.so.$(SOVERSION) \
		$(DESTDIR)$(LIBDIR)/libktm.so $(DESTDIR)$(LIBDIR)/libktm.a \
		$(DESTDIR)$(PKGCONFIGDIR)/libktm.pc $(DESTDIR)$(INCLUDEDIR)/ktm.h \
		$(DESTDIR)$(BINDIR)/ktls-migrate \
		$(foreach m,$(MAN_PAGES),$(DESTDIR)$(MANDIR)/man$(subst .,,$(suffix $(m)))/$(notdir $(m))) \
		$(addprefix $(DESTDIR)$(UNITDIR)/,$(notdir $(UNITS)))

# Every examples/*.c, compiled as an outside program would be: against an
# installed tree (EXAMPLES_ROOT, a DESTDIR) with pkg-config --cflags --libs
# libktm, nothing from the source tree.
EXAMPLES_ROOT ?= $(O)/stage
EXAMPLE_BIN := $(patsubst examples/%.c,$(O)/examples/%,$(wildcard examples/*.c))
examples: $(EXAMPLE_BIN)
$(O)/examples/%: examples/%.c
	@mkdir -p $(dir $@)
	$(call say,CC,$<)
	$(Q)pc=$$(PKG_CONFIG_SYSROOT_DIR=$(EXAMPLES_ROOT) \
		PKG_CONFIG_PATH=$(EXAMPLES_ROOT)$(PKGCONFIGDIR) \
		$(PKG_CONFIG) --cflags --libs libktm) || exit 1; \
	  $(CC) $(CFLAGS_EXAMPLE) -o $@ $< $$pc
CFLAGS_EXAMPLE := -O2 -g -Wall -Wextra -Werror
# The .debs built from a copy of the tree, linted, installed into a cached
# bookworm root and tried there (tests/package/run.sh; part of make check).
check-package:
	$(Q)tests/run.sh --build $(O) package
# ---- end of install ----------------------------------------------------------

-include $(shell find $(O)/obj -name '*.d' 2>/dev/null)
