/*
 * The init of a bubblewrap sandbox (src/backends/bwrap.ts): PID 1 of the run's namespace, which
 * starts the CLI as its child, waits for it and exits with its status. One program where the
 * sandbox otherwise chains three (`sh -c` as the init, `setpriv` for the account, `env` for the
 * signals): each exec of those is 2–5 ms on a slow-forking host (bench/RESULTS.md, twenty-sixth pass).
 *
 *   asm-sandbox-init [--user=UID:GID] [--keep-signals] -- COMMAND [ARG...]
 *
 * The init:
 *   - keeps the signal dispositions it was started with: the service signals the CLI's whole process
 *     group, and bwrap and the init run with those signals ignored (bwrap.ts, GROUP_SIGNALS);
 *   - reaps every process the namespace hands it while it waits (it is their parent now), and exits
 *     when the CLI does, with the CLI's exit code, or 128 + N for a CLI killed by signal N, as a shell
 *     reports it; the kernel then ends whatever is left in the namespace;
 *   - writes nothing of its own but an error that stops it from starting the CLI (status 126).
 * The CLI, in the child, before its exec:
 *   - gets SIGINT, SIGTERM, SIGHUP and SIGQUIT back at their defaults and no signal blocked, unless
 *     --keep-signals: a command that starts the CLI in turn and must outlive the group's signals
 *     (the egress relay, src/backends/egress.ts) keeps them ignored, and resets them for the CLI;
 *   - with --user (a service that is root): no supplementary groups, an empty capability bounding
 *     set (the sandbox gives bwrap CAP_SETPCAP for this), no ambient or inheritable capabilities, and
 *     the real, effective and saved ids of the account, so it keeps no capability at all; as
 *     `setpriv --reuid --regid --clear-groups --inh-caps=-all --bounding-set=-all` does. bwrap has
 *     set no_new_privs, which the exec keeps;
 *   - has no PWD in its environment (the service never sets one; a shell init would have);
 *   - is found on PATH when COMMAND has no '/' (status 127 when it is not there, 126 when it cannot run).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <grp.h>
#include <linux/capability.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define CANNOT_START 126
#define NOT_FOUND 127

static const int GROUP_SIGNALS[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};

static void die(const char *what) {
  fprintf(stderr, "asm-sandbox-init: %s: %s\n", what, strerror(errno));
  _exit(CANNOT_START);
}

/* Drops to the account for good: groups and capabilities first, while the process may still. */
static void become(uid_t uid, gid_t gid) {
  if (setgroups(0, NULL) != 0) die("setgroups");
  for (int cap = 0; prctl(PR_CAPBSET_READ, cap, 0, 0, 0) >= 0; cap++) {
    if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0) die("dropping the capability bounding set");
  }
  if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0) die("clearing the ambient capabilities");
  if (setresgid(gid, gid, gid) != 0) die("setresgid");
  if (setresuid(uid, uid, uid) != 0) die("setresuid");
  /* The uid change cleared the permitted and effective sets; the inheritable one stays unless cleared. */
  struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
  struct __user_cap_data_struct none[_LINUX_CAPABILITY_U32S_3];
  memset(none, 0, sizeof none);
  if (syscall(SYS_capset, &header, none) != 0) die("capset");
  if (getuid() != uid || geteuid() != uid || getgid() != gid || getegid() != gid) {
    errno = EPERM;
    die("the account did not take");
  }
}

static void start(char **command, int drop, uid_t uid, gid_t gid, int keep_signals) {
  sigset_t none;
  sigemptyset(&none);
  if (sigprocmask(SIG_SETMASK, &none, NULL) != 0) die("sigprocmask");
  for (size_t i = 0; !keep_signals && i < sizeof GROUP_SIGNALS / sizeof GROUP_SIGNALS[0]; i++) {
    if (signal(GROUP_SIGNALS[i], SIG_DFL) == SIG_ERR) die("signal");
  }
  if (drop) become(uid, gid);
  unsetenv("PWD");
  execvp(command[0], command);
  int err = errno;
  fprintf(stderr, "asm-sandbox-init: %s: %s\n", command[0], strerror(err));
  _exit(err == ENOENT ? NOT_FOUND : CANNOT_START);
}

int main(int argc, char **argv) {
  int at = 1, drop = 0, keep_signals = 0;
  unsigned long uid = 0, gid = 0;
  char end;
  for (; at < argc && strcmp(argv[at], "--") != 0; at++) {
    if (strcmp(argv[at], "--keep-signals") == 0) {
      keep_signals = 1;
    } else if (strncmp(argv[at], "--user=", 7) == 0 && sscanf(argv[at] + 7, "%lu:%lu%c", &uid, &gid, &end) == 2 && uid != 0 && gid != 0) {
      drop = 1;
    } else {
      fprintf(stderr, "asm-sandbox-init: unknown option %s (--user takes UID:GID, neither 0)\n", argv[at]);
      return CANNOT_START;
    }
  }
  if (at + 1 >= argc) {
    fprintf(stderr, "usage: asm-sandbox-init [--user=UID:GID] [--keep-signals] -- COMMAND [ARG...]\n");
    return CANNOT_START;
  }
  pid_t cli = fork();
  if (cli < 0) die("fork");
  if (cli == 0) start(argv + at + 1, drop, (uid_t)uid, (gid_t)gid, keep_signals);
  for (;;) {
    int status;
    pid_t ended = wait(&status);
    if (ended == cli) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (ended < 0 && errno != EINTR) die("wait");
  }
}
