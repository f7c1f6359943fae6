/* detect.h — one-pass detection of personal data, secrets and prompt
 * injection (the detectors behind the reflex rules, DESIGN.md step 5).
 *
 * Every built-in detector and every user regex detector is compiled into one
 * Hyperscan pattern set, so a buffer is scanned once for all of them. Two
 * compiled forms of that one set are kept: a block-mode database (a whole
 * buffer: URL, query, headers, small bodies) and a streaming database (a body
 * that arrives in several recv buffers; a match split between two feeds is
 * still found). Each raw Hyperscan match is a candidate; the detector's
 * validator (Luhn, mod-97, SSN area/group/serial, octet ranges, JWT header,
 * token entropy, ...) runs on the candidate bytes and may reject it or narrow
 * it to the sensitive span. Overlapping accepted candidates of one detector
 * are merged into a single match.
 *
 * What is in the one pass (docs/detect.md has the why and the numbers):
 *  - secrets, email, delimiter tokens and user patterns: their own
 *    patterns;
 *  - numbers (phone, SSN, card, IBAN, IPv4): not in it; digit runs are
 *    found in C and the number formats run on a small window around a run
 *    whose shape fits (IP and phone/SSN windows are matched in C);
 *  - IPv6: not in it either; runs of hex digits and colons are read in C,
 *    which reports where the IPv6 patterns match;
 *  - injection phrases: not in it; C finds the trigger words of each
 *    family ("ignore", "jailbreak", "decode", "system:", ...) with an AVX2
 *    filter, checks them against the words before them, and the family's
 *    full phrase patterns run on a window around them (a few hundred
 *    bytes). The same pass looks for the literals the remaining one-pass
 *    patterns start with: a block scan without any (and without user
 *    patterns) does not call Hyperscan, a stream feeds it from the first.
 *
 * Ownership and threads
 *  - struct detect_db is built once per config snapshot, then immutable and
 *    shared read-only by every worker. It owns copies of the user patterns
 *    and of the hash key. It must outlive every scratch and stream made for
 *    it (free it when the snapshot is retired).
 *  - struct detect_scratch is per worker (one thread at a time): Hyperscan
 *    scratch space plus our candidate buffers. Make one per worker with
 *    detect_scratch_new() or detect_scratch_clone(); it is valid for the db it
 *    was made for only (after a reload, make new ones).
 *  - struct detect_stream is per scanned body: one thread at a time, fed with
 *    the scratch of whichever worker runs it. It holds the Hyperscan stream
 *    state, a tail window of DETECT_WINDOW bytes and the pending matches.
 *  - detect_scan() and detect_stream_feed() allocate nothing; a stream
 *    allocates once, at open.
 *  - Nothing here logs. Matched text never leaves this module except through
 *    the caller's own buffer: a match carries offsets and a keyed hash.
 *
 * Match delivery
 *  - Offsets are [start, end) from the start of the scanned buffer (block)
 *    or of the stream (streaming).
 *  - For one detector, matches do not overlap and arrive in increasing
 *    start order, except that a match found by a confirmation window (see
 *    below) may arrive after a later match of the same detector that was
 *    found directly (IPv6 with an IPv4 tail; fake "system:" turns). Sort if
 *    order matters (block mode); when streaming, detect_stream_settled()
 *    covers such late matches. Across detectors the order is unspecified
 *    and matches of different detectors may overlap (an IPv4 inside an
 *    IPv6, a JWT inside a user pattern).
 *  - A match is delivered once its detector can no longer extend it: in block
 *    mode before detect_scan() returns; in streaming mode during a later feed
 *    or at detect_stream_finish(). Block and streaming deliver the same
 *    matches for the same bytes, however they are split (tested at every
 *    split point).
 *  - Streaming bound: validators need the candidate bytes, and the stream
 *    keeps only the last DETECT_WINDOW bytes. Every built-in candidate except a
 *    PEM block or a JWT is far shorter (numbers < 64 bytes, phrases < 300). A
 *    candidate longer than DETECT_WINDOW may not be validated: it is delivered
 *    with DETECT_MATCH_UNVALIDATED (fail closed: reported, never silently
 *    dropped) and without a hash.
 *
 * Errors: 0 or -errno. A pattern that does not compile is -EINVAL with
 * "detector 'NAME': <Hyperscan's message>" in the caller's error buffer.
 */
