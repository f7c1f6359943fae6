/* audit.h — the tamper-evident audit log of admin mutations.
 *
 * One JSON line per record, appended with O_APPEND in a single write(2)
 * (no fsync: an audit record costs one syscall, not a disk flush):
 *
 *   {"seq":N,"time":"2026-11-21T06:00:00.123Z","who":"ops","what":"reload",
 *    "result":"ok","prev":"<64 hex>","hash":"<64 hex>"}
 *
 * `prev` is the SHA-256 of the previous line's bytes (without its '\n'),
 * 64 zeros for the first record; `hash` is the SHA-256 of this line with the
 * `,"hash":"..."` member removed (i.e. of the bytes `{"seq":...,"prev":"..."}`).
 * Field order and spelling are fixed, so a verifier needs no JSON parser:
 * strings are escaped (core/jsonw.h), hence `,"prev":"` can occur only as
 * the member itself. seq starts at 1 and increases by one.
 *
 * audit_open() reads the existing file to continue the chain (seq and prev
 * from its last line). Changing, inserting, reordering or deleting any record
 * but the last breaks the chain at that record; cutting records off the end
 * cannot be told from a shorter log (keep a copy of the last hash elsewhere
 * when that matters).
 *
 * Threads: audit_append is serialised internally (any thread).
 */
#ifndef REFLEX_CORE_AUDIT_H
#define REFLEX_CORE_AUDIT_H

#include <stddef.h>
#include <stdint.h>

#define AUDIT_HASH_HEX 64

struct audit;

/* Open (create) path for appending. NULL with err filled on failure. */
struct audit *audit_open(const char *path, char *err, size_t errlen);
/* Append one record: 0, or -errno (the chain stays where it was). */
int audit_append(struct audit *a, const char *who, const char *what, const char *result);
/* Records in the log (the last seq). */
uint64_t audit_last_seq(const struct audit *a);
void audit_close(struct audit *a); /* NULL-safe */

/* Check the chain of the file at path. Returns 0 when every record is
 * intact (*records = their number), 1 when the chain is broken
 * (*first_bad_seq = the position, counted from 1, of the first record that
 * does not verify; err says why), or -errno when the file cannot be read
 * (err says why). */
int audit_verify(const char *path, uint64_t *first_bad_seq, uint64_t *records, char *err,
		 size_t errlen);

/* The SHA-256 of data as 64 lower-case hex digits + NUL into out. */
void audit_sha256_hex(const void *data, size_t len, char out[AUDIT_HASH_HEX + 1]);

#endif
