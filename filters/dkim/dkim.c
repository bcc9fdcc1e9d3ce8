/*
 * dkim.c - the built-in "dkim" filter: DKIM verification (RFC 6376) with
 * Authentication-Results (RFC 8601), a require policy, and signing
 *
 * Options (section [filter NAME]):
 *	trusted_networks = 127.0.0.0/8, ::1/128	(the default)
 *		clients whose mail is signed rather than verified; an empty
 *		value trusts no one. An authenticated client is trusted too.
 *	require = example.com, example.net
 *		author domains (the domain of a From: mailbox) whose mail
 *		must carry a passing signature by that same domain (d=);
 *		other mail from them is refused with 550 5.7.20 (RFC 7372)
 *	on_temperror = accept | tempfail		(accept)
 *		what to do with a message none of whose signatures passed
 *		and one of which could not be checked for a DNS failure:
 *		let it through marked dkim=temperror, or answer 451 4.4.3
 *		so that the client retries
 *	max_signatures = 10
 *		signatures verified per message; the rest are ignored
 *		(author-domain signatures are chosen first)
 *	sign = example.com:sel2026:/etc/portcullis/dkim/example.com.pem, ...
 *		domain:selector:key file; the key (PEM, RSA of 1024 bits or
 *		more, or Ed25519) says the algorithm: rsa-sha256 or
 *		ed25519-sha256. A domain listed twice (an RSA and an Ed25519
 *		key, RFC 8463) gets both signatures.
 *	sign_headers = From, Reply-To, Subject, Date, To, Cc, ... (below)
 *		the fields signed when present; From is required and is
 *		also signed once more than it occurs, so that no From can
 *		be added later
 *	canonicalization = relaxed/relaxed		(the default)
 *		header/body canonicalization of our signatures, written as
 *		the c= tag: "relaxed" alone is relaxed/simple
 *
 * Mail from an untrusted client is verified. Every signature (up to
 * max_signatures) gets one resinfo in one Authentication-Results field
 * added at the top, "dkim=RESULT [reason=...] header.d= header.s= header.a=
 * header.b=" (the first characters of b=, enough to tell the signatures
 * apart), or "dkim=none" for unsigned mail. Results follow RFC 8601 2.7.1:
 *	pass		the signature and the body hash verify
 *	fail		they do not (a changed header or body, l= past the end)
 *	temperror	the key could not be fetched (DNS timeout, SERVFAIL)
 *	permerror	no key (NXDOMAIN, NODATA), a revoked or unusable key, a
 *			signature without From in h=, or an expired signature
 *	neutral		the signature itself cannot be parsed
 *	policy		valid but not acceptable here: rsa-sha1 (RFC 8301), an
 *			RSA key under 1024 bits
 * A failing signature alone changes nothing (RFC 6376 6.3): only require
 * and on_temperror refuse mail.
 *
 * Mail from a trusted client is signed when it has one From: field with
 * one mailbox, whose domain is a signing domain. The DKIM-Signature field
 * goes at the top, on one line (the header API takes no folded values);
 * put this filter last in the chain, since a header change by a later
 * filter breaks the signature.
 *
 * The header is fed to libopendkim as received (pc_header_raw()): the
 * "simple" canonicalization hashes the bytes themselves, folding
 * included. The body is streamed from the spool in pieces.
 *
 * Decision record: "dkim" (the overall result: pass when one signature
 * passed, none, or the first signature's result; "signed" or "unsigned"
 * for trusted mail), "signatures" (one "RESULT d=... s=... a=..." per
 * signature, "; "-separated, with the reason in parentheses), "ignored"
 * (signatures past max_signatures) and "require" (a required author
 * domain and what it came to: "example.com: pass", "...: no passing
 * signature", "...: key lookup failed").
 *
 * libopendkim decodes the key of every signature it checks; the decoded
 * keys are kept across messages by dkim_keycache.c, which answers
 * libopendkim's d2i_PUBKEY_bio() calls. It also decodes the signing key
 * again for every message it signs, which with OpenSSL 3 costs about as
 * much as the RSA signature itself (the decoding, and the RSA blinding a
 * fresh key sets up again): init decodes each signing key once and keeps
 * it in dkim_signkey.c, which answers libopendkim's
 * PEM_read_bio_PrivateKey() with it, and fini lets it go.
 *
 * The data hook is marked nonblocking. On the event loop it verifies a
 * message whose keys the DNS cache holds, with at most 4 signatures to
 * check and at most 256 KiB to hash over them all. A key that is
 * not there (pc_dns_query() says PC_DNS_WOULDBLOCK when libopendkim asks
 * for the keys, before any body byte is hashed, and the signature's key
 * query failed), more work than that and signing make it return
 * PC_WOULDBLOCK, and it runs again on a thread.
 *
 * The instance (its DKIM_LIB included) is built by init and only read
 * afterwards; libopendkim handles are per message, so concurrent
 * sessions need no lock. Bad option values are reported with
 * pc_config_error() naming the key.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>

#include <openssl/err.h>
#include <openssl/evp.h>

#include <portcullis/filter.h>

#include "dkim_dns.h"
#include "dkim_keycache.h"
#include "dkim_signkey.h"
#include "dkim_from.h"
#include "pc_domain.h"
#include "pc_list.h"
#include "pc_netlist.h"

#define PCDKIM_DEFAULT_TRUSTED "127.0.0.0/8, ::1/128"

/*
 * RFC 6376 5.4.1 recommends these; From is required. Oversigning From
 * (DKIM_OPTS_OVERSIGNHDRS) makes a second From an invalidating change.
 */
#define PCDKIM_DEFAULT_SIGN_HEADERS                                             \
	"From, Reply-To, Subject, Date, To, Cc, Message-ID, In-Reply-To, "    \
	"References, MIME-Version, Content-Type, Content-Transfer-Encoding, " \
	"Content-Disposition, Sender"

#define PCDKIM_DEFAULT_MAX_SIGNATURES 10
#define PCDKIM_MAX_MAX_SIGNATURES 100

/* The most sign_headers names (libopendkim builds one regex of them). */
#define PCDKIM_MAX_SIGN_HEADERS 64

/*
 * The most work done on the event loop: the body is hashed once per
 * signature, and hashing 256 KiB takes about a millisecond; each
 * signature costs a public-key operation (tens of µs for RSA-2048, more
 * for larger keys). More than that, and signing (an RSA signature costs
 * about a millisecond), go to a thread.
 */
#define PCDKIM_LOOP_MAX_BYTES (256 * 1024)
#define PCDKIM_LOOP_MAX_SIGNATURES 4

/* A private key file larger than this is not a key. */
#define PCDKIM_KEY_FILE_MAX (64 * 1024)

/* Body bytes per pc_body_read(). */
#define PCDKIM_BODY_CHUNK 16384

/* RFC 5322 2.1.1: a line is at most 998 characters. */
#define PCDKIM_LINE_MAX 998
#define PCDKIM_AR_NAME "Authentication-Results"
#define PCDKIM_SIG_NAME "DKIM-Signature"

/* RFC 7372 3.1: no passing DKIM signature found. */
#define PCDKIM_REQUIRE_CODE 550
#define PCDKIM_REQUIRE_ENH "5.7.20"

