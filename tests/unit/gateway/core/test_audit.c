/* test_audit — the hash chain: records are valid JSON with the documented
 * members, the chain continues across reopen, verification passes on an
 * intact file and names the first broken record after any one-byte change,
 * a deleted or reordered record, or a torn last line. */
#include "core/audit.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "control/json.h"
#include "tests/lib/test.h"

static char path[256];

static char *slurp(size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *b;
	long n;

	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	b = malloc((size_t)n + 1);
	*len = fread(b, 1, (size_t)n, f);
	b[*len] = 0;
	fclose(f);
	return b;
}

static void spit(const char *data, size_t len)
{
	FILE *f = fopen(path, "wb");

	fwrite(data, 1, len, f);
	fclose(f);
}

static int verify(uint64_t *bad, uint64_t *n, char *err)
{
	return audit_verify(path, bad, n, err, 256);
}

static void test_write_and_verify(void)
{
	char err[256];
	uint64_t bad, n;

	test_begin("append_records_valid_json_chain_verifies");
	unlink(path);
	struct audit *a = audit_open(path, err, sizeof(err));
	CHECK_MSG(a, "%s", err);
	if (!a) {
		test_end();
		return;
	}
	CHECK_INT(audit_append(a, "ops", "POST /reload", "ok"), 0);
	CHECK_INT(audit_append(a, "ci\"bot\n", "POST /reload \xff\x01", "400: bad \"config\""), 0);
	CHECK_INT(audit_append(a, "ops", "POST /reload", "ok"), 0);
	CHECK_INT(audit_last_seq(a), 3);
	audit_close(a);
	/* the chain continues after a reopen */
	a = audit_open(path, err, sizeof(err));
	CHECK_MSG(a, "%s", err);
	if (a) {
		CHECK_INT(audit_last_seq(a), 3);
		CHECK_INT(audit_append(a, "admin", "POST /cache/purge", "ok"), 0);
		audit_close(a);
	}
	CHECK_INT(verify(&bad, &n, err), 0);
	CHECK_INT(n, 4);

	size_t len;
	char *data = slurp(&len), *p = data, *nl;
	unsigned seq = 0;
	char prev_hash[65] = "0000000000000000000000000000000000000000000000000000000000000000";
	while (data && (nl = strchr(p, '\n'))) {
		char jerr[128];
		struct json *j = json_parse(p, (size_t)(nl - p), jerr, sizeof(jerr));
		seq++;
		CHECK_MSG(j, "record %u is not JSON: %s", seq, jerr);
		if (j) {
			CHECK_INT(json_num(json_get(j, "seq"), 0), seq);
			CHECK(strlen(json_str(json_get(j, "time"), "")) == 24);
			CHECK(json_str(json_get(j, "who"), NULL) != NULL);
			CHECK(json_str(json_get(j, "what"), NULL) != NULL);
			CHECK(json_str(json_get(j, "result"), NULL) != NULL);
			CHECK_STR(json_str(json_get(j, "prev"), ""), prev_hash);
			CHECK(strlen(json_str(json_get(j, "hash"), "")) == 64);
			if (seq == 2)
				CHECK_STR(json_str(json_get(j, "who"), ""), "ci\"bot\n");
			json_free(j);
		}
		audit_sha256_hex(p, (size_t)(nl - p), prev_hash);
		p = nl + 1;
	}
	CHECK_INT(seq, 4);
	free(data);
	test_end();
}

static void test_tamper_every_byte(void)
{
	char err[256];
	uint64_t bad, n;
	size_t len;

	test_begin("any_one_byte_change_names_its_record");
	char *orig = slurp(&len);
	CHECK(orig && len > 0);
	unsigned missed = 0, wrong = 0;
	for (size_t i = 0; orig && i < len; i++) {
		char *t = malloc(len);
		memcpy(t, orig, len);
		t[i] ^= 0x01;
		/* the record the byte belongs to (a newline belongs to its line) */
		uint64_t rec = 1;
		for (size_t k = 0; k < i; k++)
			rec += orig[k] == '\n';
		spit(t, len);
		int rc = verify(&bad, &n, err);
		if (rc != 1)
			missed++;
		else if (bad != rec && !(orig[i] == '\n' && bad == rec + 0))
			wrong++;
		free(t);
	}
	CHECK_MSG(missed == 0, "%u one-byte changes not detected", missed);
	CHECK_MSG(wrong == 0, "%u reported at the wrong record", wrong);
	spit(orig, len);
	CHECK_INT(verify(&bad, &n, err), 0);
	free(orig);
	test_end();
}

