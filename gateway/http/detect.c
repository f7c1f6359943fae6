/* detect.c — Hyperscan detectors, validators, merging, redaction helpers.
 *
 * How a match is made. A raw Hyperscan report gives an end offset; the start
 * comes from HS_FLAG_SOM_LEFTMOST (secrets, delimiters, confirmation passes)
 * or, where start tracking made the combined set slow, from a backward
 * parser that mirrors the pattern (find_*). Hyperscan reports every end at
 * which a pattern matches, so patterns either end on a \b or consume one
 * byte of right context ("not a digit, or end of data") that the validator
 * trims again: the right context is in the pattern because in streaming mode
 * the bytes after a match may not have arrived yet, while left context is
 * always in the window and the validators check it. Accepted candidates of
 * one detector that overlap are merged (same start: the longest end wins,
 * "a@b.com" then "a@b.com.au"; a longer token from the same start that fails
 * validation voids the shorter one, "foo@bar.baz.js").
 *
 * Patterns without good literals do not sit in the one-pass set themselves
 * (each would be an engine running over every byte): a TRIG pattern of their
 * group does, and a hit queues a window on which the group's CONF patterns
 * run (docs/detect.md, "How one pass stays fast").
 */
#include "http/detect.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <hs/hs.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define SKIP_AVX2 1 /* AVX2 skip loops, chosen at run time (the build is generic x86-64) */
#endif
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The vector loops a scan may use, from the CPU and REFLEX_NO_AVX2, read
 * once per db (simd_level()): every SKIP_AVX2 dispatch site asks the db,
 * so one process can hold a db of each kind and the tests compare them. */
enum simd_level {
	SIMD_NONE = 0, /* byte loops only: what a build for another arch runs */
	SIMD_SSE2,     /* x86-64 without AVX2 */
	SIMD_AVX2,
};

#define TMP_CAP (DETECT_WINDOW + 64)
#define KEY_MAX 256

/* A candidate as the validators see it: p[0, n) are the matched bytes, prev
 * the byte before them (-1: start of data or no longer known). A validator
 * returns false to reject, or narrows [lo, hi) to the sensitive span. */
struct cand {
	const uint8_t *p;
	size_t n;
	int prev;
	size_t nleft; /* bytes before p that may be read (p[-nleft, 0)), prev among them */
	size_t lo, hi;
};

#define LEFT_CTX 16

typedef bool validator_fn(struct cand *c);

struct builtin_def {
	const char *name;
	const char *token;
	enum detect_severity sev;
	enum detect_family fam;
	uint32_t maxlen; /* longest candidate it can produce (merge horizon) */
	validator_fn *validate;
};

struct det_info {
	char name[DETECT_NAME_MAX];
	char token[DETECT_NAME_MAX + 2];
	enum detect_severity sev;
	enum detect_family fam;
	uint32_t maxlen;
	validator_fn *validate;
};

/* Trigger groups: a TRIG pattern of group g makes the CONF patterns of
 * group g (of one or several detectors) run on a window around it: a match
 * containing the trigger starts at most `before` bytes before the trigger's
 * end and ends at most `after` bytes after it. */
enum trig_group {
	G_NONE = 0,
	G_OVERRIDE,
	G_EXTRACT,
	G_ROLE,
	G_DELIMITER,
	G_ENCODED,
	G_NUMBER,    /* phone, SSN, card, IBAN, IPv4: one digit-run trigger... */
	G_NUM_PHONE, /* ...whose run is sorted into these by its shape */
	G_NUM_CARD,
	G_NUM_IBAN,
	G_NUM_IP,
	G_IPV6,	 /* no trigger: colon_runs() reports these patterns' ends itself */
	G_EMAIL, /* no trigger: email_runs() reports the email pattern's ends */
	G_COUNT
};

static const struct {
	uint16_t before, after;
} group_window[G_COUNT] = {
	/* Where each group's trigger words sit in its phrases: override verbs
	 * and delimiter markers open them, extraction nouns close them. */
	[G_OVERRIDE] = {40, 128}, [G_EXTRACT] = {176, 64}, [G_ROLE] = {144, 144},
	[G_DELIMITER] = {40, 96}, [G_ENCODED] = {80, 144}, [G_NUM_PHONE] = {56, 24},
	[G_NUM_CARD] = {56, 24},  [G_NUM_IBAN] = {56, 24}, [G_NUM_IP] = {56, 24},
};

_Static_assert(G_COUNT <= 16, "trigger groups live in 4 flag bits");
_Static_assert(DETECT_BUILTIN_COUNT <= 32, "group_dets is a 32-bit mask");

#define CONFIRM_QUEUE 32
#define CONFIRM_HITS 64
/* Windows of nearby triggers of one group merge into one range, up to this
 * length, so dense trigger words cost one confirmation pass. */
#define CONFIRM_RANGE_MAX 4096

enum { IP_V4 = 0, IP_V6_TAIL = 1 };	 /* the two G_NUM_IP CONF patterns */
enum { V6_FULL = 0, V6_COMPRESSED = 1 }; /* the two G_IPV6 CONF patterns */

/* The bytes after an '@' (email_runs), as far as the email pattern cares. */
struct mail_run {
	bool in;      /* reading them */
	bool dot;     /* a label and its '.' seen */
	bool bad;     /* an empty label: no later end can match */
	uint8_t prev; /* the byte before: M_AT, M_LETTER, M_DOT, M_OTHER */
	uint8_t tld;  /* letters since the last '.' (up to 25); TLD_NONE: another byte */
	uint16_t len; /* bytes read after the '@' */
};

/* A run of [0-9A-Fa-f:] bytes that has a ':' (colon_runs), as far as the
 * G_IPV6 patterns care. */
struct v6_run {
	bool in;	/* inside such a run */
	bool dcolon;	/* it has "::" */
	int8_t hex;	/* hex digits since its last ':'; -1: none yet or more than 4 */
	uint8_t groups; /* ":h{1,4}" groups in a row before its last ':' (up to 7) */
};
/* The trigger words found in C (trig_words_scan): a filter on 3 bytes, 16
 * buckets of nibble tables as AVX2 shuffles look them up (a byte passes
 * bucket b at position j when both its nibbles are in b's sets; 8 buckets
 * let through 2.5 times as many positions of prompt text), then a hash of
 * the folded 4 bytes that start there, then the words with that 4-byte
 * gram, compared byte by byte. */
#define TW_HASH_BITS 12
#define TW_MAX_ENT 1024
struct trig_tab {
	/* bucket bits by nibble (buckets 0-7, then 8-15), each 16 twice (AVX2 lanes) */
	uint8_t lo[2][3][32], hi[2][3][32];
	uint16_t byte[3][256]; /* all 16 per byte (no AVX2) */
	uint16_t head[1u << TW_HASH_BITS]; /* 1 + entry, 0: none */
	struct {
		uint32_t gram;	/* folded (| 0x20 per byte) */
		uint16_t next;	/* 1 + entry, 0: none */
		uint8_t word;	/* trig_words[] index */
		uint8_t len;	/* its length */
	} ent[TW_MAX_ENT];
	/* per word, its first 8 bytes for one compare: (bytes | fold) & mask
	 * == head (fold: 0x20 at its letters when caseless) */
	struct {
		uint64_t head, fold, mask;
	} cmp[128];
};

/* the G_NUM_PHONE CONF patterns, in table order */
enum { PH_E164 = 0, PH_NANP, PH_SSN_DASH, PH_SSN_SPACE, PH_SSN_KEY, PH_COUNT };

struct detect_db {
	hs_database_t *block_db;  /* the one-pass set, block mode */
	hs_database_t *stream_db; /* the same set, streaming mode */
	/* Per trigger group: its CONF patterns in block mode, without start
	 * of match (a cheap yes/no over a window) and with it (run only when
	 * the first says yes). */
	hs_database_t *confirm_db[G_COUNT];
	hs_database_t *confirm_som_db[G_COUNT];
	uint32_t group_dets[G_COUNT]; /* built-in detectors each group can produce */
	unsigned ip_pat[2];	      /* the G_NUM_IP CONF patterns (ip_window_hits) */
	unsigned phone_pat[PH_COUNT]; /* the G_NUM_PHONE ones (phone_window_hits) */
	unsigned v6_pat[2];	      /* the G_IPV6 ones (colon_runs) */
	unsigned mail_pat;	      /* the G_EMAIL one (email_runs) */
	struct trig_tab tw;	      /* the trigger words (trig_words) */
	uint8_t simd;		      /* enum simd_level of the skip loops */
	unsigned n_det, n_pat;
	struct det_info *det;
	unsigned *pat_det; /* pattern id (builtin index, then users) → detector */
	uint32_t maxlen;   /* over all detectors, for detect_stream_settled() */
	uint8_t *key;
	size_t key_len;
	/* HMAC-SHA256 with key: SHA-256 states after the padded inner and
	 * outer keys, copied per hash (the one-shot HMAC() fetched the
	 * algorithm and set the key up again every time: 1.6 us vs 0.3 us) */
	EVP_MD_CTX *hm_in, *hm_out;
};

struct pend {
	uint64_t start, end;
	uint64_t raw_start, raw_end; /* the candidate as matched, before narrowing */
	uint64_t done_start, done;   /* the last match delivered (no duplicates) */
	unsigned flags;
	bool live;
};

/* Bytes [lo, hi) to run a group's CONF patterns on: the merged windows of
 * its triggers. Queued until the main scan is done (block) or until the
 * stream has reached hi (streaming). */
struct confirm {
	unsigned grp;
	uint64_t lo, hi;
};

struct detect_scratch {
	const struct detect_db *db;
	hs_scratch_t *hs;      /* main scans */
	hs_scratch_t *hs_conf; /* confirmations, which run inside a main scan's callback */
	struct pend *pend;     /* block scans */
	uint64_t pend_dirty;   /* the last block scan's scan_ctx.pend_bits */
	struct confirm queue[CONFIRM_QUEUE]; /* block scans */
	uint8_t tmp[TMP_CAP];
};

/* State of one scan: a block scan lives on the stack, a stream embeds one. */
struct scan_ctx {
	const struct detect_db *db;
	struct detect_scratch *scr;
	struct pend *pend;
	detect_on_match *on_match;
	void *arg;
	const uint8_t *cur; /* the buffer being scanned: stream bytes [cur_base, +cur_len) */
	uint64_t cur_base;
	size_t cur_len;
	const uint8_t *hist; /* stream bytes [cur_base - hist_len, cur_base) */
	size_t hist_len;
	struct confirm *queue;
	unsigned n_queue;
	bool stopped;
	bool any_pend; /* a pending match was made live (flush_all has work) */
	/* bit det % 64: pend[det] was written (made live, delivered) */
	uint64_t pend_bits;
	uint64_t want; /* detectors asked for (bit = id; ids >= 64 always) */
	/* the digit run being read (number_runs): where its first digit and
	 * its last digit so far are; NO_RUN outside a run */
	uint64_t run_first, run_last;
	/* what number_groups() counts of that run, so that a trigger that
	 * opens no window costs no call: its digits, dots and '+' so far
	 * (those of the run bytes before its first digit included), where
	 * those bytes begin and the byte before them (RUN_BEFORE_UNSEEN:
	 * not at hand when the run began) */
	unsigned run_digits, run_dots;
	bool run_plus;
	int run_before;
	uint64_t run_start;
	/* number_groups() at groups_at, as number_trigger() just found them */
	uint64_t groups_at;
	unsigned groups;
	struct v6_run v6;     /* the colon run being read (colon_runs) */
	struct mail_run mail; /* the domain after an '@' being read (email_runs) */
	struct tw_rec *tw_rec; /* the cross-check: record trigger words, run nothing */
	bool gate; /* trig_words found a literal a one-pass pattern starts with... */
	uint64_t gate_at; /* ...the first of them here */
	/* Stream offset of the first byte Hyperscan saw: a stream starts
	 * feeding it at the first such literal (0 in block mode). */
	uint64_t hs_base;
};

#define NO_RUN UINT64_MAX

struct detect_stream {
	const struct detect_db *db;
	hs_stream_t *hs;
	/* Hyperscan has been fed since ctx.hs_base. Until the first literal
	 * a one-pass pattern starts with (and with no user patterns), no
	 * match can have begun: the stream feeds it nothing. */
	bool hs_live;
	struct scan_ctx ctx;
	uint64_t offset;
	struct pend *pend;
	uint8_t *hist; /* DETECT_WINDOW bytes */
	struct confirm queue[CONFIRM_QUEUE];
};

/* ---- small helpers ---------------------------------------------------------- */

static bool is_digit(int ch)
{
	return ch >= '0' && ch <= '9';
}

/* ASCII only, no locale: these run on every candidate and trigger. */
static bool is_alnum(int ch)
{
	return (ch >= '0' && ch <= '9') || ((unsigned)(ch | 0x20) - 'a' < 26u);
}

static bool is_word(int ch)
{
	return is_alnum(ch) || ch == '_';
}

static bool is_hex(int ch)
{
	return (ch >= '0' && ch <= '9') || ((unsigned)(ch | 0x20) - 'a' < 6u);
}

/* Drop trailing bytes for which keep() is false (the right-context byte). */
static void trim_tail(struct cand *c, bool (*keep)(int ch))
{
	while (c->hi > c->lo && !keep(c->p[c->hi - 1]))
		c->hi--;
}

static size_t count_digits(const uint8_t *p, size_t n)
{
	size_t d = 0;
	for (size_t i = 0; i < n; i++)
		d += is_digit(p[i]);
	return d;
}

/* Digits of p[0, n) into out (cap bytes); returns how many, or -1 if too many. */
static int collect_digits(const uint8_t *p, size_t n, char *out, size_t cap)
{
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		if (!is_digit(p[i]))
			continue;
		if (k + 1 >= cap)
			return -1;
		out[k++] = (char)p[i];
	}
	out[k] = 0;
	return (int)k;
}

/* Separators between digit groups must all be the same byte (or absent):
 * "4111 1111-1111 1111" is not how anyone writes a card. */
static bool separators_consistent(const uint8_t *p, size_t n)
{
	int sep = -1;
	for (size_t i = 0; i < n; i++) {
		if (is_digit(p[i]))
			continue;
		if (sep < 0)
			sep = p[i];
		else if (sep != p[i])
			return false;
	}
	return true;
}

/* Looks machine-generated: enough distinct symbols, no long runs of one
 * symbol, digits and letters both present. Rejects "ghp_xxxx..." and
 * "sk-your-api-key-here" placeholders. */
static bool looks_random(const uint8_t *p, size_t n, unsigned min_distinct, bool need_upper)
{
	bool seen[256] = {false};
	unsigned distinct = 0, digits = 0, upper = 0, lower = 0, run = 1;
	for (size_t i = 0; i < n; i++) {
		uint8_t ch = p[i];
		if (!seen[ch]) {
			seen[ch] = true;
			distinct++;
		}
		digits += is_digit(ch);
		upper += ch >= 'A' && ch <= 'Z';
		lower += ch >= 'a' && ch <= 'z';
		if (i > 0 && ch == p[i - 1]) {
			if (++run >= 5)
				return false;
		} else {
			run = 1;
		}
	}
	if (distinct < min_distinct || upper + lower == 0)
		return false;
	if (digits == 0 && (need_upper || n < 24))
		return false; /* long mixed-case tails (Slack) may lack digits */
	if (need_upper && (upper == 0 || lower == 0))
		return false;
	return true;
}

/* ---- validators --------------------------------------------------------------- */

static bool email_tail(int ch)
{
	return is_alnum(ch);
}

static const char *const gtlds[] = {
	"com",	      "net",	   "org",	  "edu",	 "gov",	       "mil",
	"int",	      "info",	   "biz",	  "name",	 "pro",	       "aero",
	"coop",	      "museum",	   "travel",	  "jobs",	 "mobi",       "asia",
	"tel",	      "app",	   "dev",	  "cloud",	 "store",      "shop",
	"online",     "site",	   "tech",	  "technology",	 "news",       "blog",
	"email",      "global",	   "group",	  "company",	 "solutions",  "services",
	"systems",    "network",   "digital",	  "media",	 "agency",     "studio",
	"design",     "software",  "consulting",  "finance",	 "bank",       "capital",
	"money",      "insurance", "health",	  "care",	 "clinic",     "legal",
	"law",	      "academy",   "school",	  "university",	 "college",    "education",
	"training",   "science",   "engineering", "energy",	 "world",      "international",
	"live",	      "life",	   "today",	  "space",	 "website",    "host",
	"page",	      "link",	   "click",	  "one",	 "top",	       "xyz",
	"club",	      "vip",	   "win",	  "work",	 "works",      "zone",
	"city",	      "london",	   "berlin",	  "paris",	 "nyc",	       "tokyo",
	"amsterdam",  "swiss",	   "africa",	  "post",	 "gmbh",       "ltd",
	"inc",	      "llc",	   "family",	  "social",	 "chat",       "community",
	"events",     "photos",	   "video",	  "music",	 "art",	       "games",
	"fun",	      "wiki",	   "support",	  "help",	 "center",     "institute",
	"foundation", "charity",   "ngo",	  "green",	 "eco",	       "earth",
	"build",      "house",	   "realty",	  "estate",	 "properties", "land",
	"farm",	      "garden",	   "restaurant",  "cafe",	 "bar",	       "pub",
	"beer",	      "wine",	   "coffee",	  "pizza",	 "food",       "fashion",
	"clothing",   "shoes",	   "jewelry",	  "boutique",	 "style",      "beauty",
	"fitness",    "golf",	   "football",	  "soccer",	 "tennis",     "bike",
	"cars",	      "auto",	   "taxi",	  "flights",	 "holiday",    "tours",
	"cruise",     "hotel",	   "hotels",	  "tickets",	 "guide",      "ventures",
	"partners",   "holdings",  "industries",  "enterprises", "marketing",  "management",
	"security",   "tools",	   "codes",	  "systems",	 "expert",     "careers",
	"reviews",    "press",	   "report",	  "rocks",	 "ninja",      "guru",
	"plus",	      "mail",	   "google",	  "apple",	 "microsoft",  "amazon",
	"aws",	      "azure",	   "bot",	  "gay",	 "kids",       "lgbt",
	"moe",	      "ooo",	   "page",	  "run",	 "sale",       "team",
	"tips",	      "town",	   "uno",	  "vote",	 "xn--p1ai",
};

/* s[0, n) is lit (lower case), ASCII letters in either case: what
 * strlen(lit) == n && !strncasecmp(s, lit, n) says, without two calls per
 * list entry (v_email reads two lists for every address). */
static bool lit_is_ci(const char *lit, const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		int ch = (unsigned char)s[i];
		if (!lit[i] || (ch >= 'A' && ch <= 'Z' ? ch | 0x20 : ch) != lit[i])
			return false;
	}
	return !lit[n];
}

static bool v_email(struct cand *c)
{
	trim_tail(c, email_tail);
	const uint8_t *p = c->p + c->lo;
	size_t n = c->hi - c->lo;
	const uint8_t *at = memchr(p, '@', n);
	if (!at || n > 254 || c->prev == '/')
		return false;
	size_t local = (size_t)(at - p), dom = n - local - 1;
	/* The leftmost start may include punctuation from the text before it. */
	while (local > 0 && (p[0] == '.' || p[0] == '-' || p[0] == '+' || p[0] == '%')) {
		p++, local--, c->lo++;
	}
	if (local == 0 || local > 64 || p[local - 1] == '.')
		return false;
	for (size_t i = 1; i < local; i++)
		if (p[i] == '.' && p[i - 1] == '.')
			return false;
	/* Domain labels: 1..63, no leading/trailing '-'; TLD alphabetic. */
	const uint8_t *d = at + 1;
	size_t lab = 0, nlab = 0, tld_start = 0;
	for (size_t i = 0; i <= dom; i++) {
		if (i == dom || d[i] == '.') {
			if (lab == 0 || lab > 63 || d[i - lab] == '-' || d[i - 1] == '-')
				return false;
			nlab++;
			tld_start = i - lab;
			lab = 0;
		} else {
			lab++;
		}
	}
	if (nlab < 2)
		return false;
	/* "icon@2x.png", "logo@3x.webp": retina asset names, not addresses. */
	if (is_digit(d[0]) && (d[1] == 'x' || d[1] == 'X') && d[2] == '.')
		return false;
	static const char *const file_ext[] = {
		"png", "jpg", "jpeg", "gif",  "svg",  "webp", "ico", "bmp",  "tiff", "js",  "ts",
		"tsx", "jsx", "css",  "scss", "html", "json", "py",  "rb",   "java", "kt",  "go",
		"rs",  "cpp", "hpp",  "md",   "txt",  "lock", "yml", "yaml", "xml",  "min", "map",
	};
	size_t tl = dom - tld_start;
	const char *tld = (const char *)d + tld_start;
	/* first letter first: these lists run for every address candidate */
	for (size_t i = 0; i < sizeof(file_ext) / sizeof(file_ext[0]); i++)
		if (file_ext[i][0] == (tld[0] | 0x20) && lit_is_ci(file_ext[i], tld, tl))
			return false;
	/* Any two-letter TLD (country codes), longer ones from a list: code
	 * like "obj@method.call" or "pkg@scope.internal" is not an address. */
	if (tl == 2)
		return true;
	for (size_t i = 0; i < sizeof(gtlds) / sizeof(gtlds[0]); i++)
		if (gtlds[i][0] == (tld[0] | 0x20) && lit_is_ci(gtlds[i], tld, tl))
			return true;
	return false;
}

static bool nanp_ok(const char *d10)
{
	/* NPA and NXX: first digit 2-9 and not an N11 service code. */
	if (d10[0] < '2' || d10[3] < '2')
		return false;
	if (d10[1] == '1' && d10[2] == '1')
		return false;
	if (d10[4] == '1' && d10[5] == '1')
		return false;
	return true;
}

static bool v_phone(struct cand *c)
{
	trim_tail(c, is_digit);
	/* Text before: a word byte or a digit-ish separator means we are inside
	 * some other token ("ID-212-555-0123", "v1.212.555.0123"). */
	if (is_word(c->prev) || c->prev == '-' || c->prev == '.' || c->prev == '/' ||
	    c->prev == '+')
		return false;
	const uint8_t *p = c->p + c->lo;
	size_t n = c->hi - c->lo;
	char d[24];
	int nd = collect_digits(p, n, d, sizeof(d));
	if (nd < 0)
		return false;
	int open = 0;
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '(')
			open++;
		else if (p[i] == ')' && --open < 0)
			return false;
		else if ((p[i] == '.' || p[i] == '-') && i + 1 < n && !is_digit(p[i + 1]) &&
			 p[i + 1] != '(')
			return false; /* "..", "-." */
	}
	if (open != 0)
		return false;
	if (p[0] == '+') {
		if (nd < 8 || nd > 15)
			return false;
		/* "+3.14159265": dotted groups are short in phone numbers. */
		size_t run = 0;
		bool dotted = memchr(p, '.', n) != NULL;
		for (size_t i = 1; i < n; i++) {
			run = is_digit(p[i]) ? run + 1 : 0;
			if (dotted && run > 4)
				return false;
		}
		if (d[0] == '1')
			return nd == 11 && nanp_ok(d + 1);
		return true;
	}
	/* "252.227-7014" is a regulation clause: dotted numbers use dots only. */
	if (memchr(p, '.', n) && (memchr(p, '-', n) || memchr(p, ' ', n) || memchr(p, '(', n)))
		return false;
	if (nd == 11 && d[0] == '1')
		return nanp_ok(d + 1);
	return nd == 10 && nanp_ok(d);
}

static bool ssn_ok(const char *d9)
{
	int area = (d9[0] - '0') * 100 + (d9[1] - '0') * 10 + (d9[2] - '0');
	int group = (d9[3] - '0') * 10 + (d9[4] - '0');
	int serial = atoi(d9 + 5);
	if (area == 0 || area == 666 || area >= 900 || group == 0 || serial == 0)
		return false;
	/* Numbers the SSA itself published (Woolworth wallet card, ads). */
	if (!strcmp(d9, "078051120") || !strcmp(d9, "219099999"))
		return false;
	/* Repeated or sequential digits are placeholders, not assignments. */
	if (!strcmp(d9, "123456789") || !strcmp(d9, "987654321"))
		return false;
	return true;
}

static bool v_ssn(struct cand *c)
{
	trim_tail(c, is_digit);
	/* Narrow "SSN: 123-45-6789" / "ssn 123456789" to the number itself. */
	size_t start = c->hi;
	while (start > c->lo &&
	       (is_digit(c->p[start - 1]) || c->p[start - 1] == '-' || c->p[start - 1] == ' '))
		start--;
	while (start < c->hi && !is_digit(c->p[start]))
		start++;
	if (start == c->lo &&
	    (c->prev == '-' || c->prev == '.' || c->prev == '/' || is_word(c->prev)))
		return false;
	c->lo = start;
	char d[16];
	if (collect_digits(c->p + c->lo, c->hi - c->lo, d, sizeof(d)) != 9)
		return false;
	if (!separators_consistent(c->p + c->lo, c->hi - c->lo))
		return false;
	return ssn_ok(d);
}

static bool luhn_ok(const char *d, int n)
{
	int sum = 0;
	for (int i = 0; i < n; i++) {
		int v = d[n - 1 - i] - '0';
		if (i & 1) {
			v *= 2;
			if (v > 9)
				v -= 9;
		}
		sum += v;
	}
	return sum % 10 == 0;
}