/* RFC 3463 X.4.3: directory (here DNS) server failure; retry later. */
#define PCDKIM_TEMP_CODE 451
#define PCDKIM_TEMP_ENH "4.4.3"

/* A failure of our own (spool, memory, libopendkim). */
#define PCDKIM_INTERNAL_CODE 451
#define PCDKIM_INTERNAL_ENH "4.3.0"

/* The results of RFC 8601 2.7.1, in the order the overall result ranks. */
enum pcdkim_result {
	RES_PASS,
	RES_FAIL,
	RES_TEMPERROR,
	RES_PERMERROR,
	RES_NEUTRAL,
	RES_POLICY,
};

static const char *const pcdkim_result_names[] = {
	"pass", "fail", "temperror", "permerror", "neutral", "policy",
};

/* One signing key: an entry of "sign". */
struct pcdkim_signer {
	char *domain;	/* normalised: what d= says and From must match */
	char *selector;
	char *key;	/* the PEM text libopendkim takes; in dkim_signkey.c */
	dkim_alg_t alg; /* from the key type */
};

struct pcdkim_instance {
	DKIM_LIB *lib;
	struct pc_netlist trusted;
	char (*require)[PC_DOMAIN_BUF];
	size_t nrequire;
	struct pcdkim_signer *signers;
	size_t nsigners;
	dkim_canon_t hcanon, bcanon;
	bool temperror_tempfail;
	unsigned max_signatures;
};

/* The most author domains one message is checked for. */
#define PCDKIM_MAX_AUTHORS 16

/* What one verification needs in libopendkim's prescreen callback. */
struct pcdkim_job {
	const struct pcdkim_instance *inst;
	char authors[PCDKIM_MAX_AUTHORS][PC_DOMAIN_BUF];
	size_t nauthors;
};

/* One verified signature, as reported. */
struct pcdkim_verdict {
	enum pcdkim_result result;
	const char *reason;		/* NULL for pass */
	char domain[PC_DOMAIN_BUF];	/* d= as written, made printable */
	char ndomain[PC_DOMAIN_BUF]; /* d= normalised, "" when invalid */
	char selector[PC_DOMAIN_BUF];
	char b[64];			/* the start of b= */
	const char *alg;		/* "rsa-sha256", ... or NULL */
};

static const char *const pcdkim_options[] = {
	"trusted_networks",
	"require",
	"on_temperror",
	"max_signatures",
	"sign",
	"sign_headers",
	"canonicalization",
	NULL,
};

/* pcdkim_free_instance - release an instance, complete or not */
static void pcdkim_free_instance(struct pcdkim_instance *di)
{
	if (!di)
		return;
	if (di->lib)
		dkim_close(di->lib);
	pc_netlist_free(&di->trusted);
	free(di->require);
	for (size_t i = 0; i < di->nsigners; i++) {
		free(di->signers[i].domain);
		free(di->signers[i].selector);
		if (di->signers[i].key) {
			pcdkim_signkey_remove(di->signers[i].key,
					      strlen(di->signers[i].key));
			/* a private key: leave no copy in freed memory */
			OPENSSL_cleanse(di->signers[i].key,
					strlen(di->signers[i].key));
			free(di->signers[i].key);
		}
	}
	free(di->signers);
	free(di);
}

/* pcdkim_parse_require - the require list, normalised */
static int pcdkim_parse_require(pc_config *config, struct pcdkim_instance *di,
			      const char *list)
{
	size_t n = pc_list_count(list), len;
	const char *item;

	if (n == 0)
		return 0;
	di->require = calloc(n, sizeof(*di->require));
	if (!di->require) {
		pc_config_error(config, "require", "out of memory");
		return -1;
	}
	while (pc_list_next(&list, &item, &len)) {
		if (pc_domain_normalize(item, len, di->require[di->nrequire],
					   PC_DOMAIN_BUF) < 0) {
			pc_config_error(config, "require",
					"\"%.*s\" is not a domain", (int)len,
					item);
			return -1;
		}
		di->nrequire++;
	}
	return 0;
}

/*
 * pcdkim_load_key - read and check a private key file; the PEM text and
 * the algorithm go to s, and the decoded key to the table that answers
 * libopendkim's decoding of that text (dkim_signkey.h) while s->key is
 * set. -1 after pc_config_error().
 */
static int pcdkim_load_key(pc_config *config, const struct pcdkim_instance *di,
			 struct pcdkim_signer *s, const char *path)
{
	char *text = NULL, *begin = NULL;
	size_t len = 0;
	EVP_PKEY *pkey = NULL;
	FILE *fp;
	int rc = -1;

	fp = fopen(path, "r");
	if (!fp) {
		pc_config_error(config, "sign", "key %s: %s", path,
				strerror(errno));
		return -1;
	}
	text = malloc(PCDKIM_KEY_FILE_MAX + 1);
	if (!text) {
		pc_config_error(config, "sign", "key %s: out of memory", path);
		goto out;
	}
	len = fread(text, 1, PCDKIM_KEY_FILE_MAX + 1, fp);
	if (ferror(fp)) {
		pc_config_error(config, "sign", "key %s: read error", path);
		goto out;
	}
	if (len > PCDKIM_KEY_FILE_MAX) {
		pc_config_error(config, "sign",
				"key %s: larger than %d bytes, not a key", path,
				PCDKIM_KEY_FILE_MAX);
		goto out;
	}
	text[len] = '\0';
	/* libopendkim reads PEM only when the text starts with "-----" */
	begin = strstr(text, "-----BEGIN ");
	if (!begin || strlen(begin) != len - (size_t)(begin - text) ||
	    !(pkey = pcdkim_signkey_add(begin, strlen(begin)))) {
		unsigned long e = ERR_get_error();

		pc_config_error(config, "sign",
				"key %s: not a PEM private key without "
				"passphrase%s%s",
				path, e ? ": " : "",
				e ? ERR_reason_error_string(e) : "");
		goto out;
	}
	switch (EVP_PKEY_base_id(pkey)) {
	case EVP_PKEY_RSA:
		/* RFC 8301 3.2: signers use at least 1024 bits, 2048 better */
		if (EVP_PKEY_bits(pkey) < 1024) {
			pc_config_error(config, "sign",
					"key %s: an RSA key of %d bits; DKIM "
					"wants at least 1024 (RFC 8301)",
					path, EVP_PKEY_bits(pkey));
			goto out;
		}
		s->alg = DKIM_SIGN_RSASHA256;
		break;
	case EVP_PKEY_ED25519:
		if (!dkim_libfeature(di->lib, DKIM_FEATURE_ED25519)) {
			pc_config_error(config, "sign",
					"key %s: an Ed25519 key, which this "
					"libopendkim cannot sign with", path);
			goto out;
		}
		s->alg = DKIM_SIGN_ED25519SHA256;
		break;
	default:
		pc_config_error(config, "sign",
				"key %s: neither RSA nor Ed25519, the key "
				"types of DKIM", path);
		goto out;
	}
	s->key = strdup(begin);
	if (!s->key) {
		pc_config_error(config, "sign", "key %s: out of memory", path);
		goto out;
	}
	rc = 0;
out:
	ERR_clear_error();
	if (rc < 0 && pkey)
		pcdkim_signkey_remove(begin, strlen(begin));
	EVP_PKEY_free(pkey);
	if (text) {
		OPENSSL_cleanse(text, len);
		free(text);
	}
	fclose(fp);
	return rc;
}