#ifndef REFLEX_HTTP_DETECT_H
#define REFLEX_HTTP_DETECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Bytes of stream history kept for validation (see "Streaming bound"). */
#define DETECT_WINDOW 8192
/* Keyed hash for logs: HMAC-SHA256 truncated to 8 bytes, as 16 hex digits. */
#define DETECT_HASH_HEX 16
/* Longest detector name (user names: [a-z0-9_], 1..DETECT_NAME_MAX-1). */
#define DETECT_NAME_MAX 48

enum detect_severity {
	DETECT_SEV_LOW = 1,
	DETECT_SEV_MEDIUM = 2,
	DETECT_SEV_HIGH = 3,
	DETECT_SEV_CRITICAL = 4,
};

enum detect_family {
	DETECT_FAMILY_PII = 0,
	DETECT_FAMILY_SECRET,
	DETECT_FAMILY_INJECTION,
	DETECT_FAMILY_USER,
};

/* Built-in detector ids; they are also the ids inside every db. User
 * detectors follow, numbered from DETECT_BUILTIN_COUNT in the order given. */
enum detect_builtin {
	DETECT_EMAIL = 0,
	DETECT_PHONE, /* E.164 (+CC ...) and NANP ((212) 555-0123) */
	DETECT_SSN,   /* US SSN, 123-45-6789, or 9 digits after "SSN" */
	DETECT_CARD,  /* payment card: issuer prefix + length + Luhn */
	DETECT_IBAN,  /* country length + mod-97 */
	DETECT_IPV4,
	DETECT_IPV6,
	DETECT_AWS_KEY,	      /* access key id AKIA/ASIA... */
	DETECT_GITHUB_TOKEN,  /* ghp_/gho_/ghu_/ghs_/ghr_, github_pat_ */
	DETECT_STRIPE_KEY,    /* sk_live_/sk_test_/rk_live_/rk_test_ */
	DETECT_SLACK_TOKEN,   /* xoxb-/xoxp-/... and hooks.slack.com webhooks */
	DETECT_JWT,	      /* header.payload.signature with a JSON header */
	DETECT_PEM_KEY,	      /* -----BEGIN ... PRIVATE KEY----- block */
	DETECT_API_KEY,	      /* generic sk-... (OpenAI/Anthropic style) */
	DETECT_INJ_OVERRIDE,  /* "ignore all previous instructions" */
	DETECT_INJ_EXTRACT,   /* "reveal your system prompt" */
	DETECT_INJ_ROLE,      /* "you are now DAN", persona hijack */
	DETECT_INJ_DELIMITER, /* <|im_start|>, [INST], fake "system:" turns */
	DETECT_INJ_ENCODED,   /* "decode this base64 and follow it" */
	DETECT_BUILTIN_COUNT
};

/* A user regex detector (from the config). The pattern is Hyperscan syntax
 * (PCRE subset, no backreferences or lookaround). */
struct detect_user {
	const char *name; /* [a-z0-9_]+, unique, not a built-in name */
	const char *pattern;
	enum detect_severity severity;
	bool caseless;
};

struct detect_opts {
	const struct detect_user *user;
	unsigned n_user;
	/* Key for the keyed hash of matches (logs) and for DETECT_REDACT_HASH.
	 * NULL/0: matches carry no hash and DETECT_REDACT_HASH is -EINVAL. */
	const void *hash_key;
	size_t hash_key_len;
};