static bool card_issuer_ok(const char *d, int n)
{
	int p2 = (d[0] - '0') * 10 + (d[1] - '0');
	int p3 = p2 * 10 + (d[2] - '0');
	int p4 = p3 * 10 + (d[3] - '0');
	if (d[0] == '4')
		return n == 13 || n == 16 || n == 19; /* Visa */
	if ((p2 >= 51 && p2 <= 55) || (p4 >= 2221 && p4 <= 2720))
		return n == 16; /* Mastercard */
	if (p2 == 34 || p2 == 37)
		return n == 15; /* Amex */
	if (p4 == 6011 || p2 == 65 || (p3 >= 644 && p3 <= 649) || (p3 >= 622 && p3 <= 622))
		return n >= 16 && n <= 19; /* Discover (incl. UnionPay co-brand 622) */
	if (p4 >= 3528 && p4 <= 3589)
		return n >= 16 && n <= 19; /* JCB */
	if ((p3 >= 300 && p3 <= 305) || p2 == 36 || p2 == 38 || p2 == 39)
		return n >= 14 && n <= 19; /* Diners */
	return false;
}

static bool v_card(struct cand *c)
{
	trim_tail(c, is_digit);
	if (c->prev == '-' || c->prev == '.' || is_word(c->prev))
		return false;
	/* Four groups inside a longer grouped number (an IBAN, a tracking
	 * number) are not a card. */
	if (c->prev == ' ' && c->nleft >= 2 && is_digit(c->p[-2]))
		return false;
	char d[24];
	int n = collect_digits(c->p + c->lo, c->hi - c->lo, d, sizeof(d));
	if (n < 13 || n > 19)
		return false;
	if (!separators_consistent(c->p + c->lo, c->hi - c->lo))
		return false;
	return card_issuer_ok(d, n) && luhn_ok(d, n);
}

struct iban_len {
	char cc[3];
	uint8_t len;
};

static const struct iban_len iban_lens[] = {
	{"AD", 24}, {"AE", 23}, {"AL", 28}, {"AT", 20}, {"AZ", 28}, {"BA", 20}, {"BE", 16},
	{"BG", 22}, {"BH", 22}, {"BR", 29}, {"BY", 28}, {"CH", 21}, {"CR", 22}, {"CY", 28},
	{"CZ", 24}, {"DE", 22}, {"DK", 18}, {"DO", 28}, {"EE", 20}, {"EG", 29}, {"ES", 24},
	{"FI", 18}, {"FO", 18}, {"FR", 27}, {"GB", 22}, {"GE", 22}, {"GI", 23}, {"GL", 18},
	{"GR", 27}, {"GT", 28}, {"HR", 21}, {"HU", 28}, {"IE", 22}, {"IL", 23}, {"IQ", 23},
	{"IS", 26}, {"IT", 27}, {"JO", 30}, {"KW", 30}, {"KZ", 20}, {"LB", 28}, {"LC", 32},
	{"LI", 21}, {"LT", 20}, {"LU", 20}, {"LV", 21}, {"MC", 27}, {"MD", 24}, {"ME", 22},
	{"MK", 19}, {"MR", 27}, {"MT", 31}, {"MU", 30}, {"NL", 18}, {"NO", 15}, {"PK", 24},
	{"PL", 28}, {"PS", 29}, {"PT", 25}, {"QA", 29}, {"RO", 24}, {"RS", 22}, {"SA", 24},
	{"SC", 31}, {"SE", 24}, {"SI", 19}, {"SK", 24}, {"SM", 27}, {"ST", 25}, {"SV", 28},
	{"TL", 23}, {"TN", 24}, {"TR", 26}, {"UA", 29}, {"VA", 22}, {"VG", 24}, {"XK", 20},
};

static bool iban_tail(int ch)
{
	return is_alnum(ch);
}

static bool v_iban(struct cand *c)
{
	trim_tail(c, iban_tail);
	if (is_word(c->prev))
		return false;
	char s[40];
	size_t k = 0;
	for (size_t i = c->lo; i < c->hi; i++) {
		if (c->p[i] == ' ')
			continue;
		if (k + 1 >= sizeof(s))
			return false;
		s[k++] = (char)c->p[i];
	}
	s[k] = 0;
	size_t want = 0;
	for (size_t i = 0; i < sizeof(iban_lens) / sizeof(iban_lens[0]); i++)
		if (s[0] == iban_lens[i].cc[0] && s[1] == iban_lens[i].cc[1])
			want = iban_lens[i].len;
	if (want == 0 || k != want)
		return false;
	/* mod 97 of the rearranged number, letters as 10..35, digit by digit. */
	unsigned rem = 0;
	for (size_t i = 0; i < k; i++) {
		char ch = s[(i + 4) % k];
		if (is_digit(ch)) {
			rem = (rem * 10 + (unsigned)(ch - '0')) % 97;
		} else if (ch >= 'A' && ch <= 'Z') {
			unsigned v = (unsigned)(ch - 'A') + 10;
			rem = (rem * 100 + v) % 97;
		} else {
			return false;
		}
	}
	return rem == 1;
}

/* "lib-2.31.1.4", "ID 12 4111 1111 1111 1111": the candidate continues a
 * token on its left (a separator glued to a word or digit). */
static bool glued_left(const struct cand *c, const char *seps)
{
	return c->prev > 0 && strchr(seps, c->prev) && c->nleft >= 2 && is_alnum(c->p[-2]);
}

static bool v_ipv4(struct cand *c)
{
	trim_tail(c, is_digit);
	if (c->prev == '.' || is_word(c->prev) || glued_left(c, "-"))
		return false;
	const uint8_t *p = c->p + c->lo;
	size_t n = c->hi - c->lo;
	int parts = 0, val = 0, len = 0;
	for (size_t i = 0; i <= n; i++) {
		if (i == n || p[i] == '.') {
			if (len == 0 || val > 255 || (len > 1 && p[i - len] == '0'))
				return false;
			parts++;
			val = len = 0;
		} else if (is_digit(p[i])) {
			val = val * 10 + (p[i] - '0');
			if (++len > 3)
				return false;
		} else {
			return false;
		}
	}
	return parts == 4;
}

static bool ipv6_tail(int ch)
{
	return is_hex(ch) || ch == ':' || ch == '.';
}

static bool v_ipv6(struct cand *c)
{
	trim_tail(c, ipv6_tail);
	if (is_word(c->prev) || c->prev == ':' || c->prev == '.')
		return false;
	size_t n = c->hi - c->lo;
	char s[64];
	if (n < 2 || n >= sizeof(s))
		return false;
	memcpy(s, c->p + c->lo, n);
	s[n] = 0;
	/* "Abc::Def", "::" (C++ scopes, empty lists) parse, but an address
	 * people write down nearly always has a digit. */
	if (!count_digits(c->p + c->lo, n))
		return false;
	struct in6_addr a;
	return inet_pton(AF_INET6, s, &a) == 1;
}

static bool v_aws(struct cand *c)
{
	const uint8_t *p = c->p + c->lo;
	size_t n = c->hi - c->lo;
	if (n != 20)
		return false;
	/* The 16 characters after the prefix are base32 (A-Z, 2-7). */
	for (size_t i = 4; i < n; i++)
		if (!((p[i] >= 'A' && p[i] <= 'Z') || (p[i] >= '2' && p[i] <= '7')))
			return false;
	if (!memcmp(p + 13, "EXAMPLE", 7)) /* AWS's documentation key */
		return false;
	return looks_random(p + 4, 16, 8, false);
}

static bool v_github(struct cand *c)
{
	const uint8_t *p = c->p + c->lo;
	size_t n = c->hi - c->lo;
	size_t skip = n > 11 && !memcmp(p, "github_pat_", 11) ? 11 : 4;
	return looks_random(p + skip, n - skip, 12, true);
}

static bool v_stripe(struct cand *c)
{
	const uint8_t *p = c->p + c->lo;
	size_t n = c->hi - c->lo;
	const uint8_t *body = memchr(p + 3, '_', n - 3);
	if (!body)
		return false;
	body++;
	return looks_random(body, n - (size_t)(body - p), 12, true);
}

static bool slack_tail(int ch)
{
	return is_alnum(ch);
}

static bool v_slack(struct cand *c)
{
	trim_tail(c, slack_tail);
	const uint8_t *p = c->p + c->lo;
	size_t n = c->hi - c->lo;
	if (n > 8 && !memcmp(p, "https://", 8)) {
		const uint8_t *last = p + n;
		while (last > p && last[-1] != '/')
			last--;
		return looks_random(last, (size_t)(p + n - last), 10, false);
	}
	/* xoxb-<team digits>-<digits>-<random>: the numeric ids and a random
	 * tail; "xoxb-your-token-here" has neither. */
	if (n < 24 || count_digits(p, n) < 8)
		return false;
	const uint8_t *last = p + n;
	while (last > p && last[-1] != '-')
		last--;
	return looks_random(last, (size_t)(p + n - last), 8, false);
}

static int b64url_val(int ch)
{
	if (ch >= 'A' && ch <= 'Z')
		return ch - 'A';
	if (ch >= 'a' && ch <= 'z')
		return ch - 'a' + 26;
	if (ch >= '0' && ch <= '9')
		return ch - '0' + 52;
	if (ch == '-' || ch == '+')
		return 62;
	if (ch == '_' || ch == '/')
		return 63;
	return -1;
}

/* Decode base64url p[0, n) into out (cap); returns the decoded length or -1. */
static int b64url_decode(const uint8_t *p, size_t n, uint8_t *out, size_t cap)
{
	uint32_t acc = 0;
	int bits = 0;
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		int v = b64url_val(p[i]);
		if (v < 0)
			return -1;
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (k >= cap)
				return -1;
			out[k++] = (uint8_t)(acc >> bits);
		}
	}
	return (int)k;
}

static bool jwt_tail(int ch)
{
	return is_alnum(ch) || ch == '-' || ch == '_';
}

static bool v_jwt(struct cand *c)
{
	trim_tail(c, jwt_tail);
	if (is_word(c->prev) || c->prev == '-' || c->prev == '.')
		return false;
	const uint8_t *p = c->p + c->lo;
	size_t n = c->hi - c->lo;
	const uint8_t *dot = memchr(p, '.', n);
	if (!dot)
		return false;
	uint8_t hdr[768];
	size_t hl = (size_t)(dot - p);
	if (hl > 1000)
		return false;
	int k = b64url_decode(p, hl, hdr, sizeof(hdr) - 1);
	if (k < 2 || hdr[0] != '{')
		return false;
	hdr[k] = 0;
	/* A JOSE header names its algorithm. */
	return memmem(hdr, (size_t)k, "\"alg\"", 5) != NULL;
}

static bool v_pem(struct cand *c)
{
	const uint8_t *p = c->p + c->lo;
	size_t n = c->hi - c->lo;
	if (n < 11 + 5 + 9 + 5)
		return false;
	/* The END label must be the BEGIN label: "BEGIN RSA PRIVATE KEY" is
	 * closed by "END RSA PRIVATE KEY". */
	const uint8_t *b = p + 11; /* after "-----BEGIN " */
	const uint8_t *be = memmem(b, n - 11, "-----", 5);
	if (!be)
		return false;
	size_t bl = (size_t)(be - b), body_from = (size_t)(be + 5 - p);
	const uint8_t *e = NULL;
	for (size_t i = n - 9; i > body_from; i--)
		if (!memcmp(p + i, "-----END ", 9)) {
			e = p + i + 9;
			break;
		}
	if (!e || (size_t)(p + n - 5 - e) != bl || memcmp(b, e, bl) != 0)
		return false;
	/* A real key body is long; an elided example in documentation is not. */
	size_t body = 0;
	for (const uint8_t *q = be + 5; q < e - 9; q++)
		body += is_alnum(*q) || *q == '+' || *q == '/';
	return body >= 64;
}

static bool v_apikey(struct cand *c)
{
	trim_tail(c, jwt_tail);
	const uint8_t *p = c->p + c->lo + 3;
	size_t n = c->hi - c->lo - 3;
	unsigned upper = 0, lower = 0, digits = 0;
	for (size_t i = 0; i < n; i++) {
		upper += p[i] >= 'A' && p[i] <= 'Z';
		lower += p[i] >= 'a' && p[i] <= 'z';
		digits += is_digit(p[i]);
	}
	if (upper < 2 || lower < 2 || digits < 2)
		return false;
	return looks_random(p, n, 12, true);
}

static bool is_space(int ch)
{
	return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n';
}

static bool not_space(int ch)
{
	return !is_space(ch);
}

/* Injection phrases: the regex is the whole test; trim the line-start and
 * whitespace the patterns may include so the span is the phrase. */
static bool v_phrase(struct cand *c)
{
	trim_tail(c, not_space);
	while (c->lo < c->hi && is_space(c->p[c->lo]))
		c->lo++;
	return c->lo < c->hi;
}

/* "Don't forget the safety instructions" is advice, not an override. */
static bool v_override(struct cand *c)
{
	static const char *const neg[] = {"don't",  "dont",  "do not",	  "never",   "not",
					  "didn't", "won't", "shouldn't", "doesn't", "to not"};
	if (!v_phrase(c))
		return false;
	size_t k = c->nleft;
	const uint8_t *l = c->p - k;
	while (k > 0 && is_space(l[k - 1]))
		k--;
	for (size_t i = 0; i < sizeof(neg) / sizeof(neg[0]); i++) {
		size_t nl = strlen(neg[i]);
		if (k >= nl && !strncasecmp((const char *)l + k - nl, neg[i], nl) &&
		    (k == nl || !is_word(l[k - nl - 1])))
			return false;
	}
	return true;
}

/* ---- the built-in table --------------------------------------------------------- */

static const struct builtin_def builtins[DETECT_BUILTIN_COUNT] = {
	[DETECT_EMAIL] = {"email", "[EMAIL]", DETECT_SEV_LOW, DETECT_FAMILY_PII, 320, v_email},
	[DETECT_PHONE] = {"phone", "[PHONE]", DETECT_SEV_LOW, DETECT_FAMILY_PII, 40, v_phone},
	[DETECT_SSN] = {"ssn", "[SSN]", DETECT_SEV_HIGH, DETECT_FAMILY_PII, 64, v_ssn},
	[DETECT_CARD] = {"card", "[CARD]", DETECT_SEV_HIGH, DETECT_FAMILY_PII, 32, v_card},
	[DETECT_IBAN] = {"iban", "[IBAN]", DETECT_SEV_HIGH, DETECT_FAMILY_PII, 48, v_iban},
	[DETECT_IPV4] = {"ipv4", "[IPV4]", DETECT_SEV_LOW, DETECT_FAMILY_PII, 20, v_ipv4},
	[DETECT_IPV6] = {"ipv6", "[IPV6]", DETECT_SEV_LOW, DETECT_FAMILY_PII, 64, v_ipv6},
	[DETECT_AWS_KEY] = {"aws_key", "[AWS_KEY]", DETECT_SEV_CRITICAL, DETECT_FAMILY_SECRET, 24,
			    v_aws},
	[DETECT_GITHUB_TOKEN] = {"github_token", "[GITHUB_TOKEN]", DETECT_SEV_CRITICAL,
				 DETECT_FAMILY_SECRET, 100, v_github},
	[DETECT_STRIPE_KEY] = {"stripe_key", "[STRIPE_KEY]", DETECT_SEV_CRITICAL,
			       DETECT_FAMILY_SECRET, 120, v_stripe},
	[DETECT_SLACK_TOKEN] = {"slack_token", "[SLACK_TOKEN]", DETECT_SEV_CRITICAL,
				DETECT_FAMILY_SECRET, 256, v_slack},
	[DETECT_JWT] = {"jwt", "[JWT]", DETECT_SEV_HIGH, DETECT_FAMILY_SECRET, DETECT_WINDOW,
			v_jwt},
	[DETECT_PEM_KEY] = {"pem_private_key", "[PRIVATE_KEY]", DETECT_SEV_CRITICAL,
			    DETECT_FAMILY_SECRET, DETECT_WINDOW, v_pem},
	[DETECT_API_KEY] = {"api_key", "[API_KEY]", DETECT_SEV_CRITICAL, DETECT_FAMILY_SECRET, 256,
			    v_apikey},
	[DETECT_INJ_OVERRIDE] = {"inj_override", "[INJECTION]", DETECT_SEV_HIGH,
				 DETECT_FAMILY_INJECTION, 256, v_override},
	[DETECT_INJ_EXTRACT] = {"inj_extract", "[INJECTION]", DETECT_SEV_HIGH,
				DETECT_FAMILY_INJECTION, 256, v_phrase},
	[DETECT_INJ_ROLE] = {"inj_role", "[INJECTION]", DETECT_SEV_MEDIUM, DETECT_FAMILY_INJECTION,
			     256, v_phrase},
	[DETECT_INJ_DELIMITER] = {"inj_delimiter", "[INJECTION]", DETECT_SEV_HIGH,
				  DETECT_FAMILY_INJECTION, 256, v_phrase},
	[DETECT_INJ_ENCODED] = {"inj_encoded", "[INJECTION]", DETECT_SEV_MEDIUM,
				DETECT_FAMILY_INJECTION, 256, v_phrase},
};

#define CI HS_FLAG_CASELESS
/* The match must start on a word boundary. Written as a flag checked on the
 * candidate instead of a leading \b: a leading \b makes Hyperscan track
 * word/non-word state at every byte and costs 5-10x on the combined set. */
#define LB (1u << 30)
/* A trigger: a cheap pattern (rare literals) in the one-pass database whose
 * hit makes its group's CONF patterns run on the bytes around it. */
#define TRIG (1u << 29)
/* A full pattern that only runs in its group's confirmation databases. */
#define CONF (1u << 28)
/* A TRIG pattern that is not in the one-pass set: trig_words() reports
 * where it matches, in C. The regex stays the reference (the PCRE2
 * baseline runs it, detect_check_number_matchers() compares the two). */
#define CTRIG (1u << 31)
#define GRP(g) ((unsigned)(g) << 24) /* bits 24-27: the trigger group */
#define GRP_OF(f) (((f) >> 24) & 15u)
#define OUR_FLAGS (LB | TRIG | CONF | CTRIG | GRP(15))
/* Right context that ends a number: not a digit, or end of data. */
#define END_NUM "(?:[^0-9A-Za-z]|\\z)"

/* Start finders for patterns compiled without HS_FLAG_SOM_LEFTMOST (start
 * of match tracking made these 10-100x slower in the combined set). p[0, n)
 * are the bytes that end where Hyperscan reported the match; they return
 * where the leftmost match starts, or NO_START. Each mirrors its regex. */
#define NO_START ((size_t)-1)

static bool email_local(int ch)
{
	return is_alnum(ch) || ch == '.' || ch == '_' || ch == '%' || ch == '+' || ch == '-';
}

static size_t find_email(const uint8_t *p, size_t n)
{
	size_t i = n;
	while (i > 0 && p[i - 1] != '@') {
		if (!is_alnum(p[i - 1]) && p[i - 1] != '.' && p[i - 1] != '-')
			return NO_START;
		i--;
	}
	if (i == 0)
		return NO_START;
	i--;
	while (i > 0 && email_local(p[i - 1]))
		i--;
	return i;
}

static size_t skip_ctx(const uint8_t *p, size_t n)
{
	return n > 0 && !is_digit(p[n - 1]) ? n - 1 : n;
}

static bool digits_at(const uint8_t *p, size_t i, size_t k)
{
	for (size_t j = 0; j < k; j++)
		if (!is_digit(p[i + j]))
			return false;
	return true;
}

static bool phone_sep(int ch)
{
	return ch == ' ' || ch == '.' || ch == '-';
}

/* (?:\+?1[ .-]?)?(?:\([2-9]dd\) ?|[2-9]dd[ .-])[2-9]dd[ .-]dddd: the regex
 * leaves out the optional "+1 " prefix (no start tracking, so it cannot
 * change an end), the finder takes it when it is there. */
static size_t find_nanp(const uint8_t *p, size_t n)
{
	size_t i = skip_ctx(p, n);
	if (i < 12 || !digits_at(p, i - 4, 4) || !phone_sep(p[i - 5]) || !digits_at(p, i - 8, 3))
		return NO_START;
	i -= 8;
	if (i >= 5 && p[i - 1] == ' ' && p[i - 2] == ')')
		i--;
	if (i >= 5 && p[i - 1] == ')' && p[i - 5] == '(' && digits_at(p, i - 4, 3))
		i -= 5;
	else if (i >= 4 && phone_sep(p[i - 1]) && digits_at(p, i - 4, 3))
		i -= 4;
	else
		return NO_START;
	if (i >= 2 && phone_sep(p[i - 1]) && p[i - 2] == '1')
		i -= 2;
	else if (i >= 1 && p[i - 1] == '1' && p[i] == '(')
		i -= 1;
	if (i >= 1 && p[i - 1] == '+' && p[i] == '1')
		i--;
	return i;
}

/* \+[1-9][0-9 ().-]{6,20}[0-9] */
static size_t find_e164(const uint8_t *p, size_t n)
{
	size_t i = skip_ctx(p, n);
	while (i > 0 && (is_digit(p[i - 1]) || p[i - 1] == ' ' || p[i - 1] == '(' ||
			 p[i - 1] == ')' || p[i - 1] == '.' || p[i - 1] == '-'))
		i--;
	return i > 0 && p[i - 1] == '+' ? i - 1 : NO_START;
}

/* The keyword form of an SSN: the span is the nine digits. */
static size_t find_ssn_digits(const uint8_t *p, size_t n)
{
	size_t i = skip_ctx(p, n);
	return i >= 9 && digits_at(p, i - 9, 9) ? i - 9 : NO_START;
}

static bool ipv6_char(int ch)
{
	return is_hex(ch) || ch == ':' || ch == '.';
}

static size_t find_ipv6(const uint8_t *p, size_t n)
{
	size_t i = n > 0 && !ipv6_char(p[n - 1]) ? n - 1 : n;
	while (i > 0 && ipv6_char(p[i - 1]))
		i--;
	return i;
}

typedef size_t finder_fn(const uint8_t *p, size_t n);

struct builtin_pattern {
	enum detect_builtin det;
	unsigned flags;
	const char *re;
	finder_fn *find; /* NULL: compiled with HS_FLAG_SOM_LEFTMOST */
};