/* pcdkim_selector_valid - a selector: dot-separated DNS labels (RFC 6376 3.1) */
static bool pcdkim_selector_valid(const char *s, size_t len)
{
	size_t label = 0;

	if (len == 0 || len > 63 * 2)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '.') {
			if (label == 0)
				return false;
			label = 0;
		} else if (isalnum(c) || c == '-' || c == '_') {
			if (++label > 63)
				return false;
		} else {
			return false;
		}
	}
	return label > 0;
}

/* pcdkim_parse_signer - one "domain:selector:keyfile" entry of sign */
static int pcdkim_parse_signer(pc_config *config, struct pcdkim_instance *di,
			     const char *item, size_t len)
{
	struct pcdkim_signer *s = &di->signers[di->nsigners];
	const char *c1 = memchr(item, ':', len), *c2;
	char domain[PC_DOMAIN_BUF], *path;
	int rc;

	c2 = c1 ? memchr(c1 + 1, ':', len - (size_t)(c1 - item) - 1) : NULL;
	if (!c2) {
		pc_config_error(config, "sign",
				"\"%.*s\": expected DOMAIN:SELECTOR:KEYFILE",
				(int)len, item);
		return -1;
	}
	if (pc_domain_normalize(item, (size_t)(c1 - item), domain,
				   sizeof(domain)) < 0) {
		pc_config_error(config, "sign", "\"%.*s\" is not a domain",
				(int)(c1 - item), item);
		return -1;
	}
	if (!pcdkim_selector_valid(c1 + 1, (size_t)(c2 - c1 - 1))) {
		pc_config_error(config, "sign", "\"%.*s\" is not a selector",
				(int)(c2 - c1 - 1), c1 + 1);
		return -1;
	}
	if (c2[1] != '/') {
		pc_config_error(config, "sign",
				"\"%.*s\": the key file must be an absolute "
				"path",
				(int)(len - (size_t)(c2 + 1 - item)), c2 + 1);
		return -1;
	}
	s->domain = strdup(domain);
	s->selector = strndup(c1 + 1, (size_t)(c2 - c1 - 1));
	path = strndup(c2 + 1, len - (size_t)(c2 + 1 - item));
	di->nsigners++; /* so that pcdkim_free_instance() frees it all */
	if (!s->domain || !s->selector || !path) {
		free(path);
		pc_config_error(config, "sign", "out of memory");
		return -1;
	}
	for (size_t i = 0; i + 1 < di->nsigners; i++) {
		if (strcmp(di->signers[i].domain, s->domain) == 0 &&
		    strcasecmp(di->signers[i].selector, s->selector) == 0) {
			pc_config_error(config, "sign",
					"%s:%s is given twice", s->domain,
					s->selector);
			free(path);
			return -1;
		}
	}
	rc = pcdkim_load_key(config, di, s, path);
	free(path);
	return rc;
}

/* pcdkim_parse_sign - the sign list */
static int pcdkim_parse_sign(pc_config *config, struct pcdkim_instance *di,
			   const char *list)
{
	size_t n = pc_list_count(list), len;
	const char *item;

	if (n == 0)
		return 0;
	di->signers = calloc(n, sizeof(*di->signers));
	if (!di->signers) {
		pc_config_error(config, "sign", "out of memory");
		return -1;
	}
	while (pc_list_next(&list, &item, &len))
		if (pcdkim_parse_signer(config, di, item, len) < 0)
			return -1;
	return 0;
}

/* pcdkim_parse_sign_headers - the fields to sign, set on the library */
static int pcdkim_parse_sign_headers(pc_config *config, struct pcdkim_instance *di,
				   const char *list)
{
	static const char *const oversign[] = { "From", NULL };
	const char *names[PCDKIM_MAX_SIGN_HEADERS + 1];
	char copy[1024], *p = copy;
	const char *item;
	size_t len, n = 0;
	bool from = false;

	if (strlen(list) >= sizeof(copy)) {
		pc_config_error(config, "sign_headers", "too long a list");
		return -1;
	}
	while (pc_list_next(&list, &item, &len)) {
		/* the names end up in a regular expression: plain names only */
		for (size_t i = 0; i < len; i++) {
			if (!isalnum((unsigned char)item[i]) && item[i] != '-') {
				pc_config_error(config, "sign_headers",
						"\"%.*s\" is not a header "
						"field name",
						(int)len, item);
				return -1;
			}
		}
		if (n == PCDKIM_MAX_SIGN_HEADERS) {
			pc_config_error(config, "sign_headers",
					"more than %d names",
					PCDKIM_MAX_SIGN_HEADERS);
			return -1;
		}
		if (len == 4 && strncasecmp(item, "From", 4) == 0)
			from = true;
		memcpy(p, item, len);
		p[len] = '\0';
		names[n++] = p;
		p += len + 1;
	}
	names[n] = NULL;
	if (!from) {
		/* RFC 6376 5.4: From MUST be signed */
		pc_config_error(config, "sign_headers",
				"From must be in the list (RFC 6376 5.4)");
		return -1;
	}
	if (dkim_options(di->lib, DKIM_OP_SETOPT, DKIM_OPTS_SIGNHDRS, names,
			 sizeof(char **)) != DKIM_STAT_OK ||
	    dkim_options(di->lib, DKIM_OP_SETOPT, DKIM_OPTS_OVERSIGNHDRS,
			 (void *)oversign, sizeof(char **)) != DKIM_STAT_OK) {
		pc_config_error(config, "sign_headers",
				"libopendkim refused the list");
		return -1;
	}
	return 0;
}

/* pcdkim_parse_canon - "relaxed/relaxed", "simple", ... as the c= tag */
static int pcdkim_parse_canon(pc_config *config, struct pcdkim_instance *di,
			    const char *text)
{
	char h[16] = "", b[16] = "simple";
	const char *slash = strchr(text, '/');
	size_t hlen = slash ? (size_t)(slash - text) : strlen(text);

	if (hlen >= sizeof(h) || (slash && strlen(slash + 1) >= sizeof(b)))
		goto bad;
	memcpy(h, text, hlen);
	h[hlen] = '\0';
	if (slash)
		strcpy(b, slash + 1);
	if (strcasecmp(h, "relaxed") == 0)
		di->hcanon = DKIM_CANON_RELAXED;
	else if (strcasecmp(h, "simple") == 0)
		di->hcanon = DKIM_CANON_SIMPLE;
	else
		goto bad;
	if (strcasecmp(b, "relaxed") == 0)
		di->bcanon = DKIM_CANON_RELAXED;
	else if (strcasecmp(b, "simple") == 0)
		di->bcanon = DKIM_CANON_SIMPLE;
	else
		goto bad;
	return 0;
bad:
	pc_config_error(config, "canonicalization",
			"\"%s\": expected HEADER[/BODY], each relaxed or "
			"simple",
			text);
	return -1;
}