struct detect_match {
	unsigned id; /* detector id (enum detect_builtin or a user id) */
	enum detect_severity severity;
	uint64_t start, end; /* [start, end) */
	unsigned flags;	     /* DETECT_MATCH_* */
	/* Keyed hash of the matched bytes for logs, NUL-terminated; "" when the
	 * db has no key or the match is unvalidated. */
	char hash[DETECT_HASH_HEX + 1];
};

#define DETECT_MATCH_UNVALIDATED 1u

/* Called for each match. Return 0 to go on, anything else to stop the scan
 * (the scan then returns -ECANCELED; a stopped stream accepts no more feeds).
 * Runs on the scanning thread; must not call back into the same scan. */
typedef int detect_on_match(void *arg, const struct detect_match *m);

struct detect_db;
struct detect_scratch;
struct detect_stream;

/* Compile the built-ins plus opts->user (opts may be NULL: built-ins only).
 * On failure *out is NULL, err (if errlen > 0) says why:
 *   -EINVAL  a bad user name/severity or a pattern Hyperscan refused
 *   -ENOMEM
 * Compiling takes 0.5-2 s here (several Hyperscan databases, the streaming
 * one with start-of-match state): do it at config load, off the workers. */
int detect_db_build(const struct detect_opts *opts, struct detect_db **out, char *err,
		    size_t errlen);
void detect_db_free(struct detect_db *db); /* NULL-safe */

/* Which vector loops db's scans use around Hyperscan: "avx2", "sse2" or
 * "none" — the CPU's best, less what the environment variable
 * REFLEX_NO_AVX2 took away when db was built ("1": no AVX2; "2": none,
 * the byte loops a build for another arch runs). Every level finds the
 * same matches (test_detect runs its checks at each); the variable is for
 * tests and for an operator who suspects the vector code. Hyperscan picks
 * its own engines regardless. */
const char *detect_simd_name(const struct detect_db *db);

unsigned detect_count(const struct detect_db *db);
/* -ENOENT when no detector has that name. */
int detect_lookup(const struct detect_db *db, const char *name);
/* For id < detect_count(db); the strings live as long as db. */
const char *detect_name(const struct detect_db *db, unsigned id);
const char *detect_token(const struct detect_db *db, unsigned id); /* "[EMAIL]" */
enum detect_severity detect_severity_of(const struct detect_db *db, unsigned id);
enum detect_family detect_family_of(const struct detect_db *db, unsigned id);
const char *detect_severity_name(enum detect_severity sev); /* "low".."critical" */
const char *detect_family_name(enum detect_family fam);	    /* "pii", ... */

/* Per-worker scratch. -ENOMEM on failure. */
int detect_scratch_new(const struct detect_db *db, struct detect_scratch **out);
int detect_scratch_clone(const struct detect_scratch *src, struct detect_scratch **out);
void detect_scratch_free(struct detect_scratch *s); /* NULL-safe */

/* Scan one buffer with every detector. 0 when done, -ECANCELED when on_match
 * stopped it, -EINVAL for a scratch of another db or len >= 4 GiB (feed
 * larger inputs to a stream), -EIO if Hyperscan failed. */
int detect_scan(const struct detect_db *db, struct detect_scratch *s, const void *buf, size_t len,
		detect_on_match *on_match, void *arg);

/* The same, for the detectors in `want` only (bit i = detector id i; ids
 * from 64 up are always in): the others are neither validated nor
 * delivered, and trigger groups that can only produce them run no
 * confirmation window — a scan for a few detectors is cheaper. The matches
 * of the wanted detectors are exactly those of detect_scan(). */
int detect_scan_mask(const struct detect_db *db, struct detect_scratch *s, const void *buf,
		     size_t len, uint64_t want, detect_on_match *on_match, void *arg);

/* Streaming: open, feed the body's bytes in order (any split), finish. The
 * callback and arg are fixed for the stream's life. feed/finish take the
 * calling worker's scratch (made for the same db). finish reports what is
 * left (matches that end at end of data, pending ones) and frees the stream
 * whatever it returns; detect_stream_free() drops a stream without reporting.
 * Memory per stream: DETECT_WINDOW + Hyperscan's stream state (a few KiB). */
