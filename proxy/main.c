/*
 * main.c - the portcullis command
 *
 * portcullis [-f] [-t] [-c FILE]
 *   -c FILE  configuration file (default SYSCONFDIR/portcullis.conf)
 *   -f       stay in the foreground (systemd, tests)
 *   -t       check the configuration, report every error, exit
 *   -v       print the version and exit
 */
#include "config.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chain.h"
#include "conf.h"
#include "dns.h"
#include "log.h"
#include "master.h"
#include "tls.h"

/* usage - the synopsis, to stderr */
static void usage(void)
{
	fprintf(stderr, "usage: portcullis [-f] [-t] [-c config]\n");
}

/* daemonize - detach from the terminal */
static int daemonize(void)
{
	pid_t pid = fork();
	int fd;

	if (pid < 0)
		return -1;
	if (pid > 0)
		_exit(0);
	if (setsid() < 0)
		return -1;
	fd = open("/dev/null", O_RDWR);
	if (fd < 0)
		return -1;
	dup2(fd, STDIN_FILENO);
	dup2(fd, STDOUT_FILENO);
	dup2(fd, STDERR_FILENO);
	if (fd > STDERR_FILENO)
		close(fd);
	return 0;
}

int main(int argc, char **argv)
{
	const char *path = SYSCONFDIR "/portcullis.conf";
	bool foreground = false, check = false;
	struct conf *conf;
	int opt;

	while ((opt = getopt(argc, argv, "c:ftvh")) != -1) {
		switch (opt) {
		case 'c': path = optarg; break;
		case 'f': foreground = true; break;
		case 't': check = true; break;
		case 'v': printf("portcullis %s\n", PACKAGE_VERSION); return 0;
		default: usage(); return 2;
		}
	}
	if (optind != argc) {
		usage();
		return 2;
	}
	conf = conf_load(path, stderr);
	if (!conf)
		return 1;
	/* Certificates and keys are read now, while we may still be root. */
	if (tls_load(conf, stderr) < 0) {
		tls_unload(conf);
		conf_free(conf);
		return 1;
	}
	if (check) {
		/* The limits of this shell: the service's may differ (systemd). */
		if (master_fd_limit(conf, false, stderr) < 0) {
			tls_unload(conf);
			conf_free(conf);
			return 1;
		}
		/* Load the filters too: their options are checked by init(). */
		if (dns_init(conf) < 0) {
			tls_unload(conf);
			conf_free(conf);
			return 1;
		}
		struct chain *chain = conf->nchain ? chain_load(conf, stderr) : NULL;
		if (conf->nchain && !chain) {
			tls_unload(conf);
			conf_free(conf);
			return 1;
		}
		chain_free(chain);
		printf("%s: configuration ok\n", path);
		tls_unload(conf);
		conf_free(conf);
		return 0;
	}
	/* In the foreground stderr is the natural place unless told otherwise. */
	log_open("portcullis", conf->diagnostics_syslog, (enum log_level)conf->log_level);
	if (!foreground && daemonize() < 0) {
		log_error("cannot detach: %m");
		return 1;
	}
	return master_run(conf);
}