/* pcdkim_prescreen - choose the signatures to verify, authors' first */
static DKIM_CBSTAT pcdkim_prescreen(DKIM *dkim, DKIM_SIGINFO **sigs, int nsigs)
{
	const struct pcdkim_job *job = dkim_get_user_context(dkim);
	unsigned kept = 0, keep;
	char nd[PC_DOMAIN_BUF];

	if (!job || nsigs < 0)
		return DKIM_CBSTAT_CONTINUE;
	keep = job->inst->max_signatures;
	if ((unsigned)nsigs <= keep)
		return DKIM_CBSTAT_CONTINUE;
	/*
	 * Signatures are added at the top, so the author's own is often
	 * the last: keep those of an author domain first, then the others
	 * from the top, rather than letting a pile of junk signatures
	 * push the one that matters out.
	 */
	for (int pass = 0; pass < 2; pass++) {
		for (int i = 0; i < nsigs; i++) {
			const char *d = (const char *)dkim_sig_getdomain(sigs[i]);
			bool author = false;

			if (dkim_sig_getflags(sigs[i]) & DKIM_SIGFLAG_IGNORE)
				continue;
			if (d && pc_domain_normalize(d, strlen(d), nd,
							sizeof(nd)) >= 0)
				for (size_t a = 0; a < job->nauthors; a++)
					if (strcmp(nd, job->authors[a]) == 0)
						author = true;
			if ((pass == 0) != author)
				continue;
			if (kept < keep)
				kept++;
			else
				dkim_sig_ignore(sigs[i]);
		}
	}
	return DKIM_CBSTAT_CONTINUE;
}

/* pcdkim_init_lib - the library handle, with our resolver and options */
static int pcdkim_init_lib(pc_config *config, struct pcdkim_instance *di)
{
	unsigned flags = DKIM_LIBFLAGS_BADSIGHANDLES;

	di->lib = dkim_init(NULL, NULL);
	if (!di->lib) {
		pc_config_error(config, "module", "libopendkim: cannot start");
		return -1;
	}
	/*
	 * BADSIGHANDLES: a signature that cannot be parsed still gets a
	 * handle, so it is reported (neutral) rather than silently dropped.
	 */
	if (dkim_options(di->lib, DKIM_OP_SETOPT, DKIM_OPTS_FLAGS, &flags,
			 sizeof(flags)) != DKIM_STAT_OK ||
	    dkim_set_prescreen(di->lib, pcdkim_prescreen) != DKIM_STAT_OK) {
		pc_config_error(config, "module", "libopendkim: bad options");
		return -1;
	}
	pcdkim_dns_install(di->lib);
	return 0;
}

/* pcdkim_init - read the options and build the instance */
static int pcdkim_init(pc_config *config, void **instance)
{
	const char *trusted, *require, *temperror, *maxsigs, *sign, *headers,
		*canon;
	struct pcdkim_instance *di;
	char err[512];

	di = calloc(1, sizeof(*di));
	if (!di) {
		pc_config_error(config, "module", "out of memory");
		return -1;
	}
	di->hcanon = DKIM_CANON_RELAXED;
	di->bcanon = DKIM_CANON_RELAXED;
	di->max_signatures = PCDKIM_DEFAULT_MAX_SIGNATURES;
	if (pcdkim_init_lib(config, di) < 0)
		goto fail;

	trusted = pc_config_get(config, "trusted_networks");
	if (!trusted)
		trusted = PCDKIM_DEFAULT_TRUSTED;
	if (pc_netlist_parse(trusted, &di->trusted, err, sizeof(err)) < 0) {
		pc_config_error(config, "trusted_networks", "%s", err);
		goto fail;
	}

	require = pc_config_get(config, "require");
	if (require && pcdkim_parse_require(config, di, require) < 0)
		goto fail;

	temperror = pc_config_get(config, "on_temperror");
	if (temperror) {
		if (strcasecmp(temperror, "tempfail") == 0) {
			di->temperror_tempfail = true;
		} else if (strcasecmp(temperror, "accept") != 0) {
			pc_config_error(config, "on_temperror",
					"expected accept or tempfail, not "
					"\"%s\"",
					temperror);
			goto fail;
		}
	}

	maxsigs = pc_config_get(config, "max_signatures");
	if (maxsigs) {
		char *end;
		unsigned long n;

		errno = 0;
		n = strtoul(maxsigs, &end, 10);
		while (*end == ' ' || *end == '\t')
			end++;
		if (errno || end == maxsigs || *end || !isdigit((unsigned char)*maxsigs) ||
		    n < 1 || n > PCDKIM_MAX_MAX_SIGNATURES) {
			pc_config_error(config, "max_signatures",
					"\"%s\": expected a number from 1 to %d",
					maxsigs, PCDKIM_MAX_MAX_SIGNATURES);
			goto fail;
		}
		di->max_signatures = (unsigned)n;
	}

	canon = pc_config_get(config, "canonicalization");
	if (canon && pcdkim_parse_canon(config, di, canon) < 0)
		goto fail;

	headers = pc_config_get(config, "sign_headers");
	if (!headers || !*headers)
		headers = PCDKIM_DEFAULT_SIGN_HEADERS;
	if (pcdkim_parse_sign_headers(config, di, headers) < 0)
		goto fail;

	sign = pc_config_get(config, "sign");
	if (sign && pcdkim_parse_sign(config, di, sign) < 0)
		goto fail;

	*instance = di;
	return 0;
fail:
	pcdkim_free_instance(di);
	return -1;
}

/* pcdkim_fini - free the instance */
static void pcdkim_fini(void *instance)
{
	pcdkim_free_instance(instance);
	pcdkim_keycache_clear();
}

/* pcdkim_printable - copy text, every byte that is not printable ASCII as '?' */
static void pcdkim_printable(char *out, size_t size, const char *text)
{
	size_t n = 0;

	for (; text && *text && n + 1 < size; text++)
		out[n++] = (*text > ' ' && *text < 127) ? *text : '?';
	out[n] = '\0';
}

/*
 * pcdkim_feed_headers - every header field to every handle, as received
 * where it was (simple canonicalization hashes the bytes), as it goes to
 * the backend where an earlier filter added or changed it. Returns 0, or
 * -1 when libopendkim ran out of resources.
 */
static int pcdkim_feed_headers(pc_ctx *ctx, DKIM **handles, size_t n)
{
	size_t count = pc_header_count(ctx), cap = 0;
	char *built = NULL;
	int rc = 0;

	for (size_t i = 0; i < count && rc == 0; i++) {
		size_t len;
		const char *field = pc_header_raw(ctx, i, &len);

		if (!field) {
			const char *name = pc_header_name(ctx, i);
			const char *value = pc_header_value(ctx, i);

			if (!name || !value)
				continue;
			len = strlen(name) + 2 + strlen(value);
			if (len + 1 > cap) {
				char *p = realloc(built, len + 1);

				if (!p) {
					rc = -1;
					break;
				}
				built = p;
				cap = len + 1;
			}
			/* what message_headers_render() sends */
			snprintf(built, cap, "%s: %s", name, value);
			field = built;
		}
		if (len == 0)
			continue;
		for (size_t h = 0; h < n; h++) {
			DKIM_STAT st = dkim_header(handles[h], (u_char *)field, len);

			/*
			 * A signature field that does not parse is kept as
			 * a bad signature (BADSIGHANDLES) and reported; only
			 * a resource failure stops the message.
			 */
			if (st == DKIM_STAT_NORESOURCE || st == DKIM_STAT_INTERNAL)
				rc = -1;
		}
	}
	free(built);
	return rc;
}

/*
 * pcdkim_feed_body - the body, from the spool in pieces, to every handle.
 * Returns 0, or -1 when the body cannot be read.
 */
