/*
 * master.c - supervise the workers
 *
 * The master waits for signals with sigtimedwait() (all handled signals
 * blocked), so there is no handler code racing the main loop. Workers
 * are tracked by generation: a reload starts a new generation and sends
 * SIGTERM to the old one, which drains. Only a worker of the current
 * generation that dies is restarted; restarts are paced so a plugin
 * that crashes at once cannot make the master spin.
 *
 * Privileges: the master stays as it was started (root, as Postfix's
 * master does) and each child becomes [portcullis] user right after its
 * fork, before it reads a byte from anyone. The master itself talks to no
 * client: it reads the configuration and the TLS certificates and keys
 * (at start and at each reload, so a key readable by root only can be
 * replaced and reloaded), opens the listening sockets, and forks.
 *
 * With [milter] listen, one more process of each generation serves the
 * chain to the MTA as a milter (milter_front.h): supervised like a
 * worker (restarted when it dies, replaced on SIGHUP, drained on
 * SIGTERM), it is told to finish with SIGUSR2 in both cases and leaves
 * the clients' ports to the workers.
 *
 * One more child, the anvil (anvil.h), counts the clients' sessions for
 * all the workers. The master makes its socket before forking anyone and
 * keeps it, so a worker can always connect; an anvil that dies is
 * restarted (with the same pacing), and it is stopped last, after the
 * workers that ask it.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "anvil.h"
#include "chain.h"
#include "log.h"
#include "master.h"
#include "milter_front.h"
#include "record.h"
#include "tls.h"
#include "worker.h"

#define MASTER_MAX_WORKERS 256
#define MASTER_RESTART_PAUSE 1

struct master_worker {
	pid_t pid;
	unsigned generation;
	bool milter; /* the milter front-end, not an SMTP worker */
};

static struct master_worker master_workers[MASTER_MAX_WORKERS * 2];
static int master_fds[CONF_MAX_ADDRS];
static size_t master_nfds;
static int master_anvil_fd = -1; /* the anvil's listening socket */
static pid_t master_anvil_pid;

/* master_listen - open every listening socket of the configuration */
static int master_listen(const struct conf *conf)
{
	for (size_t i = 0; i < conf->nlisten; i++) {
		const struct conf_addr *a = &conf->listen[i];
		struct addrinfo hints = { 0 }, *res;
		int fd, one = 1, rc;

		hints.ai_socktype = SOCK_STREAM;
		hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
		rc = getaddrinfo(a->host, a->port, &hints, &res);
		if (rc != 0) {
			log_error("listen %s: %s", a->text, gai_strerror(rc));
			return -1;
		}
		fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			log_error("listen %s: socket: %s", a->text, strerror(errno));
			freeaddrinfo(res);
			return -1;
		}
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		/*
		 * Replies go out when written, not after the client's next
		 * ACK; accepted sockets inherit this, which spares a system
		 * call per connection.
		 */
		if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
			log_warning("listen %s: TCP_NODELAY: %s", a->text, strerror(errno));
		if (res->ai_family == AF_INET6)
			setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
		if (bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 1024) < 0) {
			log_error("listen %s: %s", a->text, strerror(errno));
			freeaddrinfo(res);
			close(fd);
			return -1;
		}
		freeaddrinfo(res);
		master_fds[master_nfds++] = fd;
		log_info("listening on %s", a->text);
	}
	return 0;
}

