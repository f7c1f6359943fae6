/* json.h — a strict RFC 8259 JSON reader for reflexctl (and the tests that
 * check what the admin API and the access log emit).
 *
 * json_parse() builds a small tree; everything it returns is owned by the
 * root and released with json_free(). Strict: no trailing commas, no leading
 * zeros, no comments, no control characters or invalid UTF-8 inside strings,
 * nesting at most 64 deep, one value per text (whitespace around it only).
 * Strings are decoded (escapes resolved, \u surrogate pairs combined) and
 * NUL-terminated; a string that contains \u0000 keeps its full len.
 */
#ifndef REFLEX_CONTROL_JSON_H
#define REFLEX_CONTROL_JSON_H

#include <stdbool.h>
#include <stddef.h>

enum json_type { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT };

struct json {
	enum json_type type;
	bool b;
	double num;
	char *str; /* JSON_STRING */
	size_t len;
	/* JSON_ARRAY and JSON_OBJECT: n items; keys[] only for objects */
	size_t n;
	struct json *items;
	char **keys;
};

/* Parse text[0..len). NULL with "offset N: reason" in err when invalid. */
struct json *json_parse(const char *text, size_t len, char *err, size_t errlen);
void json_free(struct json *v);

/* Member `key` of an object (first match), or NULL. NULL-safe. */
const struct json *json_get(const struct json *obj, const char *key);
/* Follow dotted keys: json_path(v, "totals.requests"). NULL-safe. */
const struct json *json_path(const struct json *v, const char *dotted);
/* Convenience accessors with a default when missing or of another type. */
double json_num(const struct json *v, double dflt);
const char *json_str(const struct json *v, const char *dflt);

#endif
