import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { startRedisServer, type RedisServer } from './redis-server.js';

/**
 * A host of its own for a partition test: a network namespace joined to the root namespace by a veth
 * pair on a private /30, and a dedicated redis-server that the namespace reaches only through the
 * host side's address. A process started with `launcher` runs inside; `cut()` takes the host side of
 * the link down without touching that process, `heal()` brings it back.
 *
 * Needs the privilege to create network namespaces (root, or CAP_SYS_ADMIN and CAP_NET_ADMIN);
 * without it `openNamespace` says why, for the test to skip. Names are unique per call, and only what
 * it created is removed: its namespace (with every process inside it), its veth pair, its redis-server.
 */
export interface Namespace {
  /** The namespace's name. */
  name: string;
  /** Prefix a command with it to run the command inside the namespace. */
  launcher: string[];
  redis: RedisServer;
  /** The redis-server's URL as a process inside the namespace reaches it. */
  redisUrlInside: string;
  /** The pids of every process inside the namespace. */
  pids(): number[];
  cut(): void;
  heal(): void;
  dispose(): Promise<void>;
}

const ip = (...args: string[]) => execFileSync('ip', args, { stdio: 'pipe' }).toString();
const quietly = (work: () => unknown) => {
  try {
    work();
  } catch {
    // cleanup of something that may not exist (a failed setup, or already gone with the namespace)
  }
};

/** The namespace, or why one cannot be made here. `tag` (a few letters) tells the tests' names apart. */
export async function openNamespace(tag: string): Promise<Namespace | { missing: string }> {
  const id = randomBytes(4).toString('hex');
  const name = `asm-${tag}-${id}`;
  // Interface names are at most 15 bytes.
  const hostVeth = `${tag.slice(0, 4)}${id}h`;
  const nodeVeth = `${tag.slice(0, 4)}${id}n`;
  try {
    ip('netns', 'add', name);
  } catch (err) {
    return { missing: `cannot create a network namespace here (ip netns add: ${String((err as { stderr?: Buffer }).stderr ?? err).trim()}); a partition test needs root, or CAP_SYS_ADMIN and CAP_NET_ADMIN` };
  }
  const subnet = freeSubnet();
  ip('link', 'add', hostVeth, 'type', 'veth', 'peer', 'name', nodeVeth);
  ip('link', 'set', nodeVeth, 'netns', name);
  ip('addr', 'add', `${subnet}.1/30`, 'dev', hostVeth);
  ip('link', 'set', hostVeth, 'up');
  ip('-n', name, 'addr', 'add', `${subnet}.2/30`, 'dev', nodeVeth);
  ip('-n', name, 'link', 'set', nodeVeth, 'up');
  ip('-n', name, 'link', 'set', 'lo', 'up');
  // Without a password, protected mode refuses clients that are not on the loopback, as the namespace's are.
  const redis = await startRedisServer({
    bind: ['127.0.0.1', `${subnet}.1`],
    args: (port) => ['--port', String(port), '--save', '', '--appendonly', 'no', '--protected-mode', 'no'],
  });
  const pids = () =>
    ip('netns', 'pids', name)
      .split('\n')
      .filter(Boolean)
      .map(Number);
  return {
    name,
    launcher: ['ip', 'netns', 'exec', name],
    redis,
    redisUrlInside: `redis://${subnet}.1:${redis.port}`,
    pids,
    cut: () => void ip('link', 'set', hostVeth, 'down'),
    heal: () => void ip('link', 'set', hostVeth, 'up'),
    async dispose() {
      // Every process in the namespace was started there by the test that made it.
      quietly(() => {
        for (const pid of pids()) quietly(() => process.kill(pid, 'SIGKILL'));
      });
      // Deleting the namespace deletes the veth end inside it, and with it the pair.
      quietly(() => ip('netns', 'delete', name));
      quietly(() => ip('link', 'delete', hostVeth));
      await redis.dispose();
    },
  };
}

/** A 10.213.N.0/30 that no interface of the root namespace uses yet. */
function freeSubnet(): string {
  const used = ip('-o', '-4', 'addr', 'show');
  for (let tries = 0; tries < 256; tries++) {
    const subnet = `10.213.${Math.floor(Math.random() * 256)}`;
    if (!used.includes(`${subnet}.`)) return subnet;
  }
  throw new Error('no free 10.213.N.0/30 subnet');
}
