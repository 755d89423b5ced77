/*
 * posix_spawn for Node: starts a process without fork(2), and reports its end through a pidfd.
 *
 * Node's child_process forks (libuv's uv_spawn), and a fork copies the parent's page tables on the
 * main thread: the larger the service's memory, the longer every spawn blocks its event loop (57 µs
 * a MB on a Firecracker guest, bench/RESULTS.md, twenty-first pass). glibc's posix_spawn clones with
 * CLONE_VM | CLONE_VFORK instead: nothing is copied, and the cost does not grow with the parent.
 * src/backends/spawn-child.ts wraps it in the ChildProcess shape the service uses.
 *
 * spawn(file, args, env, cwd, stdio, setsid, onExit) → [pid, stdinFd, stdoutFd, stderrFd]
 *   file     found on env's PATH when it has no '/', as execvp would (ENOENT, or EACCES when only
 *            non-executable candidates were found)
 *   stdio    three booleans: a pipe (a socketpair, as libuv's; the service's end is returned, close-on-exec)
 *            or /dev/null (-1 returned)
 *   setsid   the child leads a new session and process group
 *   onExit   called once with (code, signal number) when the child ended; it is reaped here
 * The child starts with every signal at its default disposition and none blocked, as libuv's do.
 * Throws an Error with `code` (the errno's name) and `errno` when the process cannot start.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <node_api.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

/* Each piped stdio stream is a socketpair, as libuv's are: end 0 is the child's, end 1 the service's. */
#define CHILD_END 0
#define PARENT_END 1

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

typedef struct {
  uv_poll_t poll;
  int pidfd;
  napi_env env;
  napi_ref on_exit;
  napi_async_context context;
} child_t;

static int pidfd_open(pid_t pid) { return (int)syscall(SYS_pidfd_open, pid, 0); }

static napi_value throw_errno(napi_env env, int err, const char *syscall_name) {
  napi_value message, code, error, number;
  const char *name = strerrorname_np(err);
  char text[256];
  snprintf(text, sizeof text, "%s %s (%s)", syscall_name, name ? name : "E?", strerror(err));
  napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &message);
  napi_create_string_utf8(env, name ? name : "UNKNOWN", NAPI_AUTO_LENGTH, &code);
  napi_create_error(env, code, message, &error);
  napi_create_int32(env, -err, &number);
  napi_set_named_property(env, error, "errno", number);
  napi_throw(env, error);
  return NULL;
}

/* A JS string as a malloc'd C string (NULL when it is not a string). */
static char *string_of(napi_env env, napi_value value) {
  size_t length;
  if (napi_get_value_string_utf8(env, value, NULL, 0, &length) != napi_ok) return NULL;
  char *text = malloc(length + 1);
  napi_get_value_string_utf8(env, value, text, length + 1, &length);
  return text;
}

/* A JS array of strings as a NULL-terminated, malloc'd vector (NULL when it is not one). */
static char **strings_of(napi_env env, napi_value array) {
  uint32_t count;
  if (napi_get_array_length(env, array, &count) != napi_ok) return NULL;
  char **vector = calloc(count + 1, sizeof *vector);
  for (uint32_t i = 0; i < count; i++) {
    napi_value item;
    napi_get_element(env, array, i, &item);
    if (!(vector[i] = string_of(env, item))) {
      for (uint32_t j = 0; j < i; j++) free(vector[j]);
      free(vector);
      return NULL;
    }
  }
  return vector;
}

static void free_strings(char **vector) {
  if (!vector) return;
  for (char **item = vector; *item; item++) free(*item);
  free(vector);
}

static void on_closed(uv_handle_t *handle) {
  child_t *child = (child_t *)handle;
  close(child->pidfd);
  free(child);
}

static void on_readable(uv_poll_t *poll, int status, int events) {
  (void)status;
  (void)events;
  child_t *child = (child_t *)poll;
  siginfo_t info;
  memset(&info, 0, sizeof info);
  if (waitid(P_PIDFD, (id_t)child->pidfd, &info, WEXITED | WNOHANG) != 0 || info.si_pid == 0) return;
  uv_poll_stop(poll);
  napi_env env = child->env;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  napi_value callback, receiver, argv[2];
  napi_get_reference_value(env, child->on_exit, &callback);
  napi_get_global(env, &receiver);
  int exited = info.si_code == CLD_EXITED;
  if (exited) napi_create_int32(env, info.si_status, &argv[0]); else napi_get_null(env, &argv[0]);
  if (exited) napi_get_null(env, &argv[1]); else napi_create_int32(env, info.si_status, &argv[1]);
  napi_value ignored;
  napi_make_callback(env, child->context, receiver, callback, 2, argv, &ignored);
  napi_delete_reference(env, child->on_exit);
  napi_async_destroy(env, child->context);
  napi_close_handle_scope(env, scope);
  uv_close((uv_handle_t *)poll, on_closed);
}

/* The executable execvp would run for `file`, on `path_list`: 0 and `found` set, or an errno. */
static int find_executable(const char *file, const char *path_list, char *found, size_t size) {
  if (strchr(file, '/')) {
    snprintf(found, size, "%s", file);
    return 0;
  }
  int denied = 0;
  const char *dir = path_list;
  while (dir) {
    const char *end = strchr(dir, ':');
    size_t length = end ? (size_t)(end - dir) : strlen(dir);
    if (length == 0) snprintf(found, size, "%s", file);
    else snprintf(found, size, "%.*s/%s", (int)length, dir, file);
    struct stat info;
    if (stat(found, &info) == 0 && S_ISREG(info.st_mode)) {
      if (access(found, X_OK) == 0) return 0;
      denied = 1;
    }
    dir = end ? end + 1 : NULL;
  }
  return denied ? EACCES : ENOENT;
}