static int pcdkim_feed_body(pc_ctx *ctx, DKIM **handles, size_t n)
{
	unsigned char buf[PCDKIM_BODY_CHUNK];
	unsigned long long off = 0;
	ssize_t got;

	while ((got = pc_body_read(ctx, off, buf, sizeof(buf))) > 0) {
		for (size_t h = 0; h < n; h++)
			(void)dkim_body(handles[h], buf, (size_t)got);
		off += (unsigned long long)got;
	}
	return got < 0 ? -1 : 0;
}

/* pcdkim_classify - the RFC 8601 result of one signature, and why */
static enum pcdkim_result pcdkim_classify(DKIM_SIGINFO *sig, const char **reason)
{
	unsigned flags = dkim_sig_getflags(sig);
	int err = dkim_sig_geterror(sig);
	dkim_alg_t alg = DKIM_SIGN_UNKNOWN;

	*reason = dkim_sig_geterrorstr(err);
	if ((flags & DKIM_SIGFLAG_PASSED) && dkim_sig_getbh(sig) == DKIM_SIGBH_MATCH &&
	    (err == DKIM_SIGERROR_OK || err == DKIM_SIGERROR_UNKNOWN)) {
		(void)dkim_sig_getsignalg(sig, &alg);
		if (alg == DKIM_SIGN_RSASHA1) {
			/* RFC 8301 3.1: verifiers MUST NOT accept SHA-1 */
			*reason = "rsa-sha1 is not accepted (RFC 8301)";
			return RES_POLICY;
		}
		*reason = NULL;
		return RES_PASS;
	}
	switch (err) {
	case DKIM_SIGERROR_KEYFAIL:
		*reason = "key query failed";
		return RES_TEMPERROR;
	case DKIM_SIGERROR_NOKEY:
		*reason = "no key";
		return RES_PERMERROR;
	case DKIM_SIGERROR_BADSIG:
		if (dkim_sig_getbh(sig) == DKIM_SIGBH_MISMATCH)
			*reason = "body hash mismatch";
		else
			*reason = "signature mismatch";
		return RES_FAIL;
	case DKIM_SIGERROR_TOOLARGE_L:
	case DKIM_SIGERROR_MBSFAILED:
		return RES_FAIL;
	case DKIM_SIGERROR_KEYTOOSMALL:
		return RES_POLICY;
	case DKIM_SIGERROR_DNSSYNTAX:
	case DKIM_SIGERROR_MULTIREPLY:
	case DKIM_SIGERROR_KEYVERSION:
	case DKIM_SIGERROR_KEYUNKNOWNHASH:
	case DKIM_SIGERROR_KEYHASHMISMATCH:
	case DKIM_SIGERROR_NOTEMAILKEY:
	case DKIM_SIGERROR_KEYTYPEMISSING:
	case DKIM_SIGERROR_KEYTYPEUNKNOWN:
	case DKIM_SIGERROR_KEYREVOKED:
	case DKIM_SIGERROR_KEYDECODE:
	case DKIM_SIGERROR_SUBDOMAIN:
	case DKIM_SIGERROR_INVALID_H:
	case DKIM_SIGERROR_EXPIRED:
	case DKIM_SIGERROR_FUTURE:
		return RES_PERMERROR;
	default:
		break;
	}
	if ((flags & DKIM_SIGFLAG_PROCESSED) &&
	    (!(flags & DKIM_SIGFLAG_PASSED) || dkim_sig_getbh(sig) != DKIM_SIGBH_MATCH)) {
		if (!*reason)
			*reason = "signature mismatch";
		return RES_FAIL;
	}
	/* the signature's own syntax: missing or bad tags */
	if (!*reason)
		*reason = "unusable signature";
	return RES_NEUTRAL;
}

/* pcdkim_alg_name - a=, for header.a */
static const char *pcdkim_alg_name(DKIM_SIGINFO *sig)
{
	dkim_alg_t alg;

	if (dkim_sig_getsignalg(sig, &alg) != DKIM_STAT_OK)
		return NULL;
	switch (alg) {
	case DKIM_SIGN_RSASHA1:
		return "rsa-sha1";
	case DKIM_SIGN_RSASHA256:
		return "rsa-sha256";
	case DKIM_SIGN_ED25519SHA256:
		return "ed25519-sha256";
	default:
		return NULL;
	}
}

/* pcdkim_verdict_of - everything reported about one signature */
static void pcdkim_verdict_of(DKIM *dkim, DKIM_SIGINFO *sig, struct pcdkim_verdict *v)
{
	const char *d = (const char *)dkim_sig_getdomain(sig);
	const char *s = (const char *)dkim_sig_getselector(sig);
	char b[sizeof(v->b)];
	size_t blen = sizeof(b) - 1;

	memset(v, 0, sizeof(*v));
	v->result = pcdkim_classify(sig, &v->reason);
	pcdkim_printable(v->domain, sizeof(v->domain), d);
	if (!d || pc_domain_normalize(d, strlen(d), v->ndomain,
					 sizeof(v->ndomain)) < 0)
		v->ndomain[0] = '\0';
	pcdkim_printable(v->selector, sizeof(v->selector), s);
	/*
	 * header.b: the shortest start of b= that tells this signature
	 * from the others, at least 8 characters (RFC 6008 2)
	 */
	if (dkim_get_sigsubstring(dkim, sig, b, &blen) == DKIM_STAT_OK) {
		b[blen < sizeof(b) ? blen : sizeof(b) - 1] = '\0';
		pcdkim_printable(v->b, sizeof(v->b), b);
	}
	/* a signature that did not parse has no algorithm to speak of */
	v->alg = v->result == RES_NEUTRAL ? NULL : pcdkim_alg_name(sig);
}

/*
 * pcdkim_ar_value - append " key=value" to out (size bytes), the value as
 * an RFC 2045 token when it is one, a quoted-string otherwise
 */
static void pcdkim_ar_value(char *out, size_t size, const char *key,
			  const char *value)
{
	static const char tspecials[] = "()<>@,;:\\\"/[]?=";
	size_t n = strlen(out);
	bool token = *value != '\0';

	for (const char *p = value; *p; p++)
		if (*p <= ' ' || *p >= 127 || strchr(tspecials, *p))
			token = false;
	/* a domain-name is a value of its own (RFC 8601 2.2, pvalue) */
	if (strcmp(key, "header.d") == 0 && *value &&
	    strspn(value, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
			  "0123456789.-_") == strlen(value))
		token = true;
	if (token) {
		snprintf(out + n, size - n, " %s=%s", key, value);
		return;
	}
	snprintf(out + n, size - n, " %s=\"", key);
	n = strlen(out);
	for (const char *p = value; *p && n + 3 < size; p++) {
		if (*p == '"' || *p == '\\')
			out[n++] = '\\';
		out[n++] = *p;
	}
	if (n + 1 < size)
		out[n++] = '"';
	out[n] = '\0';
}