static const struct builtin_pattern patterns[] = {
	/* Not in the one-pass set: the part after the '@' was an engine
	 * started at every '@' plus ~1400 instructions of set-up per scan;
	 * email_runs() reports the ends at which it matches, in C. */
	{DETECT_EMAIL, CONF | GRP(G_EMAIL),
	 "[A-Za-z0-9._%+-]@(?:[A-Za-z0-9-]+\\.)+[A-Za-z]{2,24}\\b", find_email},

	/* Numbers: no pattern in the one-pass set (one per number format cost
	 * an engine each, running over every byte; even a single digit-run
	 * trigger, a pure character class, was an engine over every byte):
	 * number_runs() finds the digit runs in C and the formats run on a
	 * window around them. */
	{DETECT_PHONE, CONF | GRP(G_NUM_PHONE), "\\+[1-9][0-9 ().-]{6,20}[0-9]" END_NUM, find_e164},
	{DETECT_PHONE, CONF | GRP(G_NUM_PHONE),
	 "(?:\\([2-9][0-9]{2}\\) ?|[2-9][0-9]{2}[ .-])[2-9][0-9]{2}[ .-][0-9]{4}"
	 "(?:[^0-9-]|\\z)",
	 find_nanp},

	{DETECT_SSN, LB | CONF | GRP(G_NUM_PHONE), "[0-9]{3}-[0-9]{2}-[0-9]{4}(?:[^0-9-]|\\z)",
	 NULL},
	{DETECT_SSN, LB | CONF | GRP(G_NUM_PHONE), "[0-9]{3} [0-9]{2} [0-9]{4}" END_NUM, NULL},
	{DETECT_SSN, CI | CONF | GRP(G_NUM_PHONE),
	 "(?:ssn|social\\s+security(?:\\s+(?:number|no\\.?|#))?|ss#)[^0-9\\n]{0,20}[0-9]{"
	 "9}" END_NUM,
	 find_ssn_digits},

	{DETECT_CARD, LB | CONF | GRP(G_NUM_CARD),
	 "(?:4[0-9]{3}|5[1-5][0-9]{2}|2[2-7][0-9]{2}|6(?:011|5[0-9]{2}|4[4-9][0-9]|22[0-9])|"
	 "35[0-9]{2})(?:[ -]?[0-9]{4}){3}" END_NUM,
	 NULL},
	{DETECT_CARD, LB | CONF | GRP(G_NUM_CARD), "4[0-9]{12}" END_NUM, NULL},
	{DETECT_CARD, LB | CONF | GRP(G_NUM_CARD),
	 "3[47][0-9]{2}[ -]?[0-9]{6}[ -]?[0-9]{5}" END_NUM, NULL},
	{DETECT_CARD, LB | CONF | GRP(G_NUM_CARD),
	 "3(?:0[0-5]|[689][0-9])[0-9][ -]?[0-9]{6}[ -]?[0-9]{4}" END_NUM, NULL},

	{DETECT_IBAN, LB | CONF | GRP(G_NUM_IBAN),
	 "[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\\b", NULL},

	{DETECT_IPV4, LB | CONF | GRP(G_NUM_IP),
	 "(?:[0-9]{1,3}\\.){3}[0-9]{1,3}(?:[^0-9A-Za-z.]|\\.[^0-9A-Za-z]|\\.?\\z)", NULL},

	/* IPv6 without an IPv4 tail: not in the one-pass set either (the
	 * first, no literal at all, was an engine over every byte and ~1500
	 * instructions of set-up per scan); colon_runs() reports the ends at
	 * which they match, in C. */
	{DETECT_IPV6, CONF | GRP(G_IPV6), "(?::[0-9A-Fa-f]{1,4}){7}(?:[^0-9A-Za-z_:.]|\\z)",
	 find_ipv6},
	{DETECT_IPV6, CONF | GRP(G_IPV6), "::[0-9A-Fa-f:]*(?:[^0-9A-Za-z_:.]|\\z)", find_ipv6},
	{DETECT_IPV6, CONF | GRP(G_NUM_IP),
	 ":(?:[0-9]{1,3}\\.){3}[0-9]{1,3}(?:[^0-9A-Za-z_:.]|\\z)", find_ipv6},

	{DETECT_AWS_KEY, LB, "(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\\b", NULL},

	{DETECT_GITHUB_TOKEN, LB, "(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36}\\b", NULL},
	{DETECT_GITHUB_TOKEN, LB, "github_pat_[A-Za-z0-9_]{82}\\b", NULL},

	{DETECT_STRIPE_KEY, LB, "(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{24,99}\\b", NULL},

	{DETECT_SLACK_TOKEN, LB,
	 "xox[abposr]-[A-Za-z0-9]+(?:-[A-Za-z0-9]+){1,5}(?:[^A-Za-z0-9-]|\\z)", NULL},
	{DETECT_SLACK_TOKEN, 0,
	 "https://hooks\\.slack\\.com/services/T[A-Z0-9]{6,12}/B[A-Z0-9]{6,12}/[A-Za-z0-9]{20,32}"
	 "\\b",
	 NULL},

	{DETECT_JWT, LB,
	 "eyJ[A-Za-z0-9_-]{6,}\\.eyJ[A-Za-z0-9_-]{6,}\\.[A-Za-z0-9_-]*"
	 "(?:[^A-Za-z0-9_.-]|\\.(?:[^A-Za-z0-9_-]|\\z)|\\z)",
	 NULL},

	{DETECT_PEM_KEY, 0,
	 "-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----[A-Za-z0-9+/=\\s:,.\\\\-]+"
	 "-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----",
	 NULL},

	{DETECT_API_KEY, LB, "sk-[A-Za-z0-9_-]{20,}(?:[^A-Za-z0-9_-]|\\z)", NULL},

	/* Prompt injection: English phrases full of common words, which no
	 * literal prefilter can make cheap. The one-pass database holds only
	 * TRIG patterns (words every phrase of the family must contain; the
	 * multi-word ones take any whitespace, at ~20 % of the one-pass set's
	 * speed, so that "no  longer" is no evasion); the CONF patterns run on
	 * the bytes around a trigger. */
	{DETECT_INJ_OVERRIDE, CI | TRIG | CTRIG | GRP(G_OVERRIDE),
	 "ignore|disregard|forget|override|bypass|follow|obey", NULL},
	{DETECT_INJ_OVERRIDE, CI | LB | CONF | GRP(G_OVERRIDE),
	 "(?:ignore|disregard|forget|override|bypass)\\s+"
	 "(?:(?:all|any|every|each|the|your|my|of|these|those|this)\\s+){0,3}"
	 "(?:previous|prior|above|earlier|preceding|original|initial|system|safety)\\s+"
	 "(?:instructions?|prompts?|rules|directives?|guidelines|guardrails|constraints)\\b",
	 NULL},
	{DETECT_INJ_OVERRIDE, CI | LB | CONF | GRP(G_OVERRIDE),
	 "(?:do\\s+not|don't|stop)\\s+(?:follow(?:ing)?|obey(?:ing)?)\\s+"
	 "(?:(?:all|any|the|your)\\s+)?(?:previous|prior|original|initial|system|above)\\s+"
	 "(?:instructions?|rules|prompts?|guidelines)\\b",
	 NULL},
	{DETECT_INJ_OVERRIDE, CI | LB | CONF | GRP(G_OVERRIDE),
	 "(?:ignore|disregard|forget)\\s+(?:(?:everything|all|anything)\\s+(?:above|before|prior|"
	 "previously|you\\s+(?:were|have\\s+been)\\s+told)|all\\s+of\\s+the\\s+above)\\b",
	 NULL},

	{DETECT_INJ_EXTRACT, CI | TRIG | CTRIG | GRP(G_EXTRACT), "prompt|instructions|repeat", NULL},
	{DETECT_INJ_EXTRACT, CI | LB | CONF | GRP(G_EXTRACT),
	 "(?:reveal|show|print|repeat|output|display|dump|leak|expose|share|recite|tell|give|"
	 "write\\s+out|spell\\s+out)\\s+(?:me\\s+|us\\s+)?(?:all\\s+of\\s+)?your\\s+"
	 "(?:(?:full|entire|exact|complete|original|hidden|initial|secret|internal|confidential|"
	 "real|system)\\s+){0,2}"
	 "(?:system\\s+prompt|prompt|pre-?prompt|instructions)\\b",
	 NULL},
	{DETECT_INJ_EXTRACT, CI | LB | CONF | GRP(G_EXTRACT),
	 "(?:reveal|show|print|repeat|output|display|dump|leak|expose|share|recite|tell|give|"
	 "write\\s+out|spell\\s+out)\\s+(?:me\\s+|us\\s+)?(?:all\\s+of\\s+)?the\\s+"
	 "(?:(?:full|entire|exact|complete)\\s+)?"
	 "(?:system\\s+prompt|hidden\\s+prompt|instructions\\s+you\\s+(?:were|have\\s+been)\\s+"
	 "given|"
	 "(?:hidden|secret|confidential|internal|original)\\s+(?:system\\s+)?instructions)\\b",
	 NULL},
	{DETECT_INJ_EXTRACT, CI | LB | CONF | GRP(G_EXTRACT),
	 "repeat\\s+(?:all\\s+|everything\\s+|the\\s+(?:text|words|content)\\s+)"
	 "(?:above|before\\s+this)\\b",
	 NULL},
	{DETECT_INJ_EXTRACT, CI | LB | CONF | GRP(G_EXTRACT),
	 "(?:what|which)\\s+(?:were|are)\\s+your\\s+(?:original|initial|first|system|hidden)\\s+"
	 "(?:instructions|prompt)\\b",
	 NULL},

	{DETECT_INJ_ROLE, CI | TRIG | CTRIG | GRP(G_ROLE),
	 "longer|unrestricted|unfiltered|uncensored|jailbr|evil|amoral|pretend|anything|free|"
	 "without|dan\\s+mode|now\\s+(?:dan|stan|dude|aim)",
	 NULL},
	{DETECT_INJ_ROLE, CI | LB | CONF | GRP(G_ROLE),
	 "you\\s+are\\s+(?:now\\s+)?(?:no\\s+longer\\s+(?:an?\\s+)?(?:ai|assistant|language\\s+"
	 "model|bound|restricted|chatgpt|claude)\\b|(?:an?\\s+)?(?:unrestricted|unfiltered|"
	 "uncensored|jailbroken|evil|amoral)\\s+(?:ai|assistant|chatbot|model|version)\\b)",
	 NULL},
	{DETECT_INJ_ROLE, CI | LB | CONF | GRP(G_ROLE),
	 "you\\s+are\\s+now\\s+(?:dan|stan|dude|aim)\\b", NULL},
	{DETECT_INJ_ROLE, CI | LB | CONF | GRP(G_ROLE),
	 "(?:act|behave|respond|answer)\\s+(?:as|like)\\s+(?:if\\s+you\\s+(?:are|were)\\s+)?"
	 "(?:an?\\s+)?(?:unrestricted|unfiltered|uncensored|jailbroken|evil|amoral)\\b",
	 NULL},
	{DETECT_INJ_ROLE, CI | LB | CONF | GRP(G_ROLE),
	 "pretend\\s+(?:to\\s+be|you\\s+are|that\\s+you\\s+are)\\s+(?:[a-z-]+\\s+){0,5}"
	 "(?:without|with\\s+no|free\\s+of)\\s+(?:any\\s+)?(?:restrictions|filters|rules|limits|"
	 "limitations|guidelines|ethics|morals|censorship)\\b",
	 NULL},
	{DETECT_INJ_ROLE, CI | LB | CONF | GRP(G_ROLE),
	 "(?:jailbreak|dan|unrestricted)\\s+mode\\s+(?:is\\s+)?(?:now\\s+)?"
	 "(?:enabled|activated|on|engaged)\\b",
	 NULL},
	{DETECT_INJ_ROLE, CI | LB | CONF | GRP(G_ROLE),
	 "dan\\W{0,3}\\s*(?:which\\s+)?(?:stands\\s+for|means)\\s+\"?do\\s+anything\\s+now\\b|"
	 "do\\s+anything\\s+now\\W{0,3}\\s*\\(?dan\\b",
	 NULL},
	{DETECT_INJ_ROLE, CI | LB | CONF | GRP(G_ROLE),
	 "(?:no\\s+longer\\s+bound\\s+by|free\\s+(?:from|of)\\s+all)\\s+(?:any\\s+|your\\s+|the\\s+"
	 ")?"
	 "(?:rules|guidelines|restrictions|policies|openai|anthropic)\\b",
	 NULL},
	{DETECT_INJ_ROLE, CI | LB | CONF | GRP(G_ROLE),
	 "from\\s+now\\s+on,?\\s+you\\s+(?:are|will\\s+be|will\\s+act\\s+as|must\\s+act\\s+as)\\s+"
	 "(?:[a-z-]+\\s+){0,3}(?:unrestricted|unfiltered|uncensored|jailbroken|evil|"
	 "without\\s+(?:any\\s+)?(?:restrictions|rules|filters))\\b",
	 NULL},

	{DETECT_INJ_DELIMITER, CI,
	 "<\\|(?:im_start|im_end|im_sep|system|assistant|user|endoftext|begin_of_text|"
	 "start_header_id|end_header_id|eot_id)\\|>",
	 NULL},
	{DETECT_INJ_DELIMITER, 0, "\\[/?INST\\]|<</?SYS>>", NULL},
	{DETECT_INJ_DELIMITER, CI | TRIG | CTRIG | GRP(G_DELIMITER),
	 "system:|system]|system>|system\\*\\*|system :|assistant:|assistant]|assistant>|"
	 "assistant\\*\\*|assistant :|developer:|developer]|developer>|developer\\*\\*|"
	 "--- end|---end|--- begin|---begin|--- start|=== end|===end|=== begin|=== start|"
	 "### end|###end|### begin|### start|\\*\\*\\* end|\\*\\*\\* begin",
	 NULL},
	{DETECT_INJ_DELIMITER, CI | CONF | GRP(G_DELIMITER),
	 "(?:^|\\n)[ \\t]*(?:#{1,3}[ \\t]*)?(?:\\[|<|\\*\\*)?(?:system|assistant|developer)"
	 "(?:\\]|>|\\*\\*)?[ \\t]*:[ \\t]*(?:ignore|disregard|forget|override|new\\s+instructions|"
	 "you\\s+(?:must|will|are\\s+now|have\\s+no))\\b",
	 NULL},
	{DETECT_INJ_DELIMITER, CI | CONF | GRP(G_DELIMITER),
	 "(?:-{3,}|={3,}|#{3,}|\\*{3,})[ \\t]*(?:end|begin|start)\\s+(?:of\\s+)?(?:the\\s+)?"
	 "(?:system\\s+prompt|(?:system\\s+|original\\s+|new\\s+)?instructions|system\\s+message)"
	 "\\b",
	 NULL},

	{DETECT_INJ_ENCODED, CI | TRIG | CTRIG | GRP(G_ENCODED),
	 "decode|decrypt|deobfuscate|unscramble|encoded|encrypted", NULL},
	{DETECT_INJ_ENCODED, CI | LB | CONF | GRP(G_ENCODED),
	 "(?:decode|decrypt|deobfuscate|unscramble)\\s+(?:(?:this|the\\s+following|it|the)\\s+)?"
	 "(?:(?:base64|b64|hex|rot-?13|binary|morse|caesar)\\s+)?(?:(?:string|text|message|"
	 "payload|blob)\\s+)?(?:below\\s+)?(?:and|then|,)\\s*(?:then\\s+)?(?:execute|follow|run|"
	 "obey|"
	 "do|carry\\s+out|act\\s+on|perform|comply\\s+with)\\b",
	 NULL},
	{DETECT_INJ_ENCODED, CI | LB | CONF | GRP(G_ENCODED),
	 "(?:execute|follow|obey|run)\\s+(?:the\\s+)?(?:decoded|encoded)\\s+"
	 "(?:instructions?|commands?|prompt|text|message)\\b",
	 NULL},
	{DETECT_INJ_ENCODED, CI | LB | CONF | GRP(G_ENCODED),
	 "(?:base64|b64|rot-?13|hex)[- ]?(?:encoded|encrypted)\\s+(?:instructions?|prompt)\\b",
	 NULL},
};

#define N_BUILTIN_PATTERNS (sizeof(patterns) / sizeof(patterns[0]))

/* The CTRIG patterns as words, for trig_words(): every end at which one of
 * those patterns matches is the end of one of these (caseless: letters in
 * either case, other bytes exactly) and, for the \\s+ phrases, the words
 * before it: "dan\\s+mode" is "mode" after "dan" and whitespace,
 * "now\\s+(?:dan|stan|dude|aim)" the last word after "now" and whitespace.
 * Keep this list and those patterns in step (the cross-check in
 * detect_check_number_matchers() compares them).
 * fp: where the word's 4-byte gram starts, the one the filter looks for
 * (-1: the whitespace byte before the word); bucket: which nibble tables it
 * shares. Both only decide the speed, not what is found: they were chosen
 * for grams and buckets rare in prompts and English prose. */
enum { TW_PLAIN = 0, TW_AFTER_DAN, TW_AFTER_NOW, TW_CASE, TW_CASE_ANY4 };
static const struct trig_word {
	const char *s;
	uint8_t grp;
	int8_t fp;
	uint8_t bucket, kind;
} trig_words[] = {
	/* G_NONE: the literals every pattern of the one-pass set starts with
	 * (TW_CASE: as written; TW_CASE_ANY4: then one of [A-Za-z0-9_-]).
	 * A block scan without them (and without user patterns) skips
	 * Hyperscan: it could report nothing. */
	{"AKIA", G_NONE, 0, 15, TW_CASE},
	{"ASIA", G_NONE, 0, 9, TW_CASE},
	{"ABIA", G_NONE, 0, 15, TW_CASE},
	{"ACCA", G_NONE, 0, 10, TW_CASE},
	{"ghp_", G_NONE, 0, 1, TW_CASE},
	{"gho_", G_NONE, 0, 13, TW_CASE},
	{"ghu_", G_NONE, 0, 1, TW_CASE},
	{"ghs_", G_NONE, 0, 1, TW_CASE},
	{"ghr_", G_NONE, 0, 1, TW_CASE},
	{"github_pat_", G_NONE, 0, 4, TW_CASE},
	{"sk_live_", G_NONE, 0, 3, TW_CASE},
	{"sk_test_", G_NONE, 0, 3, TW_CASE},
	{"rk_live_", G_NONE, 0, 15, TW_CASE},
	{"rk_test_", G_NONE, 0, 15, TW_CASE},
	{"xoxa-", G_NONE, 1, 5, TW_CASE},
	{"xoxb-", G_NONE, 1, 5, TW_CASE},
	{"xoxp-", G_NONE, 1, 1, TW_CASE},
	{"xoxo-", G_NONE, 1, 13, TW_CASE},
	{"xoxs-", G_NONE, 1, 1, TW_CASE},
	{"xoxr-", G_NONE, 1, 1, TW_CASE},
	{"https://hooks.slack.com/services/T", G_NONE, 6, 5, TW_CASE},
	{"-----BEGIN ", G_NONE, 3, 7, TW_CASE},
	{"[INST]", G_NONE, 2, 6, TW_CASE},
	{"[/INST]", G_NONE, 0, 2, TW_CASE},
	{"<<SYS>>", G_NONE, 0, 9, TW_CASE},
	{"<</SYS>>", G_NONE, 0, 6, TW_CASE},
	{"eyJ", G_NONE, 0, 12, TW_CASE_ANY4},
	{"sk-", G_NONE, 0, 3, TW_CASE_ANY4},
	{"<|im", G_NONE, 0, 9, TW_PLAIN},
	{"<|sy", G_NONE, 0, 9, TW_PLAIN},
	{"<|as", G_NONE, 0, 9, TW_PLAIN},
	{"<|us", G_NONE, 0, 9, TW_PLAIN},
	{"<|en", G_NONE, 0, 8, TW_PLAIN},
	{"<|be", G_NONE, 0, 8, TW_PLAIN},
	{"<|st", G_NONE, 0, 9, TW_PLAIN},
	{"<|eo", G_NONE, 0, 8, TW_PLAIN},
	/* the CTRIG patterns */
	{"ignore", G_OVERRIDE, 1, 13, TW_PLAIN},
	{"disregard", G_OVERRIDE, 2, 8, TW_PLAIN},
	{"forget", G_OVERRIDE, 1, 5, TW_PLAIN},
	{"override", G_OVERRIDE, 4, 15, TW_PLAIN},
	{"bypass", G_OVERRIDE, 0, 4, TW_PLAIN},
	{"follow", G_OVERRIDE, 0, 11, TW_PLAIN},
	{"obey", G_OVERRIDE, 0, 5, TW_PLAIN},
	{"prompt", G_EXTRACT, 2, 1, TW_PLAIN},
	{"instructions", G_EXTRACT, 4, 12, TW_PLAIN},
	{"repeat", G_EXTRACT, 1, 12, TW_PLAIN},
	{"longer", G_ROLE, 1, 13, TW_PLAIN},
	{"unrestricted", G_ROLE, 1, 5, TW_PLAIN},
	{"unfiltered", G_ROLE, 1, 2, TW_PLAIN},
	{"uncensored", G_ROLE, 6, 5, TW_PLAIN},
	{"jailbr", G_ROLE, 2, 7, TW_PLAIN},
	{"evil", G_ROLE, 0, 2, TW_PLAIN},
	{"amoral", G_ROLE, 2, 5, TW_PLAIN},
	{"pretend", G_ROLE, 2, 12, TW_PLAIN},
	{"anything", G_ROLE, 1, 4, TW_PLAIN},
	{"free", G_ROLE, 0, 5, TW_PLAIN},
	{"without", G_ROLE, 2, 7, TW_PLAIN},
	{"mode", G_ROLE, -1, 3, TW_AFTER_DAN},
	{"dan", G_ROLE, -1, 0, TW_AFTER_NOW},
	{"stan", G_ROLE, -1, 6, TW_AFTER_NOW},
	{"dude", G_ROLE, 0, 12, TW_AFTER_NOW},
	{"aim", G_ROLE, -1, 0, TW_AFTER_NOW},
	{"system:", G_DELIMITER, 1, 9, TW_PLAIN},
	{"system]", G_DELIMITER, 1, 9, TW_PLAIN},
	{"system>", G_DELIMITER, 1, 9, TW_PLAIN},
	{"system**", G_DELIMITER, 4, 11, TW_PLAIN},
	{"system :", G_DELIMITER, 4, 11, TW_PLAIN},
	{"assistant:", G_DELIMITER, 6, 4, TW_PLAIN},
	{"assistant]", G_DELIMITER, 6, 4, TW_PLAIN},
	{"assistant>", G_DELIMITER, 6, 4, TW_PLAIN},
	{"assistant**", G_DELIMITER, 6, 4, TW_PLAIN},
	{"assistant :", G_DELIMITER, 6, 4, TW_PLAIN},
	{"developer:", G_DELIMITER, 4, 1, TW_PLAIN},
	{"developer]", G_DELIMITER, 4, 1, TW_PLAIN},
	{"developer>", G_DELIMITER, 4, 1, TW_PLAIN},
	{"developer**", G_DELIMITER, 4, 1, TW_PLAIN},
	{"--- end", G_DELIMITER, 2, 8, TW_PLAIN},
	{"---end", G_DELIMITER, 1, 8, TW_PLAIN},
	{"--- begin", G_DELIMITER, 2, 8, TW_PLAIN},
	{"---begin", G_DELIMITER, 1, 7, TW_PLAIN},
	{"--- start", G_DELIMITER, 2, 10, TW_PLAIN},
	{"=== end", G_DELIMITER, 2, 8, TW_PLAIN},
	{"===end", G_DELIMITER, 1, 8, TW_PLAIN},
	{"=== begin", G_DELIMITER, 2, 8, TW_PLAIN},
	{"=== start", G_DELIMITER, 3, 6, TW_PLAIN},
	{"### end", G_DELIMITER, 2, 8, TW_PLAIN},
	{"###end", G_DELIMITER, 0, 10, TW_PLAIN},
	{"### begin", G_DELIMITER, 2, 8, TW_PLAIN},
	{"### start", G_DELIMITER, 2, 10, TW_PLAIN},
	{"*** end", G_DELIMITER, 1, 11, TW_PLAIN},
	{"*** begin", G_DELIMITER, 1, 11, TW_PLAIN},
	{"decode", G_ENCODED, 0, 14, TW_PLAIN},
	{"decrypt", G_ENCODED, 0, 14, TW_PLAIN},
	{"deobfuscate", G_ENCODED, 1, 2, TW_PLAIN},
	{"unscramble", G_ENCODED, 1, 14, TW_PLAIN},
	{"encoded", G_ENCODED, 1, 14, TW_PLAIN},
	{"encrypted", G_ENCODED, 4, 6, TW_PLAIN},
};

#define N_TRIG_WORDS (sizeof(trig_words) / sizeof(trig_words[0]))
/* Longest word, plus the byte before a TW_AFTER_* word or after a
 * TW_CASE_ANY4 one. */
#define TW_SPAN 36
_Static_assert(N_TRIG_WORDS <= 128, "trig_tab.cmp has a slot per word");

static bool is_letter(int ch)
{
	return (unsigned)(ch | 0x20) - 'a' < 26u;
}

static uint32_t tw_fold(const uint8_t *p)
{
	uint32_t x;
	memcpy(&x, p, 4);
	return x | 0x20202020u;
}

static unsigned tw_hash(uint32_t gram)
{
	return (gram * 0x9e3779b1u) >> (32 - TW_HASH_BITS);
}

static bool any4_byte(int ch)
{
	return is_alnum(ch) || ch == '_' || ch == '-';
}

/* The 4-byte grams of word w (several when a byte of it is a class):
 * byte j of gram k into g[k][j]. Returns how many. */
static unsigned tw_grams(const struct trig_word *w, uint8_t g[40][4])
{
	static const char ws[] = " \t\n\v\f\r";
	static const char any4[] = "abcdefghijklmnopqrstuvwxyz0123456789_-"; /* folded */
	unsigned n = 0;

	if (w->fp >= 0 && w->kind != TW_CASE_ANY4) {
		memcpy(g[0], w->s + w->fp, 4);
		return 1;
	}
	for (const char *x = w->fp < 0 ? ws : any4; *x; x++, n++) {
		if (w->fp < 0) {
			g[n][0] = (uint8_t)*x;
			memcpy(g[n] + 1, w->s, 3);
		} else {
			memcpy(g[n], w->s, 3);
			g[n][3] = (uint8_t)*x;
		}
	}
	return n;
}

static void tw_build(struct trig_tab *t)
{
	unsigned n_ent = 0;

	memset(t, 0, sizeof(*t));
	for (unsigned i = 0; i < N_TRIG_WORDS; i++) {
		const struct trig_word *w = &trig_words[i];
		uint8_t g[40][4];
		unsigned ng = tw_grams(w, g);
		if (n_ent + ng > TW_MAX_ENT)
			abort(); /* a static table that outgrew TW_MAX_ENT */
		for (unsigned k = 0; k < ng; k++) {
			for (unsigned j = 0; j < 3; j++) {
				uint8_t ch = g[k][j];
				bool cs = w->kind >= TW_CASE;
				if (ch >= 0x80)
					abort(); /* the AVX2 filter looks such bytes up as 0 */
				for (unsigned v = 0; v < 2; v++) {
					uint8_t b = v ? ch ^ 0x20 : ch;
					if (v && (!is_letter(ch) || cs))
						break;
					unsigned set = w->bucket >> 3, bit = 1u << (w->bucket & 7);
					t->lo[set][j][b & 15] |= bit;
					t->lo[set][j][16 + (b & 15)] |= bit;
					t->hi[set][j][b >> 4] |= bit;
					t->hi[set][j][16 + (b >> 4)] |= bit;
				}
			}
			uint32_t gram = tw_fold(g[k]);
			unsigned h = tw_hash(gram);
			t->ent[n_ent].gram = gram;
			t->ent[n_ent].word = (uint8_t)i;
			t->ent[n_ent].len = (uint8_t)strlen(w->s);
			t->ent[n_ent].next = t->head[h];
			t->head[h] = (uint16_t)++n_ent;
		}
	}
	for (unsigned j = 0; j < 3; j++)
		for (unsigned b = 0; b < 256; b++)
			t->byte[j][b] = (t->lo[0][j][b & 15] & t->hi[0][j][b >> 4]) |
					(t->lo[1][j][b & 15] & t->hi[1][j][b >> 4]) << 8;
	for (unsigned i = 0; i < N_TRIG_WORDS; i++) {
		const struct trig_word *w = &trig_words[i];
		uint8_t h[8] = {0}, f[8] = {0}, m[8] = {0};
		for (size_t k = 0; k < 8 && w->s[k]; k++) {
			h[k] = (uint8_t)w->s[k];
			f[k] = w->kind < TW_CASE && is_letter(w->s[k]) ? 0x20 : 0;
			m[k] = 0xff;
		}
		memcpy(&t->cmp[i].head, h, 8);
		memcpy(&t->cmp[i].fold, f, 8);
		memcpy(&t->cmp[i].mask, m, 8);
	}
}