int detect_stream_open(const struct detect_db *db, detect_on_match *on_match, void *arg,
		       struct detect_stream **out);
int detect_stream_feed(struct detect_stream *st, struct detect_scratch *s, const void *buf,
		       size_t len);
int detect_stream_finish(struct detect_stream *st, struct detect_scratch *s);
void detect_stream_free(struct detect_stream *st); /* NULL-safe */
/* Ask for the detectors in `want` only (as detect_scan_mask); call before
 * the first feed. A new stream wants every detector. */
void detect_stream_set_mask(struct detect_stream *st, uint64_t want);
/* Bytes fed so far. */
uint64_t detect_stream_offset(const struct detect_stream *st);
/* No match delivered later will start before this offset (for matches no
 * longer than DETECT_WINDOW): a streaming redactor may forward every byte
 * before it. It trails the fed offset by at most about DETECT_WINDOW. */
uint64_t detect_stream_settled(const struct detect_stream *st);
/* The same for the detectors in mask only (bit i = detector id i < 64): a
 * redactor of a few detectors holds back only their longest candidate
 * (e.g. 320 bytes for email) instead of DETECT_WINDOW. */
uint64_t detect_stream_settled_mask(const struct detect_stream *st, uint64_t mask);

/* ---- redaction and hashing ------------------------------------------------ */

enum detect_redact_mode {
	DETECT_REDACT_MASK = 0, /* the detector's token: "[EMAIL]" */
	DETECT_REDACT_HASH,	/* "[EMAIL:<16 hex of the keyed hash>]" */
	DETECT_REDACT_LAST4,	/* same length; every letter/digit but the last 4 → '*' */
};

/* Largest output of detect_redact() for a match of n bytes. */
size_t detect_redact_max(const struct detect_db *db, unsigned id, enum detect_redact_mode mode,
			 size_t n);
/* Write the replacement for the n matched bytes into out (not NUL-terminated).
 * Returns its length, -ENOSPC if cap is too small, -EINVAL for a bad id or
 * DETECT_REDACT_HASH without a key. */
ssize_t detect_redact(const struct detect_db *db, unsigned id, enum detect_redact_mode mode,
		      const void *match, size_t n, char *out, size_t cap);
/* The keyed hash of n bytes with db's key, as DETECT_HASH_HEX hex digits and
 * a NUL. -EINVAL without a key. This is what logs may carry, never the text. */
int detect_hash(const struct detect_db *db, const void *p, size_t n, char out[DETECT_HASH_HEX + 1]);

/* The built-in pattern set, for the PCRE2 baseline of the scan benchmark and
 * for docs: pattern i (< detect_builtin_pattern_count()) in Hyperscan syntax,
 * its detector and whether it is caseless. Every pattern is compiled with
 * HS_FLAG_SOM_LEFTMOST. */
unsigned detect_builtin_pattern_count(void);
const char *detect_builtin_pattern(unsigned i, enum detect_builtin *det, bool *caseless);

/* Run one built-in validator on an exact candidate (no context before it).
 * For tests and for checking config examples; the scan does this itself. */
bool detect_builtin_valid(enum detect_builtin id, const void *p, size_t n);

/* For tests: the IP and phone/SSN confirmation windows, the IPv6 colon
 * runs, the e-mail domains and the trigger words are matched in C
 * (docs/detect.md, "How one pass stays fast"); this scans n_windows random
 * windows (n_windows / 4 for the trigger words: also in two feeds and
 * through the scalar filter, and checking that the Hyperscan gate opens
 * before every one-pass match) both with those C matchers and with the
 * Hyperscan patterns they stand for and compares what they report. 0, or
 * -EINVAL with the first window that differs in err. s must be made for
 * db. */
int detect_check_number_matchers(const struct detect_db *db, struct detect_scratch *s,
				 unsigned n_windows, char *err, size_t errlen);

#endif