/* master_prepare - spool and quarantine directories and decision log, owned by the user */
static int master_prepare(const struct conf *conf, const struct passwd *pw)
{
	if (mkdir(conf->spool_dir, 0700) < 0 && errno != EEXIST) {
		log_error("spool_dir %s: %s", conf->spool_dir, strerror(errno));
		return -1;
	}
	if (chmod(conf->spool_dir, 0700) < 0 ||
	    (pw && chown(conf->spool_dir, pw->pw_uid, pw->pw_gid) < 0)) {
		log_error("spool_dir %s: %s", conf->spool_dir, strerror(errno));
		return -1;
	}
	/* Quarantined messages wait there for a person: private too. */
	if (*conf->quarantine_dir &&
	    ((mkdir(conf->quarantine_dir, 0700) < 0 && errno != EEXIST) ||
	     chmod(conf->quarantine_dir, 0700) < 0 ||
	     (pw && chown(conf->quarantine_dir, pw->pw_uid, pw->pw_gid) < 0))) {
		log_error("quarantine_dir %s: %s", conf->quarantine_dir, strerror(errno));
		return -1;
	}
	if (conf->decisions[0] == '/') {
		/* Workers open it after the privilege drop: make it theirs. */
		int fd = open(conf->decisions, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
		if (fd < 0) {
			log_error("decision log %s: %s", conf->decisions, strerror(errno));
			return -1;
		}
		if (pw && fchown(fd, pw->pw_uid, pw->pw_gid) < 0)
			log_warning("decision log %s: chown: %s", conf->decisions,
				    strerror(errno));
		close(fd);
	}
	/* The workers' lock around each record, mapped before they fork. */
	record_share();
	return 0;
}

/* Who the children run as (set at start); not set: as the master was started. */
static struct {
	bool set;
	uid_t uid;
	gid_t gid;
	char name[64];
} master_user;

/* master_drop - become the configured user (in a child, before anything else) */
static int master_drop(void)
{
	if (!master_user.set)
		return 0;
	if (setgroups(0, NULL) < 0 || setgid(master_user.gid) < 0 ||
	    setuid(master_user.uid) < 0) {
		log_error("cannot drop privileges to %s: %s", master_user.name,
			  strerror(errno));
		return -1;
	}
	if (setuid(0) == 0) {
		log_error("privileges could be regained after dropping them");
		return -1;
	}
	return 0;
}

/*
 * master_worker_count - the configured count, or one per core; none
 * without SMTP listeners (a milter-only configuration)
 */
static unsigned master_worker_count(const struct conf *conf)
{
	if (conf->nlisten == 0)
		return 0;
	long n = conf->workers ? (long)conf->workers : sysconf(_SC_NPROCESSORS_ONLN);

	if (n < 1)
		n = 1;
	if (n > MASTER_MAX_WORKERS)
		n = MASTER_MAX_WORKERS;
	return (unsigned)n;
}

/* master_spawn - fork one worker (or the milter front-end) of this generation */
static void master_spawn(const struct conf *conf, unsigned generation,
			 const sigset_t *oldmask, bool milter)
{
	size_t slot;
	pid_t pid;

	for (slot = 0; slot < sizeof(master_workers) / sizeof(master_workers[0]); slot++)
		if (master_workers[slot].pid == 0)
			break;
	if (slot == sizeof(master_workers) / sizeof(master_workers[0])) {
		log_error("too many worker processes");
		return;
	}
	pid = fork();
	if (pid < 0) {
		log_error("fork: %s", strerror(errno));
		return;
	}
	if (pid == 0) {
		/* The worker takes its signals through libevent. */
		sigprocmask(SIG_SETMASK, oldmask, NULL);
		if (master_drop() < 0)
			_exit(1);
		if (!milter)
			_exit(worker_run(conf, master_fds, master_nfds));
		for (size_t i = 0; i < master_nfds; i++)
			close(master_fds[i]);
		close(master_anvil_fd);
		_exit(milter_front_run(conf));
	}
	master_workers[slot].pid = pid;
	master_workers[slot].generation = generation;
	master_workers[slot].milter = milter;
}

/* master_spawn_anvil - fork the anvil */
static void master_spawn_anvil(const sigset_t *oldmask)
{
	pid_t pid = fork();

	if (pid < 0) {
		log_error("fork: %s", strerror(errno));
		return;
	}
	if (pid == 0) {
		/* Only the anvil's socket is ours: not the clients' ports. */
		for (size_t i = 0; i < master_nfds; i++)
			close(master_fds[i]);
		sigprocmask(SIG_SETMASK, oldmask, NULL);
		if (master_drop() < 0)
			_exit(1);
		_exit(anvil_run(master_anvil_fd));
	}
	master_anvil_pid = pid;
}

/* master_signal_workers - send sig to the workers of a generation (0: all) */
static void master_signal_workers(int sig, unsigned generation, bool all)
{
	for (size_t i = 0; i < sizeof(master_workers) / sizeof(master_workers[0]); i++)
		if (master_workers[i].pid &&
		    (all || master_workers[i].generation == generation))
			/*
			 * The milter front-end drains on SIGUSR2: libmilter takes
			 * SIGTERM itself and serves no open connection after it.
			 */
			kill(master_workers[i].pid,
			     sig == SIGTERM && master_workers[i].milter ? SIGUSR2 : sig);
}

/* master_live_workers - how many workers are alive */
static unsigned master_live_workers(void)
{
	unsigned n = 0;

	for (size_t i = 0; i < sizeof(master_workers) / sizeof(master_workers[0]); i++)
		if (master_workers[i].pid)
			n++;
	return n;
}

/* master_write_pid - the pid file, if configured */
static void master_write_pid(const struct conf *conf)
{
	FILE *f;

	if (!*conf->pid_file)
		return;
	f = fopen(conf->pid_file, "w");
	if (!f) {
		log_warning("pid_file %s: %s", conf->pid_file, strerror(errno));
		return;
	}
	fprintf(f, "%d\n", (int)getpid());
	fclose(f);
}

/* master_check_chain - load and unload the filter chain once */
static int master_check_chain(const struct conf *conf)
{
	struct chain *chain;

	if (worker_load_chain(conf, &chain) < 0)
		return -1;
	chain_free(chain);
	return 0;
}

/*
 * master_check_chain_as - the same, in a child that first becomes the
 * user the workers run as (files the filters read must be theirs to read)
 */
static int master_check_chain_as(const struct conf *conf)
{
	int status;
	pid_t pid = fork();

	if (pid < 0) {
		log_error("fork: %s", strerror(errno));
		return -1;
	}
	if (pid == 0)
		_exit(master_drop() < 0 || master_check_chain(conf) < 0 ? 1 : 0);
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -1;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

/*
 * master_fd_need - the descriptors one worker may hold at max_sessions:
 * a client and a backend socket per session, the parked backend
 * connections, two per filter thread (a DNS socket, a milter's
 * connection), and a margin for the listeners, the logs, the event loop
 * and the spool files of messages over spool_memory_limit
 */
static unsigned long long master_fd_need(const struct conf *conf)
{
	return 2ULL * conf->max_sessions + conf->backend_reuse +
	       2ULL * conf->filter_threads + conf->nlisten + 100;
}

/* master_fd_limit - check, and raise, the worker's descriptor limit */
int master_fd_limit(struct conf *conf, bool raise, FILE *errors)
{
	unsigned long long need = master_fd_need(conf);
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return 0; /* nothing to go by: accept() copes when short */
	if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need &&
	    conf->max_sessions_line == 0) {
		/*
		 * The default was not chosen for this host: serve what its
		 * limit allows rather than refuse to start. A value written
		 * in the file is the administrator's and is refused below.
		 */
		unsigned long long rest = need - 2ULL * conf->max_sessions;
		unsigned fit = rl.rlim_max > rest ? (unsigned)((rl.rlim_max - rest) / 2) : 0;
		if (fit > 0) {
			if (raise)
				log_warning("max_sessions lowered from its default %u to %u: "
					    "the hard limit of file descriptors is %llu",
					    conf->max_sessions, fit,
					    (unsigned long long)rl.rlim_max);
			conf->max_sessions = fit;
			need = master_fd_need(conf);
		}
	}
	if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need) {
		fprintf(errors,
			"%s:%d: [portcullis] max_sessions: %u sessions need %llu "
			"file descriptors per worker, but the hard limit is %llu "
			"(ulimit -Hn; LimitNOFILE= under systemd): lower "
			"max_sessions or raise the limit\n",
			conf->path, conf->max_sessions_line, conf->max_sessions,
			need, (unsigned long long)rl.rlim_max);
		return -1;
	}
	if (raise && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need) {
		/* Postfix does the same: the soft limit is only a default. */
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
			fprintf(errors, "cannot raise the file descriptor limit to %llu: %s\n",
				(unsigned long long)rl.rlim_max, strerror(errno));
			return -1;
		}
		log_info("file descriptor limit raised to %llu (max_sessions %u needs %llu)",
			 (unsigned long long)rl.rlim_max, conf->max_sessions, need);
	}
	return 0;
}

