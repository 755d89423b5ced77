import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { freePort } from './ports.js';

/**
 * A real OpenSSH server for the ssh execution surface: `sshd -D -e` on 127.0.0.1 with its own host
 * key, accepting one generated client key for the current user. It needs /usr/sbin/sshd (Debian's
 * openssh-server, installed by .ci/run) and root (sshd's privilege separation).
 */

export interface TestSshd {
  port: number;
  user: string;
  identityFile: string;
  /** Holds the server's host key, so the client checks it strictly. */
  knownHostsFile: string;
  stop(): Promise<void>;
}

const SSHD = '/usr/sbin/sshd';

/** Why sshd cannot run here, or null when it can. */
export function sshdUnavailable(): string | null {
  if (!existsSync(SSHD)) return `${SSHD} is not installed (apt-get install -y openssh-server)`;
  if (process.getuid?.() !== 0) return 'sshd needs root for its privilege separation';
  return null;
}

export async function startSshd(): Promise<TestSshd> {
  const dir = mkdtempSync(join(tmpdir(), 'asm-sshd-'));
  const keygen = (file: string) => {
    const out = spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', file]);
    if (out.status !== 0) throw new Error(`ssh-keygen failed: ${out.stderr}`);
  };
  keygen(join(dir, 'host_key'));
  keygen(join(dir, 'client_key'));
  writeFileSync(join(dir, 'authorized_keys'), readFileSync(join(dir, 'client_key.pub')));
  const port = await freePort();
  const [type, key] = readFileSync(join(dir, 'host_key.pub'), 'utf8').split(' ');
  writeFileSync(join(dir, 'known_hosts'), `[127.0.0.1]:${port} ${type} ${key}\n`);
  writeFileSync(
    join(dir, 'sshd_config'),
    [
      `Port ${port}`,
      'ListenAddress 127.0.0.1',
      `HostKey ${join(dir, 'host_key')}`,
      `PidFile ${join(dir, 'sshd.pid')}`,
      `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
      'PermitRootLogin prohibit-password',
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'UsePAM no',
      'StrictModes no',
    ].join('\n') + '\n',
  );
  // Debian's sshd refuses to start without its privilege separation directory (made by its service unit).
  mkdirSync('/run/sshd', { recursive: true });
  const child = spawn(SSHD, ['-D', '-e', '-f', join(dir, 'sshd_config')], { stdio: ['ignore', 'ignore', 'pipe'] });
  await listening(child, port);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return {
    port,
    user: userInfo().username,
    identityFile: join(dir, 'client_key'),
    knownHostsFile: join(dir, 'known_hosts'),
    async stop() {
      child.kill('SIGTERM');
      await exited;
    },
  };
}

function listening(child: ChildProcess, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let log = '';
    child.stderr!.on('data', (chunk) => {
      log += chunk;
      if (log.includes(`Server listening on 127.0.0.1 port ${port}`)) resolve();
    });
    child.once('exit', (code) => reject(new Error(`sshd exited (${code}) before listening:\n${log}`)));
  });
}
