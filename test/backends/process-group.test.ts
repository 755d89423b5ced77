import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { groupTakes } from '../../src/backends/process-group.js';
import { waitFor } from '../helpers/wait.js';

/**
 * groupTakes against real process groups: who in the group ignores SIGINT, who takes it, found through
 * the leader's descendants, and through every process once the leader is gone.
 */

const groups: ChildProcess[] = [];
afterEach(() => {
  for (const leader of groups.splice(0)) {
    try {
      process.kill(-leader.pid!, 'SIGKILL');
    } catch {
      // already gone
    }
  }
});

/** `script` under `sh -c` as the leader of a new process group, once the group holds `members` live processes. */
async function group(script: string, members: number): Promise<{ pgid: number; leaderExited: Promise<unknown> }> {
  const leader = spawn('sh', ['-c', script], { detached: true, stdio: 'ignore' });
  groups.push(leader);
  const leaderExited = new Promise((resolve) => leader.once('exit', resolve));
  const pgid = leader.pid!;
  await waitFor(() => membersOf(pgid) >= members, `${members} processes in group ${pgid}`);
  return { pgid, leaderExited };
}

/** The group's live members, read from every process of the machine. */
function membersOf(pgid: number): number {
  let count = 0;
  for (const pid of readdirSync('/proc').filter((entry) => /^\d+$/.test(entry))) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const [state, , pgrp] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(pgrp) === pgid && state !== 'Z') count++;
    } catch {
      // gone
    }
  }
  return count;
}

describe('groupTakes', () => {
  it('a leader that takes the signal', async () => {
    const { pgid } = await group('exec sleep 30', 1);
    expect(groupTakes(pgid, 'SIGINT')).toBe(true);
  });

  it('nobody: the leader and its child ignore it (an ignored signal stays ignored across exec)', async () => {
    const { pgid } = await group("trap '' INT; sleep 30; true", 2);
    expect(groupTakes(pgid, 'SIGINT')).toBe(false);
    // SIGTERM is not ignored by either.
    expect(groupTakes(pgid, 'SIGTERM')).toBe(true);
  });

  it("a descendant two levels down takes it, under wrappers that ignore it (the sandbox's shape)", async () => {
    const { pgid } = await group("trap '' INT; sh -c \"trap '' INT; env --default-signal=INT sleep 30; true\"; true", 3);
    expect(groupTakes(pgid, 'SIGINT')).toBe(true);
  });

  it('a member left behind by a leader that is gone is found among every process', async () => {
    const { pgid, leaderExited } = await group('env --default-signal=INT sleep 30 & exit 0', 1);
    await leaderExited;
    await waitFor(() => membersOf(pgid) === 1, 'only the sleep left in the group');
    expect(groupTakes(pgid, 'SIGINT')).toBe(true);
  });

  it('a group with no member left', async () => {
    const { pgid, leaderExited } = await group('exit 0', 0);
    await leaderExited;
    expect(membersOf(pgid)).toBe(0);
    expect(groupTakes(pgid, 'SIGINT')).toBe(false);
  });
});