/* ---- db ------------------------------------------------------------------------ */

static bool valid_user_name(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n >= DETECT_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || is_digit(s[i]) || s[i] == '_'))
			return false;
	return true;
}

void detect_db_free(struct detect_db *db)
{
	if (!db)
		return;
	hs_free_database(db->block_db);
	hs_free_database(db->stream_db);
	for (unsigned i = 0; i < G_COUNT; i++) {
		hs_free_database(db->confirm_db[i]);
		hs_free_database(db->confirm_som_db[i]);
	}
	free(db->det);
	free(db->pat_det);
	EVP_MD_CTX_free(db->hm_in);
	EVP_MD_CTX_free(db->hm_out);
	if (db->key) {
		OPENSSL_cleanse(db->key, db->key_len);
		free(db->key);
	}
	free(db);
}

static int compile_set(struct detect_db *db, const char *const *res, const unsigned *flags,
		       const unsigned *ids, unsigned n, unsigned mode, hs_database_t **out,
		       char *err, size_t errlen)
{
	hs_compile_error_t *cerr = NULL;
	if (hs_compile_multi(res, flags, ids, n, mode, NULL, out, &cerr) == HS_SUCCESS)
		return 0;
	if (errlen) {
		if (cerr && cerr->expression >= 0 && (unsigned)cerr->expression < n)
			snprintf(err, errlen, "detector '%s': %s",
				 db->det[db->pat_det[ids[cerr->expression]]].name, cerr->message);
		else
			snprintf(err, errlen, "detectors: %s",
				 cerr ? cerr->message : "hyperscan compile failed");
	}
	hs_free_compile_error(cerr);
	*out = NULL;
	return -EINVAL;
}

static int check_user(const struct detect_db *db, const struct detect_user *u, unsigned idx,
		      char *err, size_t errlen)
{
	if (!u->name || !valid_user_name(u->name)) {
		snprintf(err, errlen, "detector '%s': name must be 1-%d of [a-z0-9_]",
			 u->name ? u->name : "(null)", DETECT_NAME_MAX - 1);
		return -EINVAL;
	}
	for (unsigned j = 0; j < idx; j++)
		if (!strcmp(db->det[j].name, u->name)) {
			snprintf(err, errlen, "detector '%s': name already used", u->name);
			return -EINVAL;
		}
	if (u->severity < DETECT_SEV_LOW || u->severity > DETECT_SEV_CRITICAL) {
		snprintf(err, errlen, "detector '%s': bad severity", u->name);
		return -EINVAL;
	}
	if (!u->pattern || !u->pattern[0]) {
		snprintf(err, errlen, "detector '%s': empty pattern", u->name);
		return -EINVAL;
	}
	return 0;
}

static unsigned hs_flags_of(unsigned i)
{
	if (i >= N_BUILTIN_PATTERNS)
		return HS_FLAG_SOM_LEFTMOST;
	unsigned f = patterns[i].flags & ~OUR_FLAGS;
	if (!patterns[i].find && !(patterns[i].flags & TRIG))
		f |= HS_FLAG_SOM_LEFTMOST;
	return f;
}

/* The HMAC-SHA256 inner and outer states for db->key (RFC 2104: a key
 * longer than the 64-byte block is hashed first). -1 on failure. */
static int hmac_prepare(struct detect_db *db)
{
	uint8_t k[64] = {0}, pad[64];
	unsigned kl = 0;
	int rc = -1;

	if (db->key_len > sizeof(k)) {
		if (!EVP_Digest(db->key, db->key_len, k, &kl, EVP_sha256(), NULL))
			return -1;
	} else {
		memcpy(k, db->key, db->key_len);
	}
	db->hm_in = EVP_MD_CTX_new();
	db->hm_out = EVP_MD_CTX_new();
	if (!db->hm_in || !db->hm_out)
		goto out;
	for (int i = 0; i < 64; i++)
		pad[i] = k[i] ^ 0x36;
	if (!EVP_DigestInit_ex(db->hm_in, EVP_sha256(), NULL) ||
	    !EVP_DigestUpdate(db->hm_in, pad, sizeof(pad)))
		goto out;
	for (int i = 0; i < 64; i++)
		pad[i] = k[i] ^ 0x5c;
	if (!EVP_DigestInit_ex(db->hm_out, EVP_sha256(), NULL) ||
	    !EVP_DigestUpdate(db->hm_out, pad, sizeof(pad)))
		goto out;
	rc = 0;
out:
	OPENSSL_cleanse(k, sizeof(k));
	OPENSSL_cleanse(pad, sizeof(pad));
	return rc;
}

/* The loops this CPU can run, less what REFLEX_NO_AVX2 takes away ("1":
 * no AVX2, as on an x86-64 without it; "2": no vector loop at all, as a
 * build for another arch). Read at db build, never per scan: it is for
 * tests and for an operator who suspects the vector loops. */
static unsigned simd_level(void)
{
	unsigned lvl = SIMD_NONE;
#ifdef __SSE2__
	lvl = SIMD_SSE2;
#endif
#ifdef SKIP_AVX2
	if (__builtin_cpu_supports("avx2"))
		lvl = SIMD_AVX2;
#endif
	const char *no = getenv("REFLEX_NO_AVX2");
	if (no && *no && strcmp(no, "0")) {
		unsigned cap = strcmp(no, "2") ? SIMD_SSE2 : SIMD_NONE;
		if (lvl > cap)
			lvl = cap;
	}
	return lvl;
}

int detect_db_build(const struct detect_opts *opts, struct detect_db **out, char *err,
		    size_t errlen)
{
	static const struct detect_opts none;
	const char **res = NULL;
	unsigned *flags = NULL, *ids = NULL;
	int rc = -ENOMEM;

	if (!opts)
		opts = &none;
	*out = NULL;
	if (errlen)
		err[0] = 0;
	struct detect_db *db = calloc(1, sizeof(*db));
	if (!db)
		goto fail;
	db->simd = (uint8_t)simd_level();
	db->n_det = DETECT_BUILTIN_COUNT + opts->n_user;
	db->n_pat = N_BUILTIN_PATTERNS + opts->n_user;
	db->det = calloc(db->n_det, sizeof(*db->det));
	db->pat_det = calloc(db->n_pat, sizeof(*db->pat_det));
	res = calloc(db->n_pat, sizeof(*res));
	flags = calloc(db->n_pat, sizeof(*flags));
	ids = calloc(db->n_pat, sizeof(*ids));
	if (!db->det || !db->pat_det || !res || !flags || !ids)
		goto fail;

	for (unsigned i = 0; i < DETECT_BUILTIN_COUNT; i++) {
		struct det_info *d = &db->det[i];
		snprintf(d->name, sizeof(d->name), "%s", builtins[i].name);
		snprintf(d->token, sizeof(d->token), "%s", builtins[i].token);
		d->sev = builtins[i].sev;
		d->fam = builtins[i].fam;
		d->maxlen = builtins[i].maxlen;
		d->validate = builtins[i].validate;
	}
	for (unsigned i = 0; i < opts->n_user; i++) {
		const struct detect_user *u = &opts->user[i];
		struct det_info *d = &db->det[DETECT_BUILTIN_COUNT + i];
		rc = check_user(db, u, DETECT_BUILTIN_COUNT + i, err, errlen);
		if (rc)
			goto fail;
		snprintf(d->name, sizeof(d->name), "%s", u->name);
		size_t k = 0;
		d->token[k++] = '[';
		for (const char *s = u->name; *s; s++)
			d->token[k++] = (char)toupper((unsigned char)*s);
		d->token[k++] = ']';
		d->token[k] = 0;
		d->sev = u->severity;
		d->fam = DETECT_FAMILY_USER;
		d->maxlen = DETECT_WINDOW;
	}
	unsigned n_phone = 0;
	for (unsigned i = 0; i < N_BUILTIN_PATTERNS; i++) {
		db->pat_det[i] = patterns[i].det;
		if (patterns[i].flags & CONF)
			db->group_dets[GRP_OF(patterns[i].flags)] |= 1u << patterns[i].det;
		if ((patterns[i].flags & CONF) && GRP_OF(patterns[i].flags) == G_NUM_IP)
			db->ip_pat[patterns[i].det == DETECT_IPV4 ? IP_V4 : IP_V6_TAIL] = i;
		if ((patterns[i].flags & CONF) && GRP_OF(patterns[i].flags) == G_NUM_PHONE &&
		    n_phone < PH_COUNT)
			db->phone_pat[n_phone++] = i;
		if ((patterns[i].flags & CONF) && GRP_OF(patterns[i].flags) == G_EMAIL)
			db->mail_pat = i;
		if ((patterns[i].flags & CONF) && GRP_OF(patterns[i].flags) == G_IPV6)
			db->v6_pat[patterns[i].re[0] == ':' && patterns[i].re[1] == ':'
					   ? V6_COMPRESSED
					   : V6_FULL] = i;
	}
	for (unsigned i = 0; i < opts->n_user; i++)
		db->pat_det[N_BUILTIN_PATTERNS + i] = DETECT_BUILTIN_COUNT + i;
	tw_build(&db->tw);
	for (unsigned i = 0; i < db->n_det; i++)
		if (db->det[i].maxlen > db->maxlen)
			db->maxlen = db->det[i].maxlen;

	/* The one-pass set: everything but the CONF patterns and the triggers
	 * found in C. */
	unsigned n = 0;
	for (unsigned i = 0; i < db->n_pat; i++) {
		if (i < N_BUILTIN_PATTERNS && (patterns[i].flags & (CONF | CTRIG)))
			continue;
		res[n] = i < N_BUILTIN_PATTERNS ? patterns[i].re
						: opts->user[i - N_BUILTIN_PATTERNS].pattern;
		flags[n] = hs_flags_of(i);
		if (i >= N_BUILTIN_PATTERNS && opts->user[i - N_BUILTIN_PATTERNS].caseless)
			flags[n] |= HS_FLAG_CASELESS;
		ids[n++] = i;
	}
	rc = compile_set(db, res, flags, ids, n, HS_MODE_BLOCK, &db->block_db, err, errlen);
	if (rc)
		goto fail;
	rc = compile_set(db, res, flags, ids, n, HS_MODE_STREAM | HS_MODE_SOM_HORIZON_LARGE,
			 &db->stream_db, err, errlen);
	if (rc)
		goto fail;
	for (unsigned d = 1; d < G_COUNT; d++) {
		n = 0;
		for (unsigned i = 0; i < N_BUILTIN_PATTERNS; i++) {
			if (GRP_OF(patterns[i].flags) != d || !(patterns[i].flags & CONF))
				continue;
			res[n] = patterns[i].re;
			flags[n] = (patterns[i].flags & ~OUR_FLAGS) | HS_FLAG_SINGLEMATCH;
			ids[n++] = i;
		}
		if (!n)
			continue;
		rc = compile_set(db, res, flags, ids, n, HS_MODE_BLOCK, &db->confirm_db[d], err,
				 errlen);
		if (rc)
			goto fail;
		for (unsigned k = 0; k < n; k++)
			flags[k] = (flags[k] & ~HS_FLAG_SINGLEMATCH) | HS_FLAG_SOM_LEFTMOST;
		rc = compile_set(db, res, flags, ids, n, HS_MODE_BLOCK, &db->confirm_som_db[d], err,
				 errlen);
		if (rc)
			goto fail;
	}

	if (opts->hash_key && opts->hash_key_len) {
		rc = -EINVAL;
		if (opts->hash_key_len > KEY_MAX) {
			snprintf(err, errlen, "hash key longer than %d bytes", KEY_MAX);
			goto fail;
		}
		rc = -ENOMEM;
		db->key = malloc(opts->hash_key_len);
		if (!db->key)
			goto fail;
		memcpy(db->key, opts->hash_key, opts->hash_key_len);
		db->key_len = opts->hash_key_len;
		if (hmac_prepare(db)) {
			snprintf(err, errlen, "hash key: HMAC-SHA256 set-up failed");
			goto fail;
		}
	}
	free(res);
	free(flags);
	free(ids);
	*out = db;
	return 0;

fail:
	if (rc == -ENOMEM && errlen && !err[0])
		snprintf(err, errlen, "out of memory");
	free(res);
	free(flags);
	free(ids);
	detect_db_free(db);
	return rc;
}

const char *detect_simd_name(const struct detect_db *db)
{
	return db->simd >= SIMD_AVX2 ? "avx2" : db->simd >= SIMD_SSE2 ? "sse2" : "none";
}

unsigned detect_count(const struct detect_db *db)
{
	return db->n_det;
}

int detect_lookup(const struct detect_db *db, const char *name)
{
	for (unsigned i = 0; i < db->n_det; i++)
		if (!strcmp(db->det[i].name, name))
			return (int)i;
	return -ENOENT;
}

const char *detect_name(const struct detect_db *db, unsigned id)
{
	return id < db->n_det ? db->det[id].name : "?";
}

const char *detect_token(const struct detect_db *db, unsigned id)
{
	return id < db->n_det ? db->det[id].token : "[REDACTED]";
}

enum detect_severity detect_severity_of(const struct detect_db *db, unsigned id)
{
	return id < db->n_det ? db->det[id].sev : DETECT_SEV_LOW;
}

enum detect_family detect_family_of(const struct detect_db *db, unsigned id)
{
	return id < db->n_det ? db->det[id].fam : DETECT_FAMILY_USER;
}

const char *detect_severity_name(enum detect_severity sev)
{
	switch (sev) {
	case DETECT_SEV_LOW:
		return "low";
	case DETECT_SEV_MEDIUM:
		return "medium";
	case DETECT_SEV_HIGH:
		return "high";
	case DETECT_SEV_CRITICAL:
		return "critical";
	}
	return "?";
}

const char *detect_family_name(enum detect_family fam)
{
	switch (fam) {
	case DETECT_FAMILY_PII:
		return "pii";
	case DETECT_FAMILY_SECRET:
		return "secret";
	case DETECT_FAMILY_INJECTION:
		return "injection";
	case DETECT_FAMILY_USER:
		return "user";
	}
	return "?";
}

/* ---- scratch ------------------------------------------------------------------ */

static int scratch_alloc(const struct detect_db *db, struct detect_scratch **out)
{
	struct detect_scratch *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->db = db;
	s->pend = calloc(db->n_det, sizeof(*s->pend));
	if (!s->pend) {
		free(s);
		return -ENOMEM;
	}
	*out = s;
	return 0;
}

int detect_scratch_new(const struct detect_db *db, struct detect_scratch **out)
{
	struct detect_scratch *s;
	*out = NULL;
	if (scratch_alloc(db, &s))
		return -ENOMEM;
	/* One Hyperscan scratch grown to fit both forms of the one-pass set;
	 * a second for the confirmations that run inside its callbacks. */
	if (hs_alloc_scratch(db->block_db, &s->hs) != HS_SUCCESS ||
	    hs_alloc_scratch(db->stream_db, &s->hs) != HS_SUCCESS)
		goto nomem;
	for (unsigned i = 0; i < G_COUNT; i++)
		if (db->confirm_db[i] && (hs_alloc_scratch(db->confirm_db[i], &s->hs_conf) ||
					  hs_alloc_scratch(db->confirm_som_db[i], &s->hs_conf)))
			goto nomem;
	*out = s;
	return 0;
nomem:
	detect_scratch_free(s);
	return -ENOMEM;
}

int detect_scratch_clone(const struct detect_scratch *src, struct detect_scratch **out)
{
	struct detect_scratch *s;
	*out = NULL;
	if (scratch_alloc(src->db, &s))
		return -ENOMEM;
	if (hs_clone_scratch(src->hs, &s->hs) != HS_SUCCESS ||
	    (src->hs_conf && hs_clone_scratch(src->hs_conf, &s->hs_conf) != HS_SUCCESS)) {
		detect_scratch_free(s);
		return -ENOMEM;
	}
	*out = s;
	return 0;
}

void detect_scratch_free(struct detect_scratch *s)
{
	if (!s)
		return;
	if (s->hs)
		hs_free_scratch(s->hs);
	if (s->hs_conf)
		hs_free_scratch(s->hs_conf);
	free(s->pend);
	free(s);
}

/* ---- hashing -------------------------------------------------------------------- */

