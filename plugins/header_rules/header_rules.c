/*
 * header_rules.c - a Portcullis filter: regular-expression rules on headers
 *
 * Options:
 *	rules_file = /etc/portcullis/header.rules	(required)
 *
 * The rules file has one rule a line; blank lines and lines starting with
 * '#' are ignored:
 *
 *	ACTION HEADER /REGEX/ [ARGUMENTS]
 *
 *	reject   Subject /viagra|casino/ 550 5.7.1 Spam subject refused
 *	tempfail X-Scan  /^pending$/     451 4.7.1 Try again later
 *	tag      Subject /free money/    X-Spam-Flag: YES
 *	discard  From    /@spam\.example$/
 *
 * REGEX is a POSIX extended regular expression, matched case-insensitively
 * against the unfolded value of every field called HEADER (the name is
 * case-insensitive too); "\/" stands for a slash inside it. reject and
 * tempfail take an optional reply: a 5xx (4xx) code, an optional enhanced
 * code of the same class and a text. tag adds the header field
 * "NAME: VALUE" at the end of the header. discard accepts the message and
 * delivers nothing.
 *
 * The rules run in file order at the end of DATA: every matching tag rule
 * adds its field, and the first matching reject, tempfail or discard
 * decides and ends the evaluation. The rule that decided, and the lines of
 * the tag rules that matched, go to the decision log.
 *
 * Errors: a rules file that cannot be read, or a line that does not parse
 * (unknown action, bad regular expression, bad reply), stops start-up
 * with pc_config_error() naming rules_file and FILE:LINE of the rule.
 *
 * The compiled rules are built once by init and only read by the hooks;
 * regexec() on a shared compiled expression is safe from several threads
 * (POSIX; glibc locks internally), so sessions share them without a lock.
 */
#define _POSIX_C_SOURCE 200809L

#include <ctype.h>
#include <errno.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <portcullis/filter.h>

enum rule_action {
	RULE_REJECT,
	RULE_TEMPFAIL,
	RULE_TAG,
	RULE_DISCARD,
};

struct rule {
	enum rule_action action;
	unsigned line;	  /* in the rules file, for logs and results */
	char *header;	  /* the field the regex is matched against */
	regex_t regex;
	int compiled;	  /* whether regex holds a compiled expression */
	int code;	  /* reject, tempfail: 0 for the host's default */
	char *enh;	  /* reject, tempfail: NULL for the default */
	char *text;	  /* reject, tempfail: the reply text */
	char *tag_name;	  /* tag: the field added */
	char *tag_value;
};

struct rules {
	char *path;
	struct rule *rule;
	size_t count;
};

static const char *const action_names[] = {
	[RULE_REJECT] = "reject",
	[RULE_TEMPFAIL] = "tempfail",
	[RULE_TAG] = "tag",
	[RULE_DISCARD] = "discard",
};

/* rules_free - free the rules, complete or half-built */
static void rules_free(struct rules *rules)
{
	if (!rules)
		return;
	for (size_t i = 0; i < rules->count; i++) {
		struct rule *r = &rules->rule[i];

		if (r->compiled)
			regfree(&r->regex);
		free(r->header);
		free(r->enh);
		free(r->text);
		free(r->tag_name);
		free(r->tag_value);
	}
	free(rules->rule);
	free(rules->path);
	free(rules);
}

/* skip_space - the first character of p that is not white space */
static char *skip_space(char *p)
{
	while (*p == ' ' || *p == '\t')
		p++;
	return p;
}

/* next_word - cut the word at *p and advance *p past it; NULL at the end */
static char *next_word(char **p)
{
	char *word = skip_space(*p), *end = word;

	if (!*word)
		return NULL;
	while (*end && *end != ' ' && *end != '\t')
		end++;
	if (*end)
		*end++ = '\0';
	*p = end;
	return word;
}

/* valid_field_name - RFC 5322 3.6.8: printable US-ASCII except ':' */
static int valid_field_name(const char *name, size_t len)
{
	if (len == 0)
		return 0;
	for (size_t i = 0; i < len; i++)
		if (name[i] < 33 || name[i] > 126 || name[i] == ':')
			return 0;
	return 1;
}

/* valid_text - no control characters but tab (they would end up in a
 * reply line or a header field) */
static int valid_text(const char *text)
{
	for (const unsigned char *p = (const unsigned char *)text; *p; p++)
		if ((*p < 32 && *p != '\t') || *p == 127)
			return 0;
	return 1;
}

/* valid_enh - RFC 3463: class.subject.detail, class as the reply's */
static int valid_enh(const char *enh, char class)
{
	const char *p = enh;
	int n;

	if (*p != class || p[1] != '.')
		return 0;
	p += 2;
	for (int part = 0; part < 2; part++) {
		for (n = 0; isdigit((unsigned char)*p); p++)
			n++;
		if (n < 1 || n > 3)
			return 0;
		if (part == 0 && *p++ != '.')
			return 0;
	}
	return *p == '\0';
}