/* pcdkim_resinfo - one "dkim=..." resinfo of Authentication-Results */
static void pcdkim_resinfo(char *out, size_t size, const struct pcdkim_verdict *v)
{
	snprintf(out, size, "dkim=%s", pcdkim_result_names[v->result]);
	if (v->reason)
		pcdkim_ar_value(out, size, "reason", v->reason);
	if (v->domain[0])
		pcdkim_ar_value(out, size, "header.d", v->domain);
	if (v->selector[0])
		pcdkim_ar_value(out, size, "header.s", v->selector);
	if (v->alg)
		pcdkim_ar_value(out, size, "header.a", v->alg);
	if (v->b[0])
		pcdkim_ar_value(out, size, "header.b", v->b);
}

/*
 * pcdkim_add_results - the Authentication-Results field(s): one field with
 * every resinfo, or as many as the line length limit needs
 */
static void pcdkim_add_results(pc_ctx *ctx, const struct pcdkim_verdict *v, size_t n)
{
	const char *authserv = pc_authserv_id(ctx);
	size_t room = PCDKIM_LINE_MAX - sizeof(PCDKIM_AR_NAME ": ") + 1;
	char info[1024];
	char **fields = NULL;
	size_t nfields = 0;
	char *cur = NULL;
	size_t curlen = 0;
	bool oom = true;

	if (!authserv || !*authserv)
		authserv = "localhost";
	if (n == 0) {
		char value[512];

		snprintf(value, sizeof(value), "%s; dkim=none", authserv);
		if (pc_header_insert(ctx, PCDKIM_AR_NAME, value) < 0)
			pc_log(ctx, PC_LOG_WARNING, "could not add %s", PCDKIM_AR_NAME);
		return;
	}
	fields = calloc(n, sizeof(*fields));
	if (!fields)
		goto out;
	for (size_t i = 0; i < n; i++) {
		size_t ilen;

		pcdkim_resinfo(info, sizeof(info), &v[i]);
		ilen = strlen(info);
		if (cur && curlen + 2 + ilen > room) {
			fields[nfields++] = cur;
			cur = NULL;
		}
		if (!cur) {
			size_t cap = strlen(authserv) + 2 + room + sizeof(info);

			cur = malloc(cap);
			if (!cur)
				goto out;
			curlen = (size_t)snprintf(cur, cap, "%s", authserv);
		}
		cur[curlen++] = ';';
		cur[curlen++] = ' ';
		memcpy(cur + curlen, info, ilen + 1);
		curlen += ilen;
	}
	fields[nfields++] = cur;
	cur = NULL;
	oom = false;
	/* inserted at the top one by one: the last first keeps the order */
	for (size_t i = nfields; i-- > 0;)
		if (pc_header_insert(ctx, PCDKIM_AR_NAME, fields[i]) < 0)
			pc_log(ctx, PC_LOG_WARNING, "could not add %s", PCDKIM_AR_NAME);
out:
	if (oom)
		pc_log(ctx, PC_LOG_ERROR, "out of memory for %s", PCDKIM_AR_NAME);
	for (size_t i = 0; i < nfields; i++)
		free(fields[i]);
	free(fields);
	free(cur);
}

/* pcdkim_record - the verification into the decision record */
static void pcdkim_record(pc_ctx *ctx, const struct pcdkim_verdict *v, size_t n,
			size_t ignored)
{
	enum pcdkim_result overall = n ? v[0].result : RES_PASS;
	char text[4096] = "";
	size_t len = 0;

	for (size_t i = 0; i < n; i++) {
		if (v[i].result == RES_PASS)
			overall = RES_PASS;
		if (len < sizeof(text))
			len += (size_t)snprintf(text + len, sizeof(text) - len,
					"%s%s d=%s s=%s a=%s%s%s%s",
					i ? "; " : "",
					pcdkim_result_names[v[i].result],
					v[i].domain, v[i].selector,
					v[i].alg ? v[i].alg : "?",
					v[i].reason ? " (" : "",
					v[i].reason ? v[i].reason : "",
					v[i].reason ? ")" : "");
	}
	pc_result(ctx, "dkim", n ? pcdkim_result_names[overall] : "none");
	if (n)
		pc_result(ctx, "signatures", text);
	if (ignored)
		pc_result_int(ctx, "ignored", (long long)ignored);
}

/* pcdkim_authors - the author domains: of every mailbox of every From */
static void pcdkim_authors(pc_ctx *ctx, struct pcdkim_job *job)
{
	const char *from;

	job->nauthors = 0;
	for (size_t k = 0; (from = pc_header_get(ctx, "From", k)) != NULL; k++)
		job->nauthors += pcdkim_from_domains(from,
						     job->authors + job->nauthors,
						     PCDKIM_MAX_AUTHORS - job->nauthors,
						     NULL);
}

/*
 * pcdkim_policy - the verdict of require and on_temperror on the verified
 * signatures
 */
static enum pc_status pcdkim_policy(pc_ctx *ctx, const struct pcdkim_job *job,
				  const struct pcdkim_verdict *v, size_t n)
{
	const struct pcdkim_instance *di = job->inst;
	bool passed = false, temperror = false;
	char note[PC_DOMAIN_BUF + 32];

	for (size_t a = 0; a < job->nauthors; a++) {
		bool required = false, ok = false, temp = false;

		for (size_t r = 0; r < di->nrequire; r++)
			if (strcmp(job->authors[a], di->require[r]) == 0)
				required = true;
		if (!required)
			continue;
		for (size_t i = 0; i < n; i++) {
			if (strcmp(v[i].ndomain, job->authors[a]) != 0)
				continue;
			if (v[i].result == RES_PASS)
				ok = true;
			else if (v[i].result == RES_TEMPERROR)
				temp = true;
		}
		snprintf(note, sizeof(note), "%s: %s", job->authors[a],
			 ok ? "pass" : temp ? "key lookup failed"
					    : "no passing signature");
		pc_result(ctx, "require", note);
		if (ok)
			continue;
		if (temp) {
			pc_log(ctx, PC_LOG_INFO,
			       "required domain %s: key lookup failed",
			       job->authors[a]);
			pc_set_reply(ctx, PCDKIM_TEMP_CODE, PCDKIM_TEMP_ENH,
				     "DKIM key lookup for %s failed; try again "
				     "later",
				     job->authors[a]);
			return PC_TEMPFAIL;
		}
		pc_log(ctx, PC_LOG_INFO,
		       "required domain %s: no passing DKIM signature",
		       job->authors[a]);
		pc_set_reply(ctx, PCDKIM_REQUIRE_CODE, PCDKIM_REQUIRE_ENH,
			     "No passing DKIM signature found for %s",
			     job->authors[a]);
		return PC_REJECT;
	}
	for (size_t i = 0; i < n; i++) {
		if (v[i].result == RES_PASS)
			passed = true;
		else if (v[i].result == RES_TEMPERROR)
			temperror = true;
	}
	if (di->temperror_tempfail && temperror && !passed) {
		pc_set_reply(ctx, PCDKIM_TEMP_CODE, PCDKIM_TEMP_ENH,
			     "DKIM key lookup failed; try again later");
		return PC_TEMPFAIL;
	}
	return PC_CONTINUE;
}

/* pcdkim_internal - a failure of our own: the client retries */
static enum pc_status pcdkim_internal(pc_ctx *ctx, const char *what)
{
	pc_log(ctx, PC_LOG_ERROR, "%s", what);
	pc_result(ctx, "dkim", "error");
	pc_result(ctx, "error", what);
	pc_set_reply(ctx, PCDKIM_INTERNAL_CODE, PCDKIM_INTERNAL_ENH,
		     "Local error in DKIM processing; try again later");
	return PC_TEMPFAIL;
}