static void hash_hex(const struct detect_db *db, const void *p, size_t n,
		     char out[DETECT_HASH_HEX + 1])
{
	static const char hex[] = "0123456789abcdef";
	unsigned char md[EVP_MAX_MD_SIZE], ih[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0, ihlen = 0;
	EVP_MD_CTX *c = EVP_MD_CTX_new();
	bool ok = c && db->hm_in && EVP_MD_CTX_copy_ex(c, db->hm_in) && EVP_DigestUpdate(c, p, n) &&
		  EVP_DigestFinal_ex(c, ih, &ihlen) && EVP_MD_CTX_copy_ex(c, db->hm_out) &&
		  EVP_DigestUpdate(c, ih, ihlen) && EVP_DigestFinal_ex(c, md, &mdlen) &&
		  mdlen >= DETECT_HASH_HEX / 2;
	EVP_MD_CTX_free(c);
	OPENSSL_cleanse(ih, sizeof(ih));
	if (!ok) {
		out[0] = 0;
		return;
	}
	for (int i = 0; i < DETECT_HASH_HEX / 2; i++) {
		out[2 * i] = hex[md[i] >> 4];
		out[2 * i + 1] = hex[md[i] & 15];
	}
	out[DETECT_HASH_HEX] = 0;
	OPENSSL_cleanse(md, sizeof(md));
}

int detect_hash(const struct detect_db *db, const void *p, size_t n, char out[DETECT_HASH_HEX + 1])
{
	out[0] = 0;
	if (!db->key)
		return -EINVAL;
	hash_hex(db, p, n, out);
	return out[0] ? 0 : -EIO;
}

/* ---- matching ------------------------------------------------------------------- */

static uint64_t hist_base(const struct scan_ctx *c)
{
	return c->cur_base - c->hist_len;
}

/* Stream bytes [lo, hi) as one contiguous run, or NULL when some of them have
 * left the window. The pointer is valid until the next call. */
static const uint8_t *ctx_bytes(struct scan_ctx *c, uint64_t lo, uint64_t hi)
{
	if (lo < hist_base(c) || hi > c->cur_base + c->cur_len || hi < lo)
		return NULL;
	if (lo >= c->cur_base)
		return c->cur + (lo - c->cur_base);
	if (hi <= c->cur_base)
		return c->hist + (lo - hist_base(c));
	if (hi - lo > TMP_CAP)
		return NULL;
	size_t from_hist = (size_t)(c->cur_base - lo);
	memcpy(c->scr->tmp, c->hist + (lo - hist_base(c)), from_hist);
	memcpy(c->scr->tmp + from_hist, c->cur, (size_t)(hi - c->cur_base));
	return c->scr->tmp;
}

/* Deliver [start, end) of det. */
static int deliver(struct scan_ctx *c, unsigned det, uint64_t start, uint64_t end, unsigned flags)
{
	struct pend *p = &c->pend[det];
	struct detect_match m = {
		.id = det,
		.severity = c->db->det[det].sev,
		.start = start,
		.end = end,
		.flags = flags,
	};
	if (end > p->done) {
		p->done_start = start;
		p->done = end;
		c->pend_bits |= 1ull << (det & 63);
	}
	if (c->db->key && !(flags & DETECT_MATCH_UNVALIDATED)) {
		const uint8_t *b = ctx_bytes(c, start, end);
		if (b)
			hash_hex(c->db, b, (size_t)(end - start), m.hash);
	}
	if (c->on_match && c->on_match(c->arg, &m)) {
		c->stopped = true;
		return 1;
	}
	return 0;
}

static int emit(struct scan_ctx *c, unsigned det, struct pend *p)
{
	p->live = false;
	return deliver(c, det, p->start, p->end, p->flags);
}

/* One raw match of pattern pat ending at `to` (from: its start when the
 * pattern tracks it). Find the start, check the left boundary, validate,
 * merge with the detector's pending match. Nonzero: stop the scan. */
static int candidate(struct scan_ctx *c, unsigned pat, uint64_t from, uint64_t to)
{
	const struct detect_db *db = c->db;
	unsigned det = db->pat_det[pat];
	const struct det_info *d = &db->det[det];
	const struct builtin_pattern *bp = pat < N_BUILTIN_PATTERNS ? &patterns[pat] : NULL;
	unsigned flags = 0;

	if (det < 64 && !(c->want >> det & 1))
		return 0; /* not asked for: no validation, no delivery */

	if (bp && bp->find) {
		uint64_t want = to > d->maxlen + 1 ? to - d->maxlen - 1 : 0;
		uint64_t lo = want < hist_base(c) ? hist_base(c) : want;
		const uint8_t *b = ctx_bytes(c, lo, to);
		if (!b)
			return 0;
		size_t st = bp->find(b, (size_t)(to - lo));
		/* A run reaching the edge of what we can see is longer than any
		 * candidate of this detector. */
		if (st == NO_START || (st == 0 && lo > 0))
			return 0;
		from = lo + st;
	}
	if (to <= from)
		return 0;
	if (bp && (bp->flags & LB) && from > 0) {
		const uint8_t *b = ctx_bytes(c, from - 1, from + 1);
		if (b && is_word(b[0]) && is_word(b[1]))
			return 0;
	}
	uint64_t s = from, e = to;
	if (d->validate) {
		struct cand cd = {.prev = -1};
		uint64_t back = from < LEFT_CTX ? from : LEFT_CTX;
		if (from - back < hist_base(c))
			back = from > hist_base(c) ? from - hist_base(c) : 0;
		const uint8_t *b = ctx_bytes(c, from - back, to);
		if (b) {
			cd.p = b + back;
			cd.nleft = (size_t)back;
			cd.prev = back ? cd.p[-1] : -1;
		}
		if (cd.p) {
			cd.n = (size_t)(to - from);
			cd.lo = 0;
			cd.hi = cd.n;
			if (!d->validate(&cd) || cd.hi <= cd.lo) {
				/* A longer token from the same start that fails
				 * ("foo@bar.baz.js") voids its valid prefix. */
				struct pend *p = &c->pend[det];
				if (p->live && p->raw_start == from && to > p->raw_end)
					p->live = false;
				return 0;
			}
			s = from + cd.lo;
			e = from + cd.hi;
		} else {
			flags = DETECT_MATCH_UNVALIDATED;
		}
	}

	struct pend *p = &c->pend[det];
	if (s >= p->done_start && e <= p->done)
		return 0; /* already delivered (two windows found it) */
	/* Found by a confirmation window after a later match of the same
	 * detector was found directly (an IPv6 with an IPv4 tail, a fake
	 * "system:" turn): deliver it on its own, out of order. */
	if ((p->live && e <= p->start) || (!p->live && e <= p->done_start))
		return deliver(c, det, s, e, flags);
	if (p->live && s < p->end) {
		if (s < p->start)
			p->start = s;
		if (e > p->end)
			p->end = e;
		if (from == p->raw_start && to > p->raw_end)
			p->raw_end = to;
		p->flags |= flags;
		return 0;
	}
	if (p->live && emit(c, det, p))
		return 1;
	p->start = s;
	p->end = e;
	p->raw_start = from;
	p->raw_end = to;
	p->flags = flags;
	p->live = true;
	c->any_pend = true;
	c->pend_bits |= 1ull << (det & 63);
	return 0;
}

struct confirm_hits {
	unsigned n;
	uint64_t lo;
	unsigned pat[CONFIRM_HITS];
	uint64_t from[CONFIRM_HITS], to[CONFIRM_HITS];
};

static int on_confirm_hit(unsigned pat, unsigned long long from, unsigned long long to,
			  unsigned hs_flags, void *arg)
{
	struct confirm_hits *h = arg;
	if (h->n == CONFIRM_HITS)
		return 1;
	h->pat[h->n] = pat;
	h->from[h->n] = h->lo + from;
	h->to[h->n] = h->lo + to;
	h->n++;
	return 0;
}

static int on_any_hit(unsigned pat, unsigned long long from, unsigned long long to,
		      unsigned hs_flags, void *arg)
{
	return 1;
}

#ifdef SKIP_AVX2
/* Digit bits of the 64 bytes at a: a digit plus 0x46 is 0x76..0x7f, the
 * only bytes that become greater than 0x75 as signed bytes. */
__attribute__((target("avx2"))) static inline uint64_t digit_mask_avx2(__m256i x, __m256i y)
{
	const __m256i up = _mm256_set1_epi8(0x46), top = _mm256_set1_epi8(0x75);
	__m256i dx = _mm256_cmpgt_epi8(_mm256_add_epi8(x, up), top);
	__m256i dy = _mm256_cmpgt_epi8(_mm256_add_epi8(y, up), top);
	return (uint32_t)_mm256_movemask_epi8(dx) | (uint64_t)(uint32_t)_mm256_movemask_epi8(dy)
							    << 32;
}

/* Digit bits of w[0, n) into words[], 64 bytes a step; returns where the
 * bytes left (fewer than 64) begin. */
__attribute__((target("avx2"))) static size_t digit_words_avx2(const uint8_t *w, size_t n,
							       uint64_t *words)
{
	size_t i = 0;
	for (; i + 64 <= n; i += 64)
		words[i / 64] = digit_mask_avx2(_mm256_loadu_si256((const __m256i *)(w + i)),
						_mm256_loadu_si256((const __m256i *)(w + i + 32)));
	return i;
}
#endif

/* Window matchers act only where a digit is followed by a non-digit (or
 * the end): every IP and phone pattern ends so, and a test per byte cost
 * ~15 instructions a byte of window. Bit k of ends[j]: w[64j + k] is
 * such a digit. Returns the number of words, SIZE_MAX when the window is
 * longer than a merged confirmation range can be. */
#define ENDS_WORDS ((CONFIRM_RANGE_MAX + 63) / 64)

static size_t digit_end_words(const uint8_t *w, size_t n, uint64_t *ends, unsigned simd)
{
	size_t nw = (n + 63) / 64, i = 0;
	if (nw > ENDS_WORDS)
		return SIZE_MAX;
	memset(ends, 0, nw * sizeof(*ends));
#ifdef SKIP_AVX2
	if (simd >= SIMD_AVX2)
		i = digit_words_avx2(w, n, ends);
#endif
	for (; i < n; i++)
		if (is_digit(w[i]))
			ends[i / 64] |= 1ull << (i % 64);
	for (size_t j = 0; j < nw; j++) {
		uint64_t next = j + 1 < nw ? ends[j + 1] & 1 : 0;
		ends[j] &= ~(ends[j] >> 1 | next << 63);
	}
	return nw;
}

/* The G_NUM_IP CONF patterns, matched in C over w[0, n) (a window; \\z is
 * its end) exactly as their Hyperscan block scan reports them, in end
 * order: the IPv4 one with its leftmost start, the IPv6-with-IPv4-tail one
 * by end (its finder computes the start). An IP window is one dotted quad
 * or two: a scan call per window cost more than the bytes. */
static unsigned digits_back(const uint8_t *w, size_t i, unsigned max)
{
	unsigned k = 0;
	while (i > k && k <= max && is_digit(w[i - k - 1]))
		k++;
	return k;
}

/* One digit end qe of an IP window (w[qe - 1] a digit, w[qe] not or
 * qe == n): the hits that end there, after the nh before them. */
static unsigned ip_end_hits(const uint8_t *w, size_t n, size_t qe, unsigned *kind, size_t *from,
			    size_t *to, unsigned nh)
{
	/* three groups of 1-3 digits after a dot, back from qe */
	size_t i = qe;
	bool ok = true;
	for (int g = 0; g < 3 && ok; g++) {
		unsigned k = digits_back(w, i, 3);
		ok = k >= 1 && k <= 3 && i > k && w[i - k - 1] == '.';
		i -= k + 1;
	}
	if (!ok)
		return nh;
	unsigned k0 = digits_back(w, i, 3); /* the first group: its last 1-3 digits */
	if (k0 == 0)
		return nh;
	size_t s = i - (k0 > 3 ? 3 : k0);
	int rc = qe < n ? w[qe] : -1, rc2 = qe + 1 < n ? w[qe + 1] : -1;
	size_t e4 = 0;
	if (rc < 0)
		e4 = n;
	else if (rc == '.' && rc2 < 0)
		e4 = n;
	else if (rc == '.' && !is_alnum(rc2))
		e4 = qe + 2;
	else if (rc != '.' && !is_alnum(rc))
		e4 = qe + 1;
	if (e4) {
		kind[nh] = IP_V4, from[nh] = s, to[nh++] = e4;
	}
	/* ":" right before a first group of 1-3 digits */
	if (k0 <= 3 && s > 0 && w[s - 1] == ':' &&
	    (rc < 0 || !(is_alnum(rc) || rc == '_' || rc == ':' || rc == '.'))) {
		kind[nh] = IP_V6_TAIL, from[nh] = 0, to[nh++] = rc < 0 ? n : qe + 1;
	}
	return nh;
}

static unsigned ip_window_hits(const uint8_t *w, size_t n, unsigned *kind, size_t *from, size_t *to,
			       unsigned cap, unsigned simd)
{
	uint64_t ends[ENDS_WORDS];
	unsigned nh = 0;
	size_t nw = digit_end_words(w, n, ends, simd);

	if (nw == SIZE_MAX) {
		for (size_t qe = 1; qe <= n && nh + 2 <= cap; qe++)
			if (is_digit(w[qe - 1]) && (qe == n || !is_digit(w[qe])))
				nh = ip_end_hits(w, n, qe, kind, from, to, nh);
		return nh;
	}
	for (size_t j = 0; j < nw; j++)
		for (uint64_t m = ends[j]; m; m &= m - 1) {
			if (nh + 2 > cap)
				return nh;
			nh = ip_end_hits(w, n, 64 * j + (size_t)__builtin_ctzll(m) + 1, kind, from,
					 to, nh);
		}
	return nh;
}

/* The G_NUM_PHONE CONF patterns, matched in C over w[0, n) like
 * ip_window_hits (same triples as their Hyperscan scan: by end, with the
 * start for the SSN patterns that track it). Each mirrors its regex. */
static bool re_space(int ch);

static bool d29(int ch)
{
	return ch >= '2' && ch <= '9';
}

static bool sep_ok(int ch)
{
	return ch == ' ' || ch == '.' || ch == '-';
}

static bool e164_byte(int ch)
{
	return is_digit(ch) || ch == ' ' || ch == '(' || ch == ')' || ch == '.' || ch == '-';
}

/* w[0, k) ends with s (lower case; '_' stands for \s+), ignoring case;
 * *k moves to where it starts. */
static bool ends_with_words(const uint8_t *w, size_t *k, const char *s)
{
	size_t i = *k, j = strlen(s);

	while (j > 0) {
		if (s[j - 1] == '_') {
			size_t i0 = i;
			while (i > 0 && re_space(w[i - 1]))
				i--;
			if (i == i0)
				return false;
			j--;
			continue;
		}
		if (i == 0)
			return false;
		int ch = w[i - 1];
		if ((s[j - 1] >= 'a' && s[j - 1] <= 'z' ? (ch | 0x20) : ch) != s[j - 1])
			return false;
		i--, j--;
	}
	*k = i;
	return true;
}

/* A keyword of the SSN keyword pattern ends at k. */
static bool ssn_keyword_at(const uint8_t *w, size_t k)
{
	static const char *const kw[] = {
		"ssn",
		"ss#",
		"social_security",
		"social_security_number",
		"social_security_no",
		"social_security_no.",
		"social_security_#",
		NULL,
	};
	for (unsigned i = 0; kw[i]; i++) {
		size_t kk = k;
		if (ends_with_words(w, &kk, kw[i]))
			return true;
	}
	return false;
}

/* One digit end q of a phone window (w[q - 1] a digit, w[q] not or
 * q == n; every pattern of the group ends with a digit and then a byte
 * that is not one): the hits that end there, after the nh before them. */
static unsigned phone_end_hits(const uint8_t *w, size_t n, size_t q, bool plus, unsigned *kind,
			       size_t *from, size_t *to, unsigned nh)
{
	int rc = q < n ? w[q] : -1;
	bool end_num = rc < 0 || !is_alnum(rc);		      /* (?:[^0-9A-Za-z]|\z) */
	bool end_nd = rc < 0 || (!is_digit(rc) && rc != '-'); /* (?:[^0-9-]|\z) */
	size_t e = rc < 0 ? n : q + 1;

	if (end_num && plus) { /* \+[1-9][0-9 ().-]{6,20}[0-9] */
		size_t k = q - 1;
		while (k > 0 && q - k < 32 && e164_byte(w[k - 1]))
			k--;
		/* k: first byte of the run of class bytes before the last digit */
		if (k >= 1 && w[k - 1] == '+' && k < q - 1 && w[k] >= '1' && w[k] <= '9' &&
		    q - 1 - (k + 1) >= 6 && q - 1 - (k + 1) <= 20)
			kind[nh] = PH_E164, from[nh] = 0, to[nh++] = e;
	}
	if (end_nd && q >= 12 && digits_at(w, q - 4, 4) && sep_ok(w[q - 5]) && d29(w[q - 8]) &&
	    digits_at(w, q - 7, 2)) {
		size_t a = q - 8; /* NNN starts here */
		bool ok = a >= 4 && sep_ok(w[a - 1]) && d29(w[a - 4]) && digits_at(w, a - 3, 2);
		ok = ok || (a >= 5 && w[a - 1] == ')' && w[a - 5] == '(' && d29(w[a - 4]) &&
			    digits_at(w, a - 3, 2));
		ok = ok || (a >= 6 && w[a - 1] == ' ' && w[a - 2] == ')' && w[a - 6] == '(' &&
			    d29(w[a - 5]) && digits_at(w, a - 4, 2));
		if (ok)
			kind[nh] = PH_NANP, from[nh] = 0, to[nh++] = e;
	}
	if (q >= 11 && digits_at(w, q - 4, 4) && digits_at(w, q - 7, 2) &&
	    digits_at(w, q - 11, 3)) {
		if (end_nd && w[q - 5] == '-' && w[q - 8] == '-')
			kind[nh] = PH_SSN_DASH, from[nh] = q - 11, to[nh++] = e;
		if (end_num && w[q - 5] == ' ' && w[q - 8] == ' ')
			kind[nh] = PH_SSN_SPACE, from[nh] = q - 11, to[nh++] = e;
	}
	if (end_num && q >= 10 && digits_at(w, q - 9, 9) && !is_digit(w[q - 10])) {
		/* keyword, then up to 20 bytes that are neither digits nor \n */
		bool hit = false;
		for (size_t k = q - 9, gap = 0;; k--, gap++) {
			if (ssn_keyword_at(w, k)) {
				hit = true;
				break;
			}
			if (gap == 20 || k == 0 || is_digit(w[k - 1]) || w[k - 1] == '\n')
				break;
		}
		if (hit)
			kind[nh] = PH_SSN_KEY, from[nh] = 0, to[nh++] = e;
	}
	return nh;
}

static unsigned phone_window_hits(const uint8_t *w, size_t n, unsigned *kind, size_t *from,
				  size_t *to, unsigned cap, unsigned simd)
{
	uint64_t ends[ENDS_WORDS];
	unsigned nh = 0;
	size_t nw = digit_end_words(w, n, ends, simd);
	/* most windows hold no '+': the E.164 look back need not run */
	bool plus = n && memchr(w, '+', n);

	if (nw == SIZE_MAX) {
		for (size_t q = 1; q <= n && nh + PH_COUNT <= cap; q++)
			if (is_digit(w[q - 1]) && (q == n || !is_digit(w[q])))
				nh = phone_end_hits(w, n, q, plus, kind, from, to, nh);
		return nh;
	}
	for (size_t j = 0; j < nw; j++)
		for (uint64_t m = ends[j]; m; m &= m - 1) {
			if (nh + PH_COUNT > cap)
				return nh;
			nh = phone_end_hits(w, n, 64 * j + (size_t)__builtin_ctzll(m) + 1, plus,
					    kind, from, to, nh);
		}
	return nh;
}

/* A number window confirmed by its C matcher (ip_window_hits or
 * phone_window_hits): each hit is a candidate of the pattern pats[kind]. */
static int confirm_c_window(struct scan_ctx *c,
			    unsigned (*hits)(const uint8_t *, size_t, unsigned *, size_t *,
					     size_t *, unsigned, unsigned),
			    const unsigned *pats, const uint8_t *b, uint64_t lo, uint64_t hi)
{
	unsigned kind[CONFIRM_HITS];
	size_t from[CONFIRM_HITS], to[CONFIRM_HITS];
	unsigned nh = hits(b, (size_t)(hi - lo), kind, from, to, CONFIRM_HITS, c->db->simd);

	for (unsigned i = 0; i < nh; i++)
		if (candidate(c, pats[kind[i]], lo + from[i], lo + to[i]))
			return 1;
	return 0;
}

/* Run detector det's full patterns on what is still at hand of [lo, hi). */
static int confirm_range(struct scan_ctx *c, const struct confirm *q)
{
	uint64_t avail = c->cur_base + c->cur_len;
	uint64_t lo = q->lo < hist_base(c) ? hist_base(c) : q->lo;
	uint64_t hi = q->hi < avail ? q->hi : avail;
	if (hi <= lo)
		return 0;
	const uint8_t *b = ctx_bytes(c, lo, hi);
	if (!b)
		return 0;
	if (q->grp == G_NUM_IP)
		return confirm_c_window(c, ip_window_hits, c->db->ip_pat, b, lo, hi);
	if (q->grp == G_NUM_PHONE)
		return confirm_c_window(c, phone_window_hits, c->db->phone_pat, b, lo, hi);
	/* Most phrase windows hold a trigger word in benign text: a cheap
	 * yes/no first, start offsets only when something is there. Number
	 * windows usually hold a match, so they go straight to the second. */
	if (q->grp < G_NUMBER &&
	    hs_scan(c->db->confirm_db[q->grp], (const char *)b, (unsigned)(hi - lo), 0,
		    c->scr->hs_conf, on_any_hit, NULL) != HS_SCAN_TERMINATED)
		return 0;
	struct confirm_hits h = {.lo = lo};
	hs_error_t e = hs_scan(c->db->confirm_som_db[q->grp], (const char *)b, (unsigned)(hi - lo),
			       0, c->scr->hs_conf, on_confirm_hit, &h);
	if (e != HS_SUCCESS && e != HS_SCAN_TERMINATED)
		return 0;
	for (unsigned i = 0; i < h.n; i++)
		if (candidate(c, h.pat[i], h.from[i], h.to[i]))
			return 1;
	return 0;
}

/* Confirm the queued ranges that are complete (reach `upto`), keep the rest. */
static int run_queue(struct scan_ctx *c, uint64_t upto)
{
	unsigned k = 0;
	for (unsigned i = 0; i < c->n_queue; i++) {
		struct confirm q = c->queue[i];
		if (q.hi <= upto) {
			if (confirm_range(c, &q))
				return 1;
		} else {
			c->queue[k++] = q;
		}
	}
	c->n_queue = k;
	return 0;
}

/* A trigger of group grp ended at `at`: queue its window, merged with the
 * last window of the same group when they overlap. */
/* The G_NUM_* groups of a run of [0-9 ().+-] with these counts, after the
 * byte `before` (-1: none). */
static unsigned groups_of(unsigned digits, unsigned dots, bool plus, int before)
{
	unsigned g = 0;
	if (dots >= 3 || before == ':')
		g |= 1u << G_NUM_IP; /* IPv4, IPv6 with an IPv4 tail */
	if (before >= 'A' && before <= 'Z')
		g |= 1u << G_NUM_IBAN; /* letters, then digits */
	if ((digits >= 9 && digits <= 11) || (plus && digits >= 8))
		g |= 1u << G_NUM_PHONE; /* SSN, NANP, E.164 */
	if (digits >= 13)
		g |= 1u << G_NUM_CARD;
	return g;
}

/* Which number formats could the digit run that ends at `at` be? Dates,
 * versions, prices and counts are none: their confirmation is skipped. Errs
 * on the side of confirming; looks only left of `at`, so block and stream
 * decide alike. Returns a mask of G_NUM_* groups. */
static unsigned number_groups(struct scan_ctx *c, uint64_t at)
{
	if (at == c->groups_at && at)
		return c->groups; /* on_trigger() right after number_trigger() */
	const unsigned all =
		1u << G_NUM_PHONE | 1u << G_NUM_CARD | 1u << G_NUM_IBAN | 1u << G_NUM_IP;
	uint64_t lo = at > 64 ? at - 64 : 0;
	if (lo < hist_base(c))
		lo = hist_base(c);
	const uint8_t *b = ctx_bytes(c, lo, at);
	if (!b)
		return all;
	size_t i = (size_t)(at - lo);
	unsigned digits = 0, dots = 0;
	bool plus = false;
	if (i > 0 && !is_digit(b[i - 1]))
		i--; /* the right-context byte */
	for (; i > 0; i--) {
		uint8_t ch = b[i - 1];
		if (is_digit(ch))
			digits++;
		else if (ch == '.')
			dots++;
		else if (ch == '+')
			plus = true;
		else if (ch != ' ' && ch != '(' && ch != ')' && ch != '-')
			break;
	}
	if (i == 0 && lo > 0)
		return all; /* a run longer than we looked at */
	return groups_of(digits, dots, plus, i > 0 ? b[i - 1] : -1);
}

static int queue_window(struct scan_ctx *c, unsigned grp, uint64_t at);

/* ASCII whitespace as \s matches it: space, \t \n \v \f \r. */
static bool re_space(int ch)
{
	return ch == ' ' || (ch >= '\t' && ch <= '\r');
}

/* p[0, n) is w (lower-case letters), ignoring case. */
static bool word_eq(const uint8_t *p, size_t n, const char *w)
{
	for (size_t i = 0; i < n; i++)
		if (!w[i] || (p[i] | 0x20) != w[i])
			return false;
	return !w[n];
}

/* word_eq with w a literal: the length first (most words read are not
 * the one asked for, and most differ in length). */
#define word_is(p, n, w) ((n) == sizeof(w) - 1 && word_eq(p, n, w))

/* n > 0. The first letter first: this runs for every word a trigger check
 * reads, against lists of a dozen words. */
static bool word_in(const uint8_t *p, size_t n, const char *const *list)
{
	int c0 = p[0] | 0x20;
	for (; *list; list++)
		if ((*list)[0] == c0 && word_eq(p, n, *list))
			return true;
	return false;
}

/* Read the word before b[*pos] right to left: at least one whitespace byte,
 * then alphanumerics. 1: found (*w, *wn; *pos moves to its start), 0: the
 * bytes there are not "\s+word", -1: the visible bytes ran out first and
 * more came before them (cut says so): the caller cannot tell. */
enum { WB_SPACE = 1, WB_ALNUM = 2 };
/* re_space and is_alnum as one lookup: word_before reads every byte of
 * the words before each "prompt" through them. */
static const uint8_t wb_class[256] = {
	[' '] = WB_SPACE,	  ['\t' ... '\r'] = WB_SPACE, ['0' ... '9'] = WB_ALNUM,
	['A' ... 'Z'] = WB_ALNUM, ['a' ... 'z'] = WB_ALNUM,
};

static int word_before(const uint8_t *b, size_t *pos, bool cut, const uint8_t **w, size_t *wn)
{
	size_t i = *pos, e;

	while (i > 0 && wb_class[b[i - 1]] == WB_SPACE)
		i--;
	if (i == *pos)
		return i == 0 && cut ? -1 : 0;
	e = i;
	while (i > 0 && wb_class[b[i - 1]] == WB_ALNUM)
		i--;
	if (i == 0 && cut)
		return -1;
	if (i == e)
		return 0;
	*w = b + i;
	*wn = e - i;
	*pos = i;
	return 1;
}

/* b[0, pos) ends with the literal w (lower case), letters in either case
 * (byte | 0x20, as word_is: exact for letters; "'" and "-" also take
 * \a and \r, which only makes a trigger check say yes more often). The
 * trigger checks run on every trigger hit; a libc call each cost more than
 * the comparison. */
#define tail_is(b, pos, w) tail_is_n(b, pos, w, sizeof(w) - 1)

/* len <= 8, pos >= 8: one load of the 8 bytes before pos (w a literal: k
 * folds to a constant); the bytes before the len we want shift out. */
static inline __attribute__((always_inline)) bool tail_is_8(const uint8_t *b, size_t pos,
							    const char *w, size_t len)
{
	uint64_t x, k = 0;
	unsigned sh = 8 * (8 - (unsigned)len);
	memcpy(&x, b + pos - 8, 8);
	memcpy(&k, w, len);
	return ((x | 0x2020202020202020ull) >> sh) == k;
}

/* Always inlined and not recursive: the constant folding above is the
 * point, and GCC's inlining budget for this file moved with unrelated
 * edits (once it made an out-of-line call with two memcpy calls of every
 * trigger check, +0.9% instructions a byte). */
static inline __attribute__((always_inline)) bool tail_is_n(const uint8_t *b, size_t pos,
							    const char *w, size_t len)
{
	if (pos < len)
		return false;
	if (len > 8 && len <= 16 && pos >= 16) /* the last 8 bytes, then the rest */
		return tail_is_8(b, pos, w + len - 8, 8) && tail_is_8(b, pos - 8, w, len - 8);
	if (len <= 8 && pos >= 8)
		return tail_is_8(b, pos, w, len);
	b += pos - len;
	for (size_t i = 0; i < len; i++)
		if ((b[i] | 0x20) != w[i])
			return false;
	return true;
}

/* Extraction phrases name what they want last ("... your system prompt"):
 * a "prompt" or "instructions" trigger can only complete one when the
 * words right before it read, right to left, as the CONF patterns have
 * them — up to three adjectives, "your" or "the", maybe "all of", maybe
 * "me"/"us", then an extraction verb (or "what/which were/are your").
 * Prompts that merely talk about prompts ("the system prompt for this
 * agent", "given the instructions") fail this and cost no window. Mirrors
 * the G_EXTRACT CONF patterns word for word (keep them in step); looks only
 * left of `at`, so block and stream decide alike. */
static bool extract_shape_before(struct scan_ctx *c, uint64_t at)
{
	static const char *const adjs[] = {
		"full",	  "entire",   "exact", "complete",     "original", "hidden", "initial",
		"secret", "internal", "real",  "confidential", "system",   "first",  NULL,
	};
	static const char *const verbs[] = {
		"reveal", "show",   "print", "repeat", "output", "display", "dump",
		"leak",	  "expose", "share", "recite", "tell",	 "give",    NULL,
	};
	uint64_t lo = at > group_window[G_EXTRACT].before ? at - group_window[G_EXTRACT].before : 0;
	if (lo < hist_base(c))
		lo = hist_base(c);
	const uint8_t *b = ctx_bytes(c, lo, at), *w = NULL;
	if (!b)
		return true;
	size_t n = (size_t)(at - lo), pos, wn = 0;
	bool cut = lo > 0;
	int k;

	if (tail_is(b, n, "repeat"))
		return true; /* the trigger is itself the verb */
	if (tail_is(b, n, "instructions")) {
		pos = n - 12;
	} else if (tail_is(b, n, "prompt")) {
		pos = n - 6; /* "pre-prompt", "preprompt" */
		if (tail_is(b, pos, "pre-"))
			pos -= 4;
		else if (tail_is(b, pos, "pre"))
			pos -= 3;
	} else {
		return true;
	}
	for (unsigned adj = 0;; adj++) {
		if ((k = word_before(b, &pos, cut, &w, &wn)) <= 0)
			return k < 0;
		if (word_is(w, wn, "your") || word_is(w, wn, "the"))
			break;
		if (adj == 3 || !word_in(w, wn, adjs))
			return false;
	}
	bool your = word_is(w, wn, "your");
	if ((k = word_before(b, &pos, cut, &w, &wn)) <= 0)
		return k < 0;
	if (your && (word_is(w, wn, "were") || word_is(w, wn, "are"))) {
		if ((k = word_before(b, &pos, cut, &w, &wn)) <= 0)
			return k < 0;
		return word_is(w, wn, "what") || word_is(w, wn, "which");
	}
	if (word_is(w, wn, "of")) {
		if ((k = word_before(b, &pos, cut, &w, &wn)) <= 0)
			return k < 0;
		if (!word_is(w, wn, "all"))
			return false;
		if ((k = word_before(b, &pos, cut, &w, &wn)) <= 0)
			return k < 0;
	}
	if (word_is(w, wn, "me") || word_is(w, wn, "us"))
		if ((k = word_before(b, &pos, cut, &w, &wn)) <= 0)
			return k < 0;
	if (word_in(w, wn, verbs))
		return true;
	if (!word_is(w, wn, "out"))
		return false;
	if ((k = word_before(b, &pos, cut, &w, &wn)) <= 0)
		return k < 0;
	return word_is(w, wn, "write") || word_is(w, wn, "spell");
}

/* Trigger words that are common on their own are written as one literal
 * in the one-pass set (a multi-word trigger with \\s+ between the words cost
 * the set ~20 %) and checked here for the word the CONF patterns put before
 * them: "not/n't/stop follow|obey", "no longer", "do anything"; "free"
 * ("free from all") only at a word boundary. Looks only left of `at`;
 * unsure (bytes gone) means yes. */
static bool trigger_left_ok(struct scan_ctx *c, unsigned grp, uint64_t at)
{
	uint64_t lo = at > 32 ? at - 32 : 0;
	if (lo < hist_base(c))
		lo = hist_base(c);
	const uint8_t *b = ctx_bytes(c, lo, at), *w = NULL;
	if (!b)
		return true;
	size_t n = (size_t)(at - lo), pos, wn = 0;
	bool cut = lo > 0;
	int k;

	if (grp == G_OVERRIDE) {
		if (tail_is(b, n, "follow"))
			pos = n - 6;
		else if (tail_is(b, n, "obey"))
			pos = n - 4;
		else
			return true; /* the verbs that open the phrase */
		size_t e = pos;
		while (pos > 0 && re_space(b[pos - 1]))
			pos--;
		if (pos == e)
			return pos == 0 && cut;
		return (pos < 4 && cut) || tail_is(b, pos, "not") || tail_is(b, pos, "n't") ||
		       tail_is(b, pos, "stop");
	}
	if (grp != G_ROLE)
		return true;
	if (tail_is(b, n, "free")) /* "free from/of all" opens its phrase */
		return n == 4 || !is_word(b[n - 5]);
	if (tail_is(b, n, "longer"))
		pos = n - 6;
	else if (tail_is(b, n, "anything"))
		pos = n - 8;
	else
		return true;
	if ((k = word_before(b, &pos, cut, &w, &wn)) <= 0)
		return k < 0;
	return word_is(w, wn, "no") || word_is(w, wn, "do");
}

static int on_trigger(struct scan_ctx *c, unsigned grp, uint64_t at)
{
	/* a group none of whose detectors is asked for confirms nothing */
	if (grp != G_NUMBER && !(c->db->group_dets[grp] & c->want))
		return 0;
	if (grp == G_EXTRACT && !extract_shape_before(c, at))
		return 0;
	if ((grp == G_OVERRIDE || grp == G_ROLE) && !trigger_left_ok(c, grp, at))
		return 0;
	if (grp != G_NUMBER)
		return queue_window(c, grp, at);
	unsigned mask = number_groups(c, at);
	for (unsigned g = G_NUM_PHONE; g <= G_NUM_IP; g++)
		if ((mask & (1u << g)) && (c->db->group_dets[g] & c->want) &&
		    queue_window(c, g, at))
			return 1;
	return 0;
}

static int queue_window(struct scan_ctx *c, unsigned grp, uint64_t at)
{
	uint64_t before = group_window[grp].before;
	uint64_t lo = at > before ? at - before : 0, hi = at + group_window[grp].after;
	for (unsigned i = c->n_queue; i-- > 0;) {
		struct confirm *q = &c->queue[i];
		if (q->grp != grp)
			continue;
		if (q->hi >= lo && hi - q->lo <= CONFIRM_RANGE_MAX) {
			/* triggers found by different passes arrive out of order */
			if (lo < q->lo)
				q->lo = lo;
			if (hi > q->hi)
				q->hi = hi;
			return 0;
		}
		break;
	}
	if (c->n_queue == CONFIRM_QUEUE) {
		/* Full: confirm the oldest now with the bytes at hand. */
		if (confirm_range(c, &c->queue[0]))
			return 1;
		memmove(c->queue, c->queue + 1, (CONFIRM_QUEUE - 1) * sizeof(*c->queue));
		c->n_queue--;
	}
	c->queue[c->n_queue++] = (struct confirm){.grp = grp, .lo = lo, .hi = hi};
	return 0;
}

/* Most colons are followed by neither a hex digit nor a colon ("role":
 * "user", "Note: "): a run of one ':' matches no G_IPV6 pattern, and
 * colon_runs need not start one. At the end of p the next feed decides. */
static inline bool colon_may_run(const uint8_t *p, size_t at, size_t n)
{
	return at + 1 == n || is_hex(p[at + 1]) || p[at + 1] == ':';
}

#ifdef SKIP_AVX2
/* Colon bits of the 64 bytes at a. */
__attribute__((target("avx2"))) static inline uint64_t colon_mask_avx2(const uint8_t *a)
{
	const __m256i colon = _mm256_set1_epi8(':');
	__m256i x = _mm256_cmpeq_epi8(_mm256_loadu_si256((const __m256i *)a), colon);
	__m256i y = _mm256_cmpeq_epi8(_mm256_loadu_si256((const __m256i *)(a + 32)), colon);
	return (uint32_t)_mm256_movemask_epi8(x) | (uint64_t)(uint32_t)_mm256_movemask_epi8(y)
							   << 32;
}

/* Whether any of the 128 bytes at a is b (one test for four compares):
 * the skips over text that usually has no ':' or '@'. */
__attribute__((target("avx2"))) static inline bool byte_in_128_avx2(const uint8_t *a, __m256i b)
{
	const __m256i *q = (const __m256i *)a;
	__m256i any =
		_mm256_or_si256(_mm256_or_si256(_mm256_cmpeq_epi8(_mm256_loadu_si256(q), b),
						_mm256_cmpeq_epi8(_mm256_loadu_si256(q + 1), b)),
				_mm256_or_si256(_mm256_cmpeq_epi8(_mm256_loadu_si256(q + 2), b),
						_mm256_cmpeq_epi8(_mm256_loadu_si256(q + 3), b)));
	return !_mm256_testz_si256(any, any);
}

/* next_colon for n >= 64: 128 bytes a step while there is no ':', then
 * 64; the last bytes are read again as the last 64. */
__attribute__((target("avx2"))) static size_t next_colon_avx2(const uint8_t *p, size_t i, size_t n)
{
	const __m256i colon = _mm256_set1_epi8(':');
	for (; i + 128 <= n; i += 128) {
		if (!byte_in_128_avx2(p + i, colon))
			continue;
		for (size_t h = 0; h < 128; h += 64)
			for (uint64_t m = colon_mask_avx2(p + i + h); m; m &= m - 1) {
				size_t at = i + h + (size_t)__builtin_ctzll(m);
				if (colon_may_run(p, at, n))
					return at;
			}
	}
	for (; i < n; i += 64) {
		uint64_t m;
		if (i + 64 <= n)
			m = colon_mask_avx2(p + i);
		else
			m = colon_mask_avx2(p + n - 64) >> (i - (n - 64));
		for (; m; m &= m - 1) {
			size_t at = i + (size_t)__builtin_ctzll(m);
			if (colon_may_run(p, at, n))
				return at;
		}
	}
	return n;
}
#endif

/* The first ':' in p[i, n) that may start a colon run that matters, or
 * n. */
static size_t next_colon(const uint8_t *p, size_t i, size_t n, unsigned simd)
{
#ifdef SKIP_AVX2
	if (n >= 64 && simd >= SIMD_AVX2)
		return next_colon_avx2(p, i, n);
#endif
	for (;; i++) {
		const uint8_t *q = memchr(p + i, ':', n - i);
		if (!q)
			return n;
		i = (size_t)(q - p);
		if (colon_may_run(p, i, n))
			return i;
	}
}

/* The first digit in p[i, n), or n: without AVX2 (next_run_avx2 otherwise).
 * Prose has few digits: 16 bytes a step with SSE2 (simd >= SIMD_SSE2). */
static size_t next_digit(const uint8_t *p, size_t i, size_t n, unsigned simd)
{
#ifdef __SSE2__
	const __m128i zero = _mm_set1_epi8('0'), nine = _mm_set1_epi8(9);
	for (; simd >= SIMD_SSE2 && i + 16 <= n; i += 16) {
		__m128i t = _mm_sub_epi8(_mm_loadu_si128((const __m128i *)(p + i)), zero);
		unsigned m = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(_mm_min_epu8(t, nine), t));
		if (m)
			return i + (size_t)__builtin_ctz(m);
	}
#endif
	for (; i < n; i++)
		if (is_digit(p[i]))
			return i;
	return n;
}

