/**
 * `npm ci` and `npm install` run this (package.json "install"): builds native/spawn.c, the service's
 * posix_spawn (src/backends/spawn-child.ts), and native/sandbox-init.c, the init of the bwrap sandbox
 * (src/backends/bwrap.ts), with the node-gyp npm ships. Where they cannot be built (no C compiler, or
 * not Linux), the install still succeeds: the service then starts its child processes with fork, and
 * its sandboxes' CLIs through sh, setpriv and env, and says so when it starts (README, "How child
 * processes start", "Sandbox").
 */
import { spawnSync } from 'node:child_process';

const nodeGyp = process.env.npm_config_node_gyp;
const built = nodeGyp
  ? spawnSync(process.execPath, [nodeGyp, 'rebuild', '--directory=native'], { stdio: 'inherit' })
  : spawnSync('node-gyp', ['rebuild', '--directory=native'], { stdio: 'inherit' });
if (built.status !== 0) {
  console.warn('asm: native/spawn.c and native/sandbox-init.c were not built (node-gyp needs python3, make and a C compiler, on Linux); child processes will start with fork, and sandboxed CLIs through sh, setpriv and env');
}