/* rule_regex - cut the /REGEX/ at *p, with "\/" made "/"; NULL on error */
static char *rule_regex(char **p, const char **err)
{
	char *s = skip_space(*p), *out, *start;

	if (*s != '/') {
		*err = "expected /REGEX/ after the header name";
		return NULL;
	}
	start = out = ++s;
	for (; *s && *s != '/'; s++) {
		if (*s == '\\' && s[1] == '/')
			s++;
		else if (*s == '\\' && s[1])
			*out++ = *s++;
		*out++ = *s;
	}
	if (*s != '/') {
		*err = "the regular expression has no closing '/'";
		return NULL;
	}
	if (s[1] && s[1] != ' ' && s[1] != '\t') {
		*err = "expected white space after the closing '/'";
		return NULL;
	}
	*out = '\0';
	*p = s + 1;
	if (out == start) {
		*err = "empty regular expression";
		return NULL;
	}
	return start;
}

/* rule_reply - parse the optional "CODE [ENH] TEXT" of reject/tempfail */
static const char *rule_reply(struct rule *r, char *p)
{
	char class = r->action == RULE_REJECT ? '5' : '4';
	char *word = next_word(&p);

	if (!word)
		return NULL; /* the host's default reply for the stage */
	if (strlen(word) != 3 || word[0] != class ||
	    !isdigit((unsigned char)word[1]) || !isdigit((unsigned char)word[2]))
		return r->action == RULE_REJECT
			       ? "a reject reply must start with a 5xx code"
			       : "a tempfail reply must start with a 4xx code";
	r->code = atoi(word);
	p = skip_space(p);
	if (isdigit((unsigned char)*p) && p[1] == '.') {
		word = next_word(&p);
		if (!valid_enh(word, class))
			return "bad enhanced status code (RFC 3463: "
			       "class.subject.detail, class as the reply's)";
		if (!(r->enh = strdup(word)))
			return "out of memory";
	}
	p = skip_space(p);
	if (!valid_text(p))
		return "control character in the reply text";
	if (*p && !(r->text = strdup(p)))
		return "out of memory";
	return NULL;
}

/* rule_tag - parse the "NAME: VALUE" of a tag rule */
static const char *rule_tag(struct rule *r, char *p)
{
	char *colon, *value;

	p = skip_space(p);
	colon = strchr(p, ':');
	if (!*p || !colon)
		return "a tag rule needs a header field \"Name: value\"";
	if (!valid_field_name(p, (size_t)(colon - p)))
		return "bad header field name in the tag";
	value = skip_space(colon + 1);
	if (!*value)
		return "empty header field value in the tag";
	if (!valid_text(value))
		return "control character in the tag";
	r->tag_name = strndup(p, (size_t)(colon - p));
	r->tag_value = strdup(value);
	if (!r->tag_name || !r->tag_value)
		return "out of memory";
	return NULL;
}

/* rule_parse - one non-blank line into *r; NULL, or what is wrong */
static const char *rule_parse(struct rule *r, char *line, char *regerr,
			      size_t regerr_len)
{
	char *p = line, *word, *regex;
	const char *err = NULL;
	size_t i;
	int rc;

	word = next_word(&p);
	for (i = 0; i < sizeof(action_names) / sizeof(action_names[0]); i++)
		if (strcmp(word, action_names[i]) == 0)
			break;
	if (i == sizeof(action_names) / sizeof(action_names[0]))
		return "unknown action (reject, tempfail, tag or discard)";
	r->action = (enum rule_action)i;

	word = next_word(&p);
	if (!word || !valid_field_name(word, strlen(word)))
		return "expected a header name after the action";
	if (!(r->header = strdup(word)))
		return "out of memory";

	if (!(regex = rule_regex(&p, &err)))
		return err;
	rc = regcomp(&r->regex, regex, REG_EXTENDED | REG_ICASE | REG_NOSUB);
	if (rc != 0) {
		size_t n;

		n = (size_t)snprintf(regerr, regerr_len, "bad regular expression: ");
		if (n < regerr_len)
			regerror(rc, &r->regex, regerr + n, regerr_len - n);
		return regerr;
	}
	r->compiled = 1;

	switch (r->action) {
	case RULE_REJECT:
	case RULE_TEMPFAIL:
		err = rule_reply(r, p);
		break;
	case RULE_TAG:
		err = rule_tag(r, p);
		break;
	case RULE_DISCARD:
		if (*skip_space(p))
			err = "discard takes nothing after the regular expression";
		break;
	}
	return err;
}