static bool run_byte(int ch)
{
	return is_digit(ch) || ch == ' ' || ch == '(' || ch == ')' || ch == '.' || ch == '+' ||
	       ch == '-';
}

#ifdef SKIP_AVX2
/* Bits of ' ' ( ) + - . in the 64 bytes at a: they are 0x20 + {0, 8, 9,
 * 0xb, 0xd, 0xe}, and the byte minus 0x20, saturated past 0x7f unless it
 * is below 16, is a pshufb index that finds them. */
__attribute__((target("avx2"))) static inline uint64_t sep_mask_avx2(__m256i x, __m256i y)
{
	const __m256i tbl =
		_mm256_setr_epi8(-128, 0, 0, 0, 0, 0, 0, 0, -128, -128, 0, -128, 0, -128, -128, 0,
				 -128, 0, 0, 0, 0, 0, 0, 0, -128, -128, 0, -128, 0, -128, -128, 0);
	const __m256i sp = _mm256_set1_epi8(0x20), up = _mm256_set1_epi8(0x70);
	__m256i px = _mm256_shuffle_epi8(tbl, _mm256_adds_epu8(_mm256_sub_epi8(x, sp), up));
	__m256i py = _mm256_shuffle_epi8(tbl, _mm256_adds_epu8(_mm256_sub_epi8(y, sp), up));
	return (uint32_t)_mm256_movemask_epi8(px) | (uint64_t)(uint32_t)_mm256_movemask_epi8(py)
							    << 32;
}

/* The runs of one 64-byte mask (d: digits, r: run_byte bytes): the bit of
 * the first digit whose run could reach a trigger — its digits span 7
 * bytes or more — or goes past the mask; 64 when every run ends inside it
 * and short. Such a run is skipped whole, as the byte loop would have
 * ended it: most digits in prose are "3", "2024", "99.9 percent". */
static inline unsigned long_run_bit(uint64_t d, uint64_t r)
{
	while (d) {
		unsigned f = (unsigned)__builtin_ctzll(d);
		uint64_t end = ~r & (~0ull << f);
		if (!end)
			return f;
		unsigned e = (unsigned)__builtin_ctzll(end);
		uint64_t seg = d & ((1ull << e) - 1); /* e > f: bit f is a digit */
		if (63u - (unsigned)__builtin_clzll(seg) - f >= 6)
			return f;
		d &= ~0ull << e;
	}
	return 64;
}

/* Where number_runs must start reading a run byte by byte (see
 * long_run_bit), 64 bytes a step; n when there is none. The last bytes are
 * read again as part of the last 64 (a copy padded with zeros when there
 * are fewer), their bits past n cleared (digits) or set (run bytes: the run
 * may go on in the next feed). */
__attribute__((target("avx2"))) static size_t next_run_avx2(const uint8_t *p, size_t i, size_t n)
{
	for (; i + 64 <= n; i += 64) {
		__m256i x = _mm256_loadu_si256((const __m256i *)(p + i));
		__m256i y = _mm256_loadu_si256((const __m256i *)(p + i + 32));
		uint64_t d = digit_mask_avx2(x, y);
		if (!d)
			continue;
		unsigned f = long_run_bit(d, d | sep_mask_avx2(x, y));
		if (f < 64)
			return i + f;
	}
	if (i >= n)
		return n;
	__m256i x, y;
	unsigned k = 0; /* bytes of the mask before i */
	if (n >= 64) {
		/* the last 64 bytes, read again from n - 64 */
		k = (unsigned)(i - (n - 64));
		x = _mm256_loadu_si256((const __m256i *)(p + n - 64));
		y = _mm256_loadu_si256((const __m256i *)(p + n - 32));
	} else {
		uint8_t pad[64] = {0};
		memcpy(pad, p + i, n - i);
		x = _mm256_loadu_si256((const __m256i *)pad);
		y = _mm256_loadu_si256((const __m256i *)(pad + 32));
	}
	uint64_t valid = ~0ull >> (64 - (n - i)), d = digit_mask_avx2(x, y) >> k & valid;
	unsigned f = d ? long_run_bit(d, d | sep_mask_avx2(x, y) >> k | ~valid) : 64;
	return f < 64 ? i + f : n;
}
#endif

static void number_rec(struct scan_ctx *c, uint64_t at, int g);

#define RUN_BEFORE_UNSEEN (-2)

/* Stream byte off, known to be at hand. */
static inline int run_byte_at(const struct scan_ctx *c, uint64_t off)
{
	return off >= c->cur_base ? c->cur[off - c->cur_base] : c->hist[off - hist_base(c)];
}

/* A run begins at stream offset `first`: number_groups() also counts the
 * run bytes before it ("(415) ", "+1 "), up to 64 back. */
static void run_begin(struct scan_ctx *c, uint64_t first)
{
	uint64_t s = first, stop = first > 64 ? first - 64 : 0;
	if (stop < hist_base(c))
		stop = hist_base(c);
	c->run_first = c->run_last = first;
	c->run_digits = 1, c->run_dots = 0, c->run_plus = false;
	while (s > stop && run_byte(run_byte_at(c, s - 1))) {
		int ch = run_byte_at(c, --s);
		c->run_digits += is_digit(ch);
		c->run_dots += ch == '.';
		c->run_plus |= ch == '+';
	}
	c->run_start = s;
	c->run_before = s == 0 ? -1 : s > stop ? run_byte_at(c, s - 1) : RUN_BEFORE_UNSEEN;
}

/* number_groups(c, at) from the counts of the run, or -1 when they cannot
 * tell: number_groups() looks at the 64 bytes before `at`, and says "all"
 * when the run fills them. */
static int run_groups(const struct scan_ctx *c, uint64_t at)
{
	uint64_t lo = at > 64 ? at - 64 : 0;
	if (lo < hist_base(c))
		lo = hist_base(c);
	if (c->run_before == RUN_BEFORE_UNSEEN || (c->run_start <= lo && lo > 0))
		return -1;
	return (int)groups_of(c->run_digits, c->run_dots, c->run_plus, c->run_before);
}

/* A number trigger ends at `at`. Dates, versions and the first groups of a
 * phone number or an address open no window: on_trigger() is not called
 * for them (the cross-check records every trigger instead). */
static int number_trigger(struct scan_ctx *c, uint64_t at)
{
	int g = run_groups(c, at);
	if (c->tw_rec) {
		number_rec(c, at, g);
		return 0;
	}
	if (g == 0)
		return 0;
	if (g > 0)
		c->groups_at = at, c->groups = (unsigned)g;
	return on_trigger(c, G_NUMBER, at);
}

/* The number trigger, in C: every end at which
 *   [0-9][0-9 ().+-]{5,}[0-9](?:[^0-9]|\z)
 * matches (a digit that closes at least 7 bytes of a run of those bytes
 * which began with a digit, plus the byte after it) goes to on_trigger, as
 * Hyperscan would report it. p[0, n) are stream bytes from base; the run
 * state carries over to the next feed. */
static int number_runs(struct scan_ctx *c, const uint8_t *p, size_t n, uint64_t base)
{
	size_t i = 0;

	while (i < n) {
		if (c->run_first == NO_RUN) {
#ifdef SKIP_AVX2
			if (c->db->simd >= SIMD_AVX2)
				i = next_run_avx2(p, i, n);
			else
#endif
				i = next_digit(p, i, n, c->db->simd);
			if (i == n)
				break;
			run_begin(c, base + i++);
		}
		for (; i < n; i++) {
			uint64_t at = base + i;
			if (is_digit(p[i])) {
				c->run_last = at;
				c->run_digits++;
				continue;
			}
			if (c->run_last + 1 == at && c->run_last - c->run_first >= 6 &&
			    number_trigger(c, at + 1))
				return 1;
			if (!run_byte(p[i])) {
				c->run_first = c->run_last = NO_RUN;
				i++;
				break;
			}
			c->run_dots += p[i] == '.';
			c->run_plus |= p[i] == '+';
		}
	}
	return 0;
}

/* End of data: a run that ends on a digit matches there (\z). */
static int number_runs_end(struct scan_ctx *c, uint64_t end)
{
	bool hit = c->run_first != NO_RUN && c->run_last + 1 == end && end > 0 &&
		   c->run_last - c->run_first >= 6;
	c->run_first = c->run_last = NO_RUN;
	return hit ? number_trigger(c, end) : 0;
}

/* One byte of a colon run (colon_runs): returns the G_IPV6 patterns
 * (1 << V6_*) that match with ch as their right-context byte, and ends
 * the run when ch is not in [0-9A-Fa-f:]. Mirrors
 *   (?::[0-9A-Fa-f]{1,4}){7}(?:[^0-9A-Za-z_:.]|\z)   V6_FULL
 *   ::[0-9A-Fa-f:]*(?:[^0-9A-Za-z_:.]|\z)            V6_COMPRESSED
 * both of which can only end right after the run. */
static unsigned v6_hits(const struct v6_run *r)
{
	return (r->dcolon ? 1u << V6_COMPRESSED : 0) |
	       (r->hex > 0 && r->groups >= 6 ? 1u << V6_FULL : 0);
}

static inline __attribute__((always_inline)) unsigned v6_byte(struct v6_run *r, int ch)
{
	if (ch == ':') {
		if (r->hex == 0) { /* "::" */
			r->dcolon = true;
			r->groups = 0;
		} else if (r->hex > 0) {
			r->groups += r->groups < 7;
		} else {
			r->groups = 0;
		}
		r->hex = 0;
		return 0;
	}
	if (is_hex(ch)) {
		if (r->hex >= 0 && ++r->hex > 4)
			r->hex = -1;
		return 0;
	}
	r->in = false;
	return is_word(ch) || ch == '.' ? 0 : v6_hits(r);
}

static int v6_candidate(struct scan_ctx *c, unsigned hits, uint64_t end)
{
	return candidate(c, c->db->v6_pat[hits & 1u << V6_FULL ? V6_FULL : V6_COMPRESSED], 0, end);
}

/* The G_IPV6 patterns, in C: every end at which they match goes to
 * candidate(), as their Hyperscan reports did. next_colon() skips to the
 * next ':' (prose and JSON have few); a run is then read byte by byte. p[0, n)
 * are stream bytes from base; the run carries over to the next feed. */
static int colon_runs(struct scan_ctx *c, const uint8_t *p, size_t n, uint64_t base)
{
	size_t i = 0;

	while (i < n) {
		if (!c->v6.in) {
			i = next_colon(p, i, n, c->db->simd);
			if (i == n)
				break;
			c->v6 = (struct v6_run){.in = true, .hex = -1};
		}
		for (; i < n; i++) {
			unsigned h = v6_byte(&c->v6, p[i]);
			if (h && v6_candidate(c, h, base + i + 1))
				return 1;
			if (!c->v6.in) {
				i++;
				break;
			}
		}
	}
	return 0;
}

/* End of data: a run that reaches it matches there (\z). */
static int colon_runs_end(struct scan_ctx *c, uint64_t end)
{
	unsigned h = c->v6.in ? v6_hits(&c->v6) : 0;
	c->v6.in = false;
	return h ? v6_candidate(c, h, end) : 0;
}

/* The email pattern [A-Za-z0-9._%+-]@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,24}\b
 * after its '@', one byte at a time: mail_hit() says whether it matches
 * right before ch (ch -1: end of data), mail_byte() takes ch in and says
 * whether the domain can go on. Mirrors the regex; keep them in step. */
enum { M_AT = 0, M_LETTER, M_DOT, M_OTHER };
#define TLD_NONE 255
/* Ends further than this from the '@' make candidates longer than the
 * detector's maxlen, which candidate() rejects: stop reading there. */
#define MAIL_SPAN 330

static bool mail_hit(const struct mail_run *r, int ch)
{
	return !is_word(ch) && r->prev == M_LETTER && r->dot && !r->bad && r->tld >= 2 &&
	       r->tld <= 24;
}

static bool mail_byte(struct mail_run *r, int ch)
{
	if (++r->len > MAIL_SPAN) {
		r->in = false;
	} else if ((unsigned)(ch | 0x20) - 'a' < 26u) {
		if (r->tld < 25)
			r->tld++;
		r->prev = M_LETTER;
	} else if (is_digit(ch) || ch == '-') {
		r->tld = TLD_NONE;
		r->prev = M_OTHER;
	} else if (ch == '.') {
		if (r->prev == M_AT || r->prev == M_DOT)
			r->bad = true;
		r->dot = true;
		r->tld = 0;
		r->prev = M_DOT;
	} else {
		r->in = false;
	}
	return r->in;
}

static bool mail_pre(int ch)
{
	return is_alnum(ch) || ch == '.' || ch == '_' || ch == '%' || ch == '+' || ch == '-';
}

#ifdef SKIP_AVX2
/* next_at for n >= 64, as next_colon_avx2 reads: a feed of prompt text
 * usually has no '@', and memchr's set-up per call was a third of its
 * cost on 1 KiB bodies. */
__attribute__((target("avx2"))) static size_t next_at_avx2(const uint8_t *p, size_t i, size_t n)
{
	const __m256i at = _mm256_set1_epi8('@');
	for (; i + 128 <= n; i += 128)
		if (byte_in_128_avx2(p + i, at))
			break;
	for (; i < n; i += 32) {
		unsigned m;
		if (i + 32 <= n)
			m = (unsigned)_mm256_movemask_epi8(_mm256_cmpeq_epi8(
				_mm256_loadu_si256((const __m256i *)(p + i)), at));
		else
			m = (unsigned)_mm256_movemask_epi8(_mm256_cmpeq_epi8(
				    _mm256_loadu_si256((const __m256i *)(p + n - 32)), at)) >>
			    (i - (n - 32));
		if (m)
			return i + (size_t)__builtin_ctz(m);
	}
	return n;
}
#endif

/* The first '@' in p[i, n), or n. */
static size_t next_at(const uint8_t *p, size_t i, size_t n, unsigned simd)
{
#ifdef SKIP_AVX2
	if (n >= 64 && simd >= SIMD_AVX2)
		return next_at_avx2(p, i, n);
#endif
	const uint8_t *q = memchr(p + i, '@', n - i);
	return q ? (size_t)(q - p) : n;
}

/* The email pattern, in C: every end at which it matches goes to
 * candidate(), as its Hyperscan reports did (a bare '@' costs the one-pass
 * set nothing, the domain part after it did). p[0, n) are stream bytes
 * from base; a domain cut by the end of a feed goes on in the next. */
static int email_runs(struct scan_ctx *c, const uint8_t *p, size_t n, uint64_t base)
{
	size_t i = 0;

	while (i < n) {
		if (!c->mail.in) {
			i = next_at(p, i, n, c->db->simd);
			if (i == n)
				break;
			int pre = i > 0 ? p[i - 1] : c->hist_len ? c->hist[c->hist_len - 1] : -1;
			i++;
			if (pre >= 0 && mail_pre(pre))
				c->mail = (struct mail_run){
					.in = true, .prev = M_AT, .tld = TLD_NONE};
			continue;
		}
		for (; i < n; i++) {
			if (mail_hit(&c->mail, p[i]) && candidate(c, c->db->mail_pat, 0, base + i))
				return 1;
			if (!mail_byte(&c->mail, p[i]))
				break; /* p[i] is not taken: it may be the next '@' */
		}
	}
	return 0;
}

/* End of data: \b holds there after a letter. */
static int email_runs_end(struct scan_ctx *c, uint64_t end)
{
	bool hit = c->mail.in && mail_hit(&c->mail, -1);
	c->mail.in = false;
	return hit ? candidate(c, c->db->mail_pat, 0, end) : 0;
}

/* ---- trigger words in C ---- */

/* Stream byte `off`, or -1 when it is not at hand. */
static int ctx_byte(const struct scan_ctx *c, uint64_t off)
{
	if (off >= c->cur_base && off - c->cur_base < c->cur_len)
		return c->cur[off - c->cur_base];
	if (off < c->cur_base && off >= hist_base(c))
		return c->hist[off - hist_base(c)];
	return -1;
}

/* Stream bytes before `at` read right to left as "w\s+" (w lower case,
 * letters in either case), as the \s+ phrases of the role trigger have
 * it. Whitespace that runs past the bytes at hand counts as a yes (block
 * mode has all bytes; a stream keeps 8 KiB). */
static bool word_space_before(const struct scan_ctx *c, uint64_t at, const char *w, size_t wn)
{
	uint64_t i = at;
	int ch;

	while (i > 0 && (ch = ctx_byte(c, i - 1)) >= 0 && re_space(ch))
		i--;
	if (i == at)
		return false;
	if (i > 0 && ch < 0)
		return true;
	if (i < wn)
		return false;
	for (size_t k = 0; k < wn; k++) {
		ch = ctx_byte(c, i - wn + k);
		if (ch < 0)
			return true;
		if ((ch | 0x20) != w[k])
			return false;
	}
	return true;
}

struct tw_rec {
	unsigned n;
	uint64_t v[CONFIRM_HITS][2]; /* end, group */
};

/* Word w ends at stream offset `end`: the trigger of its group, after the
 * words a \s+ phrase needs before it. */
static int tw_hit(struct scan_ctx *c, const struct trig_word *w, uint64_t start, uint64_t end)
{
	if (w->kind == TW_AFTER_DAN && !word_space_before(c, start, "dan", 3))
		return 0;
	if (w->kind == TW_AFTER_NOW && !word_space_before(c, start, "now", 3))
		return 0;
	if (c->tw_rec) {
		if (c->tw_rec->n < CONFIRM_HITS) {
			c->tw_rec->v[c->tw_rec->n][0] = end;
			c->tw_rec->v[c->tw_rec->n++][1] = w->grp;
		}
		return 0;
	}
	return on_trigger(c, w->grp, end);
}

/* A literal a one-pass pattern starts with starts at stream offset at. */
static void tw_gate(struct scan_ctx *c, uint64_t at)
{
	if (!c->gate || at < c->gate_at)
		c->gate_at = at;
	c->gate = true;
}

/* The filter said a gram may start at p[q] (q + 4 <= n): report the words
 * whose gram it is and that lie in p[0, n) — all of them when split is
 * SIZE_MAX, else only those that end after p[split] and start (gram
 * included) before it. base: stream offset of p[0]. Inlined: it runs for
 * ~4 positions per KiB of prose, and the call cost ~10 % of it. */