/*
 * pcdkim_keycache_note - say once, at debug level, that libopendkim's key
 * decoding is answered from the cache; or once, as information, that it
 * is not (the key cache works by symbol binding, see dkim_keycache.h)
 */
static void pcdkim_keycache_note(pc_ctx *ctx, DKIM_SIGINFO **sigs, int nsigs)
{
	static int said_hit, said_miss;
	struct pcdkim_keycache_stats st;
	bool rsa_passed = false;

	if (__atomic_load_n(&said_hit, __ATOMIC_RELAXED) ||
	    __atomic_load_n(&said_miss, __ATOMIC_RELAXED))
		return;
	for (int i = 0; i < nsigs; i++) {
		dkim_alg_t alg = DKIM_SIGN_UNKNOWN;

		(void)dkim_sig_getsignalg(sigs[i], &alg);
		if ((dkim_sig_getflags(sigs[i]) & DKIM_SIGFLAG_PASSED) &&
		    (alg == DKIM_SIGN_RSASHA1 || alg == DKIM_SIGN_RSASHA256))
			rsa_passed = true;
	}
	pcdkim_keycache_stats(&st);
	if (st.hits && !__atomic_exchange_n(&said_hit, 1, __ATOMIC_RELAXED))
		pc_log(ctx, PC_LOG_DEBUG, "decoded keys are reused: "
		       "%llu of %llu keys came from the cache", st.hits, st.calls);
	else if (rsa_passed && !st.calls &&
		 !__atomic_exchange_n(&said_miss, 1, __ATOMIC_RELAXED))
		pc_log(ctx, PC_LOG_INFO, "libopendkim decodes each key itself "
		       "(the key cache is not in use): verifying costs more CPU");
}

/*
 * pcdkim_signkey_note - after a message was signed, say once, at debug
 * level, that libopendkim's decoding of the signing key is answered from
 * the keys decoded at init; or once, as information, that it is not (the
 * table works by symbol binding, see dkim_signkey.h)
 */
static void pcdkim_signkey_note(pc_ctx *ctx)
{
	static int said_hit, said_miss;
	struct pcdkim_signkey_stats st;

	if (__atomic_load_n(&said_hit, __ATOMIC_RELAXED) ||
	    __atomic_load_n(&said_miss, __ATOMIC_RELAXED))
		return;
	pcdkim_signkey_stats(&st);
	if (st.hits && !__atomic_exchange_n(&said_hit, 1, __ATOMIC_RELAXED))
		pc_log(ctx, PC_LOG_DEBUG, "decoded signing keys are reused: "
		       "%llu of %llu signing keys came from init", st.hits, st.calls);
	else if (!st.calls && !__atomic_exchange_n(&said_miss, 1, __ATOMIC_RELAXED))
		pc_log(ctx, PC_LOG_INFO, "libopendkim decodes the signing key "
		       "itself for each message (the decoded keys are not in "
		       "use): signing costs more CPU");
}

/* pcdkim_key_failed - whether a key query of a signature to check failed */
static bool pcdkim_key_failed(DKIM *dkim)
{
	DKIM_SIGINFO **sigs = NULL;
	int nsigs = 0;

	if (dkim_getsiglist(dkim, &sigs, &nsigs) != DKIM_STAT_OK)
		return false;
	for (int i = 0; i < nsigs; i++)
		if (!(dkim_sig_getflags(sigs[i]) & DKIM_SIGFLAG_IGNORE) &&
		    dkim_sig_geterror(sigs[i]) == DKIM_SIGERROR_KEYFAIL)
			return true;
	return false;
}

/* pcdkim_verify_message - verify, add Authentication-Results, apply policy */
static enum pc_status pcdkim_verify_message(pc_ctx *ctx,
					  const struct pcdkim_instance *di)
{
	struct pcdkim_job job = { .inst = di };
	struct pcdkim_verdict *v = NULL;
	DKIM_SIGINFO **sigs = NULL;
	size_t nv = 0, ignored = 0;
	enum pc_status verdict;
	DKIM_STAT st;
	DKIM *dkim;
	int nsigs = 0;

	pcdkim_authors(ctx, &job);
	dkim = dkim_verify(di->lib, (const unsigned char *)pc_session_id(ctx),
			   NULL, &st);
	if (!dkim)
		return pcdkim_internal(ctx, "libopendkim: cannot start verifying");
	dkim_set_user_context(dkim, &job);
	if (pcdkim_feed_headers(ctx, &dkim, 1) < 0) {
		dkim_free(dkim);
		return pcdkim_internal(ctx, "libopendkim: out of resources");
	}
	/* the key queries run here, one per signature */
	st = dkim_eoh(dkim);
	if (st == DKIM_STAT_OK && pc_on_loop(ctx) && pcdkim_key_failed(dkim)) {
		/*
		 * On the event loop a key that is not in the DNS cache is a
		 * failed query (PC_DNS_WOULDBLOCK); on a thread it is asked.
		 */
		dkim_free(dkim);
		return PC_WOULDBLOCK;
	}
	if (st == DKIM_STAT_NOSIG) {
		dkim_free(dkim);
		pcdkim_add_results(ctx, NULL, 0);
		pcdkim_record(ctx, NULL, 0, 0);
		return pcdkim_policy(ctx, &job, NULL, 0);
	}
	if (st != DKIM_STAT_OK) {
		const char *e = dkim_geterror(dkim);
		char what[512];

		snprintf(what, sizeof(what), "libopendkim: %s%s%s",
			 dkim_getresultstr(st), e ? ": " : "", e ? e : "");
		dkim_free(dkim);
		return pcdkim_internal(ctx, what);
	}
	if (pcdkim_feed_body(ctx, &dkim, 1) < 0) {
		dkim_free(dkim);
		return pcdkim_internal(ctx, "cannot read the message body");
	}
	/* the result is per signature, read below */
	(void)dkim_eom(dkim, NULL);
	if (dkim_getsiglist(dkim, &sigs, &nsigs) != DKIM_STAT_OK || nsigs <= 0) {
		dkim_free(dkim);
		return pcdkim_internal(ctx, "libopendkim: no signature list");
	}
	v = calloc((size_t)nsigs, sizeof(*v));
	if (!v) {
		dkim_free(dkim);
		return pcdkim_internal(ctx, "out of memory");
	}
	for (int i = 0; i < nsigs; i++) {
		if (dkim_sig_getflags(sigs[i]) & DKIM_SIGFLAG_IGNORE) {
			ignored++;
			continue;
		}
		pcdkim_verdict_of(dkim, sigs[i], &v[nv++]);
	}
	pcdkim_keycache_note(ctx, sigs, nsigs);
	dkim_free(dkim);
	pcdkim_add_results(ctx, v, nv);
	pcdkim_record(ctx, v, nv, ignored);
	verdict = pcdkim_policy(ctx, &job, v, nv);
	free(v);
	return verdict;
}

/*
 * pcdkim_sign_message - sign the message of a trusted client with every
 * key of its author domain
 */