static void test_structural(void)
{
	char err[256];
	uint64_t bad, n;
	size_t len;

	test_begin("deleted_reordered_torn_records");
	char *orig = slurp(&len);
	/* line offsets */
	size_t starts[8], ends[8];
	unsigned nl = 0;
	size_t s = 0;
	for (size_t i = 0; i < len && nl < 8; i++)
		if (orig[i] == '\n') {
			starts[nl] = s;
			ends[nl] = i + 1;
			nl++;
			s = i + 1;
		}
	CHECK_INT(nl, 4);
	/* delete record 2 */
	char *t = malloc(len);
	size_t tl = 0;
	memcpy(t, orig, ends[0]);
	tl = ends[0];
	memcpy(t + tl, orig + starts[2], len - starts[2]);
	tl += len - starts[2];
	spit(t, tl);
	CHECK_INT(verify(&bad, &n, err), 1);
	CHECK_INT(bad, 2);
	/* swap records 3 and 4 */
	tl = 0;
	memcpy(t, orig, ends[1]);
	tl = ends[1];
	memcpy(t + tl, orig + starts[3], ends[3] - starts[3]);
	tl += ends[3] - starts[3];
	memcpy(t + tl, orig + starts[2], ends[2] - starts[2]);
	tl += ends[2] - starts[2];
	spit(t, tl);
	CHECK_INT(verify(&bad, &n, err), 1);
	CHECK_INT(bad, 3);
	/* torn last line (a crash mid-write) */
	spit(orig, len - 10);
	CHECK_INT(verify(&bad, &n, err), 1);
	CHECK_INT(bad, 4);
	/* appending after a torn line: the torn record stays the first bad one */
	struct audit *a = audit_open(path, err, sizeof(err));
	CHECK(a != NULL);
	if (a) {
		CHECK_INT(audit_append(a, "ops", "x", "ok"), 0);
		audit_close(a);
	}
	CHECK_INT(verify(&bad, &n, err), 1);
	CHECK_INT(bad, 4);
	/* an empty file is a valid, empty chain; a missing one is an error */
	spit("", 0);
	CHECK_INT(verify(&bad, &n, err), 0);
	CHECK_INT(n, 0);
	unlink(path);
	CHECK(verify(&bad, &n, err) < 0);
	CHECK_MSG(strstr(err, path) != NULL, "%s", err);
	free(t);
	free(orig);
	test_end();
}

/* The log is read in bounded memory: a chain far longer than one read
 * continues across reopen (lines cross the 64 KiB reads), and verify stops
 * at a line past the record limit instead of reading /dev/zero forever. */
static void test_long_log_and_endless_input(void)
{
	char err[256], what[64];
	uint64_t bad, n;

	test_begin("long_log_reopen_and_endless_input");
	unlink(path);
	for (int round = 0; round < 2; round++) {
		struct audit *a = audit_open(path, err, sizeof(err));

		CHECK_MSG(a, "%s", err);
		if (!a)
			break;
		for (int i = 0; i < 1500; i++) {
			snprintf(what, sizeof(what), "POST /cache/purge %d.%d", round, i);
			CHECK_INT(audit_append(a, "ci-bot", what, "ok"), 0);
		}
		audit_close(a);
	}
	CHECK_INT(verify(&bad, &n, err), 0);
	CHECK_INT(n, 3000);
	CHECK_INT(audit_verify("/dev/zero", &bad, &n, err, sizeof(err)), 1);
	CHECK_MSG(strstr(err, "longer than") != NULL, "%s", err);
	unlink(path);
	test_end();
}

int main(void)
{
	snprintf(path, sizeof(path), "/tmp/reflex-test-audit-%d.log", (int)getpid());
	test_write_and_verify();
	test_tamper_every_byte();
	test_structural();
	test_long_log_and_endless_input();
	unlink(path);
	return test_exit_code();
}