static inline __attribute__((always_inline)) int
tw_check(struct scan_ctx *c, const uint8_t *p, size_t n, size_t q, uint64_t base, size_t split)
{
	const struct trig_tab *t = &c->db->tw;
	uint32_t gram = tw_fold(p + q);

	for (unsigned e = t->head[tw_hash(gram)]; e; e = t->ent[e - 1].next) {
		if (t->ent[e - 1].gram != gram)
			continue;
		const struct trig_word *w = &trig_words[t->ent[e - 1].word];
		size_t len = t->ent[e - 1].len, k;
		if ((ptrdiff_t)q < w->fp)
			continue;
		size_t start = q - (size_t)w->fp; /* fp -1: the word starts at q + 1 */
		size_t span = len + (w->kind == TW_CASE_ANY4); /* the byte after it */
		if (start + span > n)
			continue;
		if (split != SIZE_MAX && (start + span <= split || (q >= split && start >= split)))
			continue;
		if (w->kind >= TW_CASE) {
			if (memcmp(p + start, w->s, len) ||
			    (w->kind == TW_CASE_ANY4 && !any4_byte(p[start + len])))
				continue;
			tw_gate(c, base + start); /* a one-pass pattern may match here */
			continue;
		}
		k = 0;
		if (start + 8 <= n) { /* the first 8 bytes at once */
			uint64_t x;
			memcpy(&x, p + start, 8);
			unsigned wi = t->ent[e - 1].word;
			if (((x | t->cmp[wi].fold) & t->cmp[wi].mask) != t->cmp[wi].head)
				continue;
			k = len < 8 ? len : 8;
		}
		for (; k < len; k++) {
			uint8_t ch = p[start + k];
			if ((is_letter(ch) ? ch | 0x20 : ch) != (uint8_t)w->s[k])
				break;
		}
		if (k < len)
			continue;
		if (w->grp == G_NONE)
			tw_gate(c, base + start);
		else if (tw_hit(c, w, base + start, base + start + len))
			return 1;
	}
	return 0;
}

/* Grams may start at q in [0, n - 3): the bytes they need are at hand. */
static int tw_scalar(struct scan_ctx *c, const uint8_t *p, size_t n, size_t from, uint64_t base,
		     size_t split)
{
	const struct trig_tab *t = &c->db->tw;
	for (size_t q = from; q + 4 <= n; q++)
		if ((t->byte[0][p[q]] & t->byte[1][p[q + 1]] & t->byte[2][p[q + 2]]) &&
		    tw_check(c, p, n, q, base, split))
			return 1;
	return 0;
}

#ifdef SKIP_AVX2
/* One filter position j of both bucket sets (a: buckets 0-7, b: 8-15) on
 * 32 positions at off(a), ANDed into ra and rb: the low nibble goes to
 * pshufb as the byte itself (a byte >= 0x80 looks up 0, right for a filter
 * of ASCII grams, and saves an and), the high one from the same offset of
 * hn, where the high nibbles were written once per byte (not once per
 * filter position). Both are memory operands. AT&T operand order. */
/* clang-format off */
#define TW_POS_ASM(off, j)                                                  \
	"vpshufb " off "(%[a]), %[la" #j "], %[x]\n\t"                       \
	"vpand %[x], %[ra], %[ra]\n\t"                                       \
	"vpshufb " off "(%[hn]), %[ha" #j "], %[x]\n\t"                      \
	"vpand %[x], %[ra], %[ra]\n\t"                                       \
	"vpshufb " off "(%[a]), %[lb" #j "], %[x]\n\t"                       \
	"vpand %[x], %[rb], %[rb]\n\t"                                       \
	"vpshufb " off "(%[hn]), %[hb" #j "], %[x]\n\t"                      \
	"vpand %[x], %[rb], %[rb]\n\t"

/* The 3-byte filter on 32 positions at off(a): bucket bits of the first
 * byte, ANDed with the second's and the third's, any left, per set. */
#define TW_BLOCK_ASM(o0, o1, o2, z)                                         \
	"vpshufb " o0 "(%[a]), %[la0], %[ra]\n\t"                            \
	"vpshufb " o0 "(%[hn]), %[ha0], %[x]\n\t"                            \
	"vpand %[x], %[ra], %[ra]\n\t"                                       \
	"vpshufb " o0 "(%[a]), %[lb0], %[rb]\n\t"                            \
	"vpshufb " o0 "(%[hn]), %[hb0], %[x]\n\t"                            \
	"vpand %[x], %[rb], %[rb]\n\t"                                       \
	TW_POS_ASM(o1, 1)                                                    \
	TW_POS_ASM(o2, 2)                                                    \
	"vpor %[rb], %[ra], %[ra]\n\t"                                       \
	"vpxor %[x], %[x], %[x]\n\t"                                         \
	"vpcmpeqb %[x], %[ra], %[ra]\n\t"                                    \
	"vpmovmskb %[ra], " z "\n\t"
/* clang-format on */

#define TW_CHUNK 32 /* steps of 64 positions per tw_masks_avx2 call */

/* Filter masks of nb <= TW_CHUNK steps of 64 positions from a (a needs
 * 64 * nb + 2 readable bytes) into m[0, nb): bit k set, a gram may start at
 * a[k]. The loop makes no call, so the twelve nibble tables stay in ymm
 * registers. Written in C (as intrinsics, with the probe of a passing
 * position in the loop) GCC reloaded all twelve from the stack every 32
 * bytes: a call clobbers every ymm register. In a loop of its own it still
 * reloaded ten: twelve tables, the nibble mask and the temporaries want
 * more than 16 registers. Here every operand but the tables and three
 * temporaries is in memory. */
__attribute__((target("avx2"), noinline)) static void
tw_masks_avx2(const struct trig_tab *t, const uint8_t *a, size_t nb, uint64_t *m)
{
	uint8_t hn[TW_CHUNK * 64 + 32] __attribute__((aligned(32)));
	const __m256i nib = _mm256_set1_epi8(0x0f);
	size_t len = 64 * nb;

#define TW_HN(i)                                                                              \
	_mm256_store_si256(                                                                   \
		(__m256i *)(hn + (i)),                                                        \
		_mm256_and_si256(                                                             \
			_mm256_srli_epi16(_mm256_loadu_si256((const __m256i *)(a + (i))), 4), \
			nib))
	for (size_t i = 0; i < len; i += 64)
		TW_HN(i), TW_HN(i + 32);
#undef TW_HN
	hn[len] = a[len] >> 4, hn[len + 1] = a[len + 1] >> 4;

#define TW_LD(x) _mm256_loadu_si256((const __m256i *)(x))
	/* a, b: the two bucket sets; 0-2: the byte's place in the gram */
	__m256i la0 = TW_LD(t->lo[0][0]), ha0 = TW_LD(t->hi[0][0]);
	__m256i la1 = TW_LD(t->lo[0][1]), ha1 = TW_LD(t->hi[0][1]);
	__m256i la2 = TW_LD(t->lo[0][2]), ha2 = TW_LD(t->hi[0][2]);
	__m256i lb0 = TW_LD(t->lo[1][0]), hb0 = TW_LD(t->hi[1][0]);
	__m256i lb1 = TW_LD(t->lo[1][1]), hb1 = TW_LD(t->hi[1][1]);
	__m256i lb2 = TW_LD(t->lo[1][2]), hb2 = TW_LD(t->hi[1][2]);
#undef TW_LD

	for (size_t k = 0; k < nb; k++) {
		const uint8_t *ak = a + 64 * k, *hk = hn + 64 * k;
		__m256i ra, rb, x;
		uint64_t z0, z1;
		/* z: positions where no bucket is left, inverted below */
		/* clang-format off */
		__asm__(TW_BLOCK_ASM("0", "1", "2", "%k[z0]") TW_BLOCK_ASM("32", "33", "34", "%k[z1]")
			: [ra] "=&x"(ra), [rb] "=&x"(rb), [x] "=&x"(x), [z0] "=&r"(z0),
			  [z1] "=&r"(z1)
			: [a] "r"(ak), "m"(*(const uint8_t(*)[66])ak), [hn] "r"(hk),
			  "m"(*(const uint8_t(*)[66])hk), [la0] "x"(la0), [ha0] "x"(ha0),
			  [la1] "x"(la1), [ha1] "x"(ha1), [la2] "x"(la2), [ha2] "x"(ha2),
			  [lb0] "x"(lb0), [hb0] "x"(hb0), [lb1] "x"(lb1), [hb1] "x"(hb1),
			  [lb2] "x"(lb2), [hb2] "x"(hb2));
		/* clang-format on */
		m[k] = ~(z0 | z1 << 32);
	}
}
#undef TW_POS_ASM
#undef TW_BLOCK_ASM

__attribute__((target("avx2"))) static int tw_avx2(struct scan_ctx *c, const uint8_t *p, size_t n,
						   uint64_t base)
{
	const struct trig_tab *t = &c->db->tw;
	uint64_t m[TW_CHUNK];
	size_t i = 0;

	/* a step at i needs i + 67 <= n: 66 bytes for the filter, 4 for a gram at i + 63 */
	while (i + 67 <= n) {
		size_t nb = (n - i - 3) / 64;
		if (nb > TW_CHUNK)
			nb = TW_CHUNK;
		tw_masks_avx2(t, p + i, nb, m);
		for (size_t k = 0; k < nb; k++, i += 64)
			for (uint64_t x = m[k]; x; x &= x - 1) {
				size_t q = i + (size_t)__builtin_ctzll(x);
				/* most positions the filter lets through hold no gram */
				if (t->head[tw_hash(tw_fold(p + q))] &&
				    tw_check(c, p, n, q, base, SIZE_MAX))
					return 1;
			}
	}
	if (i + 4 > n)
		return 0;
	/* The last bytes through a zero-padded copy: no gram has a NUL. */
	uint8_t tail[96] = {0};
	memcpy(tail, p + i, n - i);
	tw_masks_avx2(t, tail, 1, m);
	for (uint64_t x = m[0]; x; x &= x - 1) {
		size_t q = i + (size_t)__builtin_ctzll(x);
		if (q + 4 <= n && tw_check(c, p, n, q, base, SIZE_MAX))
			return 1;
	}
	return 0;
}
#endif

/* The CTRIG patterns, in C: every end at which they match goes to
 * on_trigger(), as their Hyperscan reports did when they were in the
 * one-pass set. p[0, n) are stream bytes from base; a word cut by the end
 * of the previous feed is found here through the last bytes of history
 * (words that lie wholly in p are found by the main pass). */
static int trig_words_scan(struct scan_ctx *c, const uint8_t *p, size_t n, uint64_t base)
{
	if (c->hist_len) {
		uint8_t j[2 * TW_SPAN];
		size_t h = c->hist_len < TW_SPAN ? c->hist_len : TW_SPAN;
		size_t k = n < TW_SPAN ? n : TW_SPAN;
		memcpy(j, c->hist + c->hist_len - h, h);
		memcpy(j + h, p, k);
		if (tw_scalar(c, j, h + k, 0, base - h, h))
			return 1;
	}
#ifdef SKIP_AVX2
	if (c->db->simd >= SIMD_AVX2)
		return tw_avx2(c, p, n, base);
#endif
	return tw_scalar(c, p, n, 0, base, SIZE_MAX);
}

static bool wants_email(const struct scan_ctx *c)
{
	return c->want >> DETECT_EMAIL & 1;
}

static bool wants_ipv6(const struct scan_ctx *c)
{
	return c->want >> DETECT_IPV6 & 1;
}

/* Number detectors the scan wants: otherwise number_runs need not run. */
static bool wants_numbers(const struct scan_ctx *c)
{
	const struct detect_db *db = c->db;
	return (db->group_dets[G_NUM_PHONE] | db->group_dets[G_NUM_CARD] |
		db->group_dets[G_NUM_IBAN] | db->group_dets[G_NUM_IP]) &
	       c->want;
}

static int on_hs_match(unsigned pat, unsigned long long from, unsigned long long to,
		       unsigned hs_flags, void *arg)
{
	struct scan_ctx *c = arg;
	from += c->hs_base;
	to += c->hs_base;
	if (pat >= N_BUILTIN_PATTERNS || !(patterns[pat].flags & TRIG))
		return candidate(c, pat, from, to);
	return on_trigger(c, GRP_OF(patterns[pat].flags), to);
}

static int flush_all(struct scan_ctx *c)
{
	if (!c->any_pend)
		return 0; /* most bodies: nothing to look through */
	if (c->db->n_det > 64) {
		for (unsigned i = 0; i < c->db->n_det; i++)
			if (c->pend[i].live && emit(c, i, &c->pend[i]))
				return 1;
		return 0;
	}
	/* in det order, as the loop above: only the dets made live */
	for (uint64_t b = c->pend_bits; b; b &= b - 1) {
		unsigned i = (unsigned)__builtin_ctzll(b);
		if (c->pend[i].live && emit(c, i, &c->pend[i]))
			return 1;
	}
	return 0;
}

int detect_scan(const struct detect_db *db, struct detect_scratch *s, const void *buf, size_t len,
		detect_on_match *on_match, void *arg)
{
	return detect_scan_mask(db, s, buf, len, ~0ULL, on_match, arg);
}

/* The passes of a block scan over c->cur[0, len). */
static int scan_block(struct scan_ctx *c, size_t len)
{
	const struct detect_db *db = c->db;
	/* The trigger words first: the same pass says whether any literal a
	 * one-pass pattern starts with is there. Most bodies have none, and a
	 * Hyperscan call that can report nothing still cost ~1.5 instructions
	 * per byte plus its set-up. */
	if (trig_words_scan(c, c->cur, len, 0))
		return -ECANCELED;
	if (c->gate || db->n_pat > N_BUILTIN_PATTERNS) {
		hs_error_t e = hs_scan(db->block_db, (const char *)c->cur, (unsigned)len, 0,
				       c->scr->hs, on_hs_match, c);
		if (e == HS_SCAN_TERMINATED || c->stopped)
			return -ECANCELED;
		if (e != HS_SUCCESS)
			return e == HS_INVALID ? -EINVAL : -EIO;
	}
	if (wants_numbers(c) && (number_runs(c, c->cur, len, 0) || number_runs_end(c, len)))
		return -ECANCELED;
	if (wants_ipv6(c) && (colon_runs(c, c->cur, len, 0) || colon_runs_end(c, len)))
		return -ECANCELED;
	if (wants_email(c) && (email_runs(c, c->cur, len, 0) || email_runs_end(c, len)))
		return -ECANCELED;
	return run_queue(c, UINT64_MAX) || flush_all(c) ? -ECANCELED : 0;
}

int detect_scan_mask(const struct detect_db *db, struct detect_scratch *s, const void *buf,
		     size_t len, uint64_t want, detect_on_match *on_match, void *arg)
{
	static const char empty[1];
	if (!s || s->db != db || len > UINT32_MAX)
		return -EINVAL;
	struct scan_ctx c = {
		.db = db,
		.scr = s,
		.pend = s->pend,
		.on_match = on_match,
		.arg = arg,
		.cur = len ? buf : (const void *)empty,
		.cur_len = len,
		.queue = s->queue,
		.want = want,
		.run_first = NO_RUN,
		.run_last = NO_RUN,
	};
	/* Only the entries the last scan wrote (most wrote none): a memset of
	 * all of them cost ~80 instructions a scan. */
	if (db->n_det > 64)
		memset(s->pend, 0, db->n_det * sizeof(*s->pend));
	else
		for (uint64_t b = s->pend_dirty; b; b &= b - 1)
			s->pend[__builtin_ctzll(b)] = (struct pend){0};
	int r = scan_block(&c, len);
	s->pend_dirty = c.pend_bits;
	return r;
}

/* ---- streaming -------------------------------------------------------------------- */

int detect_stream_open(const struct detect_db *db, detect_on_match *on_match, void *arg,
		       struct detect_stream **out)
{
	*out = NULL;
	struct detect_stream *st = calloc(1, sizeof(*st));
	if (!st)
		return -ENOMEM;
	st->db = db;
	st->pend = calloc(db->n_det, sizeof(*st->pend));
	st->hist = malloc(DETECT_WINDOW);
	if (!st->pend || !st->hist)
		goto nomem;
	if (hs_open_stream(db->stream_db, 0, &st->hs) != HS_SUCCESS)
		goto nomem;
	st->hs_live = db->n_pat > N_BUILTIN_PATTERNS;
	st->ctx = (struct scan_ctx){
		.db = db,
		.pend = st->pend,
		.on_match = on_match,
		.arg = arg,
		.hist = st->hist,
		.queue = st->queue,
		.want = ~0ULL,
		.run_first = NO_RUN,
		.run_last = NO_RUN,
	};
	*out = st;
	return 0;
nomem:
	detect_stream_free(st);
	return -ENOMEM;
}

void detect_stream_free(struct detect_stream *st)
{
	if (!st)
		return;
	if (st->hs)
		hs_close_stream(st->hs, NULL, NULL, NULL);
	free(st->pend);
	free(st->hist);
	free(st);
}

void detect_stream_set_mask(struct detect_stream *st, uint64_t want)
{
	st->ctx.want = want;
}

uint64_t detect_stream_offset(const struct detect_stream *st)
{
	return st->offset;
}

uint64_t detect_stream_settled(const struct detect_stream *st)
{
	/* +2: the right-context byte and the \b lookahead. */
	uint64_t horizon = st->db->maxlen + 2;
	uint64_t settled = st->offset > horizon ? st->offset - horizon : 0;
	for (unsigned i = 0; i < st->db->n_det; i++)
		if (st->pend[i].live && st->pend[i].start < settled)
			settled = st->pend[i].start;
	for (unsigned i = 0; i < st->ctx.n_queue; i++)
		if (st->queue[i].lo < settled)
			settled = st->queue[i].lo;
	return settled;
}

uint64_t detect_stream_settled_mask(const struct detect_stream *st, uint64_t mask)
{
	uint64_t horizon = 2;
	for (unsigned i = 0; i < st->db->n_det && i < 64; i++)
		if ((mask >> i & 1) && st->db->det[i].maxlen + 2 > horizon)
			horizon = st->db->det[i].maxlen + 2;
	uint64_t settled = st->offset > horizon ? st->offset - horizon : 0;
	for (unsigned i = 0; i < st->db->n_det && i < 64; i++)
		if ((mask >> i & 1) && st->pend[i].live && st->pend[i].start < settled)
			settled = st->pend[i].start;
	for (unsigned i = 0; i < st->ctx.n_queue; i++)
		if ((st->db->group_dets[st->queue[i].grp] & mask) && st->queue[i].lo < settled)
			settled = st->queue[i].lo;
	return settled;
}

/* Keep the last DETECT_WINDOW bytes of the stream in hist. */
static void hist_append(struct detect_stream *st, const uint8_t *p, size_t n)
{
	struct scan_ctx *c = &st->ctx;
	if (n >= DETECT_WINDOW) {
		memcpy(st->hist, p + n - DETECT_WINDOW, DETECT_WINDOW);
		c->hist_len = DETECT_WINDOW;
		return;
	}
	size_t keep = c->hist_len + n > DETECT_WINDOW ? DETECT_WINDOW - n : c->hist_len;
	memmove(st->hist, st->hist + c->hist_len - keep, keep);
	memcpy(st->hist + keep, p, n);
	c->hist_len = keep + n;
}

/* A queued confirmation may still produce a match of det. */
static bool queued(const struct scan_ctx *c, unsigned det)
{
	if (det >= DETECT_BUILTIN_COUNT)
		return false;
	for (unsigned i = 0; i < c->n_queue; i++)
		if (c->db->group_dets[c->queue[i].grp] & (1u << det))
			return true;
	return false;
}

int detect_stream_feed(struct detect_stream *st, struct detect_scratch *s, const void *buf,
		       size_t len)
{
	struct scan_ctx *c = &st->ctx;
	if (c->stopped)
		return -ECANCELED;
	if (!s || s->db != st->db || len > UINT32_MAX)
		return -EINVAL;
	if (len == 0)
		return 0;
	c->scr = s;
	c->cur = buf;
	c->cur_base = st->offset;
	c->cur_len = len;
	c->gate = false;
	if (trig_words_scan(c, buf, len, st->offset)) {
		c->stopped = true;
		return -ECANCELED;
	}
	hs_error_t e = HS_SUCCESS;
	if (!st->hs_live && c->gate) {
		/* the literal may have begun in the previous feed */
		st->hs_live = true;
		c->hs_base = c->gate_at < st->offset ? c->gate_at : st->offset;
		if (c->gate_at < st->offset)
			e = hs_scan_stream(st->hs,
					   (const char *)c->hist + c->hist_len - (st->offset - c->gate_at),
					   (unsigned)(st->offset - c->gate_at), 0, s->hs, on_hs_match, c);
	}
	if (e == HS_SUCCESS && st->hs_live)
		e = hs_scan_stream(st->hs, buf, (unsigned)len, 0, s->hs, on_hs_match, c);
	if (e == HS_SCAN_TERMINATED || c->stopped) {
		c->stopped = true;
		return -ECANCELED;
	}
	if (e != HS_SUCCESS)
		return e == HS_INVALID ? -EINVAL : -EIO;
	/* While this feed's bytes are still at hand (a feed may be far larger
	 * than the window): find its digit runs, confirm the windows it
	 * completed, then deliver pending matches that can no longer grow (a
	 * same-start extension would be longer than the detector's maxlen). */
	uint64_t end = st->offset + len;
	int rc = 0;
	if ((wants_numbers(c) && number_runs(c, buf, len, st->offset)) ||
	    (wants_ipv6(c) && colon_runs(c, buf, len, st->offset)) ||
	    (wants_email(c) && email_runs(c, buf, len, st->offset)) || run_queue(c, end)) {
		rc = -ECANCELED;
		goto out;
	}
	for (unsigned i = 0; i < st->db->n_det; i++) {
		struct pend *p = &st->pend[i];
		if (p->live && p->start + st->db->det[i].maxlen + 2 <= end && !queued(c, i) &&
		    emit(c, i, p)) {
			rc = -ECANCELED;
			goto out;
		}
	}
out:
	hist_append(st, buf, len);
	st->offset = end;
	c->cur_base = end;
	c->cur_len = 0;
	return rc;
}

int detect_stream_finish(struct detect_stream *st, struct detect_scratch *s)
{
	struct scan_ctx *c = &st->ctx;
	int rc = 0;
	if (c->stopped) {
		rc = -ECANCELED;
		goto out;
	}
	if (!s || s->db != st->db) {
		rc = -EINVAL;
		goto out;
	}
	c->scr = s;
	c->cur_base = st->offset;
	c->cur_len = 0;
	hs_error_t e = hs_close_stream(st->hs, s->hs, on_hs_match, c);
	st->hs = NULL;
	if (e == HS_SCAN_TERMINATED || c->stopped)
		rc = -ECANCELED;
	else if (e != HS_SUCCESS)
		rc = -EIO;
	else if ((wants_numbers(c) && number_runs_end(c, st->offset)) ||
		 (wants_ipv6(c) && colon_runs_end(c, st->offset)) ||
		 (wants_email(c) && email_runs_end(c, st->offset)) || run_queue(c, UINT64_MAX) ||
		 flush_all(c))
		rc = -ECANCELED;
out:
	detect_stream_free(st);
	return rc;
}

/* ---- redaction ------------------------------------------------------------------- */

size_t detect_redact_max(const struct detect_db *db, unsigned id, enum detect_redact_mode mode,
			 size_t n)
{
	size_t t = strlen(detect_token(db, id));
	switch (mode) {
	case DETECT_REDACT_MASK:
		return t;
	case DETECT_REDACT_HASH:
		return t + 1 + DETECT_HASH_HEX;
	case DETECT_REDACT_LAST4:
		return n;
	}
	return 0;
}

ssize_t detect_redact(const struct detect_db *db, unsigned id, enum detect_redact_mode mode,
		      const void *match, size_t n, char *out, size_t cap)
{
	if (id >= db->n_det)
		return -EINVAL;
	const char *tok = db->det[id].token;
	size_t tl = strlen(tok);
	switch (mode) {
	case DETECT_REDACT_MASK:
		if (cap < tl)
			return -ENOSPC;
		memcpy(out, tok, tl);
		return (ssize_t)tl;
	case DETECT_REDACT_HASH: {
		char h[DETECT_HASH_HEX + 1];
		if (!db->key)
			return -EINVAL;
		if (cap < tl + 1 + DETECT_HASH_HEX)
			return -ENOSPC;
		hash_hex(db, match, n, h);
		if (!h[0])
			return -EIO;
		/* "[EMAIL]" → "[EMAIL:0123456789abcdef]" */
		memcpy(out, tok, tl - 1);
		out[tl - 1] = ':';
		memcpy(out + tl, h, DETECT_HASH_HEX);
		out[tl + DETECT_HASH_HEX] = ']';
		return (ssize_t)(tl + 1 + DETECT_HASH_HEX);
	}
	case DETECT_REDACT_LAST4: {
		const uint8_t *p = match;
		if (cap < n)
			return -ENOSPC;
		size_t keep = 0;
		for (size_t i = n; i-- > 0;) {
			if (is_alnum(p[i]) && keep < 4) {
				out[i] = (char)p[i];
				keep++;
			} else {
				out[i] = is_alnum(p[i]) ? '*' : (char)p[i];
			}
		}
		return (ssize_t)n;
	}
	}
	return -EINVAL;
}

unsigned detect_builtin_pattern_count(void)
{
	unsigned n = 0;
	for (unsigned i = 0; i < N_BUILTIN_PATTERNS; i++)
		n += !(patterns[i].flags & TRIG);
	return n;
}

const char *detect_builtin_pattern(unsigned i, enum detect_builtin *det, bool *caseless)
{
	for (unsigned k = 0; k < N_BUILTIN_PATTERNS; k++) {
		if (patterns[k].flags & TRIG)
			continue;
		if (i-- > 0)
			continue;
		if (det)
			*det = patterns[k].det;
		if (caseless)
			*caseless = patterns[k].flags & HS_FLAG_CASELESS;
		return patterns[k].re;
	}
	return NULL;
}

bool detect_builtin_valid(enum detect_builtin id, const void *p, size_t n)
{
	if ((unsigned)id >= DETECT_BUILTIN_COUNT || !builtins[id].validate)
		return false;
	struct cand c = {.p = p, .n = n, .prev = -1, .lo = 0, .hi = n};
	return builtins[id].validate(&c) && c.hi > c.lo;
}

