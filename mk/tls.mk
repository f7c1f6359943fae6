# tls: gateway/core/tls.c terminates TLS on listeners and speaks TLS to
# upstream pools (OpenSSL 3 over memory BIOs, docs/tls.md). The gateway, its
# unit tests and the e2e scenarios link libssl. The e2e scenarios 50-59 and
# perf/scenarios/tls_bench.sh drive the openssl CLI.
DEPS_PKGS += libssl-dev openssl
LDLIBS    += -lssl -lcrypto