static napi_value spawn_child(napi_env env, napi_callback_info info) {
  size_t argc = 7;
  napi_value argv[7];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  char *file = string_of(env, argv[0]);
  char **args = strings_of(env, argv[1]);
  char **envp = strings_of(env, argv[2]);
  char *cwd = string_of(env, argv[3]);
  bool piped[3] = {false, false, false};
  for (uint32_t i = 0; i < 3; i++) {
    napi_value item;
    napi_get_element(env, argv[4], i, &item);
    napi_get_value_bool(env, item, &piped[i]);
  }
  bool setsid = false;
  napi_get_value_bool(env, argv[5], &setsid);
  napi_value result = NULL;
  int fds[3][2] = {{-1, -1}, {-1, -1}, {-1, -1}};
  int err = 0;
  const char *failed = "spawn";
  if (!file || !args || !envp || !cwd) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "spawn: file, args, env and cwd must be strings");
    goto done;
  }

  const char *path_list = "/usr/bin:/bin";
  for (char **item = envp; *item; item++)
    if (strncmp(*item, "PATH=", 5) == 0) path_list = *item + 5;
  char executable[4096];
  if ((err = find_executable(file, path_list, executable, sizeof executable))) goto done;

  for (int i = 0; i < 3; i++)
    if (piped[i] && socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds[i]) != 0) {
      err = errno;
      failed = "socketpair";
      goto done;
    }
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attributes;
  posix_spawn_file_actions_init(&actions);
  posix_spawnattr_init(&attributes);
  posix_spawn_file_actions_addchdir_np(&actions, cwd);
  for (int i = 0; i < 3; i++) {
    if (piped[i]) posix_spawn_file_actions_adddup2(&actions, fds[i][CHILD_END], i);
    else posix_spawn_file_actions_addopen(&actions, i, "/dev/null", O_RDWR, 0);
  }
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  /* glibc's sigfillset leaves out its own two signals (32 and 33, which sigaddset refuses), and its
   * posix_spawn then ignores them in the child, which keeps them ignored across exec: set as default
   * too, as libuv's children have them. Signal n is bit n - 1. */
  all.__val[0] |= 3UL << 31;
  posix_spawnattr_setsigmask(&attributes, &none);
  posix_spawnattr_setsigdefault(&attributes, &all);
  posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | (setsid ? POSIX_SPAWN_SETSID : 0));
  pid_t pid;
  err = posix_spawn(&pid, executable, &actions, &attributes, args, envp);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attributes);
  if (err) goto done;

  child_t *child = calloc(1, sizeof *child);
  child->pidfd = pidfd_open(pid);
  if (child->pidfd < 0) {
    /* Not reachable where the module loaded (it checks pidfd_open first); never leave the child unwatched. */
    err = errno;
    failed = "pidfd_open";
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    free(child);
    goto done;
  }
  uv_loop_t *loop;
  int polled = napi_get_uv_event_loop(env, &loop) == napi_ok ? uv_poll_init(loop, &child->poll, child->pidfd) : UV_EINVAL;
  if (polled == 0 && (polled = uv_poll_start(&child->poll, UV_READABLE, on_readable)) != 0) {
    uv_close((uv_handle_t *)&child->poll, on_closed); /* closes the pidfd and frees the child */
    child = NULL;
  }
  if (polled != 0) {
    /* Its end could not be watched: never leave a child nobody reaps. */
    err = -polled;
    failed = "uv_poll";
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    if (child) {
      close(child->pidfd);
      free(child);
    }
    goto done;
  }
  child->env = env;
  napi_create_reference(env, argv[6], 1, &child->on_exit);
  napi_value resource_name;
  napi_create_string_utf8(env, "ASM_SPAWN", NAPI_AUTO_LENGTH, &resource_name);
  napi_async_init(env, NULL, resource_name, &child->context);

  napi_create_array_with_length(env, 4, &result);
  napi_value value;
  napi_create_int32(env, pid, &value);
  napi_set_element(env, result, 0, value);
  for (int i = 0; i < 3; i++) {
    napi_create_int32(env, fds[i][PARENT_END], &value);
    napi_set_element(env, result, i + 1, value);
    fds[i][PARENT_END] = -1;
  }

done:
  for (int i = 0; i < 3; i++)
    for (int j = 0; j < 2; j++)
      if (fds[i][j] >= 0) close(fds[i][j]);
  free(file);
  free(cwd);
  free_strings(args);
  free_strings(envp);
  if (err) return throw_errno(env, err, failed);
  return result;
}

NAPI_MODULE_INIT() {
  int probe = pidfd_open(getpid());
  if (probe < 0) {
    throw_errno(env, errno, "pidfd_open");
    return NULL;
  }
  close(probe);
  napi_value function;
  napi_create_function(env, "spawn", NAPI_AUTO_LENGTH, spawn_child, NULL, &function);
  napi_set_named_property(env, exports, "spawn", function);
  return exports;
}