/* master_fd_limit_log - master_fd_limit() with its errors logged */
static int master_fd_limit_log(struct conf *conf)
{
	char *err = NULL;
	size_t errlen = 0;
	FILE *errs = open_memstream(&err, &errlen);
	int rc;

	if (!errs)
		return -1;
	rc = master_fd_limit(conf, true, errs);
	fclose(errs);
	if (rc < 0)
		log_error("%.*s", (int)strcspn(err, "\n"), err);
	free(err);
	return rc;
}

/* master_run - run the service */
int master_run(struct conf *conf)
{
	struct passwd *pw = NULL;
	sigset_t mask, oldmask;
	unsigned generation = 1, wanted;
	bool stopping = false;
	time_t stop_deadline = 0, last_restart = 0;
	char *pid_file = strdup(conf->pid_file);

	if (*conf->user) {
		if (getuid() != 0) {
			log_warning("not started as root: staying user %d, not %s",
				    (int)getuid(), conf->user);
		} else if (!(pw = getpwnam(conf->user))) {
			log_error("user %s: no such user", conf->user);
			goto fail;
		} else {
			master_user.set = true;
			master_user.uid = pw->pw_uid;
			master_user.gid = pw->pw_gid;
			snprintf(master_user.name, sizeof(master_user.name), "%s", pw->pw_name);
		}
	} else if (getuid() == 0) {
		log_warning("running as root: set [portcullis] user");
	}
	if (master_fd_limit_log(conf) < 0 || master_listen(conf) < 0 ||
	    master_prepare(conf, pw) < 0 || (master_anvil_fd = anvil_listen()) < 0)
		goto fail;
	/* Check the chain as the workers will load it: as the user. */
	if (master_check_chain_as(conf) < 0)
		goto fail;
	master_write_pid(conf);
	if (master_user.set)
		log_info("the workers run as user %s", master_user.name);

	sigemptyset(&mask);
	sigaddset(&mask, SIGCHLD);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	sigaddset(&mask, SIGUSR1);
	sigaddset(&mask, SIGUSR2);
	sigprocmask(SIG_BLOCK, &mask, &oldmask);

	/* First, so that the workers' first clients find it. */
	master_spawn_anvil(&oldmask);
	wanted = master_worker_count(conf);
	for (unsigned i = 0; i < wanted; i++)
		master_spawn(conf, generation, &oldmask, false);
	if (*conf->milter_listen)
		master_spawn(conf, generation, &oldmask, true);
	log_info("started %u workers%s", wanted,
		 *conf->milter_listen ? " and the milter front-end" : "");

	for (;;) {
		struct timespec tick = { 1, 0 };
		siginfo_t info;
		int sig = sigtimedwait(&mask, &info, &tick);
		pid_t pid;
		int status;

		if (sig == SIGTERM || sig == SIGINT) {
			if (!stopping) {
				log_info("stopping: draining the workers");
				stopping = true;
				stop_deadline = time(NULL) + conf->drain_timeout + 5;
				master_signal_workers(SIGTERM, 0, true);
				for (size_t i = 0; i < master_nfds; i++)
					close(master_fds[i]);
				master_nfds = 0;
			}
		} else if (sig == SIGUSR1) {
			master_signal_workers(SIGUSR1, 0, true);
		} else if (sig == SIGHUP && !stopping) {
			char *err = NULL;
			size_t errlen = 0;
			FILE *errs = open_memstream(&err, &errlen);
			struct conf *fresh = conf_load(conf->path, errs);

			/* New certificates, new ticket keys: the new generation's. */
			if (fresh && tls_load(fresh, errs) < 0) {
				tls_unload(fresh);
				conf_free(fresh);
				fresh = NULL;
			}
			fclose(errs);
			if (fresh && (master_fd_limit_log(fresh) < 0 ||
				      master_check_chain_as(fresh) < 0)) {
				tls_unload(fresh);
				conf_free(fresh);
				log_error("reload failed, keeping the running configuration");
			} else if (!fresh) {
				log_error("reload failed, keeping the running configuration:\n%s", err);
			} else {
				log_info("reloading %s", conf->path);
				/* Sockets stay as opened: changing them needs a restart. */
				if (fresh->nlisten != conf->nlisten ||
				    memcmp(fresh->listen, conf->listen, sizeof(conf->listen)))
					log_warning("reload: a change of listen takes a restart");
				log_open("portcullis", fresh->diagnostics_syslog,
					 (enum log_level)fresh->log_level);
				unsigned old = generation++;
				tls_unload(conf);
				conf_free(conf);
				conf = fresh;
				wanted = master_worker_count(conf);
				for (unsigned i = 0; i < wanted; i++)
					master_spawn(conf, generation, &oldmask, false);
				/* It opens its socket once the old one closed it. */
				if (*conf->milter_listen)
					master_spawn(conf, generation, &oldmask, true);
				/* The old workers finish their sessions, untouched. */
				master_signal_workers(SIGUSR2, old, false);
			}
			free(err);
		}

		while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
			if (pid == master_anvil_pid) {
				master_anvil_pid = 0;
				if (stopping)
					continue;
				if (WIFSIGNALED(status))
					log_error("anvil %d killed by signal %d", (int)pid,
						  WTERMSIG(status));
				else
					log_error("anvil %d exited with status %d", (int)pid,
						  WEXITSTATUS(status));
				/* Workers serve clients uncounted meanwhile. */
				if (time(NULL) - last_restart < MASTER_RESTART_PAUSE)
					sleep(MASTER_RESTART_PAUSE);
				last_restart = time(NULL);
				log_info("restarting the anvil");
				master_spawn_anvil(&oldmask);
				continue;
			}
			for (size_t i = 0; i < sizeof(master_workers) / sizeof(master_workers[0]); i++) {
				if (master_workers[i].pid != pid)
					continue;
				const char *what = master_workers[i].milter ? "milter front-end" : "worker";
				master_workers[i].pid = 0;
				if (WIFSIGNALED(status))
					log_error("%s %d killed by signal %d", what, (int)pid,
						  WTERMSIG(status));
				else if (WEXITSTATUS(status) != 0)
					log_error("%s %d exited with status %d", what, (int)pid,
						  WEXITSTATUS(status));
				if (!stopping && master_workers[i].generation == generation &&
				    (WIFSIGNALED(status) || WEXITSTATUS(status) != 0)) {
					/* Pace restarts: a worker dying at once must not spin us. */
					if (time(NULL) - last_restart < MASTER_RESTART_PAUSE)
						sleep(MASTER_RESTART_PAUSE);
					last_restart = time(NULL);
					log_info("restarting the %s", what);
					master_spawn(conf, generation, &oldmask,
						     master_workers[i].milter);
				}
			}
		}
		if (stopping && master_live_workers() == 0) {
			if (master_anvil_pid > 0) {
				kill(master_anvil_pid, SIGTERM);
				while (waitpid(master_anvil_pid, &status, 0) < 0 && errno == EINTR)
					;
			}
			break;
		}
		if (stopping && time(NULL) > stop_deadline) {
			log_warning("workers did not stop in time: killing them");
			master_signal_workers(SIGKILL, 0, true);
			stop_deadline = time(NULL) + 5;
		}
	}
	if (*pid_file && unlink(pid_file) < 0 && errno != ENOENT)
		log_debug("pid_file %s: %s", pid_file, strerror(errno));
	free(pid_file);
	tls_unload(conf);
	conf_free(conf);
	log_info("stopped");
	return 0;
fail:
	free(pid_file);
	tls_unload(conf);
	conf_free(conf);
	return 1;
}