/* Random windows from pieces that make number candidates, scanned both ways.
 * A window's triples (pattern, start where tracked, end) must be the same. */
struct xcheck_hits {
	unsigned n;
	unsigned long long v[CONFIRM_HITS][3];
};

static int on_xcheck(unsigned pat, unsigned long long from, unsigned long long to,
		     unsigned hs_flags, void *arg)
{
	struct xcheck_hits *h = arg;
	if (h->n == CONFIRM_HITS)
		return 1;
	h->v[h->n][0] = to;
	h->v[h->n][1] = pat;
	h->v[h->n][2] = patterns[pat].find ? 0 : from;
	h->n++;
	return 0;
}

static int cmp_triple(const void *a, const void *b)
{
	const unsigned long long *x = a, *y = b;
	for (int i = 0; i < 3; i++)
		if (x[i] != y[i])
			return x[i] < y[i] ? -1 : 1;
	return 0;
}

/* colon_runs' state machine over a whole window, each pattern that
 * matches as a hit (what its Hyperscan scan reports). */
static unsigned v6_window_hits(const uint8_t *w, size_t n, unsigned *kind, size_t *from, size_t *to,
			       unsigned cap)
{
	struct v6_run r = {0};
	unsigned nh = 0;

	for (size_t i = 0; i <= n && nh + 2 <= cap; i++) {
		unsigned h = 0;
		if (i == n)
			h = r.in ? v6_hits(&r) : 0;
		else if (r.in)
			h = v6_byte(&r, w[i]);
		else if (w[i] == ':')
			r = (struct v6_run){.in = true, .hex = -1}, v6_byte(&r, ':');
		for (unsigned k = V6_FULL; k <= V6_COMPRESSED; k++)
			if (h >> k & 1)
				kind[nh] = k, from[nh] = 0, to[nh++] = i < n ? i + 1 : n;
	}
	return nh;
}

/* email_runs' state machine over a whole window. */
static unsigned mail_window_hits(const uint8_t *w, size_t n, unsigned *kind, size_t *from,
				 size_t *to, unsigned cap)
{
	struct mail_run r = {0};
	unsigned nh = 0;

	for (size_t i = 0; i <= n && nh < cap; i++) {
		if (r.in && mail_hit(&r, i < n ? w[i] : -1))
			kind[nh] = 0, from[nh] = 0, to[nh++] = i;
		if (i == n)
			break;
		if (r.in && mail_byte(&r, w[i]))
			continue;
		if (w[i] == '@' && i > 0 && mail_pre(w[i - 1]))
			r = (struct mail_run){.in = true, .prev = M_AT, .tld = TLD_NONE};
	}
	return nh;
}

static int on_trig_xcheck(unsigned pat, unsigned long long from, unsigned long long to,
			  unsigned hs_flags, void *arg)
{
	struct tw_rec *h = arg;
	if (h->n == CONFIRM_HITS)
		return 1;
	h->v[h->n][0] = to;
	h->v[h->n++][1] = GRP_OF(patterns[pat].flags);
	return 0;
}

/* the leftmost start of a one-pass match (every such pattern tracks it) */
static int on_gate_xcheck(unsigned pat, unsigned long long from, unsigned long long to,
			  unsigned hs_flags, void *arg)
{
	uint64_t *first = arg;
	if (from < *first)
		*first = from;
	return 0;
}

static int cmp_pair(const void *a, const void *b)
{
	const uint64_t *x = a, *y = b;
	for (int i = 0; i < 2; i++)
		if (x[i] != y[i])
			return x[i] < y[i] ? -1 : 1;
	return 0;
}

/* The trigger checks' helpers against their references: wb_class against
 * re_space and is_alnum on every byte, tail_is (one 8-byte compare where
 * it can) against a byte loop at every end in w[0, n), for the words the
 * checks ask for. Returns what differs (the word for tail_is), NULL when
 * nothing does. */
static const char *check_tail_is(const uint8_t *w, size_t n)
{
	for (unsigned ch = 0; ch < 256; ch++)
		if ((wb_class[ch] == WB_SPACE) != re_space((int)ch) ||
		    (wb_class[ch] == WB_ALNUM) != is_alnum((int)ch))
			return "wb_class";
#define TAIL_CHECK(lit)                                                          \
	do {                                                                     \
		bool ref = pos >= sizeof(lit) - 1;                               \
		for (size_t k = 0; ref && k < sizeof(lit) - 1; k++)              \
			ref = (w[pos - (sizeof(lit) - 1) + k] | 0x20) == lit[k]; \
		if (tail_is(w, pos, lit) != ref)                                 \
			return lit;                                              \
	} while (0)
	for (size_t pos = 0; pos <= n; pos++) {
		TAIL_CHECK("repeat");
		TAIL_CHECK("instructions");
		TAIL_CHECK("prompt");
		TAIL_CHECK("pre-");
		TAIL_CHECK("pre");
		TAIL_CHECK("follow");
		TAIL_CHECK("obey");
		TAIL_CHECK("not");
		TAIL_CHECK("n't");
		TAIL_CHECK("stop");
		TAIL_CHECK("free");
		TAIL_CHECK("longer");
		TAIL_CHECK("anything");
	}
#undef TAIL_CHECK
	return NULL;
}

/* trig_words() against the CTRIG patterns on random windows of trigger
 * words (random case), pieces of them, whitespace and separators: the same
 * (end, group) pairs in one block, split in two stream feeds, and through
 * the scalar filter; and the gate said yes wherever the one-pass set
 * matches. */
static int check_trigger_words(const struct detect_db *db, struct detect_scratch *s,
			       unsigned n_windows, char *err, size_t errlen)
{
	static const char *const extra[] = {
		" ",   "  ",  "\t", "\n", " \r\n", "now", "dan",  "mode", "x",	"-",   "--",
		"=",   "#",   "*",   ":",  "]",	   ">",	  "pre",  "ign",  "ore",	"sys", "tem",
		"ant", "er",  "e",   "A",  "KIA",	   "sk",  "_",	  "<",	  "|",	"[",   "INST",
		"SYS", "eyJ", "ab",  "9",  "you",	   "now ", " now", "no",	"is",
		/* whole matches of the one-pass set, for the gate */
		"AKIA1234567890ABCDEF ",
		"ASIA1234567890ABCDEF ",
		"ABIA1234567890ABCDEF ",
		"ACCA1234567890ABCDEF ",
		"<|system|>",
		"<|assistant|>",
		"<|user|>",
		"<|endoftext|>",
		"<|begin_of_text|>",
		"<|start_header_id|>",
		"<|eot_id|>",
		"[INST]",
		"<<SYS>>",
		"gho_abcdefghijklmnopqrstuvwxyz0123456789 ",
		"ghu_abcdefghijklmnopqrstuvwxyz0123456789 ",
		"ghs_abcdefghijklmnopqrstuvwxyz0123456789 ",
		"ghr_abcdefghijklmnopqrstuvwxyz0123456789 ",
		"rk_test_abcdefghijklmnopqrstuvwx ",
		"xoxp-1-a ",
		"sk-abcdefghijklmnopqrstuvwx12 ",
		"<|im_start|>",
		"[/INST]",
		"<</SYS>>",
		"eyJhbGciOiJ.eyJzdWIiOiIx.sig ",
		"ghp_abcdefghijklmnopqrstuvwxyz0123456789 ",
		"xoxb-123-abc ",
		"-----BEGIN RSA PRIVATE KEY-----abc-----END RSA PRIVATE KEY-----",
		"sk_live_abcdefghijklmnopqrstuvwx ",
		"https://hooks.slack.com/services/T1234567/B1234567/abcdefghijklmnopqrstuvwx ",
	};
	const size_t n_extra = sizeof(extra) / sizeof(extra[0]);
	const char *res[N_BUILTIN_PATTERNS];
	unsigned flags[N_BUILTIN_PATTERNS], ids[N_BUILTIN_PATTERNS], n = 0;
	hs_database_t *ref = NULL;
	hs_compile_error_t *cerr = NULL;
	uint64_t r = 0x2545f4914f6cdd1dull;
	int rc = -EINVAL;

	for (unsigned i = 0; i < N_BUILTIN_PATTERNS; i++)
		if (patterns[i].flags & CTRIG) {
			res[n] = patterns[i].re;
			flags[n] = patterns[i].flags & ~OUR_FLAGS;
			ids[n++] = i;
		}
	if (hs_compile_multi(res, flags, ids, n, HS_MODE_BLOCK, NULL, &ref, &cerr) != HS_SUCCESS) {
		snprintf(err, errlen, "trigger patterns: %s", cerr ? cerr->message : "?");
		hs_free_compile_error(cerr);
		return -EIO;
	}
	hs_scratch_t *hs = NULL;
	if (hs_alloc_scratch(ref, &hs) != HS_SUCCESS) {
		snprintf(err, errlen, "trigger patterns: no scratch");
		rc = -ENOMEM;
		goto out;
	}
	for (unsigned it = 0; it < n_windows; it++) {
		char w[2 * 1024 + 512];
		size_t len = 0, want;
		r ^= r << 13, r ^= r >> 7, r ^= r << 17;
		want = 1 + r % 160;
		while (len < want) {
			r ^= r << 13, r ^= r >> 7, r ^= r << 17;
			const char *p = r % 3 ? extra[(r >> 8) % n_extra]
					      : trig_words[(r >> 8) % N_TRIG_WORDS].s;
			size_t l = strlen(p);
			if (len + l > 256)
				break;
			for (size_t k = 0; k < l; k++) {
				r ^= r << 13, r ^= r >> 7, r ^= r << 17;
				w[len + k] = is_letter(p[k]) && r % 5 == 0 ? p[k] ^ 0x20 : p[k];
			}
			/* now and then a near miss: one byte of it changed */
			if (r % 4 == 0)
				w[len + (r >> 32) % l] = "x -:"[(r >> 40) % 4];
			len += l;
		}
		const char *tail_bad = check_tail_is((const uint8_t *)w, len);
		if (tail_bad) {
			snprintf(err, errlen,
				 "trigger check helper: %s differs from its reference in \"%.*s\"",
				 tail_bad, (int)len, w);
			goto out;
		}
		/* now and then after 2 KiB of spaces: the AVX2 filter's
		 * chunks of steps end inside the window */
		if (it % 8 == 3) {
			size_t at = 2048 - 192 + (size_t)(r >> 24) % 256;
			memmove(w + at, w, len);
			memset(w, ' ', at);
			len += at;
		}
		struct tw_rec a = {0}, b = {0}, st = {0};
		if (hs_scan(ref, w, (unsigned)len, 0, hs, on_trig_xcheck, &a) != HS_SUCCESS) {
			snprintf(err, errlen, "trigger patterns: scan failed or too many hits");
			rc = -EIO;
			goto out;
		}
		struct scan_ctx c = {
			.db = db, .cur = (const uint8_t *)w, .cur_len = len, .tw_rec = &b};
		if (it & 1)
			tw_scalar(&c, c.cur, len, 0, 0, SIZE_MAX);
		else
			trig_words_scan(&c, c.cur, len, 0);
		/* two feeds, cut at a random point */
		size_t cut = (size_t)(r >> 16) % (len + 1);
		struct scan_ctx c1 = {.db = db, .cur = (const uint8_t *)w, .cur_len = cut, .tw_rec = &st};
		trig_words_scan(&c1, c1.cur, cut, 0);
		struct scan_ctx c2 = {.db = db,
				      .cur = (const uint8_t *)w + cut,
				      .cur_base = cut,
				      .cur_len = len - cut,
				      .hist = (const uint8_t *)w,
				      .hist_len = cut,
				      .tw_rec = &st};
		trig_words_scan(&c2, c2.cur, len - cut, cut);
		qsort(a.v, a.n, sizeof(a.v[0]), cmp_pair);
		qsort(b.v, b.n, sizeof(b.v[0]), cmp_pair);
		qsort(st.v, st.n, sizeof(st.v[0]), cmp_pair);
		if (a.n != b.n || memcmp(a.v, b.v, a.n * sizeof(a.v[0])) || a.n != st.n ||
		    memcmp(a.v, st.v, a.n * sizeof(a.v[0]))) {
			snprintf(err, errlen,
				 "trigger window \"%.*s\": hyperscan %u hits, C %u, C in two "
				 "feeds (cut %zu) %u",
				 (int)len, w, a.n, b.n, cut, st.n);
			goto out;
		}
		/* The gate opens at or before the first one-pass match, in one
		 * block and in two feeds (where a stream starts Hyperscan). */
		uint64_t first = UINT64_MAX;
		if (db->n_pat == N_BUILTIN_PATTERNS &&
		    hs_scan(db->block_db, w, (unsigned)len, 0, s->hs, on_gate_xcheck, &first) ==
			    HS_SUCCESS &&
		    first != UINT64_MAX &&
		    (!c.gate || c.gate_at > first ||
		     !((c1.gate && c1.gate_at <= first) || (c2.gate && c2.gate_at <= first)))) {
			snprintf(err, errlen,
				 "window \"%.*s\" (cut %zu): the one-pass set matches from %llu, the "
				 "gate is shut there",
				 (int)len, w, cut, (unsigned long long)first);
			goto out;
		}
	}
	rc = 0;
out:
	hs_free_scratch(hs);
	hs_free_database(ref);
	return rc;
}

/* Record a number trigger; one whose groups run_groups() got wrong is
 * recorded as group G_COUNT, which the reference never has. */
static void number_rec(struct scan_ctx *c, uint64_t at, int g)
{
	if (c->tw_rec->n < CONFIRM_HITS) {
		c->tw_rec->v[c->tw_rec->n][0] = at;
		c->tw_rec->v[c->tw_rec->n++][1] =
			g < 0 || (unsigned)g == number_groups(c, at) ? G_NUMBER : G_COUNT;
	}
}

/* The ends of [0-9][0-9 ().+-]{5,}[0-9](?:[^0-9]|\z) in w[0, n), read
 * off the regex: a digit followed by a non-digit (or the end), with a
 * digit at least 6 bytes before it and only run bytes between. */
static void number_trigger_ref(const uint8_t *w, size_t n, struct tw_rec *h)
{
	for (size_t j = 0; j < n && h->n < CONFIRM_HITS; j++) {
		if (!is_digit(w[j]) || (j + 1 < n && is_digit(w[j + 1])))
			continue;
		size_t s = j, first = j;
		while (s > 0 && run_byte(w[s - 1]))
			if (is_digit(w[--s]))
				first = s;
		if (j - first >= 6) {
			h->v[h->n][0] = j + 1 < n ? j + 2 : n;
			h->v[h->n++][1] = G_NUMBER;
		}
	}
}

/* The cross-checks' random source (xorshift64): the same windows on
 * every run, so a failure can be replayed. */
static uint64_t xs_next(uint64_t *r)
{
	*r ^= *r << 13, *r ^= *r >> 7, *r ^= *r << 17;
	return *r;
}

/* A random window for the cross-checks: pieces drawn from piece[] into w
 * until it holds want bytes or the next piece would not fit in cap.
 * Returns its length. */
static size_t random_window(uint64_t *r, const char *const *piece, size_t n_piece, char *w,
			    size_t cap, size_t want)
{
	size_t n = 0;
	while (n < want) {
		const char *p = piece[xs_next(r) % n_piece];
		size_t l = strlen(p);
		if (n + l > cap)
			break;
		memcpy(w + n, p, l);
		n += l;
	}
	return n;
}

/* number_runs() against number_trigger_ref() on random windows of digits,
 * run bytes and letters up to 250 bytes (several 64-byte masks, runs across
 * them, the padded tail): the same ends in one block and in two feeds cut
 * at a random point. */
static int check_number_runs(const struct detect_db *db, struct detect_scratch *s,
			     unsigned n_windows, char *err, size_t errlen)
{
	static const char *const piece[] = {
		"1",
		"7",
		"0",
		"42",
		"2024",
		"555",
		"0132",
		" ",
		" ",
		"  ",
		"(",
		")",
		"+",
		"-",
		".",
		"x",
		"ab",
		"percent",
		"\n",
		":",
		",",
		"/",
		"\n",
		"_",
		"\xc3\xa9",
		/* what number_groups() reads: dots, '+', a letter or ':' before */
		"10.20.30.40",
		"+1 ",
		"DE",
		"Z",
		"...",
		"4111 1111 1111 1111",
		"078-05-1120",
		/* every digit first in a run: a skip loop that misses one */
		"9876543",
		" 8 65 43 ",
		"(9",
		/* digits that span 6, 7 or 8 bytes: one byte decides */
		" 123456 ",
		" 1234567 ",
		"x12-4567x",
		"(12) 456",
		" 12345678.",
	};
	const size_t n_piece = sizeof(piece) / sizeof(piece[0]);
	uint64_t r = 0x853c49e6748fea9bull;

	for (unsigned it = 0; it < n_windows; it++) {
		uint8_t w[256];
		size_t n = random_window(&r, piece, n_piece, (char *)w, sizeof(w),
					 1 + xs_next(&r) % 250);
		struct tw_rec a = {0}, b = {0}, st = {0};
		number_trigger_ref(w, n, &a);
		struct scan_ctx c = {.db = db,
				     .scr = s,
				     .cur = w,
				     .cur_len = n,
				     .run_first = NO_RUN,
				     .run_last = NO_RUN,
				     .tw_rec = &b};
		number_runs(&c, w, n, 0);
		number_runs_end(&c, n);
		size_t cut = (size_t)(r >> 16) % (n + 1);
		struct scan_ctx c1 = {.db = db,
				      .scr = s,
				      .cur = w,
				      .cur_len = cut,
				      .run_first = NO_RUN,
				      .run_last = NO_RUN,
				      .tw_rec = &st};
		number_runs(&c1, w, cut, 0);
		c1.cur = w + cut, c1.cur_base = cut, c1.cur_len = n - cut;
		c1.hist = w, c1.hist_len = cut;
		number_runs(&c1, w + cut, n - cut, cut);
		number_runs_end(&c1, n);
		if (a.n != b.n || memcmp(a.v, b.v, a.n * sizeof(a.v[0])) || a.n != st.n ||
		    memcmp(a.v, st.v, a.n * sizeof(a.v[0]))) {
			snprintf(err, errlen,
				 "number window \"%.*s\": the regex ends at %u places, number_runs "
				 "%u, in two feeds (cut %zu) %u",
				 (int)n, (const char *)w, a.n, b.n, cut, st.n);
			return -EINVAL;
		}
	}
	return 0;
}

/* next_at(), next_colon() and next_digit() (their vector loops at the
 * db's simd level and the last bytes read again) against a byte loop, from
 * every start in random buffers of 64 to 400 bytes of text, '@', ':', hex
 * digits, "::", every digit and the bytes next to them ('/', ':'), and now
 * and then any byte. */
static int check_skips(unsigned simd, unsigned n_bufs, char *err, size_t errlen)
{
	static const char piece[] = "ab cd@:1f::xyz.\"0123456789/";
	uint64_t r = 0x6a09e667f3bcc909ull;
	uint8_t b[400];

	for (unsigned it = 0; it < n_bufs; it++) {
		r ^= r << 13, r ^= r >> 7, r ^= r << 17;
		size_t n = 64 + r % (sizeof(b) - 63);
		unsigned sparse = (unsigned)(r >> 32) % 64 + 1;
		for (size_t k = 0; k < n; k++) {
			r ^= r << 13, r ^= r >> 7, r ^= r << 17;
			b[k] = r % sparse      ? 'e' + r % 3
			       : (r >> 8) % 32 ? piece[(r >> 16) % (sizeof(piece) - 1)]
					       : (uint8_t)(r >> 24);
		}
		for (size_t i = 0; i < n; i++) {
			size_t at = i, co = i, dg = i;
			while (at < n && b[at] != '@')
				at++;
			while (co < n && !(b[co] == ':' && colon_may_run(b, co, n)))
				co++;
			while (dg < n && !is_digit(b[dg]))
				dg++;
			if (next_at(b, i, n, simd) != at || next_colon(b, i, n, simd) != co ||
			    next_digit(b, i, n, simd) != dg) {
				snprintf(err, errlen,
					 "buffer \"%.*s\" from %zu (simd %u): '@' at %zu (next_at "
					 "%zu), ':' at %zu (next_colon %zu), digit at %zu "
					 "(next_digit %zu)",
					 (int)n, (const char *)b, i, simd, at,
					 next_at(b, i, n, simd), co, next_colon(b, i, n, simd), dg,
					 next_digit(b, i, n, simd));
				return -EINVAL;
			}
		}
	}
	return 0;
}

int detect_check_number_matchers(const struct detect_db *db, struct detect_scratch *s,
				 unsigned n_windows, char *err, size_t errlen)
{
	int rc0 = check_skips(db->simd, n_windows / 400, err, errlen);
	if (rc0)
		return rc0;
	int rc = check_trigger_words(db, s, n_windows / 4, err, errlen);
	if (rc)
		return rc;
	rc = check_number_runs(db, s, n_windows / 4, err, errlen);
	if (rc)
		return rc;
	static const char *const piece[] = {
		"ssn",
		"SSN",
		"ss#",
		"social security",
		"Social\t security number",
		"social security no.",
		"social  security #",
		" ",
		"  ",
		"-",
		".",
		"(",
		")",
		"+",
		"1",
		"2",
		"5",
		"9",
		"0",
		"3",
		"4",
		"7",
		"8",
		"6",
		"\n",
		"x",
		"ab",
		":",
		"_",
		"212",
		"555",
		"0123",
		"123",
		"45",
		"6789",
		"+1 ",
		"+44 ",
		"(415) ",
		"555-0132",
		"10.20.30.40",
		"::",
		"255.",
		"1.2.3.4.5",
		"078-05-1120",
	};
	/* colon runs: IPv6 groups, "::", too many hex digits, the bytes
	 * that end a run with and without a match */
	static const char *const v6_piece[] = {
		":",	     "::",	     ":", "1", "a", "F", "0", "db8", "fe80", "ffff",
		"12345",     "abcd",	     "g", "_", ".", " ", "x", "-",   "\n",   "1.2.3.4",
		"2001:db8:", ":1:2:3:4:5:6",
	};
	/* addresses: labels, dots, a TLD too long, bytes that end a domain
	 * with and without a word boundary, several '@' */
	static const char *const mail_piece[] = {
		"@",
		"@",
		".",
		".",
		"a",
		"Z",
		"1",
		"-",
		"_",
		"%",
		"+",
		" ",
		"..",
		"co",
		"com",
		"x.y",
		"b-2",
		"\n",
		"\xc3\xa9",
		"abcdefghijklmnopqrstuvwxyz",
		"abcdefghijklmnopqrstuvwx",
		"mail.example.org",
	};
	uint64_t r = 0x9e3779b97f4a7c15ull;

	for (unsigned it = 0; it < n_windows; it++) {
		unsigned grp = it % 4 == 3   ? G_EMAIL
			       : it % 3 == 2 ? G_IPV6
			       : it & 1	     ? G_NUM_IP
					     : G_NUM_PHONE;
		const char *const *pieces = grp == G_EMAIL  ? mail_piece
					    : grp == G_IPV6 ? v6_piece
							    : piece;
		size_t n_pieces = grp == G_EMAIL  ? sizeof(mail_piece) / sizeof(mail_piece[0])
				  : grp == G_IPV6 ? sizeof(v6_piece) / sizeof(v6_piece[0])
						  : sizeof(piece) / sizeof(piece[0]);
		char w[96];
		size_t n = random_window(&r, pieces, n_pieces, w, sizeof(w), 1 + xs_next(&r) % 80);
		struct xcheck_hits a = {0}, b = {0};
		if (hs_scan(db->confirm_som_db[grp], w, (unsigned)n, 0, s->hs_conf, on_xcheck,
			    &a) != HS_SUCCESS) {
			snprintf(err, errlen, "hyperscan failed or too many hits");
			return -EIO;
		}
		unsigned kind[CONFIRM_HITS];
		size_t from[CONFIRM_HITS], to[CONFIRM_HITS];
		unsigned nh = grp == G_EMAIL  ? mail_window_hits((const uint8_t *)w, n, kind, from,
								 to, CONFIRM_HITS)
			      : grp == G_IPV6 ? v6_window_hits((const uint8_t *)w, n, kind, from,
							       to, CONFIRM_HITS)
			      : grp == G_NUM_IP
				      ? ip_window_hits((const uint8_t *)w, n, kind, from, to,
						       CONFIRM_HITS, db->simd)
				      : phone_window_hits((const uint8_t *)w, n, kind, from, to,
							  CONFIRM_HITS, db->simd);
		for (unsigned i = 0; i < nh && b.n < CONFIRM_HITS; i++, b.n++) {
			unsigned pat = grp == G_EMAIL	 ? db->mail_pat
				       : grp == G_IPV6	 ? db->v6_pat[kind[i]]
				       : grp == G_NUM_IP ? db->ip_pat[kind[i]]
							 : db->phone_pat[kind[i]];
			b.v[b.n][0] = to[i];
			b.v[b.n][1] = pat;
			b.v[b.n][2] = patterns[pat].find ? 0 : from[i];
		}
		qsort(a.v, a.n, sizeof(a.v[0]), cmp_triple);
		qsort(b.v, b.n, sizeof(b.v[0]), cmp_triple);
		if (a.n != b.n || memcmp(a.v, b.v, a.n * sizeof(a.v[0]))) {
			snprintf(err, errlen, "window \"%.*s\": hyperscan %u hits, C %u", (int)n, w,
				 a.n, b.n);
			return -EINVAL;
		}
	}
	return 0;
}
