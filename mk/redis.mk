# redis: the RESP parser's fuzz target (gateway/core/redis.c; docs/gateway.md).
# redis.c holds the client too, so the target links what the client uses.
FUZZ_SRCS_fuzz_resp := gateway/core/redis.c gateway/core/buf.c gateway/core/loop.c \
	gateway/core/timer.c gateway/core/sock.c -luring
