# mk/install.mk — `make install` and `make deb` (docs/deploy.md).
#   make install [PREFIX=/usr/local] [DESTDIR=]   binaries, example config, man pages, unit
#   make deb                                      build/reflex_<version>_<arch>.deb (dpkg-deb)
# The BPF programs are not installed as files: bpftool's skeletons
# (mk/bpf.mk, build/bpf/*.skel.h) embed each .bpf.o in the userspace library
# that reflexd links, so the binary carries them.

# lintian checks the package, mandoc lints the man pages (tests/e2e/90_deploy);
# python3-yaml is not needed: the manifest check is C over libyaml.
DEPS_PKGS += lintian mandoc man-db

PREFIX  ?= /usr/local
DESTDIR ?=
BINDIR  ?= $(PREFIX)/bin
SBINDIR ?= $(PREFIX)/sbin
MANDIR  ?= $(PREFIX)/share/man
DOCDIR  ?= $(PREFIX)/share/doc/reflex
# /usr installs the distribution's way (/etc, /lib/systemd/system on Debian 12);
# any other prefix keeps everything under it.
SYSCONFDIR ?= $(if $(filter /usr,$(PREFIX)),/etc,$(PREFIX)/etc)
UNITDIR    ?= $(if $(filter /usr,$(PREFIX)),/lib/systemd/system,$(PREFIX)/lib/systemd/system)
# INSTALL_STRIP=1 strips the binaries (the package does).
INSTALL_STRIP ?=
INSTALL_PROG := install -m 0755 $(if $(INSTALL_STRIP),-s --strip-program=strip)

# Paths, not the other .mk files' variables: mk/loadgen.mk is read after this file.
INSTALL_BINS := $(BUILD)/reflexctl $(BUILD)/reflex-bench $(BUILD)/reflex-origin
MAN_PAGES := deploy/man/reflexd.8 deploy/man/reflexctl.8 deploy/man/reflexd.yaml.5 \
	deploy/man/reflex-bench.1 deploy/man/reflex-origin.1

.PHONY: install deb
install: $(REFLEXD) $(INSTALL_BINS)
	@$(if $(Q),echo "  INSTALL $(DESTDIR)$(PREFIX)")
	$(Q)install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(SBINDIR) $(DESTDIR)$(SYSCONFDIR)/reflex \
		$(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man8 \
		$(DESTDIR)$(UNITDIR)
	$(Q)$(INSTALL_PROG) $(REFLEXD) $(DESTDIR)$(SBINDIR)/reflexd
	$(Q)$(INSTALL_PROG) $(INSTALL_BINS) $(DESTDIR)$(BINDIR)/
	$(Q)# An edited configuration is never overwritten (the package's conffile rule, by hand).
	$(Q)if [ -e $(DESTDIR)$(SYSCONFDIR)/reflex/reflexd.yaml ]; then \
		echo "  KEEP    $(DESTDIR)$(SYSCONFDIR)/reflex/reflexd.yaml (exists)"; \
	else install -m 0644 deploy/reflexd.yaml $(DESTDIR)$(SYSCONFDIR)/reflex/reflexd.yaml; fi
	$(Q)for m in $(MAN_PAGES); do \
		s=$${m##*.}; gzip -9n <$$m >$(DESTDIR)$(MANDIR)/man$$s/$$(basename $$m).gz; \
	done
	$(Q)sed -e 's|/usr/sbin/reflexd|$(SBINDIR)/reflexd|g' -e 's|/etc/reflex/|$(SYSCONFDIR)/reflex/|g' \
		deploy/systemd/reflexd.service >$(DESTDIR)$(UNITDIR)/reflexd.service
	$(Q)chmod 0644 $(DESTDIR)$(UNITDIR)/reflexd.service

# ---- the Debian package -------------------------------------------------------
DEB_VERSION ?= $(shell head -1 deploy/debian/changelog | cut -d'(' -f2 | cut -d')' -f1)
DEB_ARCH    := $(shell dpkg --print-architecture 2>/dev/null || echo amd64)
DEB         := $(BUILD)/reflex_$(DEB_VERSION)_$(DEB_ARCH).deb
DEB_ROOT    := $(BUILD)/deb/root
# The NEEDED libraries of the four binaries, by the Debian package that
# ships each (objdump -p | grep NEEDED; dpkg -S); tests/e2e/90_deploy checks
# the list still covers them. libelf1 and zlib1g come with libbpf1 (reflexd
# is linked --as-needed and calls neither directly).
DEB_DEPENDS := libc6, liburing2, libyaml-0-2, libjemalloc2, libssl3, libhiredis0.14, libck0, \
	libxxhash0, libhyperscan5, libbpf1, adduser

deb: $(DEB)
$(DEB): $(REFLEXD) $(INSTALL_BINS) $(MAN_PAGES) deploy/reflexd.yaml deploy/systemd/reflexd.service \
		$(wildcard deploy/debian/*) mk/install.mk
	@$(if $(Q),echo "  DEB     $@")
	$(Q)rm -rf $(DEB_ROOT) && mkdir -p $(DEB_ROOT)/DEBIAN
	$(Q)$(MAKE) --no-print-directory install PREFIX=/usr DESTDIR=$(abspath $(DEB_ROOT)) \
		INSTALL_STRIP=1 >/dev/null
	$(Q)install -d $(DEB_ROOT)/usr/share/doc/reflex
	$(Q)install -m 0644 deploy/debian/copyright $(DEB_ROOT)/usr/share/doc/reflex/copyright
	$(Q)gzip -9n <deploy/debian/changelog >$(DEB_ROOT)/usr/share/doc/reflex/changelog.Debian.gz
	$(Q)install -m 0644 deploy/debian/conffiles $(DEB_ROOT)/DEBIAN/conffiles
	$(Q)install -m 0755 deploy/debian/postinst deploy/debian/postrm deploy/debian/prerm \
		$(DEB_ROOT)/DEBIAN/
	$(Q)sed -e 's|@VERSION@|$(DEB_VERSION)|' -e 's|@ARCH@|$(DEB_ARCH)|' \
		-e "s|@SIZE@|$$(du -sk --exclude=DEBIAN $(DEB_ROOT) | cut -f1)|" \
		-e 's|@DEPENDS@|$(DEB_DEPENDS)|' deploy/debian/control.in >$(DEB_ROOT)/DEBIAN/control
	$(Q)cd $(DEB_ROOT) && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | \
		xargs -0 md5sum >DEBIAN/md5sums
	$(Q)dpkg-deb --root-owner-group -Zxz --build $(DEB_ROOT) $@ >/dev/null