/* rules_load - read and compile the whole rules file */
static int rules_load(pc_config *config, struct rules *rules)
{
	FILE *f = fopen(rules->path, "r");
	char *line = NULL;
	size_t cap = 0, alloc = 0;
	ssize_t len;
	unsigned lineno = 0;
	int rc = 0;

	if (!f) {
		pc_config_error(config, "rules_file", "%s: %s", rules->path,
				strerror(errno));
		return -1;
	}
	while ((len = getline(&line, &cap, f)) >= 0) {
		struct rule *r;
		char regerr[256];
		const char *err;
		char *p;

		lineno++;
		while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r' ||
				   line[len - 1] == ' ' || line[len - 1] == '\t'))
			line[--len] = '\0';
		p = skip_space(line);
		if (*p == '\0' || *p == '#')
			continue;
		if (rules->count == alloc) {
			size_t n = alloc ? alloc * 2 : 16;
			struct rule *grown = realloc(rules->rule, n * sizeof(*grown));

			if (!grown) {
				pc_config_error(config, "rules_file",
						"%s:%u: out of memory",
						rules->path, lineno);
				rc = -1;
				break;
			}
			rules->rule = grown;
			alloc = n;
		}
		r = &rules->rule[rules->count];
		memset(r, 0, sizeof(*r));
		r->line = lineno;
		/* counted at once, so rules_free() frees a half-parsed rule */
		rules->count++;
		if ((err = rule_parse(r, p, regerr, sizeof(regerr)))) {
			pc_config_error(config, "rules_file", "%s:%u: %s",
					rules->path, lineno, err);
			/* one error is enough to start with: the line
			 * number says where */
			rc = -1;
			break;
		}
	}
	if (rc == 0 && ferror(f)) {
		pc_config_error(config, "rules_file", "%s: read error: %s",
				rules->path, strerror(errno));
		rc = -1;
	}
	free(line);
	fclose(f);
	return rc;
}

/* header_rules_init - load the rules named by rules_file */
static int header_rules_init(pc_config *config, void **instance)
{
	const char *path = pc_config_get(config, "rules_file");
	struct rules *rules;

	if (!path || !*path) {
		pc_config_error(config, "rules_file",
				"missing: header_rules needs a rules file");
		return -1;
	}
	rules = calloc(1, sizeof(*rules));
	if (!rules || !(rules->path = strdup(path))) {
		free(rules);
		pc_config_error(config, "rules_file", "out of memory");
		return -1;
	}
	if (rules_load(config, rules) < 0) {
		rules_free(rules);
		return -1;
	}
	*instance = rules;
	return 0;
}

/* header_rules_fini - free the rules */
static void header_rules_fini(void *instance)
{
	rules_free(instance);
}

/* rule_matches - whether any field called r->header matches r->regex */
static int rule_matches(pc_ctx *ctx, const struct rule *r)
{
	const char *value;

	for (size_t n = 0; (value = pc_header_get(ctx, r->header, n)); n++)
		if (regexec(&r->regex, value, 0, NULL, 0) == 0)
			return 1;
	return 0;
}

/* rule_decide - the verdict of a matching reject, tempfail or discard */
static enum pc_status rule_decide(pc_ctx *ctx, const struct rules *rules,
				  const struct rule *r)
{
	char where[64];

	snprintf(where, sizeof(where), "line %u", r->line);
	pc_result(ctx, "rule", where);
	pc_result(ctx, "action", action_names[r->action]);
	pc_result(ctx, "header", r->header);
	pc_log(ctx, PC_LOG_INFO, "%s:%u: %s on %s", rules->path, r->line,
	       action_names[r->action], r->header);
	if (r->action == RULE_DISCARD)
		return PC_DISCARD;
	/* A rule without a reply (or whose reply the host refuses) gets the
	 * host's default reply for the verdict. */
	if (r->code)
		pc_set_reply(ctx, r->code, r->enh, "%s",
			     r->text ? r->text : "Message refused by policy");
	return r->action == RULE_REJECT ? PC_REJECT : PC_TEMPFAIL;
}

/* header_rules_data - run the rules on the header, in file order */
static enum pc_status header_rules_data(pc_ctx *ctx)
{
	const struct rules *rules = pc_instance(ctx);
	char tagged[256] = "";
	size_t used = 0;
	enum pc_status status = PC_CONTINUE;

	for (size_t i = 0; i < rules->count; i++) {
		const struct rule *r = &rules->rule[i];

		if (!rule_matches(ctx, r))
			continue;
		if (r->action != RULE_TAG) {
			status = rule_decide(ctx, rules, r);
			break;
		}
		if (pc_header_add(ctx, r->tag_name, r->tag_value) < 0) {
			pc_log(ctx, PC_LOG_WARNING, "%s:%u: cannot add %s",
			       rules->path, r->line, r->tag_name);
			continue;
		}
		if (used < sizeof(tagged)) {
			int n = snprintf(tagged + used, sizeof(tagged) - used,
					 "%s%u", used ? "," : "", r->line);

			used += n > 0 ? (size_t)n : 0;
		}
	}
	if (used)
		/* one key for all tags: the lines of the rules that added one */
		pc_result(ctx, "tagged", tagged);
	return status;
}

static const char *const header_rules_options[] = {
	"rules_file",
	NULL,
};

const struct pc_filter portcullis_filter = {
	PC_FILTER_HEADER,
	.name = "header_rules",
	.description = "regular-expression rules on message headers",
	.options = header_rules_options,
	.init = header_rules_init,
	.fini = header_rules_fini,
	.data = header_rules_data,
};