static enum pc_status pcdkim_sign_message(pc_ctx *ctx,
					const struct pcdkim_instance *di)
{
	char author[1][PC_DOMAIN_BUF];
	DKIM *handles[8];
	const char *from = pc_header_get(ctx, "From", 0);
	size_t n = 0, bad = 0;
	char done[1024] = "";
	enum pc_status verdict = PC_CONTINUE;
	DKIM_STAT st;

	if (di->nsigners == 0) {
		pc_result(ctx, "dkim", "unsigned");
		pc_result(ctx, "reason", "trusted client; no signing keys");
		return PC_CONTINUE;
	}
	/*
	 * One author: with two From fields, or two mailboxes in one, whose
	 * name would the signature vouch for?
	 */
	if (!from || pc_header_get(ctx, "From", 1) ||
	    pcdkim_from_domains(from, author, 1, &bad) != 1 || bad) {
		pc_result(ctx, "dkim", "unsigned");
		pc_result(ctx, "reason", "not exactly one From mailbox");
		return PC_CONTINUE;
	}
	for (size_t i = 0; i < di->nsigners; i++) {
		const struct pcdkim_signer *s = &di->signers[i];

		if (strcmp(s->domain, author[0]) != 0 ||
		    n == sizeof(handles) / sizeof(handles[0]))
			continue;
		handles[n] = dkim_sign(di->lib,
				       (const unsigned char *)pc_session_id(ctx),
				       NULL, (dkim_sigkey_t)s->key,
				       (const unsigned char *)s->selector,
				       (const unsigned char *)s->domain,
				       di->hcanon, di->bcanon, s->alg, -1, &st);
		if (!handles[n]) {
			pc_log(ctx, PC_LOG_ERROR, "libopendkim: cannot sign as %s/%s: %s",
			       s->domain, s->selector, dkim_getresultstr(st));
			verdict = PC_TEMPFAIL;
			goto out;
		}
		/* one line: the header API takes no folded values */
		dkim_set_margin(handles[n], 0);
		n++;
	}
	if (n == 0) {
		pc_result(ctx, "dkim", "unsigned");
		pc_result(ctx, "reason", "no signing key for the From domain");
		return PC_CONTINUE;
	}
	if (pcdkim_feed_headers(ctx, handles, n) < 0) {
		verdict = pcdkim_internal(ctx, "libopendkim: out of resources");
		goto out;
	}
	for (size_t h = 0; h < n; h++) {
		if ((st = dkim_eoh(handles[h])) != DKIM_STAT_OK) {
			const char *e = dkim_geterror(handles[h]);

			pc_log(ctx, PC_LOG_ERROR, "libopendkim: signing: %s%s%s",
			       dkim_getresultstr(st), e ? ": " : "", e ? e : "");
			verdict = PC_TEMPFAIL;
			goto out;
		}
	}
	if (pcdkim_feed_body(ctx, handles, n) < 0) {
		verdict = pcdkim_internal(ctx, "cannot read the message body");
		goto out;
	}
	for (size_t h = 0; h < n; h++) {
		const struct pcdkim_signer *s = NULL;
		unsigned char *sig = NULL;
		size_t siglen = 0, dl = strlen(done);

		st = dkim_eom(handles[h], NULL);
		if (st == DKIM_STAT_OK)
			st = dkim_getsighdr_d(handles[h], sizeof(PCDKIM_SIG_NAME ": ") - 1,
					      &sig, &siglen);
		if (st != DKIM_STAT_OK || !sig) {
			const char *e = dkim_geterror(handles[h]);

			pc_log(ctx, PC_LOG_ERROR, "libopendkim: signing: %s%s%s",
			       dkim_getresultstr(st), e ? ": " : "", e ? e : "");
			verdict = PC_TEMPFAIL;
			goto out;
		}
		if (siglen + sizeof(PCDKIM_SIG_NAME ": ") - 1 > PCDKIM_LINE_MAX)
			pc_log(ctx, PC_LOG_WARNING,
			       "DKIM-Signature of %zu bytes is longer than a line "
			       "may be (RFC 5322 2.1.1): sign fewer fields",
			       siglen);
		if (pc_header_insert(ctx, PCDKIM_SIG_NAME, (const char *)sig) < 0) {
			verdict = pcdkim_internal(ctx, "could not add DKIM-Signature");
			goto out;
		}
		/* which key made it: the k-th of this domain, in order */
		for (size_t i = 0, k = 0; i < di->nsigners; i++) {
			if (strcmp(di->signers[i].domain, author[0]) != 0)
				continue;
			if (k++ == h)
				s = &di->signers[i];
		}
		if (s)
			snprintf(done + dl, sizeof(done) - dl, "%sd=%s s=%s a=%s",
				 dl ? "; " : "", s->domain, s->selector,
				 s->alg == DKIM_SIGN_ED25519SHA256 ? "ed25519-sha256"
								    : "rsa-sha256");
	}
	pc_result(ctx, "dkim", "signed");
	pc_result(ctx, "signatures", done);
	pcdkim_signkey_note(ctx);
out:
	if (verdict == PC_TEMPFAIL && !*done) {
		pc_result(ctx, "dkim", "error");
		pc_set_reply(ctx, PCDKIM_INTERNAL_CODE, PCDKIM_INTERNAL_ENH,
			     "Local error in DKIM signing; try again later");
	}
	for (size_t h = 0; h < n; h++)
		if (handles[h])
			dkim_free(handles[h]);
	return verdict;
}

/*
 * pcdkim_loop_too_long - whether verifying this message would hold the
 * event loop too long: the body hashed for each signature checked
 */
static bool pcdkim_loop_too_long(pc_ctx *ctx, const struct pcdkim_instance *di)
{
	unsigned long long size = pc_message_size(ctx);
	size_t sigs = 0;

	while (sigs <= PCDKIM_LOOP_MAX_SIGNATURES &&
	       pc_header_get(ctx, "DKIM-Signature", sigs))
		sigs++;
	if (sigs > di->max_signatures)
		sigs = di->max_signatures;
	if (sigs > PCDKIM_LOOP_MAX_SIGNATURES)
		return true;
	return size > PCDKIM_LOOP_MAX_BYTES / (sigs ? sigs : 1);
}

/* pcdkim_data - sign for trusted clients, verify for everyone else */
static enum pc_status pcdkim_data(pc_ctx *ctx)
{
	const struct pcdkim_instance *di = pc_instance(ctx);
	const char *addr = pc_client_addr(ctx);
	bool sign;

	if (!di)
		return pcdkim_internal(ctx, "no instance at data");
	sign = pc_auth_user(ctx) || (addr && pc_netlist_match(&di->trusted, addr));
	if (pc_on_loop(ctx) && (sign || pcdkim_loop_too_long(ctx, di)))
		return PC_WOULDBLOCK;
	if (sign)
		return pcdkim_sign_message(ctx, di);
	return pcdkim_verify_message(ctx, di);
}

const struct pc_filter portcullis_filter = {
	PC_FILTER_HEADER,
	.name = "dkim",
	.description = "DKIM: verify signatures (Authentication-Results), "
		       "require them of some domains, sign trusted mail",
	.options = pcdkim_options,
	.init = pcdkim_init,
	.fini = pcdkim_fini,
	.data = pcdkim_data,
	/*
	 * Verifying a small message whose keys are in the DNS cache runs on
	 * the event loop; the rest says PC_WOULDBLOCK there and runs on a
	 * thread.
	 */
	.nonblocking = PC_HOOK_DATA,
};
